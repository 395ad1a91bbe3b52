"""The device side of the power-cut test: the store's real Store and Forwarder with their
database on a cutfs mount, fed readings as fast as it takes them, until the power fails
(SIGKILL). What it is told to remember lives off the mount, on the real disk, fsynced, as
the test's witness: every acknowledgement the sensor got (`acks`: run seq wall_ms) and
every batch IoT Core received (`cloud`: one payload per line).

    python powercut_device.py --db MOUNT/store.db --acks ACKS --cloud CLOUD --run RUN
        --synchronous FULL --seed N [--drain-only]

The link comes and goes at random (seeded), so a cut meets ingest, drain or deletion; at a
random seq the run's wall clock steps an hour (re-timing). --drain-only: link up, no new
readings, exit 0 once the store is empty.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "components" / "_common"), str(REPO / "components" / "io.backfill.StoreAndForward")]

from backfill_common.clock import SystemClock  # noqa: E402
from backfill_common.settings import Settings  # noqa: E402
from store_and_forward.forwarder import Forwarder  # noqa: E402
from store_and_forward.store import Store, StoreConfig  # noqa: E402

THING = "pi-powercut"
T0 = 1_764_338_400_000


class Witness:
    """Lines appended and fsynced on the real disk (the sensor's and the cloud's memory)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, text: str) -> None:
        os.write(self.fd, (text + "\n").encode())
        os.fsync(self.fd)


class Port:
    def __init__(self, acks: Witness, cloud: Witness, clock) -> None:
        self.acks, self.cloud, self.clock = acks, cloud, clock
        self.link_up = True
        self.echoes: list[tuple[str, bytes]] = []

    def publish_ack(self, topic: str, doc: dict) -> None:
        self.acks.line(f"{doc['run']} {doc['seq']} {self.clock.wall_ms()}")

    def publish_iot(self, topic: str, payload: bytes) -> None:
        if not self.link_up:
            return                      # spooled by a nucleus that dies with the power: lost
        self.cloud.line(payload.decode())
        self.echoes.append((topic, payload))

    def report(self, section: dict) -> None:
        pass


def reading(run: str, seq: int, step_at: int) -> dict:
    mono = seq * 100                    # 10 Hz as the store's plausibility check sees it
    t = T0 + mono + (3_600_000 if seq >= step_at else 0)
    return {"device": THING, "run": run, "seq": seq, "t": t, "mono": mono, "clock_synced": True, "status": "ok",
            "temperature": 21.5 + (seq % 100) / 100, "temperature_raw": 24.0, "humidity": 45.0,
            "pressure": 1013.25, "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": 48.3,
            "correction": "cpu_factor"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--acks", required=True)
    parser.add_argument("--cloud", required=True)
    parser.add_argument("--run", default="00000000")
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drain-only", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    clock = SystemClock()
    settings = dict(Settings("config-store", "forward").defaults, synchronous=args.synchronous,
                    max_latency_ms=200, commit_interval_ms=50, checkpoint_interval_s=1, confirm_timeout_s=1,
                    probe_max_s=1, max_payload_bytes=8192, billing_unit_bytes=4096)
    store = Store(StoreConfig(Path(args.db), synchronous=args.synchronous), clock)
    port = Port(Witness(args.acks), Witness(args.cloud), clock)
    checkpoints = Witness(args.acks + ".checkpoints")
    checkpoint = store.checkpoint

    def witnessed_checkpoint() -> None:      # what a checkpoint made durable (NORMAL's bound)
        checkpoint()
        checkpoints.line(f"{args.run} {clock.wall_ms()}")
    store.checkpoint = witnessed_checkpoint
    fwd = Forwarder(store, port, clock, settings, THING)
    for topic in fwd.iot_topics():
        fwd.iot_subscribed(topic)
    seq, step_at = 0, rng.randrange(50, 400)
    switch_at = clock.mono_ms() + rng.randrange(100, 800)
    while True:
        now = clock.mono_ms()
        if args.drain_only:
            if store.count == 0 and not fwd._pending:
                fwd.close()
                return 0
        else:
            if now >= switch_at:
                port.link_up = not port.link_up
                switch_at = now + rng.randrange(100, 800)
            for _ in range(rng.randrange(1, 20)):
                fwd.on_reading("backfill/readings/corrected", reading(args.run, seq, step_at))
                seq += 1
        fwd.tick()
        echoes, port.echoes = port.echoes, []
        for topic, payload in echoes:
            fwd.on_iot(topic, payload)


if __name__ == "__main__":
    sys.exit(main())
