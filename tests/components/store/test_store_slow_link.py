"""A slow link (what `localgg fault link limit --bandwidth 400 --latency 300` makes): 400 B/s
and 300 ms each way, one MQTT connection that carries, in order, the batches, the shadow
reports and, coming back, the echoes. A fixed confirmation time-out expires while a batch is
still queued on the way; sending it again then crowds the link further (congestion
collapse: 1,803 duplicate deliveries for 4,902 readings in a fault trial). The store must
time out from measured confirmation times and not send again what is still on its way:
duplicates under 5 % of the readings, every reading delivered."""

from __future__ import annotations

import json

import pytest

from backfill_common.clock import FakeClock
from store_and_forward import packer
from store_and_forward.forwarder import Forwarder
from store_and_forward.store import Store, StoreConfig

from store_harness import T0, THING, FakePort, corrected, settings

BANDWIDTH = 400          # bytes per second, each way
LATENCY_MS = 300         # each way
MQTT_OVERHEAD = 40       # TLS record (22), MQTT fixed header, topic length, packet id; a PUBACK
SHADOW_TOPIC = f"$aws/things/{THING}/shadow/name/backfill/update"


class Direction:
    """One way of the link: first in, first out, at BANDWIDTH after LATENCY_MS."""

    def __init__(self) -> None:
        self.free_ms = 0.0

    def arrival(self, now_ms: int, nbytes: int) -> float:
        start = max(float(now_ms), self.free_ms)
        self.free_ms = start + nbytes * 1000 / BANDWIDTH
        return self.free_ms + LATENCY_MS


class SlowLink:
    def __init__(self, fwd: Forwarder, port: FakePort, clock: FakeClock, down_until_ms: int = 0) -> None:
        self.fwd, self.port, self.clock = fwd, port, clock
        self.down_until_ms = down_until_ms        # before: the nucleus spools what it is given
        self.up, self.down = Direction(), Direction()
        self.seen = self.reports_seen = 0
        self.coming_back: list[tuple[float, str, bytes]] = []
        self.delivered: dict[tuple, int] = {}     # (run, seq) -> deliveries
        self.batches_sent = 0

    def step(self) -> None:
        now = self.clock.mono_ms()
        sends = [(t, p) for t, p in self.port.published[self.seen:]]
        self.seen = len(self.port.published)
        for report in self.port.reports[self.reports_seen:]:
            doc = json.dumps({"state": {"reported": {"store": report}}}, separators=(",", ":")).encode()
            sends.append((SHADOW_TOPIC, doc))
        self.reports_seen = len(self.port.reports)
        for topic, payload in sends:
            size = len(topic) + len(payload) + MQTT_OVERHEAD
            at_cloud = self.up.arrival(max(now, self.down_until_ms), size)
            back = self.down.arrival(int(at_cloud), size)
            if topic == SHADOW_TOPIC:
                continue           # the accepted document comes back to ShadowManager, not to us
            self.batches_sent += 1
            doc = json.loads(payload)
            for r in packer.decode(doc):
                key = (r["run"], r["seq"])
                self.delivered[key] = self.delivered.get(key, 0) + 1
            self.coming_back.append((back, topic, payload))
        due = [e for e in self.coming_back if e[0] <= now]
        self.coming_back = [e for e in self.coming_back if e[0] > now]
        for _, topic, payload in due:
            self.fwd.on_iot(topic, payload)


def run_slow_link(tmp_path, max_latency_ms: int, readings: int, down_s: int = 0) -> dict:
    clock = FakeClock(wall_ms=T0, mono_ms=0)
    port = FakePort()
    store = Store(StoreConfig(tmp_path / "store.db"), clock)
    fwd = Forwarder(store, port, clock, settings(max_latency_ms=max_latency_ms), THING)
    for topic in fwd.iot_topics():
        fwd.iot_subscribed(topic)
    link = SlowLink(fwd, port, clock, down_s * 1000)
    seq = 0
    deadline = readings * 1000 + 1_800_000
    while clock.mono_ms() < deadline and (seq < readings or len(link.delivered) < readings):
        if seq < readings and clock.mono_ms() >= seq * 1000:
            fwd.on_reading("backfill/readings/corrected", corrected(seq, t=T0 + seq * 1000, mono=seq * 1000))
            seq += 1
        fwd.tick()
        link.step()
        clock.advance(100)
    fwd.close()
    copies = sum(link.delivered.values())
    return {"delivered": len(link.delivered), "duplicates": copies - len(link.delivered),
            "batches": link.batches_sent}


@pytest.mark.parametrize("max_latency_ms", [1000, 10000])
@pytest.mark.parametrize("down_s", [0, 600])
def test_a_slow_link_gets_every_reading_and_few_duplicates(tmp_path, max_latency_ms, down_s):
    """An hour at 1 Hz, online from the start or after ten minutes away (a backlog of 600
    readings, and the probes spooled meanwhile, then crowd the slow link)."""
    readings = 3600
    result = run_slow_link(tmp_path, max_latency_ms, readings, down_s)
    assert result["delivered"] == readings, result
    assert result["duplicates"] < 0.05 * readings, result
