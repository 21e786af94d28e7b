"""Which page a role opens, where a person lands, and the pieces the server words itself (no browser)."""

from __future__ import annotations

import re

import orjson

from centre.console.pages import PAGES, home_for, may_open, pages_for
from centre.console.routes import STATIC, Files
from centre.people.roles import ROLES, Grant


def test_each_role_lands_on_its_own_page_and_may_open_only_the_pages_meant_for_it():
    land = {role: (home_for([Grant(role, "s")]).name if home_for([Grant(role, "s")]) else None) for role in ROLES}
    assert land == {"duty_desk": "desk", "volunteer": "volunteer", "grid_leader": "volunteer", "farmer": "farm",
                    "installer": "admin", "admin": "desk"}
    farmer = [Grant("farmer", "green-valley", "zone", "2")]
    assert not may_open(farmer, PAGES["desk"]) and not may_open(farmer, PAGES["volunteer"])
    assert [p.name for p in pages_for([Grant("volunteer", "s", "group", "v"), Grant("farmer", "f")])] == ["farm", "volunteer"]


def test_both_catalogues_have_the_same_words_and_every_placeholder_of_the_other():
    en, zh = (orjson.loads((STATIC / "i18n" / f"{lang}.json").read_bytes()) for lang in ("en", "zh-CN"))
    assert en.keys() == zh.keys()
    holes = re.compile(r"\{(\w+)\}")
    assert [k for k in en if set(holes.findall(en[k])) != set(holes.findall(zh[k]))] == []


def test_the_server_words_the_403_page_in_the_person_s_language():
    files = Files()
    assert files.word("zh-CN", "forbidden.body", page="值班台", user="zhang", roles="农户").startswith("“值班台”页面")
    assert files.word("en", "no.such.key") == "no.such.key"
    assert "{{lang}}" not in files.page("desk.html", "zh-CN") and 'lang="zh-CN"' in files.page("desk.html", "zh-CN")
