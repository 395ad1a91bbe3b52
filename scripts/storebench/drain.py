"""Drain: a backlog from the device to confirmed in the cloud, ours beside the naive way.

    result = drain_store(lc, witness, work, readings)     # the store component's own process
    naive = drain_naive(lc, witness, work, readings, seconds=20)

Ours: the backlog is written into store.db by the store's own Store.commit, then the
component runs as on a device (`python -m store_and_forward`, its recipe's default
configuration, the real awsiot client) until `localgg cloud record` has every reading;
then until the store has deleted them all (each batch confirmed by its echo).
Naive: one PublishToIoTCore per reading, deleted on return, for `seconds` only; its drain
time is extrapolated from the rate at which the cloud received its readings.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import procstat
from .localcloud import LocalCloud, recipe_configuration, wait_until
from .witness import Witness

STORE = "io.backfill.StoreAndForward"
NAIVE = "bench.NaivePublisher"
FILL_CHUNK = 5000
POLL_S = 0.1


def store_topic(thing: str) -> str:
    return f"dt/backfill/{thing}/readings"


def naive_topic(thing: str) -> str:
    return f"dt/naive/{thing}/readings"


@dataclass
class DrainResult:
    readings: int
    seconds: Optional[float]               # launch -> the last reading recorded in the cloud
    confirmed_s: Optional[float]           # launch -> the store empty (every batch confirmed)
    batches: int
    copies: int                            # readings received more than once
    wire_bytes: int
    units: int
    cpu_s: float                           # the store process, launch -> drained
    first_cpu_s: Optional[float]           # the same, launch -> its first batch seen in the cloud (start-up)
    peak_rss_mb: float


@dataclass
class NaiveResult:
    seconds: float                         # how long it ran
    received: int                          # distinct readings in the cloud within that time
    deleted: int                           # rows it deleted (publish returned)
    refused: int
    wire_bytes: int
    messages: int


def fill_store(db: Path, readings: list[dict]) -> None:
    """The backlog, committed by the store's own code in chunks, as ingest would have."""
    from backfill_common.clock import SystemClock
    from store_and_forward.store import Store, StoreConfig
    store = Store(StoreConfig(db), SystemClock())
    try:
        for start in range(0, len(readings), FILL_CHUNK):
            store.commit(readings[start:start + FILL_CHUNK])
    finally:
        store.close()


def store_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    finally:
        conn.close()


def drain_store(lc: LocalCloud, witness: Witness, work: Path, readings: list[dict],
                timeout_s: float = 300) -> DrainResult:
    work.mkdir(parents=True, exist_ok=True)
    fill_store(work / "store.db", readings)
    count = witness.topics[store_topic(lc.thing)]
    before_messages, before_bytes, before_units, before_readings = (count.messages, count.wire_bytes, count.units,
                                                                    count.readings)
    wanted = {(r["device"], r["run"], r["seq"]) for r in readings}
    env = lc.component_env(STORE, recipe_configuration(STORE, lc.thing))
    launched = time.monotonic_ns()
    process = lc.spawn(["-u", "-m", "store_and_forward", "--work", str(work)], env, work / "store.log", cwd=work)
    deadline = time.monotonic() + timeout_s
    arrived_ns = first_cpu_s = None
    while arrived_ns is None:
        if process.poll() is not None:
            raise RuntimeError(f"the store exited with {process.returncode}: see {work / 'store.log'}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cloud has {len(wanted & count.keys)} of {len(wanted)} readings after "
                               f"{timeout_s} s: see {work / 'store.log'}")
        time.sleep(POLL_S)
        witness.poll()
        if first_cpu_s is None and count.messages > before_messages:
            first_cpu_s = procstat.cpu_seconds(process.pid)
        if wanted <= count.keys:
            arrived_ns = max(count.arrivals[-1], launched)
    cpu_s = procstat.cpu_seconds(process.pid)
    peak = procstat.peak_rss_mb(process.pid)
    wait_until(lambda: store_count(work / "store.db") == 0, 60, "the store to delete every confirmed reading",
               interval=POLL_S)
    confirmed_ns = time.monotonic_ns()
    lc.stop(process)
    witness.poll()
    return DrainResult(readings=len(wanted), seconds=(arrived_ns - launched) / 1e9,
                       confirmed_s=(confirmed_ns - launched) / 1e9,
                       batches=count.messages - before_messages,
                       copies=count.readings - before_readings - len(wanted),
                       wire_bytes=count.wire_bytes - before_bytes, units=count.units - before_units,
                       cpu_s=cpu_s, first_cpu_s=first_cpu_s, peak_rss_mb=peak)


