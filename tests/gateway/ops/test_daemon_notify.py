"""The real daemon under a fake systemd: READY=1 once polling, WATCHDOG=1 keep-alives, STATUS lines, STOPPING=1.

Needs the supervisor wired into gateway/runtime.py (docs/operations.md#watchdog);
skipped until it is.
"""

from __future__ import annotations



from tests.gateway.ops.fakes import NotifyListener
from tests.support import GatewayProcess, site_config, wait_until


def test_daemon_notifies_ready_keepalives_status_and_stopping(tmp_path, farm_sim, broker):
    listener = NotifyListener()
    config = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = GatewayProcess(config, env={"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "2000000"}).start()
    try:
        wait_until(listener.ready, 15, what="READY=1")
        wait_until(lambda: len(listener.lines("WATCHDOG=1")) >= 3, 10, what="three keep-alives")
        wait_until(lambda: any("7 devices ok" in m and "broker connected" in m for _, m in listener.lines("STATUS=")), 10,
                   what="a STATUS line with the devices and the broker")
        rc, _ = gw.terminate()
        assert rc == 0
        assert listener.lines("STOPPING=1")
        assert len(listener.lines("READY=1")) == 1
    finally:
        gw.close()
        listener.close()
