"""``…/config`` in the daemon: check, validate, hand over to the applier -- and publish what the applier did.

``on_config`` (sync, for every message on ``…/config``) only queues the payload
(at most ``QUEUE``; beyond that it is dropped and counted).  One worker takes
them one at a time; the checks (parse and signature of up to 256 KiB) and the
validation (the site loader) run in a thread, so the event loop never waits
for them.  The answers are ``config.result`` records on ``…/cmd/result``
(docs/protocol.md#config), each committed to the outbox:

- ``rejected`` with a ``reason`` (``invalid_config``: ``detail`` holds the
  problems, one ``site.yaml:LINE: key: message`` per line).  A message that is
  not authentic, or authentic but stale (expired, replayed, another gateway's),
  is answered only within a budget (``ANSWERS_BURST``, then one a minute) --
  anyone who can publish on ``…/config`` can send those at will -- and counted;
- ``accepted`` once the envelope is handed to the applier (``handover``);
- ``applied`` or ``failed`` (reason ``rolled_back``), which the applier decides
  after the restart and leaves as a result file; the relay publishes it from the
  daemon that runs the config the result names, then deletes the file.
- ``applied`` at once when the bundle is the config already running.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.backoff import RateLimitedLog
from core.records import event_body
from gateway.commands.gate import TokenBucket
from gateway.config.meta import config_version
from gateway.config.site import LoadedConfig
from gateway.remote_config.bundle import Invalid, check, header
from gateway.remote_config.handover import Handover, entry_name
from gateway.remote_config.seen import SeenIds
from gateway.remote_config.trust import Trust, Verdict, size_ok

log = logging.getLogger("canopy.remote_config")

QUEUE = 4  # configs come a few a day; a flood only fills this
RELAY_INTERVAL = 1.0  # how often the applier's results folder is looked at
STALE_RESULT_AGE = 300.0  # a result for another config is published anyway after this long
ANSWERS_BURST, ANSWERS_PER_S = 5.0, 1 / 60
RESULT_TOPIC = "cmd/result"
RESULT_FIELDS = ("id", "issuer", "on_behalf_of", "status", "reason", "problem", "detail", "config", "previous")

Emit = Callable[[str, bytes, str | None], Awaitable[object]]


class RemoteConfig:
    def __init__(self, cfg: LoadedConfig, clock, emit: Emit, *, state_dir: str | Path):
        self.cfg = cfg
        self.clock = clock
        self.emit = emit
        self.trust = Trust.of(cfg)
        self.version = config_version(cfg)  # the meta version now running
        self.workdir = Path(state_dir)
        self.handover = Handover(self.workdir / "updates")
        self.seen = SeenIds(self.workdir / "config-ids.json")
        self.inbox: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.counters: dict = {"received": 0, "dropped": 0, "accepted": 0, "applied": 0, "failed": 0, "relayed": 0,
                               "rejected": {}, "junk": {}, "errors": 0}
        self.answers = TokenBucket(ANSWERS_PER_S, ANSWERS_BURST, ANSWERS_BURST, clock.monotonic())
        self.ratelog = RateLimitedLog(log)

    @property
    def takes_configs(self) -> bool:
        """Only a site naming an issuer that may configure subscribes to ``…/config`` (and announces ``config``)."""
        return bool(self.trust.keys)

    def on_config(self, topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        if not size_ok(payload) or len(self.inbox) >= QUEUE:
            self.counters["dropped"] += 1
            self.ratelog("dropped", "remote config: a message of %d bytes on %s dropped unanswered (%s)", len(payload), topic,
                         "too large" if not size_ok(payload) else f"{QUEUE} waiting already")
            return
        self.inbox.append(bytes(payload))
        self._ready.set()

    async def run(self) -> None:
        """The worker (when the site takes configs) and the relay of the applier's results (always)."""
        jobs = [self._relay()] + ([self._work()] if self.takes_configs else [])
        await asyncio.gather(*jobs)

    async def _work(self) -> None:
        while True:
            while not self.inbox:
                self._ready.clear()
                await self._ready.wait()
            try:
                await self.handle(self.inbox.popleft())
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counters["errors"] += 1
                log.exception("remote config: handling a message failed")

    async def handle(self, payload: bytes) -> None:
        """One message, from the checks to the answer (and the hand-over)."""
        now = self.clock.time()
        verdict = await asyncio.to_thread(self.trust.check, payload, now)
        if verdict.reason is None and await asyncio.to_thread(self.seen.has, self._key(verdict), now):
            verdict = Verdict(verdict.info, verdict.env, reason="replayed", detail=f"config {verdict.env.id} was already received")
        if verdict.reason is not None:
            return await self._refuse(verdict)
        await self._take(verdict, payload, now)

    async def _take(self, v: Verdict, payload: bytes, now: float) -> None:
        env, info = v.env, v.info
        if not await asyncio.to_thread(self.handover.exists):
            return await self._answer(info, "rejected", reason="no_applier", detail=f"{self.handover.folder} does not exist: "
                                      "remote configuration needs the applier unit (install with scripts/install.sh)")
        if await asyncio.to_thread(self.handover.busy):
            return await self._answer(info, "rejected", reason="busy",
                                      detail="another config is being applied; send this one again once its result has come")
        head = header(issuer=env.issuer, envelope_id=env.id, sha256=v.bundle.sha256, issued_at=env.issued_at,
                      on_behalf_of=env.on_behalf_of)
        try:
            checked = await asyncio.to_thread(check, v.bundle, self.cfg, head, self.workdir)
        except Invalid as exc:
            return await self._answer(info, "rejected", reason="invalid_config", detail="\n".join(exc.problems))
        try:
            await asyncio.to_thread(self.seen.remember, self._key(v), env.expires_at + self.trust.skew, now)
        except OSError as exc:
            return await self._answer(info, "rejected", reason="store_error", detail=f"cannot record the envelope id: {exc}")
        if checked.version == self.version:
            return await self._answer(info, "applied", detail="this config is already running", previous=self.version)
        await self._answer(info, "accepted", detail=f"handed to the applier: {checked.version} replaces {self.version} "
                                                    "once it passes the health gate")
        try:
            await asyncio.to_thread(self.handover.submit, entry_name(env.issuer, env.id, now), payload)
        except OSError as exc:
            await self._answer(info, "failed", reason="handover_failed", detail=f"cannot hand the config to the applier: {exc}")
            return
        log.info("remote config %s from %s handed to the applier (%s -> %s)", env.id, env.issuer, self.version, checked.version)

    @staticmethod
    def _key(v: Verdict) -> str:
        return f"{v.env.issuer}/{v.env.id}"

    async def _refuse(self, v: Verdict) -> None:
        if v.budgeted and not self.answers.take(self.clock.monotonic()):
            junk = self.counters["junk"]
            junk[v.reason] = junk.get(v.reason, 0) + 1
            self.ratelog(v.reason, "remote config refused unanswered: %s (%s)", v.reason, v.detail)
            return
        log.warning("remote config %s from %s rejected: %s (%s)", v.info.get("id"), v.info.get("issuer"), v.reason,
                    v.detail.splitlines()[0] if v.detail else "")
        await self._answer(v.info, "rejected", reason=v.reason, problem=v.problem, detail=v.detail)

    async def _answer(self, info: dict, status: str, **fields) -> None:
        if status == "rejected":
            rejected = self.counters["rejected"]
            rejected[fields["reason"]] = rejected.get(fields["reason"], 0) + 1
        else:
            self.counters[status] += 1
        await self._publish(self.clock.time(), {"id": info.get("id"), "issuer": info.get("issuer"),
                                                "on_behalf_of": info.get("on_behalf_of"), "status": status,
                                                "config": self.version, **fields})

    async def _publish(self, ts: float, fields: dict) -> bool:
        body = {k: fields.get(k) for k in RESULT_FIELDS if fields.get(k) is not None or k in ("id", "issuer")}
        try:
            await self.emit("event", event_body(ts, "config.result", **body), RESULT_TOPIC)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["errors"] += 1
            self.ratelog("emit", "remote config: a result could not be stored: %s", exc)
            return False

    # -- the applier's results ------------------------------------------------------------------
    async def _relay(self) -> None:
        while True:
            try:
                await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["errors"] += 1
                self.ratelog("relay", "remote config: reading the applier's results failed: %s", exc)
            await self.clock.sleep(RELAY_INTERVAL)

    async def relay_once(self) -> int:
        """Publish every result the applier left for the config running now; returns how many went out."""
        sent = 0
        for path, fields in await asyncio.to_thread(self.handover.results):
            if fields is None:
                log.error("remote config: %s is not a result; removed", path)
            else:
                ts = float(fields.get("ts") or self.clock.time())
                if fields.get("config") not in (None, self.version) and self.clock.time() - ts < STALE_RESULT_AGE:
                    continue  # for the config the restart is about to run: that daemon publishes it
                if not await self._publish(ts, fields):
                    return sent  # the outbox could not take it: the file stays for the next round
                sent += 1
                self.counters["relayed"] += 1
                log.info("remote config %s: %s%s", fields.get("id"), fields.get("status"),
                         f" ({fields['reason']})" if fields.get("reason") else "")
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return sent

    def snapshot(self) -> dict:
        """For the status file: who may configure, the version running, the counters."""
        return {"issuers": sorted(self.trust.keys), "version": self.version, "counters": self.counters}