def fill_naive(db: Path, readings: list[dict]) -> None:
    """The rIoT blog's table, one row per reading (its JSON), oldest first."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sensor_data (id INTEGER PRIMARY KEY, payload TEXT, "
                     "processed INTEGER DEFAULT 0)")
        conn.executemany("INSERT INTO sensor_data (payload) VALUES (?)",
                         ((json.dumps(r, separators=(",", ":")),) for r in readings))
    conn.close()


def drain_naive(lc: LocalCloud, witness: Witness, work: Path, readings: list[dict], seconds: float) -> NaiveResult:
    work.mkdir(parents=True, exist_ok=True)
    fill_naive(work / "naive.db", readings)
    topic = naive_topic(lc.thing)
    env = lc.component_env(NAIVE, {"accessControl": {"aws.greengrass.ipc.mqttproxy": {f"{NAIVE}:1": {
        "operations": ["aws.greengrass#PublishToIoTCore"], "resources": [topic]}}}})
    out = work / "naive.json"
    process = lc.spawn(["-m", "storebench.naive", "--db", str(work / "naive.db"), "--topic", topic,
                        "--seconds", str(seconds), "--out", str(out)], env, work / "naive.log", cwd=work)
    process.wait(seconds + 60)
    if not out.exists():
        raise RuntimeError(f"the naive publisher failed: see {work / 'naive.log'}")
    result = json.loads(out.read_text())
    time.sleep(1.0)                         # what arrived within the window is recorded by now
    witness.poll()
    count = witness.topics[topic]
    window_end = result["started_ns"] + int(seconds * 1e9)
    return NaiveResult(seconds=seconds, received=count.distinct_by(window_end), deleted=result["deleted"],
                       refused=result["refused"], wire_bytes=count.wire_bytes, messages=count.messages)


@dataclass
class StartupResult:
    fill_s: float
    db_mb: float
    first_s: float
    first_readings: int


def startup(lc: LocalCloud, witness: Witness, work: Path, n: int, timeout_s: float = 120) -> StartupResult:
    """A store launched with n readings stored: seconds to its first batch in the cloud."""
    from .readings import daily
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    t0 = time.time_ns() // 10**6 - n * 1000
    fill_store(work / "store.db", list(daily(n, device=lc.thing, run="5a1e0b00", t0_ms=t0)))
    fill_s = time.monotonic() - started
    db_mb = sum(p.stat().st_size for p in work.glob("store.db*")) / 1e6
    count = witness.topics[store_topic(lc.thing)]
    witness.poll()
    before, before_readings = count.messages, count.readings
    env = lc.component_env(STORE, recipe_configuration(STORE, lc.thing))
    launched = time.monotonic()
    process = lc.spawn(["-u", "-m", "store_and_forward", "--work", str(work)], env, work / "store.log", cwd=work)
    try:
        deadline = launched + timeout_s
        while count.messages == before:
            if process.poll() is not None:
                raise RuntimeError(f"the store exited with {process.returncode}: see {work / 'store.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no batch in the cloud {timeout_s} s after launch: see {work / 'store.log'}")
            time.sleep(POLL_S)
            witness.poll()
        first_s = time.monotonic() - launched
        first = count.readings - before_readings
    finally:
        lc.stop(process)
    return StartupResult(fill_s=fill_s, db_mb=db_mb, first_s=first_s, first_readings=first)


def spool_emptied(lc: LocalCloud, timeout_s: float = 300) -> None:
    """Wait until the core's spooler is empty: what an earlier part left there (the naive
    publisher's messages) would otherwise share the next part's link and quota."""
    def empty() -> bool:
        return lc.call(lambda: lc.kernel.iotcore.status()["spool"]["messages"]) == 0
    wait_until(empty, timeout_s, "the core's spooler to send what an earlier part left", interval=0.5)


def slow_drain(lc: LocalCloud, witness: Witness, work: Path, readings: list[dict], bandwidth: int = 125_000,
               latency_s: float = 0.1, timeout_s: float = 600) -> DrainResult:
    """drain_store through localgg's link limited to `bandwidth` bytes/s and `latency_s` each way
    (a phone hotspot: 1 Mbit/s, 100 ms), the limit cleared afterwards; on an empty spooler."""
    spool_emptied(lc)
    link = lc.kernel.iotcore.link
    lc.call(lambda: link.limit(bandwidth, latency_s))
    try:
        return drain_store(lc, witness, work, readings, timeout_s=timeout_s)
    finally:
        lc.call(link.clear)
