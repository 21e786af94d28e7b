"""≥ 30 random fault cycles against the real daemon: nothing accepted is lost.

bench/chaos.py runs the same engine for ≥ 500 cycles.
"""

from __future__ import annotations

import os

from tests.chaos import run_chaos


def test_chaos_cycles_lose_nothing_and_keep_order(tmp_path, farm_sim):
    cycles = int(os.environ.get("CANOPY_CHAOS_CYCLES", "30"))
    result = run_chaos(tmp_path, farm_sim, cycles=cycles, seed=int(os.environ.get("CANOPY_CHAOS_SEED", "7")))
    summary = result.as_json()
    assert result.cycles >= 30 or cycles < 30
    assert sum(result.faults.values()) == cycles
    assert result.accepted["telemetry"] > 100, summary
    assert not any(result.lost.values()), f"lost records: { {k: v[:10] for k, v in result.lost.items()} } {summary}"
    assert not any(result.out_of_order.values()), summary
    assert result.reconciled, result.counters
    # duplicates only around faults: never more than the faults times one in-flight window of records
    assert sum(result.duplicated.values()) <= sum(result.faults.values()) * 16 * 500, summary
