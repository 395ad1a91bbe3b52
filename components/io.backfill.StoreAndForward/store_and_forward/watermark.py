"""The acknowledgement watermark of one run. Pure.

    mark = Watermark()                 # nothing stored yet: acked == -1
    mark.add(0); mark.add(2)           # True: new; acked == 0 (1 is missing)
    mark.add(1)                        # acked == 2
    mark.add(1)                        # False: a duplicate (at or below the watermark)
    mark.give_up_below(10)             # the sensor holds nothing below 10 any more:
                                       # 3..9 are given up (returns 7), acked == 9
    Watermark.from_state(mark.state()) # what the store persists per run

`acked` is the highest seq up to which every reading of the run is resolved: durably
stored, dead-lettered, rejected, or given up by the sensor (its `held_from` says it holds
nothing below). Seqs stored above a gap are kept as sorted, disjoint [lo, hi] ranges.
"""

from __future__ import annotations

import bisect
from typing import Optional

MIN_INTERVAL_MS = 100          # the sensor's shortest interval_s (0.1 s): at most one seq per 100 ms of mono
MAX_HELD = 1_000_000           # the sensor's largest max_unacked
SEQ_SLACK = 16


def implausible(reading: dict) -> Optional[str]:
    """Why a reading that passed its contract cannot be what a sensor sent, or None. One
    message must not move a run's watermark: `held_from` is the lowest seq the sensor
    still holds (so at most `seq`, and within MAX_HELD of it), and a run counts its seqs
    from the start of its `mono`, one per interval at most."""
    seq, mono, held_from = reading["seq"], reading["mono"], reading.get("held_from")
    if seq > mono // MIN_INTERVAL_MS + SEQ_SLACK:
        return f"seq {seq} at mono {mono} ms: more than one reading per {MIN_INTERVAL_MS} ms since the run began"
    if held_from is not None and held_from > seq:
        return f"held_from {held_from} above seq {seq}"
    if held_from is not None and seq - held_from >= MAX_HELD:
        return f"held_from {held_from}: {seq - held_from} readings below seq {seq}, more than a sensor holds"
    return None


class Watermark:
    def __init__(self, acked: int = -1, above: list | None = None) -> None:
        self.acked = acked
        self._ranges: list[list[int]] = [list(r) for r in (above or [])]

    @classmethod
    def from_state(cls, state: dict) -> "Watermark":
        return cls(int(state.get("acked", -1)), state.get("above") or [])

    def state(self) -> dict:
        return {"acked": self.acked, "above": [list(r) for r in self._ranges]}

    def copy(self) -> "Watermark":
        return Watermark(self.acked, self._ranges)

    @property
    def above(self) -> list[list[int]]:
        return [list(r) for r in self._ranges]

    def has(self, seq: int) -> bool:
        """Resolved already (at or below the watermark, or stored above a gap)."""
        if seq <= self.acked:
            return True
        i = bisect.bisect_right(self._ranges, [seq, float("inf")]) - 1
        return i >= 0 and self._ranges[i][0] <= seq <= self._ranges[i][1]

    def add(self, seq: int) -> bool:
        """Record `seq` as resolved; False if it already was."""
        if self.has(seq):
            return False
        i = bisect.bisect_left(self._ranges, [seq, seq])
        self._ranges.insert(i, [seq, seq])
        self._merge_around(i)
        self._advance()
        return True

    def give_up_below(self, held_from: int) -> int:
        """Everything below `held_from` is resolved; returns how many seqs in the gap were
        never stored (the sensor gave them up)."""
        top = held_from - 1
        if top <= self.acked:
            return 0
        stored = 0
        kept = []
        for lo, hi in self._ranges:
            if hi <= top:
                stored += hi - lo + 1
            elif lo <= top:
                stored += top - lo + 1
                kept.append([top + 1, hi])
            else:
                kept.append([lo, hi])
        gap = top - self.acked - stored
        self.acked, self._ranges = top, kept
        self._advance()
        return gap

    def _merge_around(self, i: int) -> None:
        if i + 1 < len(self._ranges) and self._ranges[i][1] + 1 >= self._ranges[i + 1][0]:
            self._ranges[i][1] = max(self._ranges[i][1], self._ranges.pop(i + 1)[1])
        if i > 0 and self._ranges[i - 1][1] + 1 >= self._ranges[i][0]:
            self._ranges[i - 1][1] = max(self._ranges[i - 1][1], self._ranges.pop(i)[1])

    def _advance(self) -> None:
        while self._ranges and self._ranges[0][0] <= self.acked + 1:
            self.acked = max(self.acked, self._ranges.pop(0)[1])
