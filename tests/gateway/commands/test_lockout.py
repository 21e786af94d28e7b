"""Lock-out per requester (issue 12): one person's refused unlocks shut the door on that person, never on everyone."""

from __future__ import annotations

import orjson
import pytest

from tests.gateway.commands.support import CENTRE, DUTY, Harness


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    yield h
    await h.stop()


def centre(h: Harness, person: str, action: str = "unlock", target: str = "door-101", **kw) -> dict:
    return h.env(action, target, key=CENTRE, issuer="centre", on_behalf_of=person, **kw)


async def test_five_signed_refused_unlocks_lock_out_that_person_only(h):
    for i in range(5):
        res = await h.send(centre(h, "mallory", params={"hold_open": True}))
        assert res["reason"] == "invalid_params" and res["on_behalf_of"] == "mallory"
        assert bool(h.of("lock.lockout", lane="alarm")) == (i == 4)
    (alarm,) = h.of("lock.lockout", lane="alarm")
    assert alarm["last_issuer"] == "centre" and "centre/mallory" in alarm["message"]
    assert h.svc.snapshot()["locks"]["door-101"]["lockouts"].keys() == {"centre/mallory"}
    refused = await h.send(centre(h, "mallory"))
    assert refused["reason"] == "lockout" and refused["lockout_until"] == pytest.approx(h.clock.time() + 900)
    assert (await h.send(centre(h, "vol-wang")))["status"] == "executed"  # another person, same service
    assert (await h.send(h.env("unlock", "door-101", key=DUTY, issuer="duty")))["status"] == "executed"
    assert "lockouts" not in h.svc.snapshot()["locks"]["door-201"]


async def test_unauthorised_target_counts_for_that_door(h):
    for _ in range(5):
        assert (await h.send(centre(h, "mallory", target="door-201")))["reason"] == "unauthorised_target"
    (alarm,) = h.of("lock.lockout", lane="alarm")
    assert alarm["lock"] == "door-201"
    assert (await h.send(centre(h, "mallory")))["status"] == "executed"  # door-101 is another door


async def test_captured_and_stale_unlocks_never_count(h):
    """Whoever replays a person's captured unlock, or an expired one, cannot lock that person out."""
    captured = centre(h, "vol-wang")
    assert (await h.send(captured))["status"] == "executed"
    for _ in range(20):
        h.svc.on_command("t", orjson.dumps(captured))
    for i in range(5):  # expired copies (answered within the stale budget, never counted)
        await h.send(centre(h, "vol-wang", now=h.clock.time() - 1000, id=f"old-{i}"))
    await h.svc.drain()
    assert not h.of("lock.lockout", lane="alarm")
    await h.advance(15)  # the relock of the first unlock
    assert (await h.send(centre(h, "vol-wang")))["status"] == "executed"


async def test_a_locked_out_requester_cannot_reset_its_own_lockout(h):
    for _ in range(5):
        await h.send(centre(h, "mallory", params={"x": 1}))
    res = await h.send(centre(h, "mallory", action="reset_lockout"))
    assert res["reason"] == "lockout" and "someone else" in res["detail"]
    assert (await h.send(centre(h, "warden-zhou", action="reset_lockout")))["status"] == "executed"
    assert (await h.send(centre(h, "mallory")))["status"] == "executed"


async def test_a_door_wide_lockout_of_an_older_version_is_lifted_at_start(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    await h.svc.store.put("lockout:door-101", h.clock.time() + 600)  # what the version before wrote
    await h.stop()
    h2 = Harness(tmp_path)
    h2.clock = h.clock
    await h2.start()
    assert h2.svc.store.get("lockout:door-101") is None
    assert (await h2.send(h2.env("unlock", "door-101", key=DUTY, issuer="duty")))["status"] == "executed"
    await h2.stop()
