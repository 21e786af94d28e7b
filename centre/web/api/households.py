"""Households and their last signs of life (door, water, power): the duty desk's panel for people living alone.

A person living alone is checked on when nothing in their home has moved for too long.  The
gateway raises the welfare alert itself (an ``inactivity`` rule, docs/alerts.md); this panel
shows the desk *every* household at a glance, before and besides that alert: when the door,
the water and the power were last used, how long ago, and a mark on a household that is quiet
for longer than ``quiet_hours`` or has an open welfare alert.  A household whose gateway is
offline, or whose devices have sent nothing, is marked *blind*: quiet there means nothing.

Where the data comes from: the gateway's ``…/meta`` says which devices are in which household
(``households`` and each device's ``location.household``) and which locks it can open
(``locks``); the telemetry the centre stores says what those devices did (:data:`SIGNS`); the
alerts table says which welfare alerts are open.

Who sees a household: a grant with ``alerts.view`` for its whole site, or for that household
(a welfare alert is made of this activity, so whoever may see the one may see the other).
A group-only grant (volunteers) sees none: the list answers 403, audited.

``POST …/unlock-reason`` records *why* a responder is about to unlock a household's door,
before the desk asks for the unlock itself through the acting API (``POST /api/commands``):
it checks the ``doors.control`` grant for that household and that the lock is in it.
"""

from __future__ import annotations

import time
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from centre.people import audit
from centre.people.roles import DOORS, PERMISSIONS, VIEW_ALERTS, Grant, allowed
from centre.store import schema
from centre.web.auth import Caller, CurrentUser, refuse, require
from centre.web.errors import ApiError

router = APIRouter(tags=["households"])
VIEW = VIEW_ALERTS
KINDS = ("door", "water", "power")
# point -> (kind, how, level): "above" counts a reading above level; "rise" a reading above the previous one
# by more than level (counters; power by 150 W: an appliance switched on, not a fridge's standby noise)
SIGNS: dict[str, tuple[str, str, float]] = {
    "door_open": ("door", "above", 0.5),
    "open_count": ("door", "rise", 0.0),
    "flow_rate": ("water", "above", 0.01),
    "total_volume": ("water", "rise", 0.0),
    "pulse_count": ("water", "rise", 0.0),
    "power": ("power", "rise", 150.0),
}
MAX_WINDOW_S = 7 * 86400
Id = Annotated[str, Path(min_length=1, max_length=64)]
t, g, a = schema.telemetry, schema.gateways, schema.alerts


class SignOut(BaseModel):
    ts: float
    gateway: str
    device: str
    point: str


class HouseholdOut(BaseModel):
    site: str
    household: str
    labels: dict[str, str] = Field(description="what people call the household, by language")
    location: dict[str, str]
    gateways: list[dict] = Field(description="{gateway, status, status_since, reason, last_seen} of its gateways")
    devices: list[dict] = Field(description="{gateway, device, labels, last_heard, first_heard}")
    activity: dict[str, SignOut | None] = Field(description="door, water, power: the last sign of life of each")
    sensors: list[str] = Field(description="the kinds (door, water, power) its devices reported in the window")
    last_activity: float | None
    quiet_for_s: float | None = Field(description="seconds since the last sign of life (None: none in the window)")
    quiet_after_s: float
    window_s: float = Field(description="how far back the centre looked")
    quiet: bool = Field(description="no sign of life for longer than quiet_after_s (and heard for longer than that)")
    watching_since: float | None = Field(None, description="no sign of life yet, but its devices were first heard "
                                                           "less than quiet_after_s ago: too soon to call it quiet")
    blind: bool = Field(description="its gateway is offline or its devices sent nothing: quiet means nothing")
    welfare_alerts: list[dict] = Field(description="open welfare alerts: {gateway, alert, severity, status, raised_at}")
    locks: list[dict] = Field(description="locks the centre may ask to unlock: {gateway, lock, device, labels, relock_after_s}")
    attention: bool = Field(description="quiet, or an open welfare alert")


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gateway: str = Field(min_length=1, max_length=64)
    lock: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=3, max_length=300, description="why the door is opened, in words")

    @field_validator("reason")
    @classmethod
    def _words(cls, v: str) -> str:
        v = " ".join(v.split())
        if len(v) < 3:
            raise ValueError("say in a few words why this door is opened")
        return v


