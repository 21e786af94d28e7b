"""The centre in `python -m simulator demo`: set up and run the way an operator does it, on the demo's broker.

Set-up uses the real commands, so the demo shows what an installation does:
``canopy-centre db upgrade``, ``users add … --password-stdin`` for a duty desk, a volunteer and a
farmer (one-time passwords, changed at the first login), and ``keys gen`` for the site, whose
snippet becomes the demo gateway's ``commands.issuers`` (so acks and commands from the console
are accepted).  Then ``canopy-centre run`` is a child process (SQLite in ``.demo/<site>/``, log in
``.demo/<site>/centre.log``) in the demo's process group: a terminal's Ctrl-C reaches it too.
The live view reads the centre's ``/metrics`` (no login needed) and the verdict counts what it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.yamlsrc import load_yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "config" / "centre.demo.yaml"


# What the centre may act on in the demo (docs/commands.md): the farm's valve zones, the community's door lock.
ACTUATORS = {
    "farm": {"valves": [{"id": f"zone-{n}", "zone": n, "device": "valves", "point": f"zone_{n}",
                         "pulse_point": f"zone_{n}_pulse", "max_run": "30m"} for n in (1, 2, 3)]},
    "community": {"locks": [{"id": "door-101", "device": "door-101", "relock_after": 30}]},
}


@dataclass(frozen=True)
class DemoUser:
    name: str
    role: str
    site: str
    scope: str | None
    what: str  # for people, on screen


USERS = (
    DemoUser("duty-desk", "duty_desk", "sunny-court", None, "duty desk, sunny-court (community)"),
    DemoUser("volunteer-wang", "volunteer", "sunny-court", "group:volunteers", "volunteer, sunny-court group volunteers"),
    DemoUser("farmer-zhang", "farmer", "green-valley", None, "farmer, green-valley (farm)"),
)


@dataclass(frozen=True)
class Stored:
    """What the centre's store holds after the run (read once the centre has stopped)."""

    readings: int
    events: int
    alerts: int


