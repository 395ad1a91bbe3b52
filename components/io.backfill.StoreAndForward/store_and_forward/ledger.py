"""Confirmation bookkeeping for publishing to IoT Core. Pure (times in ms from an injected
monotonic clock). The rate plan is in rate.py.

    ledger = Ledger(confirm_timeout_ms=30_000, max_in_flight=8, probe_max_ms=60_000)
    kind = ledger.wants(now)               # "batch", "probe" or None (nothing may go now)
    ledger.record(InFlight(batch.id, row_ids, runs, payload, units, now), now)
    entry = ledger.confirm(batch_id, now)  # the echo / rule ack arrived: delete entry.tags
    for entry in ledger.due(now):          # timed out while the link works: send again,
        publish(entry.payload); ledger.sent_again(entry, now)      # same id, same bytes

The link is "unknown" at start, "online" after any confirmation, "offline" when a batch
times out with no confirmation since it was sent, or a publish fails. Only while online
do up to `max_in_flight` batches travel and time-outs resend. Otherwise the forwarder
sends one small probe (the newest reading alone) at growing intervals (from the
confirmation timeout, doubling up to `probe_max_ms`): PublishToIoTCore only spools, so
without this a long outage would fill the nucleus's 2.5 MiB spooler with copies. When a
confirmation arrives after an outage, every batch still in flight gets a fresh timeout:
its copy in the spooler is probably on its way.

The time-out is measured, as TCP's is (RFC 6298): a smoothed confirmation time and its
variation from every batch confirmed at its first sending (Karn: a batch sent again says
nothing), `timeout = max(confirm_timeout_ms, srtt + 4 * rttvar)`, doubled at each time-out
that sends again, and back to the measure at the next first-time confirmation. And what the
nucleus is still carrying is never sent again: it sends in order, so a batch that times out
behind an older one still unconfirmed is queued behind it (a slow link), not lost; only the
oldest goes again, or one that a later batch's confirmation overtook (it was lost), or one
carried across an outage (its spooled copy may have died with a restarted nucleus: going
"offline" again because nothing answers it would only loop). While confirmations keep
coming, the oldest's time-out counts from the last one (TCP restarts its timer so). Which
copy of a batch sent twice came back is unknown: the first, say, so a late first copy never
makes the batches sent meanwhile look overtaken. Only a resend (sent_again) backs off.

And what is in flight is bounded in bytes, as TCP's congestion window bounds it: one
billing unit (`unit_bytes`) at start and after the link comes back, growing by what each
confirmation confirms (doubling per round trip) up to a threshold, then by about a unit
per round trip; a time-out that sends again halves the threshold and starts from one unit.
So after an outage on a slow link the first batch is small enough to be confirmed within
the configured time-out, and the measure grows with the batches; on a fast link the
window opens in a few round trips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

UNKNOWN, ONLINE, OFFLINE = "unknown", "online", "offline"
MAX_TIMEOUT_MS = 600_000       # the longest a measured, backed-off time-out grows
MAX_WINDOW_BYTES = 64 * 131_072  # max_in_flight's top times the largest batch


@dataclass
class InFlight:
    batch_id: str
    tags: tuple                    # the store's row ids of its readings
    runs: frozenset                # the (device, run) keys it holds
    payload: bytes
    units: int
    sent_ms: int
    attempts: int = 1
    order: int = 0                 # when it was (last) handed to the core, among all entries
    first_order: int = 0           # when it was first handed to the core
    carried: bool = False          # in flight across an outage: its spooled copy may be gone
    probe: bool = False
    keep: bool = False             # a confirmation does not delete its readings
    memory: Optional[tuple] = None  # a batch sent from memory (live.py): its readings, not stored


class Ledger:
    def __init__(self, confirm_timeout_ms: int = 30_000, max_in_flight: int = 8,
                 probe_max_ms: int = 60_000, max_probes: int = 16, link: str = UNKNOWN,
                 unit_bytes: int = 5120) -> None:
        self.confirm_timeout_ms = confirm_timeout_ms
        self.unit_bytes = unit_bytes
        self.window_bytes = unit_bytes                   # payload bytes that may be in flight
        self.threshold_bytes: Optional[int] = None       # slow start below it (None: no limit)
        self.max_in_flight = max_in_flight
        self.probe_max_ms = max(probe_max_ms, 1)
        self.max_probes = max_probes
        self.link = link
        self.link_since_ms: Optional[int] = None
        self._entries: dict[str, InFlight] = {}
        self._last_heard_ms: Optional[int] = None
        self._next_probe_ms: Optional[int] = None        # None: at once
        self._backoff_ms = max(1, confirm_timeout_ms)
        self.srtt_ms: Optional[float] = None             # smoothed confirmation time
        self.rttvar_ms = 0.0
        self._rto_shift = 0                              # time-outs since the last clean measure
        self._order = 0
        self._confirmed_order = 0                        # the latest-sent entry confirmed so far
        self._last_confirm_ms: Optional[int] = None

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, batch_id: str) -> bool:
        return batch_id in self._entries

    def entries(self) -> list[InFlight]:
        return list(self._entries.values())

    def memory_entries(self) -> list[InFlight]:
        """Batches sent from memory (their readings are not stored)."""
        return [e for e in self._entries.values() if e.memory is not None]

    def echoed(self, payload: bytes) -> Optional[str]:
        """The id of the batch in flight whose payload is exactly `payload` (its echo: no
        need to parse it), or None."""
        for batch_id, entry in self._entries.items():
            if entry.payload == payload:
                return batch_id
        return None

    def row_ids(self) -> set:
        ids: set = set()
        for entry in self._entries.values():
            ids.update(entry.tags)
        return ids

    @property
    def timeout_ms(self) -> int:
        """How long a batch may wait for its confirmation before it may be sent again."""
        measured = self.confirm_timeout_ms if self.srtt_ms is None else \
            max(self.confirm_timeout_ms, int(self.srtt_ms + 4 * self.rttvar_ms))
        return min(measured << self._rto_shift, max(self.confirm_timeout_ms, MAX_TIMEOUT_MS))

    def bytes_in_flight(self) -> int:
        return sum(len(e.payload) for e in self._entries.values() if not e.probe)

    def room(self) -> int:
        """Payload bytes the next batch may carry (at least one unit while any may go)."""
        return max(self.unit_bytes, self.window_bytes - self.bytes_in_flight())

    def _clock_start(self, entry: InFlight) -> int:
        """Where an entry's time-out counts from. One that a later batch's confirmation
        overtook was lost: from when it left. Otherwise, as TCP restarts its timer at every
        acknowledgement of new data, from the last confirmation too: while confirmations
        keep coming the queue ahead of it is moving."""
        if entry.order < self._confirmed_order or self._last_confirm_ms is None:
            return entry.sent_ms
        return max(entry.sent_ms, self._last_confirm_ms)

    def wants(self, now_ms: int) -> Optional[str]:
        """What may be sent now as far as confirmation goes: a full "batch", one "probe",
        or None."""
        if self.link == ONLINE:
            batches = [e for e in self._entries.values() if not e.probe]
            if len(batches) >= self.max_in_flight:
                return None
            if batches and self.bytes_in_flight() >= self.window_bytes:
                return None
            return "batch"
        if self.link == UNKNOWN and self._entries and self._next_probe_ms is None:
            return None
        if self._next_probe_ms is None or now_ms >= self._next_probe_ms:
            return "probe"
        return None

    def next_deadline(self, now_ms: int) -> Optional[int]:
        """The next time something changes on its own (a time-out or a probe)."""
        times = []
        if self.link == ONLINE:
            times += [self._clock_start(e) + self.timeout_ms for e in self._entries.values()]
        else:
            if self._next_probe_ms is not None:
                times.append(self._next_probe_ms)
            times += [e.sent_ms + self.timeout_ms for e in self._entries.values()
                      if self.link == UNKNOWN]
        return min(times) if times else None

    # -- events ------------------------------------------------------------------------------
    def record(self, entry: InFlight, now_ms: int) -> list[InFlight]:
        """A batch (or probe) was handed to the core. Returns probes forgotten to keep at
        most `max_probes` (their readings may be sent again)."""
        self._order += 1
        entry.order = entry.first_order = self._order
        self._entries[entry.batch_id] = entry
        forgotten: list[InFlight] = []
        if entry.probe:
            self.probed(now_ms)
            probes = [e for e in self._entries.values() if e.probe]
            while len(probes) > self.max_probes:
                oldest = probes.pop(0)
                forgotten.append(self._entries.pop(oldest.batch_id))
        return forgotten

    def probed(self, now_ms: int) -> None:
        """A probe left (new, or one in flight sent again): the next one waits longer."""
        self._next_probe_ms = now_ms + self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, self.probe_max_ms)

    def confirm(self, batch_id: str, now_ms: int) -> Optional[InFlight]:
        """IoT Core has this batch: returns its entry (None for an id not in flight). Any
        confirmation also proves the link works."""
        entry = self._entries.pop(batch_id, None)
        if entry is not None:
            # which copy came back is unknown: the first one, say (a late copy must not make
            # every batch sent meanwhile look overtaken and go again)
            self._confirmed_order = max(self._confirmed_order, entry.first_order)
            self._last_confirm_ms = now_ms
            if entry.attempts == 1 and self.link == ONLINE:
                self._measure(now_ms - entry.sent_ms)
            if self.link == ONLINE and not entry.probe:
                self._open(len(entry.payload))
        self.heard(now_ms)
        return entry

    def _open(self, confirmed_bytes: int) -> None:
        if self.threshold_bytes is None or self.window_bytes < self.threshold_bytes:
            self.window_bytes += confirmed_bytes
        else:
            self.window_bytes += max(1, self.unit_bytes * confirmed_bytes // self.window_bytes)
        self.window_bytes = min(self.window_bytes, MAX_WINDOW_BYTES)

    def _measure(self, sample_ms: int) -> None:
        if self.srtt_ms is None:
            self.srtt_ms, self.rttvar_ms = float(sample_ms), sample_ms / 2
        else:
            self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * abs(self.srtt_ms - sample_ms)
            self.srtt_ms = 0.875 * self.srtt_ms + 0.125 * sample_ms
        self._rto_shift = 0

    def heard(self, now_ms: int) -> None:
        """Something came back from IoT Core: the link is up."""
        self._last_heard_ms = now_ms
        if self.link != ONLINE:
            self._set_link(ONLINE, now_ms)
            for entry in self._entries.values():
                entry.sent_ms = now_ms           # its spooled copy is probably on the way
                entry.carried = True             # or gone with a restarted nucleus
            self._backoff_ms = max(1, self.confirm_timeout_ms)
            self._next_probe_ms = None

    def due(self, now_ms: int) -> list[InFlight]:
        """Batches to send again now (online only). A time-out with nothing heard since the
        batch left means the link is down: the ledger goes offline and returns []."""
        timeout = self.timeout_ms
        expired = [e for e in self._entries.values() if now_ms - e.sent_ms >= timeout]
        if not expired:
            return []
        if self.link != ONLINE:
            if self.link == UNKNOWN:
                self._set_link(OFFLINE, now_ms)
                self._next_probe_ms = now_ms
            return []
        # Silent: nothing heard since it left. One carried across an outage does not count:
        # the link came back after it left, and its copy may have died with the nucleus.
        silent = [e for e in expired if not e.carried and
                  (self._last_heard_ms is None or self._last_heard_ms <= e.sent_ms)]
        if silent:
            self._set_link(OFFLINE, now_ms)
            self._next_probe_ms = now_ms
            return []
        oldest = min(e.order for e in self._entries.values())
        return [e for e in expired if (e.order == oldest or e.order < self._confirmed_order or e.carried)
                and now_ms - self._clock_start(e) >= timeout]

    def sent_again(self, entry: InFlight, now_ms: int, timed_out: bool = True) -> None:
        """`entry` was handed to the core again; `timed_out`: because due() returned it (the
        time-out backs off, the window closes), not as a probe."""
        if timed_out:
            self._rto_shift = min(max(self._rto_shift, entry.attempts), 6)
            self.threshold_bytes = max(2 * self.unit_bytes, self.bytes_in_flight() // 2)
            self.window_bytes = self.unit_bytes
        self._order += 1
        entry.order = self._order
        entry.sent_ms = now_ms
        entry.attempts += 1
        entry.carried = False

    def failed(self, now_ms: int) -> None:
        """A publish was refused by the core (spool full, IPC down): back off as offline."""
        self._set_link(OFFLINE, now_ms)
        self._next_probe_ms = now_ms + self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, self.probe_max_ms)

    def forget(self, predicate: Callable[[InFlight], bool]) -> list[InFlight]:
        """Drop entries (their readings become unsent again); returns them."""
        gone = [e for e in self._entries.values() if predicate(e)]
        for entry in gone:
            del self._entries[entry.batch_id]
        return gone

    def _set_link(self, link: str, now_ms: int) -> None:
        if link != self.link:
            self.link, self.link_since_ms = link, now_ms
            if link == OFFLINE:
                self.window_bytes = self.unit_bytes
