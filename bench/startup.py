"""Start-up bench: launch `canopy run` and time the first poll (no cameras).

    python bench/startup.py [--runs 5]

The first reading's own timestamp is the wall time of the first poll, so
"launch -> first poll" needs no instrumentation.  Also reported: launch ->
first reading acknowledged by the broker (includes connect and the first
commit), and the baseline: launch -> `python -c pass` with the same
interpreter (the floor any Python daemon pays).  One JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import SimThread  # noqa: E402
from tests.support import GatewayProcess, Mosquitto, Subscriber, site_config, wait_until  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    first_poll, first_ack, floor = [], [], []
    sim = SimThread("farm", speed=0)
    try:
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="canopy-startup-") as d:
                work = Path(d)
                broker = Mosquitto(work).start()
                sub = Subscriber(broker.port)
                cfg = site_config(work, sim_port=sim.port, broker={"host": "127.0.0.1", "port": broker.port})
                t0 = time.time()
                gw = GatewayProcess(cfg).start()
                try:
                    wait_until(lambda: sub.records("telemetry"), 20, interval=0.005, what="first reading")
                    first_ack.append(time.time() - t0)
                    first_poll.append(min(r["ts"] for r in sub.records("telemetry")) - t0)
                finally:
                    gw.terminate()
                    sub.close()
                    broker.stop()
            t1 = time.time()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            floor.append(time.time() - t1)
            print(f"run {i + 1}: first poll {first_poll[-1]:.3f}s, acknowledged {first_ack[-1]:.3f}s", file=sys.stderr)
    finally:
        sim.stop()
    med = statistics.median
    print(json.dumps({
        "bench": "startup", "runs": args.runs,
        "first_poll_s": {"median": round(med(first_poll), 3), "max": round(max(first_poll), 3)},
        "first_ack_s": {"median": round(med(first_ack), 3), "max": round(max(first_ack), 3)},
        "baseline_python_start_s": round(med(floor), 3),
        "ratio_first_poll_to_python_start": round(med(first_poll) / med(floor), 1),
        "target_first_poll_s": 2.0, "meets_target": max(first_poll) <= 2.0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
