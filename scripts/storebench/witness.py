"""What the cloud received, read from `localgg cloud record`'s database as it grows.

    seen = Witness(received_db, {"dt/backfill/t/readings": batch_keys, "dt/naive/t/readings": reading_key})
    seen.poll()                         # reads the rows recorded since the last poll
    seen.topics["dt/backfill/t/readings"].distinct, .done_ns(86_400), .wire_bytes, .units

Times are the recorder's `received_ns` (CLOCK_MONOTONIC, the same clock in every process).
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .figures import units


def reading_key(payload: bytes) -> list[tuple]:
    doc = json.loads(payload)
    return [(doc["device"], doc["run"], int(doc["seq"]))]


def batch_keys(payload: bytes) -> list[tuple]:
    from store_and_forward import packer
    return [(r["device"], r["run"], int(r["seq"])) for r in packer.decode(payload)]


@dataclass
class TopicCount:
    topic: str
    keys_of: Callable[[bytes], list]
    messages: int = 0
    readings: int = 0                     # readings in messages, copies included
    wire_bytes: int = 0                   # payload + topic
    units: int = 0
    keys: set = field(default_factory=set)
    arrivals: list = field(default_factory=list)        # received_ns at which distinct reached 1, 2, ...

    @property
    def distinct(self) -> int:
        return len(self.keys)

    def add(self, payload: bytes, received_ns: int) -> None:
        self.messages += 1
        self.wire_bytes += len(payload) + len(self.topic.encode())
        self.units += units(len(payload), len(self.topic.encode()))
        keys = self.keys_of(payload)
        self.readings += len(keys)
        for key in keys:
            if key not in self.keys:
                self.keys.add(key)
                self.arrivals.append(received_ns)

    def done_ns(self, count: int) -> Optional[int]:
        """When the count-th distinct reading arrived (None: not yet)."""
        return self.arrivals[count - 1] if len(self.arrivals) >= count else None

    def distinct_by(self, ns: int) -> int:
        """Distinct readings received at or before `ns`."""
        return bisect.bisect_right(self.arrivals, ns)


class Witness:
    def __init__(self, db: Path, topics: dict[str, Callable[[bytes], list]]) -> None:
        self.db = Path(db)
        self.topics = {topic: TopicCount(topic, keys_of) for topic, keys_of in topics.items()}
        self._last_id = 0
        self._conn: Optional[sqlite3.Connection] = None

    def poll(self) -> int:
        """Read what was recorded since the last poll; returns how many messages."""
        if self._conn is None:
            if not self.db.exists():
                return 0
            self._conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        rows = self._conn.execute("SELECT id, topic, payload, received_ns FROM messages WHERE id > ? ORDER BY id",
                                  (self._last_id,)).fetchall()
        for ident, topic, payload, received_ns in rows:
            self._last_id = ident
            count = self.topics.get(topic)
            if count is not None:
                count.add(bytes(payload), received_ns)
        return len(rows)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