@router.get("/households", response_model=list[HouseholdOut],
            summary="My sites' households with their last door, water and power activity, quiet ones first")
async def households(caller: CurrentUser, site: str | None = Query(None, max_length=64),
                     quiet_hours: float = Query(12.0, gt=0, le=24 * 7,
                                                description="a household with no sign of life for longer is quiet")
                     ) -> list[dict]:
    sites = await _sites(caller, site)
    now, quiet_s = time.time(), quiet_hours * 3600
    window = min(MAX_WINDOW_S, max(2 * quiet_s, 48 * 3600))
    async with caller.web.engine.connect() as conn:
        q = sa.select(g.c.site, g.c.gateway, g.c.status, g.c.status_since, g.c.reason, g.c.last_seen, g.c.meta)
        if sites is not None:
            q = q.where(g.c.site.in_(sorted(sites)))
        homes = _homes(await conn.execute(q.order_by(g.c.site, g.c.gateway)), caller.grants)
        for s in sorted({h["site"] for h in homes.values()}):
            mine = {k: h for k, h in homes.items() if k[0] == s}
            await _fill(conn, s, mine, now - window)
        await _welfare(conn, homes)
    out = [_judge(h, now, quiet_s, window) for h in homes.values()]
    out.sort(key=lambda h: (not h["welfare_alerts"], not h["quiet"], not h["blind"], h["site"], h["household"]))
    return out


@router.post("/households/{site}/{household}/unlock-reason",
             summary="Record why a responder unlocks this household's door (then POST /api/commands unlock)")
async def unlock_reason(site: Id, household: Id, body: ReasonIn, caller: CurrentUser) -> dict:
    target = f"{body.gateway}/{body.lock}"
    await require(caller, DOORS, site=site, household=household, target=f"lock {target} of household {household}")
    async with caller.web.engine.connect() as conn:
        meta = (await conn.execute(sa.select(g.c.meta).where(g.c.site == site, g.c.gateway == body.gateway))).scalar()
    lock = _locks(meta if isinstance(meta, dict) else {}).get(body.lock)
    if lock is None or lock["household"] != household:
        raise ApiError(404, f"gateway {site}/{body.gateway} has no lock {body.lock} in household {household}")
    await audit.record(caller.web.engine, actor=caller.username, action="door.unlock_reason", outcome="ok",
                       target=target, site=site, ip=caller.ip, detail={"household": household, "reason": body.reason})
    return {"ok": True, "site": site, "household": household, "gateway": body.gateway, "lock": body.lock,
            "reason": body.reason}


# ---- who may see what ----------------------------------------------------------------------------------------

def _household_grants(grants: tuple[Grant, ...]) -> list[Grant]:
    return [x for x in grants if VIEW in PERMISSIONS.get(x.role, ()) and x.scope_kind in ("site", "household")]


async def _sites(caller: Caller, site: str | None) -> set[str] | None:
    """The sites to look at (None: every site); 403 (audited) when no grant could show a household there."""
    usable = [x for x in _household_grants(caller.grants) if site is None or x.site in (None, site)]
    if not usable:
        roles = ", ".join(sorted({x.role for x in caller.grants})) or "none"
        where = f" at site {site}" if site else ""
        raise await refuse(caller.web, status=403, actor=caller.username, action=VIEW, ip=caller.ip, site=site,
                           target="households" + (f" of {site}" if site else ""),
                           detail=f"your roles ({roles}) show no household{where}: the households panel needs "
                                  f"{VIEW} for a whole site or a household")
    if site is not None:
        return {site}
    return None if any(x.site is None for x in usable) else {x.site for x in usable}


