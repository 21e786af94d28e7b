"""The daemon process: signals, systemd supervision, one line and exit 1 when it cannot start.

``Gateway`` (gateway/runtime.py) is the wiring; this is its life as a process, which ``canopy run`` runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading

from gateway.config.site import LoadedConfig
from gateway.runtime import Gateway, StartError, StartOptions

log = logging.getLogger("canopy")


async def run_gateway(cfg: LoadedConfig, options: StartOptions | None = None) -> int:
    """The daemon's life: 0 after a clean stop, 1 when it cannot start (said in one line) or cannot stop in time.

    Under systemd the supervisor (gateway/ops/supervisor.py) sends keep-alives from the start, READY=1 once
    polling and the outbox are up, and STOPPING=1 at the end; outside systemd it does nothing.
    """
    from gateway.ops.supervisor import Supervisor, WriterProgress

    gw = Gateway(cfg, options=options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = Supervisor(loop, gw.state, WriterProgress.of(gw.outbox))
    supervisor.start()
    try:
        await gw.start()
    except Exception as exc:
        reason = str(exc) if isinstance(exc, StartError) else f"{type(exc).__name__}: {exc}"
        log.error("cannot start: %s", reason, exc_info=log.isEnabledFor(logging.DEBUG) and not isinstance(exc, StartError))
        _quiet_thread_fallout()
        await supervisor.stop()
        try:
            await asyncio.wait_for(gw.stop(), timeout=4.5)
        except Exception as stop_exc:  # half-built: whatever stop trips over is fallout of the same failure
            log.debug("stop after a failed start: %r", stop_exc)
        return 1
    supervisor.ready()
    _freeze_startup_heap()
    await stop.wait()
    log.info("shutting down")
    await supervisor.stop()
    try:
        await asyncio.wait_for(gw.stop(), timeout=4.5)
    except asyncio.TimeoutError:
        log.error("shutdown took longer than 4.5 s; exiting anyway (committed data is safe)")
        return 1
    return 0


def _freeze_startup_heap() -> None:
    """Move what start-up built (modules, config models, profiles: ~60k objects) out of the collector's sight.

    A full collection walks every tracked object: ~25 ms for those alone on this VM, more on a Pi, and it
    runs whenever enough young objects survive, e.g. under a junk flood -- an alarm decided at that
    moment waited for it (the flood bench's tail).  ``gc.freeze`` (CPython's documented remedy) leaves
    them alive and uncollected; what is allocated afterwards is collected as before."""
    gc.collect()
    gc.freeze()


def _quiet_thread_fallout() -> None:
    """After a failed start, worker threads may trip over the closing loop (aiosqlite's connect failure path posts
    to it late): their tracebacks would bury the one line that says why.  Logged at debug level instead."""
    def hook(args: threading.ExceptHookArgs) -> None:
        log.debug("after the failed start, thread %s: %s: %s", getattr(args.thread, "name", "?"),
                  args.exc_type.__name__, args.exc_value)

    threading.excepthook = hook