def _http_port() -> int:
    """A free loopback port (printed): a fixed one could be taken by another demo between this check and the
    centre's bind, and the demo would then read that other centre's figures."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoCentre:
    """One demo centre: ``start`` (schema, daemon, users, key), ``start_watching`` its metrics, ``finish``."""

    def __init__(self, workdir: Path, broker_host: str, broker_port: int, broker_protocol: str):
        self.workdir = workdir
        self.config = workdir / "centre.yaml"
        self.database = workdir / "centre.sqlite"
        self.log = workdir / "centre.log"
        self.port = _http_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.passwords: dict[str, str] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.problem: str | None = None  # why the centre is not there, in words
        self.figures: dict[str, float] = {}
        self._watcher: asyncio.Task | None = None
        data = load_yaml(TEMPLATE).data
        data["broker"] = {**data.get("broker", {}), "host": broker_host, "port": broker_port, "protocol": broker_protocol}
        data["database"] = {**data.get("database", {}), "url": f"sqlite:///{self.database}"}
        data["http"] = {**data.get("http", {}), "port": self.port}
        self.config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    async def _cli(self, *args: str, stdin: str | None = None, config: bool = True) -> tuple[int, str]:
        """``canopy-centre ARGS -c centre.yaml``; its output goes to the set-up log too."""
        args = (*args, "-c", str(self.config)) if config else args
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "centre", *args, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate(stdin.encode() if stdin is not None else None)
        text = out.decode(errors="replace")
        with open(self.workdir / "centre-setup.log", "a", encoding="utf-8") as f:
            f.write(f"$ canopy-centre {' '.join(args)}\n{text}\n")
        return proc.returncode or 0, text

    async def start(self, site_id: str, stop: asyncio.Event) -> dict | None:
        """The schema; then the daemon, beside the demo users; the site's key meanwhile.  Returns the gateway's
        ``commands.issuers`` once the centre is connected to the broker (so it sees the first reading), or None
        (with :attr:`problem` set, unless the demo was stopped)."""
        keys = asyncio.create_task(self._keys_gen(site_id))
        rc, out = await self._cli("db", "upgrade")
        if rc != 0 or stop.is_set():
            await keys
            return self._failed("canopy-centre db upgrade", rc, out, stop)
        with open(self.log, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "centre", "run", "-c", str(self.config),
                                                             cwd=ROOT, stdout=log, stderr=log)
        try:
            await self._add_users()
        except Exception as exc:  # a clear line on screen, never a traceback in the middle of the view
            await keys
            self.problem = f"adding the demo users failed: {type(exc).__name__}: {exc}"
            return None
        rc, out = await keys
        head = "# Canopy Centre issuer keys"  # what `keys gen` prints last: the snippet for the gateways
        issuers = ((yaml.safe_load(out[out.index(head):]) or {}).get("commands") or {}).get("issuers") if head in out else None
        if rc != 0 or not issuers:
            return self._failed("canopy-centre keys gen", rc, out, stop)
        return issuers if await self._connected(stop) else None

    async def _add_users(self) -> None:
        """The demo users with one-time passwords, through the centre's own API: what
        ``canopy-centre users add NAME --role R --site S [--scope K:V] --password-stdin`` does, in this process
        (three more interpreters would double the set-up time on a small machine)."""
        from centre.people import audit, passwords, users
        from centre.people.roles import Grant, parse_scope
        from centre.store.engine import create_engine

        engine = create_engine(f"sqlite:///{self.database}")
        try:
            for u in USERS:
                pw = passwords.one_time_password()
                grants = [Grant(u.role, u.site, *parse_scope(u.scope))] if u.scope else [Grant(u.role, u.site)]
                await users.add_user(engine, u.name, await passwords.hash_password(pw), grants)  # must change at login
                await audit.record(engine, actor="cli:demo", action="users.add", outcome="ok", target=u.name,
                                   site=u.site, detail={"grants": [str(g) for g in grants]})
                self.passwords[u.name] = pw
        finally:
            await engine.dispose()

    async def _keys_gen(self, site_id: str) -> tuple[int, str]:
        return await self._cli("keys", "gen", "--site", site_id)  # keys_dir of centre.yaml: keys/ beside it

    def _failed(self, what: str, rc: int, out: str, stop: asyncio.Event) -> None:
        if not stop.is_set():
            last = (out.strip().splitlines() or [""])[-1][:200]
            self.problem = f"{what} exited with code {rc}: {last} (see {self.workdir / 'centre-setup.log'})"
        return None

    async def _connected(self, stop: asyncio.Event, timeout: float = 20.0) -> bool:
        """True once ``canopy-centre run`` has its ingest connected to the broker (read from /metrics)."""
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            if self.proc.returncode is not None:
                self.problem = f"canopy-centre run exited with code {self.proc.returncode} (see {self.log})"
                return False
            await self.poll()
            if self.figures.get("connects", 0) >= 1:
                return True
            await asyncio.sleep(0.2)
        if not stop.is_set():
            self.problem = f"the centre did not connect to the broker within {timeout:.0f} s (see {self.log})"
        return False

    async def poll(self) -> None:
        """Read the centre's /metrics into :attr:`figures` (stored, connects, online, alerts_open, waiting)."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                r = await http.get(self.url + "metrics")
        except httpx.HTTPError:
            return
        if r.status_code != 200:
            return
        f = {"alerts_open": 0.0, "waiting": 0.0, "online": 0.0}
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                if s.name == "canopy_centre_ingest_total" and s.labels.get("what") in ("stored", "connects"):
                    f[s.labels["what"]] = s.value
                elif s.name == "canopy_centre_gateways" and s.labels.get("status") == "online":
                    f["online"] = s.value
                elif s.name == "canopy_centre_alerts_open":
                    f["alerts_open"] += s.value
                elif s.name == "canopy_centre_commands_pending":
                    f["waiting"] += s.value
        self.figures = f

    def line(self) -> str:
        """The centre's line in the live view."""
        if self.problem:
            return f"centre: {self.problem}"
        f = self.figures
        return (f"centre {self.url} · stored {int(f.get('stored', 0))} records · gateways online {int(f.get('online', 0))}"
                f" · open alerts {int(f.get('alerts_open', 0))} · acks/commands waiting {int(f.get('waiting', 0))}")

    def start_watching(self, period: float = 2.0) -> None:
        """Keep :attr:`figures` fresh for the live view (until :meth:`finish`)."""
        async def watch() -> None:
            while True:
                await self.poll()
                await asyncio.sleep(period)

        if self.proc is not None and self.problem is None:
            self._watcher = asyncio.create_task(watch(), name="demo-centre-view")

    def announce(self) -> list[str]:
        """The console URL and the demo logins, as lines for the screen."""
        lines = [f"centre: console {self.url} (API {self.url}api, log {self.log.relative_to(ROOT)}); demo logins "
                 "(one-time passwords: each must be changed at the first login):"]
        width = max(len(u.name) for u in USERS)
        lines += [f"  {u.name:<{width}}  {self.passwords.get(u.name, '?')}  ({u.what})" for u in USERS]
        return lines

    async def finish(self, readings_seen: int, interrupted: bool, group_interrupted: bool = False) -> tuple[bool, str]:
        """Stop the centre once it has taken what the broker still had; (ok, what it stored, in words).

        Run to the end, it must hold every reading the view received.  After a Ctrl-C, which reached
        it at the same moment as the gateway, what it had committed by then is all that is asked."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self.proc is not None and self.proc.returncode is None:
            await self._settle()
        rc = await self.stop(group_interrupted)
        stored = await self.stored() if rc is not None else None
        if self.problem or stored is None:
            return False, f"centre: {self.problem or 'not started'}"
        text = (f"centre exited with code {rc}; its store holds {stored.readings} readings (the view received "
                f"{readings_seen}), {stored.events} event and alarm records, {stored.alerts} alerts")
        ok = rc in ((0, 130) if interrupted else (0,)) and (interrupted or stored.readings == readings_seen)
        return ok, text

    async def _settle(self, timeout: float = 3.0) -> None:
        """Wait until the centre's stored count stops moving (it may still be reading the broker's last messages)."""
        deadline = time.monotonic() + timeout
        await self.poll()
        while time.monotonic() < deadline:
            before = self.figures.get("stored")
            await asyncio.sleep(0.3)
            await self.poll()
            if self.figures.get("stored") == before:
                return

    async def stop(self, group_interrupted: bool = False) -> int | None:
        """SIGTERM (after a terminal's Ctrl-C, only if it has not stopped by itself within 10 s); its exit code,
        None if it never ran.  A SIGTERM sent while it is already exiting from Ctrl-C would kill it mid-exit."""
        if self.proc is None:
            return None
        if group_interrupted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), 10)
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            return await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return -9

    async def stored(self) -> Stored | None:
        """Rows in the centre's store, read once the centre has stopped (None if it has no store)."""
        def count() -> Stored:
            with closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
                n = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("telemetry", "records", "alerts")]
            return Stored(*n)

        if not self.database.exists():
            return None
        try:
            return await asyncio.to_thread(count)
        except sqlite3.Error:
            return None


async def start_centre(console, site: str, site_id: str, workdir: Path, broker, stop: asyncio.Event
                       ) -> tuple[DemoCentre, dict | None]:
    """The demo's centre set up and running on ``broker`` (an EmbeddedBroker); and the gateway's ``commands:``
    (the centre's issuer for ``site_id`` and what it may act on), None when the centre is not there."""
    console.print(f"centre: setting up in {workdir.relative_to(ROOT)} (canopy-centre db upgrade, keys gen, demo users) "
                  "and starting it…", markup=False, soft_wrap=True)
    centre = DemoCentre(workdir, broker.host, broker.port, broker.protocol)
    issuers = await centre.start(site_id, stop)
    if centre.problem:
        console.print(f"centre: {centre.problem}", style="red", markup=False, soft_wrap=True)
    centre.start_watching()
    return centre, ({"issuers": issuers, **ACTUATORS[site]} if issuers else None)
