"""Pure parts of the centre: parsing, rows, rollup, alert fold, gap edges, results, config, CLI."""

from __future__ import annotations

import itertools

import orjson
import pytest

from centre.cli import main
from centre.config import load_config
from centre.ingest.alerts import fold
from centre.ingest.gaps import announced_last, boundaries
from centre.ingest.not_held import EVERYTHING, cut, gone_runs
from centre.ingest.parse import parse_message
from centre.ingest.results import highest, result_row
from centre.ingest.rows import rollup, telemetry_row
from centre.ingest.service import subscriptions
from core.yamlsrc import ConfigError
from tests.centre.support import envelope, reading

T = "canopy/v1/s1/g1/telemetry"


def test_parse_batches_and_junk():
    p = parse_message(T, envelope("s1", "g1", "telemetry", [reading(1, 1.0), reading(2, 1.0)]))
    assert (p.kind, p.lane, len(p.records), p.bad_records) == ("batch", "telemetry", 2, 0)
    assert parse_message("canopy/v1/s1/g1/cmd", b"x").kind == "skip"
    assert parse_message("canopy/v1/s1/g1/alert/ack", b"x").kind == "skip"
    junk = {
        "elsewhere/x": (b"{}", "bad_topic"),
        T: (b"\xff", "not_json"),
        "canopy/v1/s1/g1/event": (envelope("s1", "g1", "telemetry", [reading(1, 1.0)]), "wrong_lane"),
        "canopy/v1/s1/g2/telemetry": (envelope("s1", "g1", "telemetry", [reading(1, 1.0)]), "wrong_gateway"),
    }
    for topic, (payload, reason) in junk.items():
        p = parse_message(topic, payload)
        assert (p.kind, p.problem) == ("junk", reason), topic
    bad = orjson.dumps({"site": "s1", "gateway": "g1", "lane": "telemetry", "epoch": "0123456789abcdef",
                        "records": [{"seq": True, "ts": 1, "device": "d", "point": "p"}, {"seq": 0}, 5,
                                    {"seq": 3, "ts": -1, "device": "d", "point": "p"}, reading(4, 2.0)]})
    p = parse_message(T, bad)
    assert (len(p.records), p.bad_records) == (1, 4)


def test_telemetry_values():
    row = telemetry_row("s", "g", "e", reading(1, 5.0, value=True, unit=None), 9.0)
    assert (row["value"], row["text"], row["unit"]) == (1.0, "true", None)
    assert telemetry_row("s", "g", "e", reading(1, 5.0, value=10**400), 9.0)["value"] is None
    assert telemetry_row("s", "g", "e", reading(1, 5.0, value=887), 9.0)["value"] == 887.0
    assert telemetry_row("s", "g", "e", reading(1, 5.0, value="WS-100"), 9.0)["text"] == "WS-100"


def test_rollup_by_hour():
    rows = [telemetry_row("s", "g", "e", reading(i, 3600.0 * 10 + i * 900, value=float(i)), 0) for i in range(8)]
    rows.append(telemetry_row("s", "g", "e", reading(9, 36000.0, value="x"), 0))
    out = rollup(rows)
    a, b = out[("s", "g", "soil-1", "moisture", 36000)], out[("s", "g", "soil-1", "moisture", 39600)]
    assert (a.count, a.total, a.min, a.max) == (4, 6.0, 0.0, 3.0)
    assert (b.count, b.total, b.min, b.max) == (4, 22.0, 4.0, 7.0)


def test_alert_fold_is_order_independent():
    recs = [
        {"ts": 1.0, "type": "alert.raised", "status": "raised", "step": 0, "severity": "warning", "groups": ["a"],
         "next_escalation_at": 60.0, "raised_at": 1.0},
        {"ts": 2.0, "type": "alert.updated", "severity": "critical", "groups": ["a"]},
        {"ts": 60.0, "type": "alert.escalated", "status": "escalated", "step": 1, "groups": ["a", "b"],
         "next_escalation_at": 120.0},
        {"ts": 70.0, "type": "alert.acknowledged", "status": "acknowledged", "by": "wang", "note": "ok", "groups": ["a", "b"]},
    ]
    views = {str(fold("s", "g", "1-ab", list(p))) for p in itertools.permutations(recs)}
    assert len(views) == 1
    v = fold("s", "g", "1-ab", recs)
    assert (v["status"], v["severity"], v["step"], v["groups"], v["acked_by"], v["next_escalation_at"]) == \
        ("acknowledged", "critical", 1, ["a", "b"], "wang", None)


def test_gap_edges():
    # stored above floor 10: 11, 12, 15, 16, 20  -> missing 13-14, 17-19
    assert boundaries([(11, None, 12), (12, 11, 15), (16, 15, 20), (20, 16, None)], 10) == (20, [(13, 14), (17, 19)])
    assert boundaries([(14, None, None)], 10) == (14, [(11, 13)])
    assert boundaries([], 10) == (10, [])