def _locks(meta: dict) -> dict[str, dict]:
    """lock id -> {device, household, labels} from a gateway's meta."""
    devices = meta.get("devices") if isinstance(meta.get("devices"), dict) else {}
    out = {}
    for lock_id, lock in (meta.get("locks") or {}).items():
        if not isinstance(lock, dict):
            continue
        dev = devices.get(lock.get("device")) or {}
        out[lock_id] = {"device": lock.get("device"), "household": (dev.get("location") or {}).get("household"),
                        "labels": lock.get("labels") or dev.get("labels") or {}, "relock_after_s": lock.get("relock_after_s")}
    return out


# ---- what the store says -------------------------------------------------------------------------------------

def _homes(rows, grants) -> dict[tuple[str, str], dict]:
    """(site, household) -> the household as its gateways' meta describe it, for the households these grants see."""
    homes: dict[tuple[str, str], dict] = {}
    for r in rows:
        meta = r.meta if isinstance(r.meta, dict) else {}
        devices = meta.get("devices") if isinstance(meta.get("devices"), dict) else {}
        given = meta.get("households") if isinstance(meta.get("households"), dict) else {}
        members: dict[str, set[str]] = {h: set(v.get("devices") or []) for h, v in given.items() if isinstance(v, dict)}
        for dev_id, dev in devices.items():
            h = ((dev or {}).get("location") or {}).get("household") if isinstance(dev, dict) else None
            if h:
                members.setdefault(str(h), set()).add(dev_id)
        locks = _locks(meta)
        for h, devs in members.items():
            if allowed(grants, VIEW, site=r.site, household=h) is not None:
                continue
            home = homes.setdefault((r.site, h), {"site": r.site, "household": h, "labels": {}, "location": {},
                                                  "gateways": [], "devices": [], "locks": []})
            info = given.get(h) if isinstance(given.get(h), dict) else {}
            home["labels"] = home["labels"] or dict(info.get("labels") or {})
            home["location"] = home["location"] or _location(info, [devices.get(d) for d in sorted(devs)])
            home["gateways"].append({"gateway": r.gateway, "status": r.status, "status_since": r.status_since,
                                     "reason": r.reason, "last_seen": r.last_seen})
            home["devices"] += [{"gateway": r.gateway, "device": d, "labels": dict((devices.get(d) or {}).get("labels") or {}),
                                 "last_heard": None} for d in sorted(devs)]
            home["locks"] += [{"gateway": r.gateway, "lock": k, "device": v["device"], "labels": v["labels"],
                               "relock_after_s": v["relock_after_s"]} for k, v in sorted(locks.items()) if v["household"] == h]
    return homes


def _location(info: dict, devices: list) -> dict[str, str]:
    loc = info.get("location") if isinstance(info.get("location"), dict) else None
    if loc is None:
        loc = next(((d.get("location") or {}) for d in devices if isinstance(d, dict) and d.get("location")), {})
    return {k: str(loc[k]) for k in ("building", "unit", "grid") if loc.get(k)}


