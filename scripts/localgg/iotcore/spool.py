"""The nucleus's spooler for PublishToIoTCore: messages wait here until IoT Core has them.

Usage::

    spool = Spool(MemoryStore(), max_size=2_621_440)
    message_id = spool.add(SpoolMessage("dt/x", b"...", qos=1))   # SpoolError when full
    message = spool.pop()            # the oldest queued message (still counted until removed)
    spool.requeue(message)           # a failed attempt goes back to the FRONT
    spool.remove(message.id)         # PUBACK, or retries exhausted

Rules (`mqttclient/spool/Spool.java`, docs/mqtt-spool.md 2-3):
- the size is the sum of PAYLOAD bytes only; default limit 2.5 MiB;
- a message larger than the whole spool: "Message is larger than the size of message spool.";
- when full, the oldest QoS 0 messages are evicted, never QoS 1; if it still does not
  fit, the NEW message is refused: "Message spool is full. Message could not be added.";
- `drop_qos0()` empties queued QoS 0 messages (the nucleus does it on disconnect);
- MemoryStore is lost with the process. With a `Ledger` it keeps how many messages and
  bytes it holds in a small file, rewritten in place at every change, so that the next
  core can say what the previous one lost, even one killed with SIGKILL (a localgg
  addition: the nucleus says nothing). SqliteStore is aws.greengrass.DiskSpooler's
  table (one INSERT per message, one DELETE when done, autocommit); on a corrupt file it
  deletes the whole database, as the DiskSpooler does. On start a disk spool queues its
  rows oldest first until the size limit; rows past it stay on disk, not queued.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger("localgg.spool")

DEFAULT_MAX_SIZE = int(2.5 * 1024 * 1024)
TOO_LARGE = "Message is larger than the size of message spool."
FULL = "Message spool is full. Message could not be added."


class SpoolError(Exception):
    pass


@dataclass(frozen=True)
class SpoolMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    properties: dict = field(default_factory=dict)  # MQTT 5 publish properties
    id: int = -1
    retried: int = 0


class Ledger:
    """How many messages (and payload bytes) a memory spool holds, in a file of one fixed-size
    record rewritten in place (one pwrite per change; the page cache outlives a killed process)."""

    RECORD = "{:>19} {:>19}\n"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.write(0, 0)

    def write(self, messages: int, size: int) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, self.RECORD.format(messages, size).encode(), 0)

    def close(self) -> None:
        """Keep what the file says: the messages are lost with the process all the same."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def read(path: Path) -> tuple[int, int]:
        """(messages, bytes) a previous run's memory spool held when it ended; (0, 0) if unknown."""
        try:
            messages, size = path.read_text().split()
            return max(0, int(messages)), max(0, int(size))
        except (OSError, ValueError):
            return 0, 0


class MemoryStore:
    persistent = False

    def __init__(self, ledger: Ledger | None = None) -> None:
        self._messages: dict[int, SpoolMessage] = {}
        self._ledger = ledger
        self._bytes = 0

    def put(self, message: SpoolMessage) -> None:
        old = self._messages.get(message.id)
        self._messages[message.id] = message
        self._bytes += len(message.payload) - (len(old.payload) if old is not None else 0)
        self._record()

    def get(self, message_id: int) -> SpoolMessage | None:
        return self._messages.get(message_id)

    def delete(self, message_id: int) -> None:
        old = self._messages.pop(message_id, None)
        if old is not None:
            self._bytes -= len(old.payload)
            self._record()

    def _record(self) -> None:
        if self._ledger is not None:
            self._ledger.write(len(self._messages), self._bytes)

    def update_retried(self, message: SpoolMessage) -> None:
        self._messages[message.id] = message

    def ids(self) -> list[int]:
        return sorted(self._messages)

    def close(self) -> None:
        self._messages.clear()
        if self._ledger is not None:
            self._ledger.close()


