"""Helpers shared by the benches: CPU pinning, a throw-away mosquitto, a Modbus farm
in its own process, a minimal paho-on-asyncio client, and machine/RSS facts.

Everything listens on 127.0.0.1 only.  Child processes are pinned to the core(s)
the measured process does not use, and are always stopped by their owner
(``with`` blocks / ``stop()`` in a ``finally``).

Run as a script, it is the N-device Modbus simulator entry point::

    python bench/common.py modbus-sim --devices 200 --endpoints 8
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MEASURED_CPU = 0


# -- CPUs -----------------------------------------------------------------------
def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def pin_self(cpu: int = MEASURED_CPU) -> bool:
    """Pin the calling process (and threads it starts later) to one core."""
    try:
        os.sched_setaffinity(0, {cpu})
        return True
    except (AttributeError, OSError):
        return False


def other_cpus(measured: int = MEASURED_CPU) -> set[int]:
    n = os.cpu_count() or 1
    rest = {c for c in range(n) if c != measured}
    return rest or {measured}


def pin_pid(pid: int, cpu_set: set[int]) -> None:
    try:
        os.sched_setaffinity(pid, cpu_set)
    except (AttributeError, OSError):
        pass


def pin_child_preexec(cpu_set: set[int]):
    """A preexec_fn pinning the child before exec (use only before threads exist)."""
    def _pin() -> None:
        try:
            os.sched_setaffinity(0, cpu_set)
        except (AttributeError, OSError):
            pass
    return _pin


def proc_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process (all its threads) from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_busy_ticks() -> dict[int, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat, to see who else used our cores."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    out[int(name[3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    except OSError:
        pass
    return out


def busy_pct(a: dict, b: dict) -> dict[int, float]:
    return {c: round(100 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]), 1) for c in a if c in b}


# -- facts -------------------------------------------------------------------------
def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor() or platform.machine(),
            "arch": platform.machine(), "python": platform.python_version()}


def rss_mb() -> dict:
    """Peak (getrusage) and current (VmRSS) resident set of this process, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    current = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {"peak": round(peak, 1), "current": round(current, 1) if current is not None else None}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not listening on {port} after {timeout}s") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Stop one child we started (by its own handle, never by name)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# -- mosquitto --------------------------------------------------------------------
