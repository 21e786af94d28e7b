"""Which seqs of a requested range were sent again, are still pending, are no longer held: the answer's figures.

Pure.  The sender walks the range a window at a time; for each, the outbox
says which seqs are still pending (not delivered yet: they come in the normal
order, nothing to repair) and which acknowledged rows it still retains (sent
again).  Every other seq of the window is gone -- pruned from retention,
expired or dropped unsent, or thinned -- and the centre records that part as
unrepairable, with its size (docs/protocol.md#replay).  Gone seqs are also
kept as runs, the lowest ``MAX_RUNS`` of them, so the answer stays small
however ragged the range (thinned telemetry).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.outbox.retention import Row

MAX_RUNS = 32


@dataclass
class Tally:
    first: int  # the range asked for
    last: int
    top: int | None = None  # the lane's last seq ever given: nothing above it exists (None: unknown epoch)
    sent: int = 0
    first_sent: int | None = None
    last_sent: int | None = None
    pending: int = 0
    missing: int = 0
    runs: list[list[int]] = field(default_factory=list)  # [[a, b], ...]: the lowest runs of gone seqs
    oldest_held: int | None = None  # the lane's lowest seq still on disk when the replay started
    interrupted: str | None = None  # why the replay stopped before the end of the range

    @property
    def end(self) -> int:
        """The last seq worth looking for: the range's end, or the lane's last seq if that is lower."""
        return self.last if self.top is None else min(self.last, self.top)

    def gone(self, a: int, b: int) -> None:
        """Seqs a..b are not held."""
        if a > b:
            return
        self.missing += b - a + 1
        if self.runs and self.runs[-1][1] == a - 1:
            self.runs[-1][1] = b
        elif len(self.runs) < MAX_RUNS:
            self.runs.append([a, b])

    def window(self, lo: int, hi: int, pending: list[int], retained: list[Row]) -> list[Row]:
        """Rows of lo..hi to send again (every retained one); the other seqs counted pending or gone."""
        kept = {row[0] for row in retained}
        waiting = set(pending) - kept  # in both: acknowledged between the two reads, so it is sent
        self.pending += len(waiting)
        expect = lo
        for seq in sorted(kept | waiting):
            self.gone(expect, seq - 1)
            expect = seq + 1
        self.gone(expect, hi)
        return retained

    def sent_rows(self, rows: list[Row]) -> None:
        self.sent += len(rows)
        if rows:
            self.first_sent = rows[0][0] if self.first_sent is None else self.first_sent
            self.last_sent = rows[-1][0]

    @property
    def status(self) -> str:
        return "done" if not self.missing and self.interrupted is None else "partial"

    def describe(self) -> str:
        """One line for people (the answer's ``detail``)."""
        parts = [f"sent again {self.sent} record(s)"
                 + (f" (seqs {self.first_sent}-{self.last_sent})" if self.sent else "")
                 + f" of seqs {self.first}-{self.last}"]
        if self.pending:
            parts.append(f"{self.pending} not delivered yet (they follow in order)")
        if self.missing:
            runs = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in self.runs)
            more = ", …" if sum(b - a + 1 for a, b in self.runs) < self.missing else ""
            parts.append(f"{self.missing} no longer held: {runs}{more}")
        if self.top is not None and self.last > self.top:
            parts.append(f"none above {self.top} was ever given")
        if self.interrupted:
            parts.append(f"stopped early: {self.interrupted}")
        return "; ".join(parts)