class SqliteStore:
    """The DiskSpooler's `spooler.db`."""

    persistent = True
    _COLUMNS = "message_id, retried, topic, qos, retain, payload, userProperties, messageExpiryIntervalSeconds, " \
               "correlationData, responseTopic, payloadFormat, contentType"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            log.error("Database %s is corrupted (%s), creating new database", path, exc)
            path.unlink(missing_ok=True)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS spooler (message_id INTEGER PRIMARY KEY, retried INTEGER NOT NULL, "
                   "topic TEXT NOT NULL, qos INTEGER NOT NULL, retain BOOLEAN, payload BLOB, userProperties TEXT, "
                   "messageExpiryIntervalSeconds INTEGER, correlationData BLOB, responseTopic TEXT, "
                   "payloadFormat INTEGER, contentType TEXT)")
        return db

    def _guard(self, action):
        try:
            return action()
        except sqlite3.DatabaseError as exc:
            if "malformed" in str(exc) or "not a database" in str(exc):
                log.error("Database %s is corrupted, creating new database", self.path)
                self._db.close()
                self.path.unlink(missing_ok=True)
                self._db = self._open()
            raise

    def put(self, message: SpoolMessage) -> None:
        p = message.properties
        row = (message.id, message.retried, message.topic, message.qos, message.retain, message.payload,
               json.dumps([{"key": k, "value": v} for k, v in p.get("user_property", [])]),
               p.get("message_expiry_interval"), p.get("correlation_data"), p.get("response_topic"),
               p.get("payload_format_indicator"), p.get("content_type"))
        self._guard(lambda: self._db.execute(f"INSERT INTO spooler ({self._COLUMNS}) VALUES "
                                             "(?,?,?,?,?,?,?,?,?,?,?,?)", row))

    def get(self, message_id: int) -> SpoolMessage | None:
        try:
            row = self._guard(lambda: self._db.execute(
                f"SELECT {self._COLUMNS} FROM spooler WHERE message_id = ?", (message_id,)).fetchone())
        except sqlite3.DatabaseError:
            return None
        if row is None:
            return None
        (mid, retried, topic, qos, retain, payload, users, expiry, correlation, response, fmt, ctype) = row
        props = {k: v for k, v in (("message_expiry_interval", expiry), ("correlation_data", correlation),
                                   ("response_topic", response), ("payload_format_indicator", fmt),
                                   ("content_type", ctype)) if v is not None}
        pairs = [(u["key"], u["value"]) for u in json.loads(users or "[]")]
        if pairs:
            props["user_property"] = pairs
        # the row's retried column is never updated: like the DiskSpooler, every attempt starts from 0
        return SpoolMessage(topic, bytes(payload or b""), qos, bool(retain), props, mid, retried)

    def delete(self, message_id: int) -> None:
        self._guard(lambda: self._db.execute("DELETE FROM spooler WHERE message_id = ?", (message_id,)))

    def update_retried(self, message: SpoolMessage) -> None:
        pass  # the DiskSpooler keeps no retry count

    def ids(self) -> list[int]:
        return [r[0] for r in self._guard(lambda: self._db.execute("SELECT message_id FROM spooler").fetchall())]

    def close(self) -> None:
        self._db.close()


class Spool:
    def __init__(self, store: MemoryStore | SqliteStore, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.store = store
        self.max_size = max_size
        self.size = 0
        self._queue: deque[int] = deque()
        self._sizes: dict[int, tuple[int, int]] = {}  # id -> (payload bytes, qos), every message not yet removed
        self._next_id = 0
        self._restore()

    def _restore(self) -> None:
        ids = self.store.ids()
        for message_id in ids:
            message = self.store.get(message_id)
            if message is None:
                continue
            if self.size + len(message.payload) > self.max_size:
                log.warning("Persistence spool queue sync was not completed: %d rows stay on disk, not queued",
                            len([i for i in ids if i >= message_id]))
                break
            self._track(message)
        self._next_id = max(ids, default=-1) + 1

    def _track(self, message: SpoolMessage) -> None:
        self._queue.append(message.id)
        self._sizes[message.id] = (len(message.payload), message.qos)
        self.size += len(message.payload)

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, message: SpoolMessage) -> int:
        size = len(message.payload)
        if size > self.max_size:
            raise SpoolError(TOO_LARGE)
        if self.size + size > self.max_size:
            self._evict_qos0(self.size + size - self.max_size)
            if self.size + size > self.max_size:
                raise SpoolError(FULL)
        message = replace(message, id=self._next_id)
        self._next_id += 1
        self.store.put(message)
        self._track(message)
        return message.id

    def _evict_qos0(self, needed: int) -> None:
        freed = 0
        for message_id in list(self._queue):
            if freed >= needed:
                return
            if self._sizes[message_id][1] == 0:
                freed += self._sizes[message_id][0]
                self._queue.remove(message_id)
                self.remove(message_id)

    def pop(self) -> SpoolMessage | None:
        """The oldest queued message, out of the queue but still counted until remove()."""
        while self._queue:
            message_id = self._queue.popleft()
            message = self.store.get(message_id)
            if message is not None:
                return message
            self._forget(message_id)
        return None

    def requeue(self, message: SpoolMessage) -> None:
        """A failed attempt: back to the FRONT of the queue, with its retry count."""
        self.store.update_retried(message)
        self._queue.appendleft(message.id)

    def remove(self, message_id: int) -> None:
        self.store.delete(message_id)
        self._forget(message_id)

    def _forget(self, message_id: int) -> None:
        size, _ = self._sizes.pop(message_id, (0, 0))
        self.size -= size

    def drop_qos0(self) -> int:
        dropped = [i for i in self._queue if self._sizes[i][1] == 0]
        for message_id in dropped:
            self._queue.remove(message_id)
            self.remove(message_id)
        return len(dropped)

    def close(self) -> None:
        self.store.close()
