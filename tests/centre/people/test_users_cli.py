"""``canopy-centre users …`` on a real SQLite store: no default user, one-time passwords, grants, audit."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
import yaml

from centre.cli import main
from centre.people import audit, passwords, users
from centre.store.engine import create_engine


@pytest.fixture
def centre_yaml(tmp_path):
    db = tmp_path / "centre.sqlite"
    cfg = tmp_path / "centre.yaml"
    cfg.write_text(yaml.safe_dump({"broker": {"host": "127.0.0.1"}, "database": {"url": f"sqlite:///{db}"}}))
    assert main(["db", "upgrade", "-c", str(cfg)]) == 0
    return str(cfg), f"sqlite:///{db}"


def _run(coro_fn, url):
    async def go():
        engine = create_engine(url)
        try:
            return await coro_fn(engine)
        finally:
            await engine.dispose()
    return asyncio.run(go())


def _user(url, name):
    async def find(engine):
        async with engine.connect() as conn:
            return await users.find(conn, username=name)
    return _run(find, url)


def test_no_user_exists_until_one_is_added(centre_yaml, capsys):
    cfg, url = centre_yaml
    assert _run(users.list_users, url) == []
    assert main(["users", "list", "-c", cfg]) == 0
    assert capsys.readouterr().out == ""


def test_add_prints_a_one_time_password_that_must_be_changed(centre_yaml, capsys):
    cfg, url = centre_yaml
    assert main(["users", "add", "duty-night", "--role", "duty_desk", "--site", "sunny-court",
                 "--display-name", "Night desk", "--language", "zh-CN", "-c", cfg]) == 0
    out = capsys.readouterr().out
    assert "user duty-night added: duty_desk at site sunny-court" in out
    pw = re.search(r"one-time password \(shown once; it must be changed at the first login\): (\S+)", out).group(1)
    user, stored = _user(url, "duty-night")
    assert user.must_change_password and user.language == "zh-CN" and pw not in stored
    assert asyncio.run(passwords.verify_password(stored, pw))[0]
    rows = _run(lambda e: audit.recent(e, actor=None), url)
    assert rows[0]["action"] == "users.add" and rows[0]["actor"].startswith("cli") and rows[0]["target"] == "duty-night"


def test_add_with_scopes_reads_the_password_from_stdin(centre_yaml, capsys, monkeypatch):
    cfg, url = centre_yaml
    monkeypatch.setattr("sys.stdin", io.StringIO("volunteer wang 2026\n"))
    assert main(["users", "add", "wang", "--role", "volunteer", "--site", "sunny-court", "--scope", "group:volunteers",
                 "--scope", "household:101", "--password-stdin", "-c", cfg]) == 0
    assert "password set from stdin" in capsys.readouterr().out
    user, stored = _user(url, "wang")
    assert [(g.scope_kind, g.scope) for g in user.grants] == [("group", "volunteers"), ("household", "101")]
    assert user.must_change_password and asyncio.run(passwords.verify_password(stored, "volunteer wang 2026"))[0]


def test_bad_input_is_a_clear_error_with_exit_2(centre_yaml, capsys, monkeypatch):
    cfg, _ = centre_yaml
    assert main(["users", "add", "x", "--role", "farmer", "--scope", "field:2", "-c", cfg]) == 2
    assert "scope 'field:2': write group:NAME, household:NAME or zone:NAME" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "x", "--role", "farmer", "--password-stdin", "-c", cfg]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert main(["users", "add", "li", "--role", "farmer", "-c", cfg]) == 0
    assert main(["users", "add", "li", "--role", "farmer", "-c", cfg]) == 2
    assert "user 'li' exists already" in capsys.readouterr().err
    assert main(["users", "grant", "nobody", "--role", "farmer", "-c", cfg]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["users", "add", "y", "--role", "boss", "-c", cfg])


def test_grant_revoke_reset_disable(centre_yaml, capsys):
    cfg, url = centre_yaml
    assert main(["users", "add", "zhang", "--role", "farmer", "--site", "green-valley", "-c", cfg]) == 0
    assert main(["users", "grant", "zhang", "--role", "farmer", "--site", "hill-farm", "--scope", "zone:2", "-c", cfg]) == 0
    assert main(["users", "grant", "zhang", "--role", "farmer", "--site", "hill-farm", "--scope", "zone:2", "-c", cfg]) == 0
    assert len(_user(url, "zhang")[0].grants) == 2  # granting twice keeps one
    assert main(["users", "revoke", "zhang", "--role", "farmer", "--site", "green-valley", "-c", cfg]) == 0
    assert [str(g) for g in _user(url, "zhang")[0].grants] == ["farmer at site hill-farm, zone 2"]
    capsys.readouterr()
    assert main(["users", "reset-password", "zhang", "-c", cfg]) == 0
    assert "one-time password" in capsys.readouterr().out
    assert main(["users", "disable", "zhang", "-c", cfg]) == 0
    assert not _user(url, "zhang")[0].active
    assert main(["users", "list", "--json", "-c", cfg]) == 0
    assert '"active": false' in capsys.readouterr().out
    actions = [r["action"] for r in _run(audit.recent, url)][::-1]
    assert actions == ["users.add", "users.grant", "users.grant", "users.revoke", "users.reset_password", "users.disable"]


def test_users_need_a_migrated_database(tmp_path, capsys):
    cfg = tmp_path / "centre.yaml"
    cfg.write_text(yaml.safe_dump({"broker": {"host": "127.0.0.1"}, "database": {"url": f"sqlite:///{tmp_path}/x.db"}}))
    assert main(["users", "list", "-c", str(cfg)]) == 1
    assert "canopy-centre db upgrade" in capsys.readouterr().err
