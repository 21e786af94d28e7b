"""Times shown to people: always the date, the time and the zone, never a bare ``15:42``.

A farmer reading "programs paused until 12:07" on a phone in another time zone,
or the next morning, cannot tell which 12:07 it was.  Every text a person reads
(alert lines, command results, control records) formats its times here.
"""

from __future__ import annotations

from datetime import datetime, tzinfo


def fmt_time(ts: float, tz: tzinfo | None = None, lang: str = "en") -> str:
    """``2026-12-06 15:42:07 UTC+08:00 (Asia/Shanghai)``: date, time and zone (``tz`` None: the board's)."""
    local = datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts).astimezone()
    off = local.strftime("%z") or "+0000"
    zone = f"UTC{off[:3]}:{off[3:]}"
    name = getattr(tz, "key", None)
    if lang.startswith("zh"):
        return f"{local:%Y-%m-%d %H:%M:%S}（{name}，{zone}）" if name else f"{local:%Y-%m-%d %H:%M:%S}（{zone}）"
    return f"{local:%Y-%m-%d %H:%M:%S} {zone}" + (f" ({name})" if name else "")
