"""Chaos bench: ≥ 500 random fault cycles against the real daemon, one JSON line out.

    python bench/chaos.py [--cycles 500] [--seed 1]

Prints {"bench": "chaos", "cycles", "lost", "duplicated", "out_of_order",
"reconciled", ...}.  Same engine as tests/integration/test_chaos.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.chaos import run_chaos  # noqa: E402
from tests.conftest import SimThread  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--site", choices=["farm", "community"], default="community",
                    help="community: smoke alarms raised by a rule during the chaos")
    args = ap.parse_args()
    sim = SimThread(args.site, speed=0)
    try:
        with tempfile.TemporaryDirectory(prefix="canopy-chaos-") as d:
            result = run_chaos(Path(d), sim, cycles=args.cycles, seed=args.seed, site=args.site,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        sim.stop()
    print(json.dumps(result.as_json()))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
