"""Flood: the store's memory while something publishes on backfill/readings/corrected far
faster than it can take (the fault trial's 2,000 messages/s for 60 s took the store from
41 to 246 MB RSS, and it stayed at 228 MB).

    result = flood(lc, witness, work, seconds=60, rate=2000)

The component runs as on a device (`python -m store_and_forward`, the recipe's defaults,
ShadowManager deployed). A stand-in publishes at 1 Hz until the first reading is confirmed
in the cloud (the baseline RSS is taken then), then floods at `rate` messages/s (as fast as
the real IPC client goes, if slower) for `seconds`, then goes back to 1 Hz for `settle`
seconds. RSS is sampled every second. The store bounds its inbox: what it drops is counted
(`overloaded`, read from its database's saved counters after it stops) and is safe only
because a real sensor sends again what was not acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import procstat
from .drain import STORE, store_topic
from .footprint import CORRECTED, _sensor_client
from .localcloud import LocalCloud, recipe_configuration
from .readings import daily
from .witness import Witness

RUN = "f100d000"


@dataclass
class FloodResult:
    seconds: float
    published: int
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    overloaded: int
    stored: int


def new_runs(readings):
    """Every message of a run of its own (a misbehaving publisher): each run costs the store
    memory, so the store takes at most MAX_RUNS of them with readings waiting."""
    for index, reading in enumerate(readings):
        yield dict(reading, run=f"{0xf1000000 + index:08x}")


def _counters(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'counters'").fetchone()
    return json.loads(row[0]) if row else {}


def flood(lc: LocalCloud, witness: Witness, work: Path, seconds: float = 60, rate: float = 2000,
          settle: float = 20, shape=None) -> FloodResult:
    """`shape(readings)`: what the flood sends, from the day's readings (default: as they are)."""
    from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage
    work.mkdir(parents=True, exist_ok=True)
    env = lc.component_env(STORE, recipe_configuration(STORE, lc.thing))
    process = lc.spawn(["-u", "-m", "store_and_forward", "--work", str(work)], env, work / "store.log", cwd=work)
    client = _sensor_client(lc)
    count = witness.topics[store_topic(lc.thing)]
    readings = iter(daily(int(seconds * rate) + 10_000, device=lc.thing, run=RUN, t0_ms=time.time_ns() // 10**6))
    if shape is not None:
        first = next(readings)
        readings = iter([first, *shape(readings)])
    published = 0

    def publish() -> None:
        nonlocal published
        client.publish_to_topic(topic=CORRECTED, publish_message=PublishMessage(
            json_message=JsonMessage(message=next(readings))))
        published += 1

    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append(procstat.rss_mb(process.pid))

    sampler = threading.Thread(target=sample, name="rss sampler", daemon=True)
    try:
        def first_in_cloud() -> bool:
            witness.poll()
            return any(key[1] == RUN for key in count.keys)
        deadline = time.monotonic() + 90
        while not first_in_cloud():              # 1 Hz until the store is online (it may not be subscribed yet)
            if time.monotonic() > deadline:
                raise TimeoutError("timed out after 90 s waiting for the first reading confirmed in the cloud")
            publish()
            time.sleep(1.0)
        before = procstat.rss_mb(process.pid)
        sampler.start()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            due = started + published / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            publish()
        elapsed = time.monotonic() - started
        calm = time.monotonic()
        while time.monotonic() - calm < settle:
            publish()
            time.sleep(1.0)
        after = procstat.rss_mb(process.pid)
    finally:
        stop.set()
        client.close()
        lc.stop(process)
    counters = _counters(work / "store.db")
    stored = int(counters.get("stored", 0))
    return FloodResult(seconds=elapsed, published=published, rss_before_mb=before,
                       rss_peak_mb=max(samples + [before, after]), rss_after_mb=after,
                       overloaded=int(counters.get("overloaded", 0)), stored=stored)