async def _fill(conn, site: str, homes: dict, since: float) -> None:
    """Each device's last reading and each household's last sign of life of each kind, in two queries."""
    pairs = {(d["gateway"], d["device"]) for h in homes.values() for d in h["devices"]}
    if not pairs:
        return
    where = [t.c.site == site, t.c.ts >= since, t.c.gateway.in_(sorted({p[0] for p in pairs})),
             t.c.device.in_(sorted({p[1] for p in pairs}))]
    heard: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], float] = {}
    sensed: dict[tuple[str, str], set[str]] = {}
    for x in await conn.execute(sa.select(t.c.gateway, t.c.device, t.c.point, sa.func.max(t.c.ts).label("ts"),
                                          sa.func.min(t.c.ts).label("first"))
                                .where(*where).group_by(t.c.gateway, t.c.device, t.c.point)):
        heard[(x.gateway, x.device)] = max(x.ts, heard.get((x.gateway, x.device), x.ts))
        first[(x.gateway, x.device)] = min(x.first, first.get((x.gateway, x.device), x.first))
        if x.point in SIGNS:
            sensed.setdefault((x.gateway, x.device), set()).add(SIGNS[x.point][0])
    prev = sa.func.lag(t.c.value).over(partition_by=(t.c.gateway, t.c.device, t.c.point), order_by=(t.c.ts, t.c.seq))
    r = sa.select(t.c.gateway, t.c.device, t.c.point, t.c.ts, t.c.value, prev.label("prev")).where(
        *where, t.c.point.in_(sorted(SIGNS))).subquery()
    sign = sa.or_(*(sa.and_(r.c.point == p, (r.c.value if how == "above" else r.c.value - r.c.prev) > level)
                    for p, (_, how, level) in SIGNS.items()))
    last = {(x.gateway, x.device, x.point): x.ts for x in await conn.execute(
        sa.select(r.c.gateway, r.c.device, r.c.point, sa.func.max(r.c.ts).label("ts")).where(sign)
        .group_by(r.c.gateway, r.c.device, r.c.point))}
    for h in homes.values():
        h["activity"] = dict.fromkeys(KINDS)
        for d in h["devices"]:
            d["last_heard"] = heard.get((d["gateway"], d["device"]))
            d["first_heard"] = first.get((d["gateway"], d["device"]))  # within the window
            h["sensors"] = sorted(set(h.get("sensors", [])) | sensed.get((d["gateway"], d["device"]), set()),
                                  key=KINDS.index)
        mine = {(d["gateway"], d["device"]) for d in h["devices"]}
        for (gw, dev, point), ts in last.items():
            kind = SIGNS[point][0]
            best = h["activity"][kind]
            if (gw, dev) in mine and (best is None or ts > best["ts"]):
                h["activity"][kind] = {"ts": ts, "gateway": gw, "device": dev, "point": point}


async def _welfare(conn, homes: dict) -> None:
    for h in homes.values():
        h["welfare_alerts"] = []
    if not homes:
        return
    household = a.c.location["household"].as_string()
    q = (sa.select(a.c.site, a.c.gateway, a.c.alert, a.c.severity, a.c.status, a.c.raised_at, household.label("household"))
         .where(a.c.site.in_(sorted({k[0] for k in homes})), a.c.status != "resolved", a.c["class"] == "welfare",
                household.in_(sorted({k[1] for k in homes}))).order_by(a.c.raised_at))
    for r in await conn.execute(q):
        if (r.site, r.household) in homes:
            homes[(r.site, r.household)]["welfare_alerts"].append(
                {"gateway": r.gateway, "alert": r.alert, "severity": r.severity, "status": r.status,
                 "raised_at": r.raised_at})


def _judge(h: dict, now: float, quiet_s: float, window: float) -> dict:
    """Last activity, how long ago, quiet (longer than quiet_s), blind (nothing to judge by)."""
    h.setdefault("activity", dict.fromkeys(KINDS))
    h.setdefault("sensors", [])
    times = [s["ts"] for s in h["activity"].values() if s]
    last = max(times) if times else None
    heard = [d["last_heard"] for d in h["devices"] if d["last_heard"] is not None]
    offline = all(x["status"] != "online" for x in h["gateways"])
    blind = offline or not heard or now - max(heard) > quiet_s
    firsts = [d["first_heard"] for d in h["devices"] if d.get("first_heard") is not None]
    # no sign of life is "quiet" only once the centre has heard the home's devices for longer than quiet_s:
    # a centre (or a gateway) that started listening minutes ago cannot say nobody moved for 12 h
    since = min(firsts) if firsts else None
    quiet_for = None if last is None else max(0.0, now - last)
    quiet = quiet_for > quiet_s if quiet_for is not None else (since is None or now - since > quiet_s)
    watching = since if last is None and not quiet else None
    return {**h, "last_activity": last, "quiet_for_s": quiet_for, "quiet_after_s": quiet_s, "window_s": window,
            "quiet": quiet, "blind": blind, "watching_since": watching,
            "attention": quiet or bool(h["welfare_alerts"])}
