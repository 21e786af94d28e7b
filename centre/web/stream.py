"""The live stream (SSE at ``/api/stream``): the hub's changes that the user may see, heartbeats, bounded.

Events (``event:`` name, ``data:`` JSON):

- ``hello`` once: ``{user, channels, heartbeat}``;
- ``alert``, ``gateway``, ``reading``, ``command``, ``gap``: a committed change (the hub's data),
  only those in the user's scope (:func:`visible`);
- ``resync``: changes were lost for this stream (it fell behind, or the link between
  instances broke): re-read what is shown;
- ``heartbeat`` every ``heartbeat`` seconds: ``{ts}`` -- a page that hears nothing for two
  heartbeats shows "connection lost";
- ``session_ended``: the session was ended or expired; the stream closes.

Each stream has two bounded hub queues: readings in one, everything else in the other,
served first -- a flood of readings never pushes an alert out.  A user may hold
``per_user`` streams and an instance ``total``; past that the answer is 429.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterable

from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from centre.hub import Change, Hub, Subscription
from centre.people import sessions
from centre.people.roles import VIEW_ALERTS, VIEW_COMMANDS, VIEW_GAPS, VIEW_GATEWAYS, VIEW_READINGS, allowed
from centre.web.api.alerts import alert_target
from centre.web.auth import Caller, CurrentUser, refuse

router = APIRouter(tags=["live stream"])

CHANNEL_ACTIONS = {"alert": VIEW_ALERTS, "gateway": VIEW_GATEWAYS, "reading": VIEW_READINGS,
                   "command": VIEW_COMMANDS, "gap": VIEW_GAPS}
RESYNC = "resync"  # published locally by the cross-instance bridge when its link broke: sent to every stream
_ids = itertools.count(1)


def visible(caller: Caller, change: Change) -> bool:
    """Whether this user may see this change (the same rules as the API's lists)."""
    d = change.data
    if change.channel == RESYNC:
        return True
    action = CHANNEL_ACTIONS.get(change.channel)
    if action is None or not isinstance(d, dict):
        return False
    if change.channel == "alert":
        return allowed(caller.grants, action, **alert_target(d)) is None
    if change.channel == "command" and d.get("on_behalf_of") == caller.username:
        return True
    return allowed(caller.grants, action, site=d.get("site"), site_level=True) is None


class Feed:
    """Two hub subscriptions read as one, the non-reading one first."""

    def __init__(self, hub: Hub, channels: set[str]):
        first = sorted((channels - {"reading"}) | {RESYNC})
        self.subs: list[Subscription] = [hub.subscribe(first)] + ([hub.subscribe(["reading"])] if "reading" in channels else [])
        self.hub = hub
        self._gets: dict[Subscription, asyncio.Task] = {}

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.subs)

    async def next(self, timeout: float) -> Change | None:
        for sub in self.subs:
            task = self._gets.get(sub)
            if task is not None and task.done():
                del self._gets[sub]
                return task.result()
            if task is None and not sub.queue.empty():
                return sub.queue.get_nowait()
        for sub in self.subs:
            if sub not in self._gets:
                self._gets[sub] = asyncio.ensure_future(sub.get())
        done, _ = await asyncio.wait(self._gets.values(), timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
        for sub in self.subs:
            task = self._gets.get(sub)
            if task is not None and task in done:
                del self._gets[sub]
                return task.result()
        return None

    def close(self) -> None:
        for task in self._gets.values():
            task.cancel()
        for sub in self.subs:
            self.hub.unsubscribe(sub)


async def stream_slot(caller: CurrentUser) -> Caller:
    """Refuse a stream over the per-user or per-instance limit (before the response starts)."""
    web, limits = caller.web, caller.web.streams
    if web.open_streams[caller.username] >= limits.per_user:
        raise await refuse(web, status=429, actor=caller.username, action="stream", ip=caller.ip,
                           detail=f"you have {limits.per_user} live streams open already: close a tab or window")
    if web.streams_open >= limits.total:
        raise await refuse(web, status=503, actor=caller.username, action="stream", ip=caller.ip,
                           detail="this centre instance serves its maximum of live streams: try again shortly")
    return caller


@router.get("/stream", response_class=EventSourceResponse,
            summary="Server-sent events: alert, gateway, reading, command and gap changes in my scope")
async def stream(caller: Caller = Depends(stream_slot),
                 channels: str | None = Query(None, max_length=200,
                                              description="comma-separated subset of alert,gateway,reading,command,gap")
                 ) -> AsyncIterable[ServerSentEvent]:
    wanted = set(CHANNEL_ACTIONS) if not channels else {c.strip() for c in channels.split(",")} & set(CHANNEL_ACTIONS)
    web, heartbeat = caller.web, caller.web.streams.heartbeat
    feed = Feed(web.hub, wanted)
    web.open_streams[caller.username] += 1
    try:
        yield ServerSentEvent(event="hello", retry=3000,
                              data={"user": caller.username, "channels": sorted(wanted), "heartbeat": heartbeat})
        dropped, next_beat = 0, time.monotonic() + heartbeat
        while not web.closing.is_set():
            change = await feed.next(min(next_beat - time.monotonic(), 1.0))
            if feed.dropped != dropped:
                dropped = feed.dropped
                yield ServerSentEvent(event=RESYNC, data={"reason": "this stream fell behind", "dropped": dropped})
            if change is not None and visible(caller, change):
                yield ServerSentEvent(event=change.channel, data=change.data, id=str(next(_ids)))
            if time.monotonic() >= next_beat:
                if await sessions.lookup_id(web.engine, caller.session.id, web.people) is None:
                    yield ServerSentEvent(event="session_ended", data={"detail": "your session has ended: log in again"})
                    return
                yield ServerSentEvent(event="heartbeat", data={"ts": time.time()})
                next_beat = time.monotonic() + heartbeat
    finally:
        feed.close()
        web.open_streams[caller.username] -= 1
        if web.open_streams[caller.username] <= 0:
            del web.open_streams[caller.username]
