"""An embedded MQTT broker for demos and first steps, on loopback only.

Used when the site config names no broker, and by ``python -m simulator demo``.
mosquitto (a child process, MQTT 5) when it is installed, else amqtt in-process
(the `broker` extra), which speaks MQTT 3.1.1 only: :data:`MQTT311_LOSES` says
what that costs.  Never for production: it has no authentication and listens on
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile

log = logging.getLogger("canopy.broker")

PROTOCOL = {"mosquitto": "5", "amqtt": "3.1.1"}  # the MQTT version each embedded broker speaks
# What a site gives up on an MQTT 3.1.1 broker (docs/protocol.md#mqtt-311-amqtt-and-old-brokers).
MQTT311_LOSES = (
    "no shared subscriptions ($share/…): only one centre consumer can take the data",
    "no Maximum Packet Size: the broker may send anything, and each oversized packet costs a reconnect",
    "no session expiry: commands and acks sent while the gateway is offline are lost",
    "no reason codes: refusals show only in logs",
)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def preferred_kind() -> str:
    """mosquitto when installed (unless CANOPY_EMBEDDED_BROKER=amqtt asks otherwise), else amqtt."""
    if os.environ.get("CANOPY_EMBEDDED_BROKER") == "amqtt" or mosquitto_path() is None:
        return "amqtt"
    return "mosquitto"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the embedded broker listens on loopback only")
        self.host = host
        self.port = port or free_port(host)
        self.kind = preferred_kind()
        self._proc: asyncio.subprocess.Process | None = None
        self._amqtt = None
        self._dir: tempfile.TemporaryDirectory | None = None

    async def start(self) -> None:
        with socket.socket() as probe:
            try:
                probe.bind((self.host, self.port))
            except OSError:
                raise RuntimeError(f"embedded broker: port {self.host}:{self.port} is already in use "
                                   "(set CANOPY_EMBEDDED_BROKER_PORT, or configure `broker:` to use that broker)") from None
        exe = mosquitto_path() if self.kind == "mosquitto" else None
        if exe:
            self._dir = tempfile.TemporaryDirectory(prefix="canopy-broker-")
            conf = os.path.join(self._dir.name, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 100000\nmax_inflight_messages 0\nset_tcp_nodelay true\n")
                if os.geteuid() == 0:
                    f.write("user root\n")
            # Its own session: a terminal's Ctrl-C does not reach it, so whoever started it
            # (the gateway, or the demo) lets the gateway say `offline` through it before stop().
            self._proc = await asyncio.create_subprocess_exec(exe, "-c", conf, stdout=asyncio.subprocess.DEVNULL,
                                                              stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            self.kind = "mosquitto"
        else:
            try:
                from amqtt.broker import Broker
            except ImportError:
                raise RuntimeError("no broker configured, and neither mosquitto nor amqtt (pip install 'canopy-gateway[broker]') is available") from None
            self._amqtt = Broker({"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}})
            await self._amqtt.start()
            self.kind = "amqtt"
        if self._proc is not None:
            await self._wait_ready()  # amqtt is listening once start() returned
        log.info("embedded %s broker (MQTT %s) on %s:%d (loopback only, no authentication: demo use)",
                 self.kind, self.protocol, self.host, self.port)
        if self.protocol != "5":
            log.warning("the embedded broker speaks MQTT 3.1.1 only (install mosquitto for MQTT 5); this loses: %s",
                        "; ".join(MQTT311_LOSES))

    @property
    def protocol(self) -> str:
        """The MQTT version to speak to it: "5" (mosquitto) or "3.1.1" (amqtt)."""
        return PROTOCOL[self.kind]

    def broker_section(self) -> dict:
        """The site config's ``broker:`` for this broker (plain TCP on loopback, its MQTT version)."""
        return {"host": self.host, "port": self.port, "protocol": self.protocol}

    async def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                _, w = await asyncio.open_connection(self.host, self.port)
                w.close()
                return
            except OSError:
                if self._proc is not None and self._proc.returncode is not None:
                    raise RuntimeError(f"mosquitto exited with code {self._proc.returncode}")
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"embedded broker did not start on port {self.port}")
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            try:
                self._proc.terminate()
                await asyncio.wait_for(self._proc.wait(), 5)
            except ProcessLookupError:  # it exited already (killed from outside)
                pass
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._amqtt is not None:
            await self._amqtt.shutdown()
        if self._dir is not None:
            self._dir.cleanup()
