"""Door locks: authorised unlock, device- and gateway-side relock, lockout with an alarm, audit, state events."""

from __future__ import annotations

import pytest

from tests.gateway.commands.support import CENTRE, DUTY, FARMER, STRANGER, Harness, commands


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    yield h
    await h.stop()


def duty(h, action="unlock", target="door-101", **kw):
    return h.env(action, target, **{"key": DUTY, "issuer": "duty", **kw})


async def test_unlock_uses_the_device_relock_and_the_gateway_checks_it(h):
    door = h.doors["door-101"]
    door.writes.clear()
    env = duty(h)
    res = await h.send(env)
    assert [r["status"] for r in h.results(env["id"])] == ["accepted", "executed"]
    assert res["state"]["locked"] is False and res["relock_by"] == "device"
    assert res["relock_at"] == pytest.approx(h.clock.time() + 10)
    assert door.writes == [("relock_time", 10), ("unlock", True)]  # device-side relock armed first
    unlocked = h.of("lock.unlocked")[-1]
    assert unlocked["issuer"] == "duty" and unlocked["command"] == env["id"]
    await h.advance(10)
    door.device_relock()  # the lock's own timer
    await h.advance(2)  # the gateway looks after the grace period
    relocked = h.of("lock.relocked")[-1]
    assert relocked["by"] == "device" and relocked["locked"] is True and relocked["command"] == env["id"]
    assert ("unlock", False) not in door.writes
    assert h.audits(env["id"])[-1]["outcome"] == "executed"


async def test_gateway_relocks_when_the_device_did_not(h):
    door = h.doors["door-101"]
    await h.send(duty(h))
    await h.advance(12)  # the device's relock never came (battery, firmware...)
    assert door.values["locked"] is True
    assert h.of("lock.relocked")[-1]["by"] == "gateway"


async def test_gateway_side_relock_for_a_lock_without_the_register(tmp_path):
    cmds = commands()
    cmds["issuers"]["duty"]["buildings"] = ["3", "4"]
    h = Harness(tmp_path, cmds)
    await h.start()
    door = h.doors["door-201"]
    door.writes.clear()
    res = await h.send(duty(h, target="door-201"))
    assert res["status"] == "executed" and res["relock_by"] == "gateway"
    assert door.writes == [("unlock", True)]
    await h.advance(9.9)
    assert door.values["locked"] is False
    await h.advance(0.1)
    assert door.values["locked"] is True
    assert h.of("lock.relocked")[-1]["by"] == "gateway"
    await h.stop()


async def test_relock_waits_for_an_open_door(h):
    door = h.doors["door-101"]
    await h.send(duty(h))
    door.values["door_open"] = True  # the responder walks in
    await h.advance(12)
    assert door.values["locked"] is False
    assert h.of("lock.relock_pending")
    door.values["door_open"] = False
    await h.advance(5)
    assert door.values["locked"] is True
    assert h.of("lock.relocked")[-1]["reason"] == "timer"


async def test_unauthorised_unlocks_are_rejected_audited_and_five_lock_it_out(h):
    """Only refusals of a requester's own signed, fresh unlocks count -- and lock out that requester only."""
    door = h.doors["door-101"]
    door.writes.clear()
    attempts = [
        h.env("unlock", "door-101"),  # farmer: not allowed to unlock (answered, counts)
        duty(h, key=STRANGER),  # forged: junk
        h.env("unlock", "door-101", key=STRANGER, issuer="mallory"),  # unknown issuer: junk
        duty(h, now=h.clock.time() - 1000),  # expired: answered, but perhaps a captured one sent again: no count
        duty(h, target="door-101", key=FARMER),  # wrong key for duty: junk
    ]
    reasons = []
    for env in attempts:
        res = await h.send(env)
        reasons.append(res["reason"] if res else None)
        assert bool(h.audits(env["id"])) == (res is not None)
    assert reasons == ["unauthorised_action", None, None, "expired", None]
    assert not h.of("lock.lockout", lane="alarm")
    for i in range(4):  # four more of the farmer's own: five in the window
        await h.send(h.env("unlock", "door-101"))
        assert bool(h.of("lock.lockout", lane="alarm")) == (i == 3)
    (alarm,) = h.of("lock.lockout", lane="alarm")
    assert alarm["lock"] == "door-101" and alarm["attempts"] == 5 and alarm["severity"] == "critical"
    assert alarm["last_issuer"] == "farmer" and "by farmer" in alarm["message"]
    assert alarm["until"] == pytest.approx(h.clock.time() + 900) and alarm["location"] == {"building": "3"}
    assert door.writes == []
    assert h.svc.snapshot()["locks"]["door-101"]["lockouts"] == {"farmer": pytest.approx(h.clock.time() + 900)}
    # the farmer is refused (not allowed anyway), the duty desk is not locked out: its unlock works
    assert (await h.send(duty(h)))["status"] == "executed"
    # other doors are not affected
    assert "lockouts" not in h.svc.snapshot()["locks"]["door-201"]
    # after lockout_for it ends by itself
    await h.advance(900)
    assert h.of("lock.lockout_ended")[-1]["by"] == "timer"
    assert "lockouts" not in h.svc.snapshot()["locks"]["door-101"]


