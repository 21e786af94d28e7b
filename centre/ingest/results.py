"""What the gateway answered -> the commands table: results of commands, acks, config and replay envelopes.

A row only moves *up* in rank (schema.COMMAND_STATUSES): an ``accepted`` arriving after
``executed`` (two lanes, replays, several instances) changes nothing, and the gateway's
answer overrides the centre's own ``expired``.  A result for an id the centre never
issued (a command from ``canopy remote``) gets a row of its own, so everything acted
on a site is in one place.
"""

from __future__ import annotations

from centre.store import schema
from centre.store.engine import insert

RANK = schema.COMMAND_STATUSES
_STATUS = {  # record type -> field holding the outcome, and how it maps onto COMMAND_STATUSES
    "cmd.result": ("status", {"rejected": "rejected", "accepted": "accepted", "executed": "executed", "failed": "failed"}),
    "cmd.audit": ("outcome", {"rejected": "rejected", "executed": "executed", "failed": "failed"}),
    "config.result": ("status", {"rejected": "rejected", "accepted": "accepted", "applied": "executed", "failed": "failed"}),
    "replay.result": ("status", {"rejected": "rejected", "done": "executed", "partial": "executed"}),
}
_KIND = {"cmd.result": "command", "cmd.audit": "command", "config.result": "config", "replay.result": "replay"}
TYPES = frozenset(_STATUS) | {"alert.acknowledged", "alert.resolved", "alert.ack_rejected"}


def result_row(site: str, gateway: str, rec: dict) -> dict | None:
    """The commands row a result record implies, or None when it names no envelope id."""
    t = rec["type"]
    if t in ("alert.acknowledged", "alert.resolved"):  # the ack (``ack``: its envelope id) took effect
        cid, kind, status = rec.get("ack"), "ack", "executed"
        issuer, person = rec.get("issuer"), rec.get("by") or rec.get("acked_by")
        action, target = ("acknowledge" if t == "alert.acknowledged" else "resolve"), rec.get("alert")
    elif t == "alert.ack_rejected":
        if rec.get("reason") == "replayed":  # a re-sent copy of an ack the gateway already has: its first answer counts
            return None
        cid, kind, status = rec.get("id"), "ack", "rejected"
        issuer, person, action, target = None, rec.get("by"), None, rec.get("alert")
    elif t in _STATUS:
        field, mapping = _STATUS[t]
        cid, kind, status = rec.get("id"), _KIND[t], mapping.get(rec.get(field))
        issuer, person, action, target = rec.get("issuer"), rec.get("on_behalf_of"), rec.get("action"), rec.get("target")
    else:
        return None
    if not isinstance(cid, str) or not cid or status is None:
        return None
    return {"id": cid[:128], "kind": kind, "site": site, "gateway": gateway, "issuer": _s(issuer, 128),
            "on_behalf_of": _s(person, 128), "action": _s(action, 64), "target": _s(target, 128),
            "created_at": float(rec["ts"]), "status": status, "rank": RANK[status], "reason": _s(rec.get("reason"), 64),
            "detail": _s(rec.get("detail"), 4000), "result_at": float(rec["ts"]), "result": rec}


def highest(rows: list[dict]) -> list[dict]:
    """One row per id (a statement may touch a row once): the highest rank, the later result on a tie."""
    best: dict[str, dict] = {}
    for r in rows:
        cur = best.get(r["id"])
        if cur is None or (r["rank"], r["result_at"]) > (cur["rank"], cur["result_at"]):
            best[r["id"]] = r
    return [best[k] for k in sorted(best)]


async def upsert(conn, rows: list[dict]) -> list[dict]:
    """Insert or move up; returns the rows that changed (for the hub)."""
    if not rows:
        return []
    rows = highest(rows)
    c = schema.commands.c
    stmt = insert(schema.commands, conn.dialect.name)
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"status": ex.status, "rank": ex.rank, "reason": ex.reason, "detail": ex.detail,
              "result_at": ex.result_at, "result": ex.result},
        where=c.rank < ex.rank,
    ).returning(c.id, c.status, c.reason, c.site, c.gateway, c.kind)
    res = await conn.execute(stmt, rows)
    # plain str keys: on PostgreSQL RETURNING names are sqlalchemy ``quoted_name`` (a str subclass orjson refuses,
    # so the web bridge's NOTIFY of this change failed and took the instance down)
    return [{str(k): v for k, v in r._mapping.items()} for r in res]


def _s(v, n: int) -> str | None:
    return v[:n] if isinstance(v, str) else None
