"""Config envelope ids already taken, on disk: a captured config sent again is refused ``replayed``, restarts included.

An id is kept until its envelope expires (plus the clock skew), so the file
stays small: configs come a few a day.  It is written (atomically, fsync-ed)
before the config is handed over, so no crash can let the same one in twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway.remote_config.handover import write_atomic

MAX_IDS = 512  # beyond this the ones expiring first go (they are refused `expired` anyway)


class SeenIds:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged file: expiry still refuses old envelopes
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}

    def has(self, key: str, now: float) -> bool:
        return self._load().get(key, -1.0) >= now

    def remember(self, key: str, until: float, now: float) -> bool:
        """Record ``key`` (``issuer/id``) until ``until``; False when it was there already (a replay)."""
        ids = {k: v for k, v in self._load().items() if v >= now}
        if key in ids:
            return False
        ids[key] = until
        if len(ids) > MAX_IDS:
            ids = dict(sorted(ids.items(), key=lambda kv: kv[1])[-MAX_IDS:])
        write_atomic(self.path, json.dumps(ids, sort_keys=True).encode())
        return True
