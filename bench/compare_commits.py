"""Run benches of two commits alternately in one sitting and compare their medians.

A refactoring must not cost speed.  Absolute figures drift with whatever else the two
cores are doing, so each bench reports a ratio against a baseline measured in the same
run, and this script alternates the two commits (A B A B …) so a slow minute hits both.
It checks out each commit into a temporary git worktree, runs each bench there with
that tree first on PYTHONPATH, keeps the bench's last JSON line, and prints one JSON
line: per metric the median of each commit and ``after / before``.

    .venv/bin/python bench/compare_commits.py 2b6c7a7 HEAD --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# bench -> (arguments, {metric name: path into its last JSON line})
BENCHES: dict[str, tuple[list[str], dict[str, tuple]]] = {
    "ingest": (["bench/ingest.py", "--seconds", "5", "--interval", "0.04", "--json-only"], {"ingest_ratio": ("ratio",)}),
    "backlog": (["bench/backlog.py", "--phases", "drain", "--json-only"], {"backlog_drain_ratio": ("drain_ratio",)}),
    "rtu_bus": (["bench/rtu_bus.py", "--quick"], {"rtu_min_ratio_healthy": ("min_ratio_healthy",)}),
}


def _pick(obj: dict, path: tuple):
    for key in path:
        obj = obj[key]
    return obj


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the bench's output")


def run_bench(tree: Path, name: str, timeout: float) -> dict[str, float]:
    args, metrics = BENCHES[name]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 1):  # rtu_bus exits 1 when a target is missed: still a measurement
        raise RuntimeError(f"{name} in {tree} exited {proc.returncode}: {proc.stderr[-800:]}")
    line = _last_json(proc.stdout)
    return {metric: float(_pick(line, path)) for metric, path in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--benches", default=",".join(BENCHES))
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one bench run may take")
    args = p.parse_args(argv)
    names = args.benches.split(",")
    with tempfile.TemporaryDirectory(prefix="canopy-compare-") as tmp:
        trees = {}
        for label, rev in (("before", args.before), ("after", args.after)):
            tree = Path(tmp) / label
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
            art = ROOT / ".artifacts"
            if art.exists() and not (tree / ".artifacts").exists():
                (tree / ".artifacts").symlink_to(art)
            trees[label] = tree
        results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
        t0 = time.monotonic()
        try:
            for i in range(args.runs):
                for name in names:
                    order = ("before", "after") if i % 2 == 0 else ("after", "before")
                    for label in order:
                        got = run_bench(trees[label], name, args.timeout)
                        for metric, value in got.items():
                            results[label].setdefault(metric, []).append(value)
                        print(f"run {i + 1} {name} {label}: {got}", file=sys.stderr, flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    out: dict = {"bench": "compare_commits", "before": args.before, "after": args.after, "runs": args.runs, "metrics": {}}
    worst = 0.0
    for metric in results["before"]:
        b, a = statistics.median(results["before"][metric]), statistics.median(results["after"][metric])
        change = a / b if b else float("nan")
        worst = max(worst, abs(change - 1))
        out["metrics"][metric] = {"before_median": round(b, 4), "after_median": round(a, 4), "after_over_before": round(change, 4),
                                  "before_runs": results["before"][metric], "after_runs": results["after"][metric]}
    out["max_abs_change"] = round(worst, 4)
    out["within_5pct"] = worst <= 0.05
    out["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0 if out["within_5pct"] else 1


if __name__ == "__main__":
    sys.exit(main())
