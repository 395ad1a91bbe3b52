"""Readings published but not yet acknowledged by the store, bounded, in memory. Pure.

    held = Unacked(run="1a2b3c4d", max_unacked=3600, resend_after_ms=5000)
    held.add(reading, now_ms)                 # just published; seqs must ascend
    doc = held.stamp(reading)                 # a copy with "held_from" to publish
    held.ack("1a2b3c4d", 41, now_ms)          # drops every seq <= 41 of this run
    for doc in held.due_for_resend(now_ms):   # the ack has not advanced for resend_after_ms
        publish(held.stamp(doc))              # oldest first

After a restart, `probe(now_ms)` gives the oldest held reading alone: its ack says what the
store already has before anything else is sent again.

A resend goes out in chunks of `resend_chunk` (oldest first): the next chunk follows as
soon as the store has acknowledged the previous one, so a store back from a long outage
is refilled at its own pace, and a dead one gets one chunk every resend_after_ms, not the
whole buffer; while no ack comes the wait doubles after each resend (up to MAX_BACKOFF_MS),
and the first ack that advances resets it.

When full, adding drops the oldest reading and counts it in `given_up`; `held_from` is the
lowest seq still held (None when nothing is), so a reader knows that every seq below it was
acknowledged or given up. Acks of other runs are ignored.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Optional

RESEND_CHUNK = 500
MAX_BACKOFF_MS = 120_000      # the longest wait between resends while the ack stays stalled


class Unacked:
    def __init__(self, run: str, max_unacked: int = 3600, resend_after_ms: int = 5000,
                 resend_chunk: int = RESEND_CHUNK) -> None:
        self.run = run
        self.max_unacked, self.resend_after_ms, self.resend_chunk = max_unacked, resend_after_ms, resend_chunk
        self._episode_end: Optional[int] = None      # the newest seq held when the ack stalled
        self._chunk_end: Optional[int] = None        # the last seq of the chunk resent last
        self._held: deque = deque()
        self._waiting_since: Optional[int] = None    # when the ack last advanced (or holding began)
        self._stalls = 0                             # resends since the ack last advanced (backoff)
        self.acked: Optional[int] = None             # highest seq acknowledged
        self.given_up = 0
        self.resent = 0

    def __len__(self) -> int:
        return len(self._held)

    def held(self) -> list[dict]:
        """What is held, oldest first."""
        return list(self._held)

    @property
    def newest_seq(self) -> Optional[int]:
        return self._held[-1]["seq"] if self._held else None

    def give_up_oldest(self, n: int) -> int:
        """Drop up to `n` of the oldest held readings (counted in given_up); how many went."""
        dropped = 0
        while self._held and dropped < n:
            self._held.popleft()
            dropped += 1
        self.given_up += dropped
        return dropped

    @property
    def held_from(self) -> Optional[int]:
        return self._held[0]["seq"] if self._held else None

    def add(self, reading: dict, now_ms: int) -> None:
        if not self._held:
            self._waiting_since = now_ms
        self._held.append(reading)
        self._trim()

    def resize(self, max_unacked: int) -> None:
        self.max_unacked = max_unacked
        self._trim()

    def ack(self, run: str, seq: int, now_ms: int) -> int:
        """Drop this run's readings up to `seq`; how many were dropped."""
        seq = int(seq)
        if run != self.run or (self.acked is not None and seq <= self.acked):
            return 0
        self.acked = seq
        self._waiting_since = now_ms
        self._stalls = 0
        dropped = 0
        while self._held and self._held[0]["seq"] <= seq:
            self._held.popleft()
            dropped += 1
        return dropped

    def due_for_resend(self, now_ms: int) -> list[dict]:
        """The next chunk to publish again, oldest first, or [].

        A chunk is due when the ack has not advanced for resend_after_ms (a stall: what is
        held now is to be resent, and the wait starts again), or, during such a resend,
        as soon as the ack has reached the end of the previous chunk."""
        if self._episode_end is not None and (not self._held or self._held[0]["seq"] > self._episode_end):
            self._episode_end = None                  # everything that was held at the stall is acknowledged
        if not self._held:
            return []
        stalled = now_ms - self._waiting_since >= self.wait_ms
        keeping_up = (self._episode_end is not None and self.acked is not None and self._chunk_end is not None
                      and self.acked >= self._chunk_end)
        if not (stalled or keeping_up):
            return []
        if stalled:
            self._episode_end = self._held[-1]["seq"]
            self._stalls += 1
        self._waiting_since = now_ms
        chunk = [r for r in itertools.islice(self._held, self.resend_chunk) if r["seq"] <= self._episode_end]
        self._chunk_end = chunk[-1]["seq"]
        self.resent += len(chunk)
        return chunk

    def probe(self, now_ms: int) -> Optional[dict]:
        """The oldest held reading, to publish alone before the rest (after a restart, when
        what was held may long be stored): the store answers with its watermark, the ack drops
        what it already has, and the rest follows at once, chunk by chunk, as after a stall.
        No answer within resend_after_ms: the first chunk is resent as after any stall."""
        if not self._held:
            return None
        self._episode_end = self._held[-1]["seq"]
        self._chunk_end = self._held[0]["seq"]
        self._waiting_since = now_ms
        self.resent += 1
        return self._held[0]

    @property
    def wait_ms(self) -> int:
        """How long the ack may stall before the next resend: resend_after_ms, doubled at each
        resend that brought no ack (a store that is stopped or drowning is not flooded with
        copies: 5, 10, 20 ... s), at most MAX_BACKOFF_MS (or resend_after_ms if larger)."""
        return min(self.resend_after_ms << min(self._stalls, 16), max(MAX_BACKOFF_MS, self.resend_after_ms))

    def stamp(self, reading: dict) -> dict:
        """A copy of `reading` carrying the current held_from (when something is held)."""
        doc = dict(reading)
        if self._held:
            doc["held_from"] = self._held[0]["seq"]
        return doc

    def _trim(self) -> None:
        while len(self._held) > self.max_unacked:
            self._held.popleft()
            self.given_up += 1
