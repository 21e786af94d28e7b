"""Shared fixtures: real broker, real simulator (in a thread with its own loop), subscriber."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.support import GatewayProcess, Mosquitto, Subscriber


class SimThread:
    """A simulator site served from its own event loop, so sync tests can drive it."""

    def __init__(self, site: str, speed: float = 0.0, seed: int = 1):
        from simulator.sites import start_site

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"sim-{site}", daemon=True)
        self.thread.start()
        self.sim, self.clock = asyncio.run_coroutine_threadsafe(start_site(site, port=0, speed=speed, seed=seed), self.loop).result(10)
        self.port = self.sim.port

    def device(self, id: str):
        return self.sim.device(id)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def farm_sim():
    sim = SimThread("farm", speed=0)
    yield sim
    sim.stop()


@pytest.fixture
def community_sim():
    sim = SimThread("community", speed=0)
    yield sim
    sim.stop()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_make_parametrize_id(config, val, argname):
    """Stable test ids for long byte payloads (signed envelopes carry random ids and times): the workers of
    ``make test`` must collect the very same ids.  Short printable ones keep pytest's own id."""
    if isinstance(val, (bytes, bytearray)) and (len(val) > 60 or not val.isascii() or not bytes(val).decode("ascii").isprintable()):
        return f"{argname}-{'long' if len(val) > 60 else 'binary'}"
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the mark into the group it schedules by
def pytest_collection_modifyitems(config, items):
    """``make test`` runs two workers (pytest-xdist, ``--dist loadgroup``).  The real-daemon scenarios of
    tests/integration are one group, run one after another on one worker: they mostly wait on real time, and
    their timing bounds were set for a machine they do not share with another daemon.  Everything else is
    shared out between both workers."""
    for item in items:
        if INTEGRATION in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.xdist_group("integration"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, so a fixture's teardown can tell whether the test itself passed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def subscriber_factory(request):
    """Subscribers to the test's broker; in tests/integration every message a gateway published must
    validate against docs/schemas (checked at teardown, when the test itself passed)."""
    subs = []

    def make(port, **kw):
        s = Subscriber(port, **kw)
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.close()
    call = getattr(request.node, "report_call", None)
    if INTEGRATION in Path(request.node.path).parents and call is not None and call.passed:
        for s in subs:
            s.assert_valid()


@pytest.fixture
def gateway_factory():
    procs = []

    def make(config, **kw):
        g = GatewayProcess(config, **kw)
        procs.append(g)
        return g.start()

    yield make
    for g in procs:
        g.close()
