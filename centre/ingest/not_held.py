"""What a gateway's ``replay.result`` says it no longer holds, and a gap cut along it.

A ``partial`` answer (docs/protocol.md#replay) names the seqs of a lane that are gone for
good -- pruned from retention, expired or thinned: everything below ``oldest_kept``, the
runs of ``missing_runs`` (the lowest 32), the whole epoch for ``unknown_epoch``.  Asking
again will never bring them, so the gap tracker records that part of a gap as
``unrepairable`` at once instead of waiting ``ingest.gap_give_up_after``.  The answer lands
in ``commands`` (kind ``replay``, ``results.py``) on whichever instance ingested it; the
leader's tracker reads it from there.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from centre.store import schema

Run = tuple[int, int]
EVERYTHING = (1, 2**62)  # an epoch the gateway does not have: nothing of it is held
PREFIX = "replay-"  # a replay request's id: replay-{gap id}-{ms}


def gone_runs(rec: dict, lane: str, epoch: str) -> list[Run]:
    """The seqs of ``lane``/``epoch`` a replay.result says are no longer held, merged; [] when it says none."""
    if rec.get("type") != "replay.result" or rec.get("status") != "partial":
        return []
    if rec.get("lane") != lane or rec.get("epoch") != epoch:
        return []
    if rec.get("reason") == "unknown_epoch":
        return [EVERYTHING]
    runs: list[Run] = []
    kept = rec.get("oldest_kept")
    if _seq(kept) and kept > 1:
        runs.append((1, kept - 1))
    for pair in rec.get("missing_runs") or ():
        if isinstance(pair, list) and len(pair) == 2 and _seq(pair[0]) and _seq(pair[1]) and pair[0] <= pair[1]:
            runs.append((pair[0], pair[1]))
    return merge(runs)


def merge(runs: list[Run]) -> list[Run]:
    """Sorted, overlapping or touching runs joined."""
    out: list[Run] = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def cut(first: int, last: int, gone: list[Run]) -> list[tuple[int, int, bool]]:
    """``first..last`` in consecutive pieces ``(a, b, is_gone)`` along the merged ``gone`` runs.  Pure."""
    pieces, at = [], first
    for a, b in gone:
        a, b = max(a, first), min(b, last)
        if a > b:
            continue
        if a > at:
            pieces.append((at, a - 1, False))
        pieces.append((a, b, True))
        at = b + 1
    if at <= last:
        pieces.append((at, last, False))
    return pieces


def touches(first: int, last: int, gone: list[Run]) -> bool:
    return any(a <= last and b >= first for a, b in gone)


async def replay_answers(conn, site: str, gateway: str, gap_ids: list[int], seen: Iterable[str] = ()
                         ) -> list[tuple[str, dict]]:
    """(id, result record) of every answered replay request for these gaps (ids ``replay-{gap}-{ms}``,
    centre/acting/replay.py) -- by id, not by time: a gateway's clock may be anything -- but those in ``seen``
    (read by an earlier scan: their results are not read again)."""
    c = schema.commands.c
    q = sa.select(c.id, c.result).where(c.kind == "replay", c.site == site, c.gateway == gateway,
                                        c.result_at.is_not(None),
                                        sa.or_(*(c.id.like(f"{PREFIX}{g}-%") for g in gap_ids)))
    if seen:
        q = q.where(c.id.not_in(sorted(seen)))
    return [(r.id, r.result) for r in await conn.execute(q) if isinstance(r.result, dict)]


def _seq(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1