class Broker:
    """A fresh mosquitto on a free loopback port, no persistence, pinned off the measured core."""

    def __init__(self, workdir: Path, cpu_set: set[int] | None = None):
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(self.exe):
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.workdir = Path(workdir)
        self.port = free_port()
        self.cpu_set = cpu_set if cpu_set is not None else other_cpus()
        self.conf = self.workdir / f"mosquitto-{self.port}.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_queued_messages 1000000", "max_queued_bytes 0", "max_inflight_messages 0",
                 "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = self.workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=pin_child_preexec(self.cpu_set))
        wait_listening(self.port, self.proc, what="mosquitto")
        return self

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- Modbus farm in its own process ---------------------------------------------------
class ModbusFarm:
    """``python bench/common.py modbus-sim`` as a child process: N soil probes on E endpoints."""

    def __init__(self, devices: int, endpoints: int, cpu_set: set[int] | None = None, speed: float = 1.0):
        self.devices = devices
        self.endpoints = endpoints
        self.speed = speed
        self.cpu_set = cpu_set if cpu_set is not None else other_cpus()
        self.proc: subprocess.Popen | None = None
        self.layout: list[dict] = []  # [{"port": p, "units": [..]}]

    def start(self, timeout: float = 20.0) -> "ModbusFarm":
        cmd = [sys.executable, str(Path(__file__).resolve()), "modbus-sim", "--devices", str(self.devices),
               "--endpoints", str(self.endpoints), "--speed", str(self.speed)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
                                     preexec_fn=pin_child_preexec(self.cpu_set))
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # the hello line (blocks until the servers are up)
        if not line or time.monotonic() > deadline:
            stop_process(self.proc)
            raise RuntimeError("modbus simulator did not start")
        self.layout = json.loads(line)["endpoints"]
        for ep in self.layout:
            wait_listening(ep["port"], self.proc, what="modbus simulator")
        return self

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def split_units(devices: int, endpoints: int) -> list[list[int]]:
    """Devices 1..N dealt onto endpoints as evenly as possible (unit ids 1..247 per endpoint)."""
    endpoints = max(1, min(endpoints, devices))
    per = -(-devices // endpoints)
    if per > 247:
        raise ValueError(f"{devices} devices on {endpoints} endpoint(s) exceeds 247 units per endpoint")
    out = [[] for _ in range(endpoints)]
    for i in range(devices):
        out[i // per].append(len(out[i // per]) + 1)
    return [u for u in out if u]


async def _serve_farm(devices: int, endpoints: int, speed: float) -> None:
    import random

    from gateway.config.load import load_profile
    from simulator.clock import SimClock
    from simulator.modbus_tcp import ModbusTcpSimulator, SimulatedDevice
    from simulator.physics import SoilProbe, WeatherStation

    profile = load_profile(ROOT / "config" / "profiles" / "soil_probe.yaml")
    clock = SimClock(speed)
    weather = WeatherStation(clock, 10)
    sims = []
    n = 0
    for e, units in enumerate(split_units(devices, endpoints)):
        devs = []
        for unit in units:
            n += 1
            devs.append(SimulatedDevice(f"soil-{n}", unit, profile,
                                        SoilProbe(clock, 1000 + n, lambda t: False, weather.rain_rate)))
        sims.append(ModbusTcpSimulator(devs, host="127.0.0.1", port=0))
    for s in sims:
        await s.start()
    hello = {"endpoints": [{"port": s.port, "units": [d.unit for d in s.devices]} for s in sims]}
    print(json.dumps(hello), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    random.seed(1)
    try:
        await stop.wait()
    finally:
        for s in sims:
            await s.stop()


# -- paho on asyncio, minimal (for hand-written baselines) ----------------------------
class LoopPaho:
    """The smallest paho-on-asyncio glue: reader/writer callbacks, misc every second."""

    def __init__(self, client, loop: asyncio.AbstractEventLoop):
        self.client = client
        self.loop = loop
        self._misc: asyncio.Task | None = None
        client.on_socket_open = self._open
        client.on_socket_close = self._close
        client.on_socket_register_write = lambda c, u, s: loop.add_writer(s, c.loop_write)
        client.on_socket_unregister_write = lambda c, u, s: loop.remove_writer(s)

    def _open(self, client, userdata, sock) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.add_reader(sock, client.loop_read)
        self._misc = self.loop.create_task(self._misc_loop())

    def _close(self, client, userdata, sock) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)
        if self._misc:
            self._misc.cancel()

    async def _misc_loop(self) -> None:
        import paho.mqtt.client as mqtt

        while self.client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1.0)

    async def connect(self, host: str, port: int, timeout: float = 5.0) -> None:
        connected = self.loop.create_future()
        prev = self.client.on_connect

        def on_connect(c, u, f, rc, p):
            if not connected.done():
                connected.set_result(rc)
            if prev:
                prev(c, u, f, rc, p)

        self.client.on_connect = on_connect
        self.client.connect(host, port, 30)  # loopback: blocking connect is instant
        rc = await asyncio.wait_for(connected, timeout)
        if rc.is_failure:
            raise ConnectionError(str(rc))

    def close(self) -> None:
        try:
            self.client.disconnect()
            self.client.loop_read()
        except Exception:
            pass
        sock = self.client.socket()
        if sock is not None:
            try:
                self._close(self.client, None, sock)
            except (ValueError, OSError):
                pass
            sock.close()


# -- additions for bench/backlog.py (slow link, percentiles, RSS sampling) ------------
def baseline_client(client_id: str, inflight: int, pending: dict, acked_ranges: list, st: dict, wake, loop):
    """The benches' hand-written baseline publisher: plain paho on the loop, QoS 1.

    ``pending`` maps mid -> (first seq, last seq, count); on PUBACK the range
    goes to ``acked_ranges`` (for the caller's DELETE) and ``st["acked"]`` grows.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)

    def on_publish(c, u, mid, rc, props):
        entry = pending.pop(mid, None)
        if entry is not None:
            acked_ranges.append((entry[0], entry[1]))
            st["acked"] += entry[2]
            wake.set()

    client.on_publish = on_publish
    return client, LoopPaho(client, loop)


def current_rss_bytes(pid: int | None = None) -> int:
    """Resident set of a process now (VmRSS), in bytes; 0 if unknown."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a list; None for an empty list."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[k]


class NetFault:
    """``python -m simulator.netfault`` as a child process pinned off the measured core.

    Sits between a client and ``127.0.0.1:target_port``; faults are switched by
    writing the CLI's stdin commands (``throttle 1000000``, ``pass``, ...).
    """

    def __init__(self, target_port: int, cpu_set: set[int] | None = None):
        self.target_port = target_port
        self.cpu_set = cpu_set if cpu_set is not None else other_cpus()
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self, timeout: float = 10.0) -> "NetFault":
        self.proc = subprocess.Popen([sys.executable, "-m", "simulator.netfault", "--target", f"127.0.0.1:{self.target_port}"],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     preexec_fn=pin_child_preexec(self.cpu_set))
        hello = self._readline(timeout)
        try:
            self.port = int(json.loads(hello)["port"])
        except (ValueError, KeyError, TypeError):
            self.stop()
            raise RuntimeError(f"netfault did not start: {hello!r}") from None
        wait_listening(self.port, self.proc, what="netfault")
        return self

    def _readline(self, timeout: float) -> str:
        import select

        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError("netfault did not answer")
        return self.proc.stdout.readline().strip()

    def command(self, line: str, timeout: float = 5.0) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.strip() + "\n")
        self.proc.stdin.flush()
        reply = self._readline(timeout)
        if reply.startswith("error"):
            raise RuntimeError(f"netfault {line!r}: {reply}")
        return reply

    def throttle(self, bytes_per_s: int) -> None:
        self.command(f"throttle {int(bytes_per_s)}")

    def passthrough(self) -> None:
        self.command("pass")

    def stats(self) -> dict:
        return json.loads(self.command("stats"))

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(3)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        stop_process(proc)
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def __enter__(self) -> "NetFault":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="bench/common.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sim = sub.add_parser("modbus-sim", help="serve N soil probes on E Modbus TCP endpoints (127.0.0.1)")
    sim.add_argument("--devices", type=int, default=200)
    sim.add_argument("--endpoints", type=int, default=8)
    sim.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.cmd == "modbus-sim":
        asyncio.run(_serve_farm(args.devices, args.endpoints, args.speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
