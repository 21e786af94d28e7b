"""The gateway's service as the applier sees it: restart it, and ask systemd whether it is READY.

``systemctl restart --no-block``: with ``Type=notify`` a blocking restart would
wait for READY itself, with systemd's timeout instead of the health gate's.
A ``Type=notify`` unit is ``active``/``running`` only after ``READY=1``.
"""

from __future__ import annotations

import subprocess
from typing import Protocol

from gateway.ops.layout import SERVICE


class Service(Protocol):
    def restart(self) -> None: ...

    def ready(self) -> bool: ...


class SystemdService:
    def __init__(self, unit: str = SERVICE, systemctl: str = "systemctl"):
        self.unit = unit
        self.systemctl = systemctl
        self._before: str | None = None  # the invocation that was running when we restarted it

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.systemctl, *args], capture_output=True, text=True, timeout=30)

    def _show(self) -> dict[str, str]:
        done = self._run("show", "--property=ActiveState,SubState,InvocationID", self.unit)
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def restart(self) -> None:
        self._before = self._show().get("InvocationID")
        done = self._run("restart", "--no-block", self.unit)
        if done.returncode != 0:
            raise RuntimeError(f"systemctl restart {self.unit}: {done.stderr.strip() or f'exit {done.returncode}'}")

    def ready(self) -> bool:
        """READY from a *new* invocation: the old process is still active for a moment after a queued restart."""
        props = self._show()
        fresh = self._before is None or props.get("InvocationID") != self._before
        return fresh and props.get("ActiveState") == "active" and props.get("SubState") == "running"

    def enable_now(self) -> str:
        """``daemon-reload`` then ``enable --now`` the service and the applier's path unit; "" or why not."""
        for args in (("daemon-reload",), ("enable", "--now", "canopy-applier.path"), ("enable", "--now", self.unit)):
            try:
                done = self._run(*args)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"systemctl {' '.join(args)}: {exc}"
            if done.returncode != 0:
                return f"systemctl {' '.join(args)}: {done.stderr.strip()}"
        return ""
