"""What to send next, and when: the forwarder's selection of readings, pure (no SQLite, no
clock, no IPC). The forwarder asks, does what the answer says, and tells what happened.

    plan = Planner(max_latency_ms=10_000, commit_wait_ms=1_000, stored=store.count > 0, now=now)
    plan.committed(arrived_ms)                    # new rows were stored
    if plan.worth_packing(now, unsent_rows, capacity):
        prepared = plan.pack("batch", live_row, rows_from(plan.cursor), capacity, in_flight, held, now)
        if prepared is not None:                  # publish it, then:
            plan.sent(prepared)
    plan.rewind(now, stored=True)                 # rows below the cursor may be unsent again

The state, and the rule each part keeps:
- `cursor`: every row with a smaller id is in flight, confirmed or gone. It moves only when
  a batch is sent (over that batch's rows and the in-flight rows before them), or when a
  scan found nothing left to send (over in-flight rows only); never when a batch is packed
  and then not sent. Whatever can make a row below it unsent again (a batch forgotten, a
  probe whose reading stays, a hold that ends, a re-timing, the link coming back) calls
  `rewind`.
- `live_upto`: the highest row id sent so far; a newer row goes first (live first).
- `waiting_since`: when the oldest stored row not yet sent arrived. None only when a scan,
  or a batch that took every unsent row with no commit since, showed that none is left.
- `row_bytes`: bytes per row of the last batch packed, sent or not, to tell whether a full
  batch may be there; `_looked_at`: the commit count when a partial batch was packed and
  left to wait: it is not packed again before the next commit or the latency deadline.
- `generation`: bumped when rows are deleted, evicted or re-timed; `prepared`, a batch
  packed but waiting for the rate plan, is packed again if its generation is older.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from . import packer

MARGIN_MS = 1000       # a partial batch leaves this long before max_latency_ms (ticks, the core's queue)


@dataclass
class Prepared:
    batch: packer.Batch
    kind: str                  # "batch" or "probe"
    generation: int            # rows deleted or re-timed since: pack again
    cursor: int = 0            # where the cursor may go once it is sent
    keep: bool = False         # a probe whose reading stays for a normal send
    drained: bool = False      # it took every unsent reading there was
    commits: int = 0           # commits so far when it was packed


class Planner:
    def __init__(self, max_latency_ms: int, commit_wait_ms: int, stored: bool = False, now: int = 0) -> None:
        self.max_latency_ms, self.commit_wait_ms = max_latency_ms, commit_wait_ms
        self.cursor = 0
        self.live_upto = 0
        self.generation = 0
        self.commits = 0
        self.row_bytes = 100
        self.prepared: Optional[Prepared] = None
        self.waiting_since: Optional[int] = now - max_latency_ms if stored else None
        self._looked_at: Optional[int] = None
        self.too_large: list = []          # row ids that fit in no batch: the loop dead-letters them

    # -- what happened ----------------------------------------------------------------------
    def timing(self, max_latency_ms: int, commit_wait_ms: int) -> None:
        """New settings: a batch packed under the old ones is packed again."""
        self.max_latency_ms, self.commit_wait_ms = max_latency_ms, commit_wait_ms
        self.prepared, self._looked_at = None, None

    def committed(self, arrived_ms: int) -> None:
        """Rows were inserted; the oldest of them arrived at `arrived_ms`."""
        self.commits += 1
        if self.waiting_since is None:
            self.waiting_since = arrived_ms

    def changed(self) -> None:
        """Rows were deleted, evicted or re-timed: a prepared batch may hold stale rows."""
        self.generation += 1

    def rewind(self, now: int, stored: bool) -> None:
        """Rows below the cursor may have become unsent: scan from the start again, and
        treat them as waiting since long enough to go at once."""
        self.cursor = 0
        self.prepared, self._looked_at = None, None
        if stored and self.waiting_since is None:
            self.waiting_since = now - self.max_latency_ms

    def sent(self, prepared: Prepared) -> None:
        """`prepared` was handed to the core."""
        if prepared.kind == "batch":
            self.cursor = max(self.cursor, prepared.cursor)
        self.live_upto = max(self.live_upto, max(prepared.batch.tags))
        if prepared.drained and prepared.commits == self.commits:
            self.waiting_since = None              # everything committed went out

    # -- what to do -------------------------------------------------------------------------
    def latency_due(self, now: int) -> bool:
        return self.waiting_since is not None and now >= self.deadline()

    def deadline(self) -> Optional[int]:
        """When the oldest unsent row has waited long enough to go in a partial batch: a
        margin (the commit wait, at most MARGIN_MS) before max_latency_ms; what is still in
        memory then is committed to go with it (the forwarder's _commit_due)."""
        if self.waiting_since is None:
            return None
        return self.due_at(self.waiting_since)

    def due_at(self, since: int) -> int:
        """When a reading that arrived at `since` leaves in a partial batch (the forwarder
        sends what waits in memory then: live.py)."""
        return since + self.max_latency_ms - min(self.commit_wait_ms, MARGIN_MS)

    def worth_packing(self, now: int, unsent_rows: int, capacity: int) -> bool:
        """Worth a scan: the oldest has waited enough, or a full batch may be there."""
        if self.latency_due(now):
            return True
        if self._looked_at == self.commits:
            return False                           # packed since the last commit: only partial
        return unsent_rows * self.row_bytes >= capacity

    def take(self, kind: str) -> Optional[Prepared]:
        """The prepared batch, if it is still what `kind` asks for."""
        prepared, self.prepared = self.prepared, None
        if prepared is not None and (prepared.kind != kind or prepared.generation != self.generation):
            return None
        return prepared

    def keep(self, prepared: Prepared) -> None:
        """Packed, not sent (the rate plan said wait): the next tick sends it."""
        self.prepared = prepared

    def pack(self, kind: str, live, rows: Iterable, capacity: int, in_flight: set,
             held: Optional[Callable[[object], bool]], now: int, limit: Optional[int] = None) -> Optional[Prepared]:
        """The next batch: the newest row not sent yet first, then the rows from the cursor
        oldest first (`rows`: ascending ids from `self.cursor`), one device, up to
        `capacity`. None when there is nothing, or only a partial batch that may wait.
        `held(row)` says a row is held back (an unsynchronised clock). `limit` (at least
        `capacity`): the largest batch there is; a first row larger than `capacity` but not
        than `limit` goes alone (a small window must not make a reading unsendable)."""
        limit = max(capacity, limit or capacity)
        builder: Optional[packer.BatchBuilder] = None
        live_id = None
        if live is not None and live.id > self.live_upto and live.id not in in_flight \
                and not (held is not None and held(live)) and live.id not in self.too_large:
            builder = self._first(live, capacity, limit)
            if builder is not None:
                live_id = live.id
        cursor, moving, other_device = self.cursor, True, False
        for row in rows:
            if builder is not None and builder.capacity > capacity:
                break                              # a large row goes alone
            if row.id in in_flight or row.id == live_id or row.id in self.too_large:
                if moving:
                    cursor = row.id + 1
                continue
            if held is not None and held(row):
                moving = False
                continue
            if builder is not None and row.device != builder.device:
                moving, other_device = False, True
                continue
            if builder is None:
                builder = self._first(row, capacity, limit)
                if builder is None:
                    if moving:
                        cursor = row.id + 1
                    continue
            elif not builder.add_stored(row, tag=row.id):
                break
            if moving:
                cursor = row.id + 1
        if builder is None or not len(builder):
            self.cursor = cursor                   # only over rows in flight
            self.waiting_since = None
            return None
        self.row_bytes = max(20, builder.size // len(builder))
        alone = builder.capacity > capacity
        if not builder.full and not alone and not self.latency_due(now):
            self._looked_at = self.commits         # the cursor stays: these rows are not sent
            return None
        self._looked_at = None
        return Prepared(builder.build(), kind, self.generation, cursor=cursor,
                        drained=not builder.full and not alone and not other_device, commits=self.commits)

    def probe(self, latest: Iterable, capacity: int, in_flight: set, stored: int) -> Optional[Prepared]:
        """One small message to learn whether the link is back: the newest reading not in
        flight, alone (`latest`: newest first). None: every recent one is in flight."""
        for row in latest:
            if row.id in in_flight or row.id in self.too_large:
                continue
            builder = packer.BatchBuilder(row.device, capacity)
            if not self._fits(builder, row):
                continue
            keep = row.reading().get("clock_synced") is False
            return Prepared(builder.build(), "probe", self.generation, keep=keep, commits=self.commits,
                            drained=not keep and stored - len(in_flight) <= 1)
        return None

    def _first(self, row, capacity: int, limit: int) -> Optional[packer.BatchBuilder]:
        """A builder holding `row`: of `capacity`, or of `limit` when only that holds it;
        None (noted in too_large) when it fits in no batch."""
        builder = packer.BatchBuilder(row.device, capacity)
        try:
            builder.add_stored(row, tag=row.id)
            return builder
        except packer.TooLarge:
            if limit <= capacity:
                self.too_large.append(row.id)
                return None
        builder = packer.BatchBuilder(row.device, limit)
        return builder if self._fits(builder, row) else None

    def _fits(self, builder: packer.BatchBuilder, row) -> bool:
        """Add `row` to an empty builder; False (and noted in too_large) when it fits in no batch."""
        try:
            builder.add_stored(row, tag=row.id)
            return True
        except packer.TooLarge:
            self.too_large.append(row.id)
            return False
