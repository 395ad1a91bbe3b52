"""A forwarder over an in-memory port (our own Port, not the awsiot SDK) with a fake IoT
Core: a spooler that holds publishes while the link is down and a cloud that records
every delivered reading and echoes the batch (what SubscribeToIoTCore on our own topic
gives)."""

from __future__ import annotations

import json
import os

from backfill_common.clock import FakeClock
from backfill_common.settings import Settings
from store_and_forward import packer
from store_and_forward.forwarder import Forwarder
from store_and_forward.store import Store, StoreConfig

THING = "pi-garage-01"
RUN = "1a2b3c4d"
T0 = 1_764_338_400_000
TOPIC = f"dt/backfill/{THING}/readings"


def settings(**overrides) -> dict:
    """The defaults, but max_latency_ms 1000 (each reading leaves within a second, so these
    tests speak of single readings; the default's batching is held by tests/scripts/test_bench_online.py)."""
    effective = dict(Settings("config-store", "forward").defaults, max_latency_ms=1000)
    effective.update(overrides)
    return effective


def corrected(seq, run=RUN, t=None, mono=None, **extra) -> dict:
    doc = {"device": THING, "run": run, "seq": seq, "t": T0 + seq * 1000 if t is None else t,
           "mono": seq * 1000 if mono is None else mono, "clock_synced": True, "status": "ok",
           "temperature": 21.5, "temperature_raw": 24.0, "humidity": 45.0, "pressure": 1013.25,
           "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": 48.3, "correction": "cpu_factor"}
    doc.update(extra)
    return doc


class FakePort:
    def __init__(self) -> None:
        self.acks: list[dict] = []
        self.published: list[tuple[str, bytes]] = []
        self.reports: list[dict] = []
        self.refuse: str | None = None

    def publish_ack(self, topic: str, doc: dict) -> None:
        self.acks.append(dict(doc, topic=topic))

    def publish_iot(self, topic: str, payload: bytes) -> None:
        if self.refuse:
            raise RuntimeError(self.refuse)
        self.published.append((topic, payload))

    def report(self, section: dict) -> None:
        self.reports.append(json.loads(json.dumps(section)))

    def acked(self, run: str = RUN) -> int:
        return max((a["seq"] for a in self.acks if a["run"] == run), default=-1)


class Harness:
    def __init__(self, path, clock: FakeClock | None = None, subscribe: bool = True, **overrides) -> None:
        self.path = path
        self.clock = clock or FakeClock(wall_ms=T0)
        self.port = FakePort()
        self.overrides = overrides
        self.store = Store(StoreConfig(path), self.clock)
        self.fwd = Forwarder(self.store, self.port, self.clock, settings(**overrides), THING)
        if subscribe:
            for topic in self.fwd.iot_topics():
                self.fwd.iot_subscribed(topic)
        self.link_up = True
        self.echo = True
        self.spool: list[tuple[str, bytes]] = []
        self.cloud: dict[tuple, dict] = {}        # (device, run, seq) -> the reading last received
        self.deliveries: list[dict] = []          # every batch document received, in order
        self.dead_letters: dict[str, dict] = {}   # dead letters received, by key
        self._seen = 0

    def feed(self, readings) -> None:
        for doc in readings:
            self.fwd.on_reading("backfill/readings/corrected", doc)

    def step(self, ms: int = 100, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(ms)
            self.fwd.tick()
            self._transport()

    def _transport(self) -> None:
        new = self.port.published[self._seen:]
        self._seen = len(self.port.published)
        self.spool += new
        if self.link_up:
            self.drain()

    def drain(self) -> None:
        spool, self.spool = self.spool, []
        for topic, payload in spool:
            doc = json.loads(payload)
            if "dead_letter" in doc:
                self.dead_letters[doc["dead_letter"]] = doc
                if self.echo:
                    self.fwd.on_iot(topic, payload)
                continue
            self.deliveries.append(doc)
            for reading in packer.decode(doc):
                self.cloud[(reading["device"], reading["run"], reading["seq"])] = reading
            if self.echo:
                self.fwd.on_iot(topic, payload)

    def damage_mid_file(self, nbytes: int = 8192) -> None:
        """Random bytes over the middle of the database file, and the page cache let go (as
        under memory pressure), so the next reads meet them."""
        self.store.checkpoint()
        size = os.path.getsize(self.path)
        with open(self.path, "r+b") as f:
            f.seek(size // 2)
            f.write(os.urandom(nbytes))
        self.store.db.execute("PRAGMA shrink_memory")

    def fill_disk(self) -> None:
        """The database may not grow any more (SQLITE_FULL from here on)."""
        pages = self.store.db.execute("PRAGMA page_count").fetchone()[0]
        self.store.db.execute(f"PRAGMA max_page_count={pages}")

    def free_disk(self) -> None:
        self.store.db.execute("PRAGMA max_page_count=1073741823")

    def restart_nucleus(self) -> None:
        """The memory spooler dies with the nucleus."""
        self.spool = []

    def reopen(self, kill: bool = False) -> None:
        """The component restarts: cleanly (SIGTERM: commit, close), or killed (what was not
        committed is gone; the database file is left as it is)."""
        if kill:
            self.store.db.conn.close()
        else:
            self.fwd.close()
        self.store = Store(StoreConfig(self.path), self.clock)
        self.fwd = Forwarder(self.store, self.port, self.clock, settings(**self.overrides), THING)
        for topic in self.fwd.iot_topics():
            self.fwd.iot_subscribed(topic)
        self._seen = len(self.port.published)
