"""≥ 30 random fault cycles against the real daemon: nothing accepted is lost.

bench/chaos.py runs the same engine for ≥ 500 cycles.
"""

from __future__ import annotations

import os

from tests.chaos import run_chaos


def test_chaos_cycles_lose_nothing_and_keep_order(tmp_path, community_sim):
    """Readings, device events and smoke alarms flow while faults hit the gateway and the broker."""
    cycles = int(os.environ.get("CANOPY_CHAOS_CYCLES", "30"))
    result = run_chaos(tmp_path, community_sim, cycles=cycles, seed=int(os.environ.get("CANOPY_CHAOS_SEED", "7")),
                       site="community")
    summary = result.as_json()
    assert result.cycles >= 30 or cycles < 30
    assert sum(result.faults.values()) == cycles
    assert result.accepted["telemetry"] > 100, summary
    assert result.accepted["alarm"] >= 3, f"the smoke rule should have raised alarms during the chaos: {summary}"
    assert not any(result.lost.values()), f"lost records: { {k: v[:10] for k, v in result.lost.items()} } {summary}"
    assert not any(result.out_of_order.values()), summary
    assert result.reconciled, result.counters
    # duplicates only around faults: never more than the faults times one in-flight window of records
    assert sum(result.duplicated.values()) <= sum(result.faults.values()) * 16 * 500, summary
