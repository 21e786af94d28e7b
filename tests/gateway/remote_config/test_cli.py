"""`canopy remote configure FILE`: what is sent, what is refused before sending, and problems shown at FILE's lines."""

from __future__ import annotations

import os
import time

import orjson
import pytest
import yaml

from gateway.cli.main import build_parser
from gateway.cli.remote_config import PushError, build_envelope, describe, located, read_sources
from gateway.remote_config.trust import Trust
from core.protocol import envelope


def args_for(board, tmp_path, file, *extra):
    key = tmp_path / "admin.key"
    key.write_bytes(envelope.private_pem(board.keys["admin"]))
    os.chmod(key, 0o600)
    return build_parser().parse_args(["remote", "configure", str(file), "--site", "farm-a", "--gateway", "gw-1",
                                      "--key", str(key), *extra])


def test_the_command_signs_a_config_the_gateway_trusts(board, tmp_path):
    file = tmp_path / "next.yaml"
    file.write_text(yaml.safe_dump(board.variant(uplink={"state_interval": 5}), sort_keys=False))
    prof = tmp_path / "soil_probe_v2.yaml"
    prof.write_text((board.etc / "profiles" / "soil_probe.yaml").read_text())
    args = args_for(board, tmp_path, file, "--profile", str(prof), "--as", "ops-li")
    assert (args.timeout, args.valid_for) == (300.0, 600.0)
    site, profiles = read_sources(args.file, args.profile)
    env = build_envelope(args, site, profiles)
    v = Trust.of(board.loaded()).check(orjson.dumps(env), time.time())
    assert v.reason is None, v
    assert v.bundle.document["uplink"] == {"state_interval": 5} and list(v.bundle.profiles) == ["soil_probe_v2"]
    assert (env["issuer"], env["on_behalf_of"], env["kind"], env["target"]) == ("admin", "ops-li", "config", "*")


def test_what_cannot_be_pushed_is_said_before_sending(board, tmp_path):
    file = tmp_path / "next.yaml"
    file.write_text("site: farm-a\nbroker:\n  password: ${MQTT_PASSWORD}\n  port: [1\n")
    with pytest.raises(PushError) as exc:
        read_sources(str(file), [])
    assert any(line.startswith(f"{file}:3: ${{…}} would be expanded on this machine") for line in exc.value.lines)
    assert any("YAML syntax error" in line for line in exc.value.lines)
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump({**board.document, "notes": {f"n{i}": "x" * 15000 for i in range(20)}}))
    args = args_for(board, tmp_path, big)
    with pytest.raises(PushError) as exc:
        build_envelope(args, *read_sources(args.file, []))
    assert "cannot be pushed as one message (too_large" in exc.value.lines[0]


def test_the_gateways_problems_are_shown_at_the_lines_of_the_file(board, tmp_path):
    file = tmp_path / "next.yaml"
    file.write_text("# my farm\n\nsite: farm-a\ngateway: gw-1\nbroker:\n  host: 127.0.0.1\n  port: eighteen\n"
                    "buses:\n- id: field\n  devices:\n  - id: soil-1\n    unit: 1\n")
    site, _ = read_sources(str(file), [])
    detail = ("site.yaml:8: broker.port: Input should be a valid integer\n"
              "site.yaml:14: buses[0].devices[0].unit: too small\nsomething else")
    assert located(detail, str(file), site, {}) == [
        f"{file}:7: broker.port: Input should be a valid integer", f"{file}:12: buses[0].devices[0].unit: too small",
        "something else"]
    lines = describe({"status": "rejected", "reason": "invalid_config", "detail": detail}, str(file), site, {})
    assert lines == ["[red]rejected[/]: [bold]invalid_config[/]", f"  {file}:7: broker.port: Input should be a valid integer",
                     f"  {file}:12: buses[0].devices[0].unit: too small", "  something else"]
    assert describe({"status": "failed", "reason": "rolled_back", "detail": "rolled back from a to b: broker not connected"},
                    str(file), site, {}) == ["[red]failed[/]: [bold]rolled_back[/] — rolled back from a to b: broker not connected"]
