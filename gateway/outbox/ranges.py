"""Acknowledged sequence numbers that are not deleted yet.

PUBACKs arrive one message at a time, but rows are deleted only at the next
commit (SD-card wear): until then ``Outbox.fetch`` must skip them, or a
reconnect would send them again.  Kept as sorted, merged closed intervals so
that a long drain costs a handful of entries, not one per record.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class AckedRanges:
    """Sorted, merged closed intervals of acknowledged-but-not-yet-deleted seqs."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def add(self, a: int, b: int) -> None:
        i = bisect.bisect_left(self.ends, a - 1)
        j = bisect.bisect_right(self.starts, b + 1)
        if i < j:
            a = min(a, self.starts[i])
            b = max(b, self.ends[j - 1])
        self.starts[i:j] = [a]
        self.ends[i:j] = [b]

    def covers(self, seq: int) -> bool:
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def items(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))

    def remove(self, done: list[tuple[int, int]]) -> None:
        """Forget ranges whose rows a commit deleted (ranges added since may have merged with them)."""
        for a, b in done:
            i = bisect.bisect_left(self.starts, a)
            if i < len(self.starts) and self.starts[i] == a and self.ends[i] == b:
                del self.starts[i], self.ends[i]
            else:  # merged since: cut [a, b] out of whatever covers it
                k = bisect.bisect_right(self.starts, a) - 1
                if k < 0 or self.ends[k] < a:
                    continue
                s, e = self.starts[k], self.ends[k]
                del self.starts[k], self.ends[k]
                if b < e:
                    self.starts.insert(k, b + 1)
                    self.ends.insert(k, e)
                if s < a:
                    self.starts.insert(k, s)
                    self.ends.insert(k, a - 1)

    def __bool__(self) -> bool:
        return bool(self.starts)
