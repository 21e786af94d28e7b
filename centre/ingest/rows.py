"""Records -> table rows, and fresh readings -> hourly rollup deltas: pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600


def telemetry_row(site: str, gateway: str, epoch: str, rec: dict, now: float) -> dict:
    """A reading as a telemetry row: numbers (and bools as 1/0) in ``value``, strings in ``text``."""
    v = rec.get("value")
    tv = type(v)
    value = text = None
    if tv is float or tv is int:  # JSON numbers; a huge int or an overflowing float has no float value
        value = float(v) if -1e300 < v < 1e300 else None
    elif tv is bool:
        value, text = (1.0 if v else 0.0), ("true" if v else "false")
    elif tv is str:
        text = v[:256]
    invalid = rec.get("invalid")
    unit = rec.get("unit")
    return {"site": site, "gateway": gateway, "epoch": epoch, "seq": rec["seq"], "ts": float(rec["ts"]),
            "device": rec["device"], "point": rec["point"], "value": value, "text": text,
            "invalid": invalid[:8] if type(invalid) is str else None,
            "unit": unit[:32] if type(unit) is str else None, "received_at": now}


def record_row(site: str, gateway: str, epoch: str, lane: str, topic: str, rec: dict, now: float) -> dict:
    return {"site": site, "gateway": gateway, "epoch": epoch, "lane": lane, "seq": rec["seq"], "ts": float(rec["ts"]),
            "type": rec["type"], "topic": topic[:128], "body": rec, "received_at": now}


@dataclass(slots=True)
class Rollup:
    """One hour of one point, as a delta to add to telemetry_hourly."""

    count: int
    total: float
    min: float
    max: float
    unit: str | None


def rollup(rows: list[dict]) -> dict[tuple, Rollup]:
    """(site, gateway, device, point, hour) -> the delta of these fresh rows.  Numbers only: bools,
    strings and invalid readings have no mean."""
    out: dict[tuple, Rollup] = {}
    for r in rows:
        v = r["value"]
        if v is None or r["text"] is not None:
            continue
        key = (r["site"], r["gateway"], r["device"], r["point"], int(r["ts"] // HOUR) * HOUR)
        agg = out.get(key)
        if agg is None:
            out[key] = Rollup(1, v, v, v, r["unit"])
        else:
            agg.count += 1
            agg.total += v
            if v < agg.min:
                agg.min = v
            if v > agg.max:
                agg.max = v
    return out


def latest_readings(rows: list[dict], limit: int = 200) -> dict[tuple[str, str], list[dict]]:
    """(site, gateway) -> the newest reading of each (device, point) among fresh rows, for live views."""
    newest: dict[tuple, dict] = {}
    for r in rows:
        k = (r["site"], r["gateway"], r["device"], r["point"])
        if k not in newest or r["ts"] >= newest[k]["ts"]:
            newest[k] = r
    out: dict[tuple[str, str], list[dict]] = {}
    for (site, gw, device, point), r in newest.items():
        lst = out.setdefault((site, gw), [])
        if len(lst) < limit:
            value = r["text"] if r["text"] is not None and r["text"] not in ("true", "false") else r["value"]
            if r["text"] in ("true", "false"):
                value = r["text"] == "true"
            lst.append({"device": device, "point": point, "ts": r["ts"], "value": value, "unit": r["unit"]})
    return out
