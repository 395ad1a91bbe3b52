"""Ingest: readings/s validated and durably stored, the store's own code path beside a
per-row-commit baseline.

    ours = ingest_store(work, readings, synchronous="NORMAL")   # Forwarder.on_reading + group commits
    base = ingest_per_row(work, readings, max_seconds=5)        # the rIoT blog's way
    queue = ingest_ack_queue(work, readings, max_seconds=5)     # persist-queue's SQLiteAckQueue

Ours: the Forwarder (schema check, queue, group commit every `commit_every` readings or
`commit_interval_ms`, watermark, acknowledgement to a port) over the Store in WAL mode,
the component's default settings, each reading a dict as the IPC client hands it over;
the clock stops after the last commit. Baseline: for each reading, connect, INSERT its
Python repr into sensor_data, commit, close (Python's sqlite3 defaults: rollback journal,
synchronous FULL), as the rIoT blog's brick does; no validation. persist-queue: its
SQLiteAckQueue (the store-and-forward queue Python tutorials reach for) with its defaults
(auto_commit: a commit per put, pickled items), one put per reading; no validation.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class IngestResult:
    readings: int
    seconds: float
    acks: int = 0

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


class CountingPort:
    """The Forwarder's port: acknowledgements counted, nothing sent."""

    def __init__(self) -> None:
        self.acks = 0

    def publish_ack(self, topic: str, doc: dict) -> None:
        self.acks += 1

    def publish_iot(self, topic: str, payload: bytes) -> None:
        raise RuntimeError("offline")       # ingest only: nothing is forwarded

    def report(self, section: dict) -> None:
        pass


def ingest_store(work: Path, readings: list[dict], thing: str, synchronous: str = "NORMAL") -> IngestResult:
    from backfill_common.clock import SystemClock
    from backfill_common.settings import Settings
    from store_and_forward.forwarder import Forwarder
    from store_and_forward.store import Store, StoreConfig
    work.mkdir(parents=True, exist_ok=True)
    settings = dict(Settings("config-store", "forward").defaults, synchronous=synchronous)
    clock = SystemClock()
    store = Store(StoreConfig(work / "store.db", synchronous=synchronous), clock)
    port = CountingPort()
    forwarder = Forwarder(store, port, clock, settings, thing)
    docs = [dict(r) for r in readings]
    started = time.perf_counter()
    for doc in docs:
        forwarder.on_reading("backfill/readings/corrected", doc)
    forwarder.commit()
    elapsed = time.perf_counter() - started
    stored = store.counters["stored"]
    store.close()
    if stored != len(docs):
        raise RuntimeError(f"only {stored} of {len(docs)} readings were stored")
    return IngestResult(len(docs), elapsed, port.acks)


def ingest_per_row(work: Path, readings: list[dict], max_seconds: float) -> IngestResult:
    work.mkdir(parents=True, exist_ok=True)
    db = str(work / "riot.db")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS sensor_data (id INTEGER PRIMARY KEY, payload TEXT, "
                 "processed INTEGER DEFAULT 0)")
    conn.commit()
    conn.close()
    done = 0
    started = time.perf_counter()
    for reading in readings:
        conn = sqlite3.connect(db)
        cursor = conn.cursor()
        cursor.execute("INSERT INTO sensor_data (payload) VALUES (?)", (str(reading),))
        conn.commit()
        conn.close()
        done += 1
        if time.perf_counter() - started >= max_seconds:
            break
    return IngestResult(done, time.perf_counter() - started)


def ingest_ack_queue(work: Path, readings: list[dict], max_seconds: float) -> IngestResult:
    """persist-queue's SQLiteAckQueue with its defaults: a put per reading (a commit each)."""
    import persistqueue
    work.mkdir(parents=True, exist_ok=True)
    queue = persistqueue.SQLiteAckQueue(str(work / "ackqueue"), auto_commit=True)
    done = 0
    started = time.perf_counter()
    for reading in readings:
        queue.put(dict(reading))
        done += 1
        if time.perf_counter() - started >= max_seconds:
            break
    elapsed = time.perf_counter() - started
    if queue.size != done:
        raise RuntimeError(f"SQLiteAckQueue holds {queue.size} of {done} readings put")
    return IngestResult(done, elapsed)
