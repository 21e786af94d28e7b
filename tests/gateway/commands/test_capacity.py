"""Pump/manifold capacity: three zones asked for with a capacity of two -> the third waits (queued) or is refused."""

from __future__ import annotations

import pytest

from core.yamlsrc import ConfigError
from gateway.config.load import load_config
from tests.gateway.commands.support import Harness, commands, write_site


def pump(**over) -> dict:
    return commands(manifolds=[{"id": "pump-1", "valves": ["zone-1", "zone-2", "zone-3"], "max_open": 2,
                                "max_wait": "10m", **over}])


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path, pump())
    await h.start()
    yield h
    await h.stop()


async def open_two(h, duration: float = 900) -> None:
    for z in ("zone-1", "zone-2"):
        assert (await h.send(h.env("irrigate", z, {"duration_s": duration})))["status"] == "executed"


async def test_the_third_zone_waits_queued_and_opens_when_a_slot_frees(h):
    await open_two(h)
    env = h.env("irrigate", "zone-3", {"duration_s": 120})
    await h.submit(env)
    statuses = [r["status"] for r in h.results(env["id"])]
    assert statuses == ["accepted", "queued"] and h.valves.values["zone_3"] is False
    queued = h.results(env["id"])[-1]
    assert queued["manifold"] == "pump-1" and queued["queued_until"] == pytest.approx(h.clock.time() + 600)
    assert "pump-1 already feeds 2 of 2 zones (zone-1, zone-2)" in queued["detail"] and "UTC+08:00" in queued["detail"]
    assert h.svc.snapshot()["manifolds"]["pump-1"]["waiting"][0]["valve"] == "zone-3"
    assert (await h.send(h.env("irrigate", "zone-4", {"duration_s": 60})))["status"] == "executed"  # not on the pump
    await h.send(h.env("close", "zone-1"))
    res = h.final(env["id"])
    assert res["status"] == "executed" and h.valves.values["zone_3"] is True
    assert [r["status"] for r in h.results(env["id"])] == ["accepted", "queued", "executed"]
    await h.advance(120)  # its duration counts from the opening
    assert h.valves.values["zone_3"] is False


async def test_a_queued_opening_fails_at_its_own_expiry(h):
    await open_two(h)
    env = h.env("irrigate", "zone-3", {"duration_s": 60}, valid_for=60)  # the envelope expires long before
    await h.submit(env)
    await h.advance(599)
    assert h.final(env["id"]) is None
    await h.advance(1)
    res = h.final(env["id"])
    assert res["status"] == "failed" and res["reason"] == "queue_expired" and "no free slot on pump-1" in res["detail"]
    assert h.valves.values["zone_3"] is False and h.svc.snapshot()["manifolds"]["pump-1"]["waiting"] == []


async def test_refuse_when_full(tmp_path):
    h = Harness(tmp_path, pump(when_full="refuse"))
    await h.start()
    await open_two(h)
    res = await h.send(h.env("irrigate", "zone-3", {"duration_s": 60}))
    assert res["status"] == "rejected" and res["reason"] == "capacity" and res["manifold"] == "pump-1"
    assert "pump-1 already feeds 2 of 2 zones (zone-1, zone-2)" in res["detail"]
    assert h.valves.values["zone_3"] is False
    await h.stop()


async def test_close_and_close_all_cancel_waiting_openings(h):
    await open_two(h)
    env = h.env("irrigate", "zone-3", {"duration_s": 60})
    await h.submit(env)
    await h.send(h.env("close", "zone-3"))
    res = h.final(env["id"])
    assert res["status"] == "failed" and res["reason"] == "cancelled" and "close" in res["detail"]
    env = h.env("irrigate", "zone-3", {"duration_s": 60})
    await h.submit(env)
    await h.send(h.env("close_all", "*", {"hold_s": 0}))
    assert h.final(env["id"])["reason"] == "cancelled"
    assert not any(h.valves.values[f"zone_{n}"] for n in (1, 2, 3))


async def test_a_program_does_not_start_on_a_full_manifold(tmp_path):
    cmds = pump()
    cmds["programs"] = [{"id": "zone-3-auto", "valve": "zone-3", "sensor": {"device": "soil-3", "point": "moisture"},
                         "start_below": 20, "stop_at": 30, "max_run": "10m", "max_per_day": 3}]
    h = Harness(tmp_path, cmds)
    await h.start()
    await open_two(h)
    h.observe("soil-3", moisture=15.0)
    await h.svc.drain()
    assert h.valves.values["zone_3"] is False
    assert "waiting for a free slot: pump-1" in h.svc.snapshot()["programs"]["zone-3-auto"]["waiting"]
    await h.send(h.env("close", "zone-2"))
    h.observe("soil-3", moisture=15.0)
    await h.svc.drain()
    assert h.valves.values["zone_3"] is True
    await h.stop()


@pytest.mark.parametrize("manifolds, expect", [
    ([{"id": "pump-1", "valves": ["zone-9"], "max_open": 1}], "commands.manifolds[0].valves[0]: unknown valve 'zone-9'"),
    ([{"id": "a", "valves": ["zone-1"], "max_open": 1}, {"id": "b", "valves": ["zone-1"], "max_open": 1}],
     "commands.manifolds[1].valves[0]: valve 'zone-1' is already fed by the manifold at line"),
    ([{"id": "pump-1", "valves": ["zone-1"], "max_open": 0}], "commands.manifolds[0].max_open"),
    ([{"id": "pump-1", "valves": ["zone-1"], "max_open": 1, "when_full": "wait"}], "commands.manifolds[0].when_full"),
])
def test_manifold_config_errors_name_file_line_and_key(tmp_path, manifolds, expect):
    with pytest.raises(ConfigError) as err:
        load_config(write_site(tmp_path, commands(manifolds=manifolds)))
    found = [str(p) for p in err.value.problems]
    assert any(expect in p and "site.yaml:" in p for p in found), found
