"""``/health`` and ``/metrics`` (Prometheus text): the only endpoints that answer without a login.

Neither reveals people's data.  Metrics are read from the tables (shared by every instance)
and from this instance's ingest counters and streams; the table queries are cached for
:data:`CACHE_S` seconds so a scraper cannot load the database.

- ``canopy_centre_records_per_second``: records with a gateway timestamp in the last minute;
- ``canopy_centre_ingest_lag_seconds``: stored minus gateway time over that minute (mean, max);
- ``canopy_centre_commands_pending{status}``: commands and acks not yet answered (pending, sent);
- ``canopy_centre_database_size_bytes``; open alerts by severity, gaps by state, gateways by status;
- ``canopy_centre_ingest_total{what}``: this instance's ingest counters (stored, duplicates, junk.*, ...);
- ``canopy_centre_streams_open``: this instance's live streams.
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from centre.store import schema
from centre.web.auth import web_of
from centre.web.context import Web

router = APIRouter(tags=["operations"])
CACHE_S = 5.0
WINDOW_S = 60.0


@router.get("/health", summary="Alive and the database answers (no login)")
async def health(request: Request, response: Response) -> dict:
    web = web_of(request)
    try:
        async with web.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        db = "ok"
    except (SQLAlchemyError, OSError) as exc:
        response.status_code = 503
        db = f"unreachable: {type(exc).__name__}"
    return {"status": "ok" if db == "ok" else "degraded", "database": db,
            "uptime_s": round(time.time() - web.started_at, 1)}


@router.get("/metrics", summary="Prometheus metrics (no login)", response_class=Response)
async def metrics(request: Request) -> Response:
    web = web_of(request)
    cache = getattr(request.app.state, "metrics_cache", None)
    if cache is None or time.monotonic() - cache[0] > CACHE_S:
        cache = (time.monotonic(), await table_figures(web))
        request.app.state.metrics_cache = cache
    return Response(generate_latest(_Families(families(web, cache[1]))), media_type=CONTENT_TYPE_LATEST)


class _Families:
    """What prometheus_client's exposition wants: an object whose ``collect()`` yields metric families."""

    def __init__(self, fams):
        self._fams = fams

    def collect(self):
        return self._fams


async def table_figures(web: Web) -> dict:
    now = time.time()
    t, r, c, a, gp, g = (schema.telemetry, schema.records, schema.commands, schema.alerts, schema.gaps,
                         schema.gateways)
    since = now - WINDOW_S
    async with web.engine.connect() as conn:
        tel = (await conn.execute(sa.select(sa.func.count(), sa.func.avg(t.c.received_at - t.c.ts),
                                            sa.func.max(t.c.received_at - t.c.ts)).where(t.c.ts >= since))).one()
        recs = (await conn.execute(sa.select(sa.func.count()).where(r.c.ts >= since))).scalar_one()
        pending = dict((await conn.execute(sa.select(c.c.status, sa.func.count()).where(c.c.status.in_(["pending", "sent"]))
                                           .group_by(c.c.status))).all())
        alerts = dict((await conn.execute(sa.select(sa.func.coalesce(a.c.severity, "none"), sa.func.count())
                                          .where(a.c.status != "resolved").group_by(a.c.severity))).all())
        gaps = dict((await conn.execute(sa.select(gp.c.state, sa.func.count()).group_by(gp.c.state))).all())
        gws = dict((await conn.execute(sa.select(g.c.status, sa.func.count()).group_by(g.c.status))).all())
        size = await _db_size(conn)
    return {"rate": (tel[0] + recs) / WINDOW_S, "lag_mean": tel[1] or 0.0, "lag_max": tel[2] or 0.0,
            "pending": pending, "alerts": alerts, "gaps": gaps, "gateways": gws, "db_size": size}


async def _db_size(conn) -> float:
    if conn.dialect.name == "postgresql":
        return float((await conn.execute(sa.text("SELECT pg_database_size(current_database())"))).scalar_one())
    pages = (await conn.execute(sa.text("PRAGMA page_count"))).scalar_one()
    page = (await conn.execute(sa.text("PRAGMA page_size"))).scalar_one()
    path = conn.engine.url.database
    wal = os.path.getsize(path + "-wal") if path and os.path.exists(path + "-wal") else 0
    return float(pages * page + wal)


def families(web: Web, f: dict) -> list:
    def gauge(name: str, doc: str, value: float | None = None, labels: list[str] | None = None, samples: dict | None = None):
        fam = GaugeMetricFamily(f"canopy_centre_{name}", doc, value=value, labels=labels)
        for key, v in (samples or {}).items():
            fam.add_metric([key] if isinstance(key, str) else list(key), v)
        return fam

    out = [
        gauge("records_per_second", "records (telemetry, events, alarms) with a gateway time in the last minute, per s",
              f["rate"]),
        gauge("ingest_lag_seconds", "stored minus gateway time over the last minute", labels=["stat"],
              samples={"mean": f["lag_mean"], "max": f["lag_max"]}),
        gauge("commands_pending", "commands and acks not answered yet", labels=["status"],
              samples={s: f["pending"].get(s, 0) for s in ("pending", "sent")}),
        gauge("database_size_bytes", "size of the centre's database", f["db_size"]),
        gauge("alerts_open", "alerts not resolved, by severity", labels=["severity"], samples=f["alerts"]),
        gauge("gaps", "sequence gaps by state", labels=["state"], samples=f["gaps"]),
        gauge("gateways", "gateways by status", labels=["status"], samples=f["gateways"]),
        gauge("streams_open", "live streams served by this instance", web.streams_open),
    ]
    ingest = web.components.get("ingest")
    counters = getattr(ingest, "counters", None)
    if counters:
        fam = CounterMetricFamily("canopy_centre_ingest", "this instance's ingest counters", labels=["what"])
        for what, n in sorted(counters.items()):
            fam.add_metric([str(what)], float(n))
        out.append(fam)
    return out