def test_the_last_seq_a_gateway_announces():
    doc = {"outbox": {"epoch": "e1", "telemetry": {"last_seq": 53}, "event": {"last_seq": 0}}}
    assert announced_last(doc, "e1", "telemetry") == 53
    assert announced_last(doc, "e2", "telemetry") is None  # another outbox's epoch
    assert announced_last(doc, "e1", "event") is None and announced_last(doc, "e1", "alarm") is None
    assert announced_last(None, "e1", "telemetry") is None and announced_last({"outbox": 3}, "e1", "telemetry") is None


def test_what_a_partial_replay_answer_says_is_gone():
    base = {"type": "replay.result", "status": "partial", "lane": "telemetry", "epoch": "e1"}
    assert gone_runs({**base, "oldest_kept": 90, "missing_runs": [[1, 89], [95, 96], [97, 97]]}, "telemetry", "e1") == \
        [(1, 89), (95, 97)]
    assert gone_runs({**base, "reason": "unknown_epoch"}, "telemetry", "e1") == [EVERYTHING]
    assert gone_runs({**base, "oldest_kept": 90}, "event", "e1") == []  # another lane's answer
    assert gone_runs({**base, "status": "done", "oldest_kept": 90}, "telemetry", "e1") == []
    assert gone_runs({**base, "missing_runs": [[5, 2], ["a", 3], [0, 4], [True, 2]]}, "telemetry", "e1") == []  # junk
    # a gap 50-120 against gone runs 1-89 and 95-97
    assert cut(50, 120, [(1, 89), (95, 97)]) == [(50, 89, True), (90, 94, False), (95, 97, True), (98, 120, False)]
    assert cut(50, 60, [(70, 80)]) == [(50, 60, False)]


def test_results_only_move_up():
    ex = result_row("s", "g", {"ts": 2.0, "type": "cmd.result", "id": "c1", "status": "executed"})
    acc = result_row("s", "g", {"ts": 3.0, "type": "cmd.result", "id": "c1", "status": "accepted"})
    assert [r["status"] for r in highest([acc, ex])] == ["executed"]
    assert result_row("s", "g", {"ts": 1.0, "type": "replay.result", "id": "r", "status": "partial"})["status"] == "executed"
    assert result_row("s", "g", {"ts": 1.0, "type": "cmd.result", "id": None, "status": "rejected"}) is None


def test_subscriptions():
    assert subscriptions("5", "centre") == [
        "$share/centre/canopy/v1/+/+/telemetry", "$share/centre/canopy/v1/+/+/event", "$share/centre/canopy/v1/+/+/alert/+",
        "$share/centre/canopy/v1/+/+/cmd/result", "canopy/v1/+/+/state", "canopy/v1/+/+/meta"]
    assert all(not t.startswith("$share") for t in subscriptions("3.1.1", "centre"))


def test_config_errors_name_file_line_and_key(tmp_path):
    f = tmp_path / "centre.yaml"
    f.write_text("broker:\n  host: localhost\n  port: 99999\ndatabase:\n  url: mysql://x\ningest:\n  bach_max_records: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    text = str(e.value)
    assert f"{f}:3: broker.port:" in text
    assert f"{f}:5: database.url: must start with sqlite:/// or postgresql://" in text
    assert f"{f}:7: ingest.bach_max_records: unknown key" in text


def test_config_paths_relative_to_the_file(tmp_path):
    f = tmp_path / "centre.yaml"
    f.write_text("broker: {host: b, username: u, password_file: pw}\ndatabase: {url: 'sqlite:///c.db'}\nkeys_dir: k\n")
    cfg = load_config(f)
    assert cfg.broker.password_file == str(tmp_path / "pw") and cfg.keys_dir == str(tmp_path / "k")
    assert cfg.client_id.startswith("canopy-centre-")


def test_cli_db_upgrade_and_bad_config(tmp_path, capsys):
    assert main(["db", "upgrade", "--url", f"sqlite:///{tmp_path / 'c.sqlite'}"]) == 0
    assert main(["db", "upgrade", "--url", f"sqlite:///{tmp_path / 'c.sqlite'}"]) == 0  # idempotent
    bad = tmp_path / "bad.yaml"
    bad.write_text("broker: {host: b}\n")
    assert main(["run", "-c", str(bad)]) == 2
    assert "database: required key is missing" in capsys.readouterr().err


def test_full_config_takes_every_module_section(tmp_path):
    from centre.fullconfig import load_full_config

    f = tmp_path / "centre.yaml"
    f.write_text("broker: {host: b}\ndatabase: {url: 'sqlite:///c.db'}\nacting: {resend_after: 10}\n"
                 "jobs: {}\nrouting: {}\npeople: {}\n")
    assert load_full_config(f).acting.resend_after == 10
    f.write_text("broker: {host: b}\ndatabase: {url: 'sqlite:///c.db'}\nacting: {resend_aftr: 10}\n")
    with pytest.raises(ConfigError, match="3: acting.resend_aftr: unknown key"):
        load_full_config(f)
