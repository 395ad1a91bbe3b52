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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

UNKNOWN, ONLINE, OFFLINE = "unknown", "online", "offline"


@dataclass
class InFlight:
    batch_id: str
    tags: tuple                    # the store's row ids of its readings
    runs: frozenset                # the (device, run) keys it holds
    payload: bytes
    units: int
    sent_ms: int
    attempts: int = 1
    probe: bool = False
    keep: bool = False             # a confirmation does not delete its readings


class Ledger:
    def __init__(self, confirm_timeout_ms: int = 30_000, max_in_flight: int = 8,
                 probe_max_ms: int = 60_000, max_probes: int = 16, link: str = UNKNOWN) -> None:
        self.confirm_timeout_ms = confirm_timeout_ms
        self.max_in_flight = max_in_flight
        self.probe_max_ms = max(probe_max_ms, 1)
        self.max_probes = max_probes
        self.link = link
        self.link_since_ms: Optional[int] = None
        self._entries: dict[str, InFlight] = {}
        self._last_heard_ms: Optional[int] = None
        self._next_probe_ms: Optional[int] = None        # None: at once
        self._backoff_ms = max(1, confirm_timeout_ms)

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, batch_id: str) -> bool:
        return batch_id in self._entries

    def entries(self) -> list[InFlight]:
        return list(self._entries.values())

    def row_ids(self) -> set:
        ids: set = set()
        for entry in self._entries.values():
            ids.update(entry.tags)
        return ids

    def wants(self, now_ms: int) -> Optional[str]:
        """What may be sent now as far as confirmation goes: a full "batch", one "probe",
        or None."""
        if self.link == ONLINE:
            batches = sum(1 for e in self._entries.values() if not e.probe)
            return "batch" if batches < self.max_in_flight else None
        if self.link == UNKNOWN and self._entries and self._next_probe_ms is None:
            return None
        if self._next_probe_ms is None or now_ms >= self._next_probe_ms:
            return "probe"
        return None

    def next_deadline(self, now_ms: int) -> Optional[int]:
        """The next time something changes on its own (a time-out or a probe)."""
        times = []
        if self.link == ONLINE:
            times += [e.sent_ms + self.confirm_timeout_ms for e in self._entries.values()]
        else:
            if self._next_probe_ms is not None:
                times.append(self._next_probe_ms)
            times += [e.sent_ms + self.confirm_timeout_ms for e in self._entries.values()
                      if self.link == UNKNOWN]
        return min(times) if times else None

    # -- events ------------------------------------------------------------------------------
    def record(self, entry: InFlight, now_ms: int) -> list[InFlight]:
        """A batch (or probe) was handed to the core. Returns probes forgotten to keep at
        most `max_probes` (their readings may be sent again)."""
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
        self.heard(now_ms)
        return entry

    def heard(self, now_ms: int) -> None:
        """Something came back from IoT Core: the link is up."""
        self._last_heard_ms = now_ms
        if self.link != ONLINE:
            self._set_link(ONLINE, now_ms)
            for entry in self._entries.values():
                entry.sent_ms = now_ms           # its spooled copy is probably on the way
            self._backoff_ms = max(1, self.confirm_timeout_ms)
            self._next_probe_ms = None

    def due(self, now_ms: int) -> list[InFlight]:
        """Batches to send again now (online only). A time-out with nothing heard since the
        batch left means the link is down: the ledger goes offline and returns []."""
        expired = [e for e in self._entries.values() if now_ms - e.sent_ms >= self.confirm_timeout_ms]
        if not expired:
            return []
        if self.link != ONLINE:
            if self.link == UNKNOWN:
                self._set_link(OFFLINE, now_ms)
                self._next_probe_ms = now_ms
            return []
        silent = [e for e in expired if self._last_heard_ms is None or self._last_heard_ms <= e.sent_ms]
        if silent:
            self._set_link(OFFLINE, now_ms)
            self._next_probe_ms = now_ms
            return []
        return expired

    def sent_again(self, entry: InFlight, now_ms: int) -> None:
        entry.sent_ms = now_ms
        entry.attempts += 1

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
