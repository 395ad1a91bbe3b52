"""Re-timing after a wall-clock step. Pure.

    retimer = Retimer(threshold_ms=1000)
    d = retimer.observe(("pi-1", "1a2b3c4d"), seq=7, t=..., mono=...)
    d.t, d.t_orig          # the time to store (t_orig: the device's own t when re-timed, else None)
    d.step                 # the run's new offset when its clock stepped, else None:
                           # re-time every reading of that run still on the device

A run's readings carry `mono` (ms on the sensor's monotonic clock since the run started),
so within one run `t - mono` (the offset) is constant while the wall clock runs freely.
When the reading with the highest seq so far shows an offset that differs by more than
`threshold_ms`, the wall clock stepped (typically NTP syncing after a boot without
network): the new offset is taken as the truth for the whole run. A reading older than the
newest one seen (a resend) with a stale offset is re-timed as it arrives. Slow drift (NTP
slewing) moves the offset below the threshold and is followed silently. A backwards step
is the same: identity is (device, run, seq), so nothing is reordered or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional


@dataclass(frozen=True)
class Decision:
    t: int
    t_orig: Optional[int] = None
    step: Optional[int] = None


def retimed(t: int, mono: int, offset: int, t_orig: Optional[int] = None) -> tuple[int, int]:
    """(new t, t_orig) of a reading re-timed with `offset`; the first original t is kept."""
    return mono + offset, (t if t_orig is None else t_orig)


class Retimer:
    def __init__(self, threshold_ms: int = 1000) -> None:
        self.threshold_ms = threshold_ms
        self._runs: dict[Hashable, list[int]] = {}      # key -> [offset, highest seq]

    def load(self, key: Hashable, offset: int, max_seq: int) -> None:
        self._runs[key] = [offset, max_seq]

    def state(self, key: Hashable) -> Optional[tuple[int, int]]:
        """(offset, highest seq) of a run, or None if never seen."""
        entry = self._runs.get(key)
        return (entry[0], entry[1]) if entry else None

    def forget(self, key: Hashable) -> None:
        self._runs.pop(key, None)

    def observe(self, key: Hashable, seq: int, t: int, mono: int) -> Decision:
        offset = t - mono
        entry = self._runs.get(key)
        if entry is None:
            self._runs[key] = [offset, seq]
            return Decision(t)
        current, highest = entry
        stale = abs(offset - current) > self.threshold_ms
        if seq > highest:
            entry[0], entry[1] = offset, seq
            return Decision(t, step=offset if stale else None)
        if stale:
            new_t, t_orig = retimed(t, mono, current)
            return Decision(new_t, t_orig)
        return Decision(t)
