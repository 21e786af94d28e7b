"""The web component: uvicorn in-process on the configured address, the cross-instance bridge, housekeeping.

``run(centre)`` is found by ``centre.service`` (COMPONENTS) and runs until cancelled.  It
listens on ``http.host:http.port`` (loopback by default), with HTTPS when ``http.tls_cert``
and ``http.tls_key`` are given, and refuses a non-loopback address without TLS unless
``http.allow_plain_http`` says a TLS-terminating proxy is in front: otherwise passwords and
session cookies would cross the network in clear, and browsers allow the duty desk's
notifications only on a secure origin.  The server does not take the process's signals:
the centre stops it by cancelling this task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import uvicorn

from centre.people import sessions, throttle
from centre.people.config import PeopleConfig
from centre.web.app import create_app
from centre.web.bind import plain_http_problem
from centre.web.bridge import Bridge
from centre.web import selfsigned
from centre.web.context import Web
from core.yamlsrc import ConfigError, Problem

log = logging.getLogger("centre.web")
HOUSEKEEPING_S = 600.0
KEEP_ENDED_SESSIONS_S = 7 * 86400.0


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is a clear error, not uvicorn's exit()."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise ConfigError([Problem("centre.yaml", None, "http", f"cannot listen on {host}:{port}: {exc.strerror}")]) from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the centre owns SIGTERM/SIGINT and cancels us
        yield


def check_http(http) -> None:
    if bool(http.tls_cert) != bool(http.tls_key):
        raise ConfigError([Problem("centre.yaml", None, "http", "tls_cert and tls_key go together")])
    tls = bool(http.tls_cert)
    problem = plain_http_problem(http.host, tls=tls, allow_plain_http=getattr(http, "allow_plain_http", False))
    if problem:
        raise ConfigError([Problem("centre.yaml", None, "http.host", problem)])
    for key in ("tls_cert", "tls_key"):
        path = getattr(http, key)
        if path and not os.access(path, os.R_OK):
            raise ConfigError([Problem("centre.yaml", None, f"http.{key}", f"cannot read {path}")])


async def run(centre) -> None:
    http = centre.cfg.http
    if http.self_signed:
        http = await asyncio.to_thread(_own_certificate, http)
    check_http(http)
    web = Web(centre.engine, centre.hub, people=getattr(centre.cfg, "people", None) or PeopleConfig(),
              components=centre.components)
    app = create_app(web)
    sock = listen(http.host, http.port)
    web_url = f"{'https' if http.tls_cert else 'http'}://{http.host}:{sock.getsockname()[1]}"
    centre.components["web"] = web
    centre.components["web.url"] = web_url
    server = _Server(uvicorn.Config(app, ssl_certfile=http.tls_cert, ssl_keyfile=http.tls_key, lifespan="off",
                                    log_level="warning", access_log=False, proxy_headers=True,
                                    timeout_graceful_shutdown=3))
    tasks = [asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn"),
             asyncio.create_task(housekeeping(web, centre), name="web.housekeeping")]
    if centre.engine.dialect.name == "postgresql":
        bridge = Bridge(web)
        centre.components["web.bridge"] = bridge
        tasks.append(asyncio.create_task(bridge.run(), name="web.bridge"))
    log.info("console and API at %s/api (health %s/health)", web_url, web_url)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()  # a failed part fails the component (the centre logs it and stops)
        raise RuntimeError("the web server stopped by itself")
    finally:
        web.closing.set()
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(tasks[0]), 5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()


def _own_certificate(http):
    """``self_signed``: the centre's certificate (made once, reused until near its end), its fingerprint logged."""
    cert = selfsigned.ensure(http.tls_dir, selfsigned.names_for(http.host))
    log.warning("HTTPS with the centre's own certificate %s (%s): SHA-256 fingerprint %s -- check it against the "
                "one the browser shows before accepting it", cert.cert, "made now" if cert.made else "reused",
                cert.fingerprint)
    return http.model_copy(update={"tls_cert": cert.cert, "tls_key": cert.key})


async def housekeeping(web: Web, centre) -> None:
    """Forget long-ended sessions and stale throttle rows (idempotent: any instance may do it)."""
    forget = max(web.people.per_user.forget_after, web.people.per_ip.forget_after)
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        if not getattr(centre, "is_leader", lambda job: True)("people.purge"):
            continue
        try:
            now = time.time()
            await sessions.purge(web.engine, older_than=now - KEEP_ENDED_SESSIONS_S)
            await throttle.purge(web.engine, now, forget)
        except Exception:  # the database may be away for a while; the next round tries again
            log.warning("session/throttle purge failed", exc_info=True)
