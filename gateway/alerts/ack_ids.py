"""The ids of signed acks already received, so a replay is refused ``replayed``.  Pure.

Each id (``issuer/id``) is remembered until its envelope's ``expires_at`` plus the
clock skew: after that the envelope is refused ``expired`` anyway, so remembering it
longer would add nothing.  The ids are kept *durably*, in the alert state file with
the alerts they changed (one atomic write): the broker's session re-delivers acks
queued while the gateway was away, and a restart must still recognise one it
already acted on.  Bounded: beyond MAX_IDS the ids that expire first are dropped
(an ack past its alert's acknowledgement changes nothing anyway).
"""

from __future__ import annotations

MAX_IDS = 10_000


class SeenAcks:
    def __init__(self):
        self.until: dict[str, float] = {}

    def load(self, saved: dict) -> None:
        """The ids of the state file (entries that do not parse are left out)."""
        for key, t in saved.items():
            if isinstance(key, str) and isinstance(t, (int, float)) and not isinstance(t, bool):
                self.until[key] = float(t)

    def __len__(self) -> int:
        return len(self.until)

    def fresh(self, key: str, until: float, now: float) -> bool:
        """True (and remembered until ``until``) the first time ``key`` is seen within its validity."""
        known = self.until.get(key)
        if known is not None and known >= now:
            return False
        self.until[key] = until
        if len(self.until) > MAX_IDS:
            self._trim(now)
        return True

    def _trim(self, now: float) -> None:
        self.until = {k: t for k, t in self.until.items() if t >= now}
        while len(self.until) > MAX_IDS:
            self.until.pop(min(self.until, key=self.until.__getitem__))

    def dump(self, now: float) -> dict[str, float]:
        """What is still worth keeping, for the state file."""
        return {k: round(t, 3) for k, t in self.until.items() if t >= now}
