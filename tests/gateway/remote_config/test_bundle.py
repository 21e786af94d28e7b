"""A pushed config is checked as `canopy validate` checks a file, plus what a remote config may not change."""

from __future__ import annotations

import pytest

from core.yamlsrc import load_yaml
from gateway.config.meta import config_version
from gateway.remote_config.bundle import Invalid, Refused, check, digest, header, read_params, render
from tests.gateway.remote_config.board import Board

HEAD = header(issuer="admin", envelope_id="e1", sha256="ab" * 32, issued_at=1_790_000_000.0)


def problems_of(b: Board, document: dict, **kw) -> list[str]:
    with pytest.raises(Invalid) as exc:
        check(read_params(b.envelope(document, **kw)["params"]), b.loaded(), HEAD, b.state)
    return exc.value.problems


def test_params_must_be_a_document_with_its_sha256():
    doc = {"site": "s", "gateway": "g"}
    assert read_params({"config": doc, "sha256": digest(doc)}).document == doc
    for params, says in (({"config": doc}, "sha256 must be 64"),
                         ({"config": doc, "sha256": "0" * 64}, "is not the sha256"),
                         ({"config": [], "sha256": digest(doc)}, "site document"),
                         ({"config": doc, "sha256": digest(doc), "yaml": "x"}, "unknown parameter(s) yaml"),
                         ({"config": doc, "sha256": digest(doc), "profiles": {"../x": {}}}, "profile name")):
        with pytest.raises(Refused) as exc:
            read_params(params)
        assert exc.value.reason == "invalid_params" and says in exc.value.detail


def test_rendered_yaml_loads_back_as_the_same_document(tmp_path):
    doc = {"site": "s", "on": {"yes": "no", "n": "1.0", "t": "null"}, "list": [1, 2.5, True, None, "2024-01-01"],
           "labels": {"zh-CN": "王阿姨家门"}}
    path = tmp_path / "x.yaml"
    path.write_text(render(doc, HEAD), encoding="utf-8")
    assert load_yaml(path).data == doc  # strings YAML would retype stay strings; `on` stays a key


def test_a_valid_config_gives_its_version_text_and_profiles(board):
    doc = board.variant(uplink={"state_interval": 5})
    got = check(read_params(board.envelope(doc)["params"]), board.loaded(), HEAD, board.state)
    assert got.version != config_version(board.loaded())
    assert got.site_text.startswith(HEAD) and "state_interval: 5" in got.site_text
    assert got.profiles == {"soil_probe": (board.etc / "profiles" / "soil_probe.yaml").read_bytes()}
    assert got.profiles_dir == board.etc / "profiles"
    assert not list(board.state.glob(".config-check-*"))  # the staging folder is gone


def test_problems_name_the_line_of_the_text_written_on_the_board(board):
    doc = board.variant(broker={"host": "127.0.0.1", "port": "eighteen"}, uplink={"state_intervall": 5})
    problems = problems_of(board, doc)
    assert any(p.startswith("site.yaml:8: broker.port: Input should be a valid integer") for p in problems), problems
    assert any(p.startswith("site.yaml:") and "uplink.state_intervall: unknown key" in p for p in problems), problems


def test_relative_files_resolve_in_the_live_folder(board):
    (board.etc / "ca.pem").write_text("not a certificate")
    doc = board.variant(broker={"host": "127.0.0.1", "port": 8883, "tls": {"ca": "missing.pem"}})
    assert any("broker.tls.ca" in p and "missing.pem" in p for p in problems_of(board, doc))


def test_a_remote_config_cannot_cut_the_gateway_off_or_strand_its_records(board):
    doc = {k: v for k, v in board.document.items() if k != "broker"}
    assert any("must name its `broker:`" in p for p in problems_of(board, doc))
    doc = board.variant(site="other-site", gateway="gw-9")
    problems = problems_of(board, doc)
    assert any(p.startswith("site.yaml:3: site: a remote config cannot change the gateway's identity") for p in problems)
    assert any("gateway: a remote config cannot change" in p for p in problems)
    doc = board.variant(store={"path": str(board.state / "elsewhere.sqlite")})
    assert any("store.path: a remote config cannot move the outbox" in p for p in problems_of(board, doc))
    doc = board.variant(store={"path": str(board.state / "outbox.sqlite"), "status_file": str(board.state / "s.json")})
    assert any("store.status_file: a remote config cannot move the status file" in p for p in problems_of(board, doc))
    doc = board.variant(broker={"host": "127.0.0.1", "port": 1883, "username": "gw", "password": "long-enough-secret"})
    assert any("broker.password: a pushed config must not carry the broker password" in p for p in problems_of(board, doc))


def test_security_strict_refusals_count(board):
    doc = board.variant(security="strict", broker={"host": "mqtt.example.org", "port": 1883})
    assert any("broker.host: plain TCP to mqtt.example.org" in p for p in problems_of(board, doc))


def test_pushed_profiles_are_validated_and_laid_over_the_boards(board):
    profile = load_yaml(board.etc / "profiles" / "soil_probe.yaml").data
    profile = {**profile, "name": "soil_probe_v2", "description": "a newer probe"}
    devices = [{"id": "soil-1", "unit": 1, "profile": "soil_probe_v2"}]
    doc = board.variant(buses=[{**board.document["buses"][0], "devices": devices}])
    got = check(read_params(board.envelope(doc, profiles={"soil_probe_v2": profile})["params"]), board.loaded(), HEAD, board.state)
    assert list(got.profiles) == ["soil_probe_v2"] and b"a newer probe" in got.profiles["soil_probe_v2"]
    assert not (board.etc / "profiles" / "soil_probe_v2.yaml").exists()  # checking writes nothing on the board
    broken = {**profile, "points": [{"name": "moisture", "table": "holdings", "address": 0, "type": "u16"}]}
    problems = problems_of(board, doc, profiles={"soil_probe_v2": broken})
    assert any(p.startswith("profiles/soil_probe_v2.yaml:") and "table" in p for p in problems), problems


def test_pushed_profiles_need_a_profiles_folder_beside_the_site(board):
    doc = board.variant(profiles_dir="/opt/elsewhere")
    assert any("pushed profiles need profiles_dir" in p for p in problems_of(board, doc, profiles={"x": {"name": "x"}}))