async def test_rejections_spread_out_do_not_lock_out(h):
    for _ in range(6):
        await h.send(duty(h, params={"force": True}))  # refused: invalid_params
        await h.advance(160)  # 4 per 10-minute window at most
    assert not h.of("lock.lockout", lane="alarm")
    assert (await h.send(duty(h)))["status"] == "executed"


async def test_lockout_survives_a_restart_and_can_be_reset(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    for _ in range(5):
        await h.send(duty(h, params={"force": True}))
    await h.stop()
    h2 = Harness(tmp_path)
    h2.clock = h.clock
    await h2.start()
    assert (await h2.send(duty(h2)))["reason"] == "lockout"
    assert (await h2.send(duty(h2, action="reset_lockout")))["reason"] == "lockout"  # not by the one locked out
    res = await h2.send(h2.env("reset_lockout", "door-101", key=CENTRE, issuer="centre", on_behalf_of="warden-zhou"))
    assert res["status"] == "executed"
    assert h2.of("lock.lockout_ended")[-1]["by"] == "centre"
    assert (await h2.send(duty(h2)))["status"] == "executed"
    await h2.stop()


async def test_lock_now(h):
    await h.send(duty(h))
    res = await h.send(duty(h, action="lock"))
    assert res["status"] == "executed" and res["state"]["locked"] is True
    assert h.of("lock.locked")[-1]["issuer"] == "duty"
    await h.advance(20)
    assert not h.of("lock.relocked")  # the relock timer was cancelled: it is locked already


async def test_shutdown_relocks_and_a_crash_is_relocked_at_start(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    await h.send(duty(h))
    await h.stop()
    assert h.doors["door-101"].values["locked"] is True
    assert h.of("lock.relocked")[-1]["reason"] == "shutdown"

    h2 = Harness(tmp_path)
    await h2.start()
    await h2.send(duty(h2))
    await h2.stop(clean=False)
    h3 = Harness(tmp_path)
    h3.doors = h2.doors
    h3.devices.update(h2.doors)
    await h3.start()
    assert h2.doors["door-101"].values["locked"] is True
    assert h3.of("lock.relocked")[-1]["reason"] == "restart"
    await h3.stop()


async def test_state_tamper_and_battery_events(h):
    h.observe("door-101", locked=True, door_open=False, tamper=False, battery=80)
    await h.svc.drain()
    assert not h.of("lock.state") and not h.of("lock.tamper")
    h.observe("door-101", locked=False, door_open=True, tamper=False, battery=80)
    h.observe("door-101", locked=False, door_open=True, tamper=True, battery=15)
    h.observe("door-101", locked=False, door_open=True, tamper=True, battery=14)
    await h.svc.drain()
    (state,) = h.of("lock.state")
    assert state["locked"] is False and state["door_open"] is True
    (tamper,) = h.of("lock.tamper")
    assert tamper["tamper"] is True
    (battery,) = h.of("lock.battery_low")
    assert battery["battery"] == 15
    snap = h.svc.snapshot()["locks"]["door-101"]
    assert snap == {"locked": False, "tamper": True, "battery": 14}


async def test_device_failure_during_unlock_is_failed(h):
    h.doors["door-101"].fail = "all"
    res = await h.send(duty(h))
    assert res["status"] == "failed" and res["reason"] == "device_error"
    h.doors["door-101"].fail = None
