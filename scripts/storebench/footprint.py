"""Footprint: RSS and CPU of the store component's process at 1 Hz, online.

    result = footprint(lc, witness, work, seconds=60)

The component runs as on a device (`python -m store_and_forward`, its recipe's default
configuration, ShadowManager deployed). A sensor stand-in in this process publishes one
corrected reading a second on backfill/readings/corrected through the real IPC client, on
a drift-free schedule. Measured once the first reading is confirmed in the cloud (start-up
excluded): CPU time (user + system, all threads) over the window, RSS every second, and
the bytes it wrote (`/proc/<pid>/io`: write_bytes, what reaches the storage layer, and
wchar, what went through write()) per reading stored in the window.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import procstat
from .drain import STORE, store_topic
from .localcloud import LocalCloud, recipe_configuration, wait_until
from .readings import daily
from .witness import Witness

SENSOR = "bench.Sensor"
CORRECTED = "backfill/readings/corrected"
RUN = "f00dcafe"


@dataclass
class FootprintResult:
    seconds: float
    cpu_percent: float
    rss_mb_max: float
    rss_mb_mean: float
    published: int
    in_cloud: int
    window_readings: int = 0
    write_bytes: int = 0
    wchar: int = 0

    def per_reading(self, key: str) -> float | None:
        return getattr(self, key) / self.window_readings if self.window_readings else None


class Feeder:
    """Publishes one reading per `interval_s` (slots on the monotonic clock) until stopped."""

    def __init__(self, client, readings, interval_s: float = 1.0) -> None:
        self.client, self.readings, self.interval_s = client, readings, interval_s
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensor stand-in", daemon=True)

    def start(self) -> "Feeder":
        self._thread.start()
        return self

    def _run(self) -> None:
        from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage
        anchor = time.monotonic()
        for index, reading in enumerate(self.readings):
            if self._stop.wait(max(0.0, anchor + index * self.interval_s - time.monotonic())):
                return
            self.client.publish_to_topic(topic=CORRECTED, publish_message=PublishMessage(
                json_message=JsonMessage(message=reading)))
            self.published += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _sensor_client(lc: LocalCloud):
    import awsiot.greengrasscoreipc
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    env = lc.component_env(SENSOR, {"accessControl": {"aws.greengrass.ipc.pubsub": {f"{SENSOR}:1": {
        "operations": ["aws.greengrass#PublishToTopic"], "resources": [CORRECTED]}}}})
    raw = awsiot.greengrasscoreipc.connect(ipc_socket=env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
                                           authtoken=env["SVCUID"])
    return GreengrassCoreIPCClientV2(client=raw, executor=None)


def footprint(lc: LocalCloud, witness: Witness, work: Path, seconds: float) -> FootprintResult:
    work.mkdir(parents=True, exist_ok=True)
    env = lc.component_env(STORE, recipe_configuration(STORE, lc.thing))
    process = lc.spawn(["-u", "-m", "store_and_forward", "--work", str(work)], env, work / "store.log", cwd=work)
    client = _sensor_client(lc)
    count = witness.topics[store_topic(lc.thing)]
    total = int(seconds) + 120
    readings = daily(total, device=lc.thing, run=RUN, t0_ms=time.time_ns() // 1_000_000)
    feeder = Feeder(client, readings).start()
    try:
        def first_in_cloud() -> bool:
            witness.poll()
            return any(key[1] == RUN for key in count.keys)
        wait_until(first_in_cloud, 60, "the first reading confirmed in the cloud", interval=0.2)
        cpu_start, started = procstat.cpu_seconds(process.pid), time.monotonic()
        io_start, published_start = procstat.io_bytes(process.pid), feeder.published
        samples = []
        while time.monotonic() - started < seconds:
            samples.append(procstat.rss_mb(process.pid))
            time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - started))))
        cpu = procstat.cpu_seconds(process.pid) - cpu_start
        io_end, window = procstat.io_bytes(process.pid), feeder.published - published_start
        elapsed = time.monotonic() - started
        samples.append(procstat.rss_mb(process.pid))
        published = feeder.published
    finally:
        feeder.stop()
        client.close()
        lc.stop(process)
    witness.poll()
    in_cloud = sum(1 for key in count.keys if key[1] == RUN)
    return FootprintResult(seconds=elapsed, cpu_percent=100.0 * cpu / elapsed, rss_mb_max=max(samples),
                           rss_mb_mean=sum(samples) / len(samples), published=published, in_cloud=in_cloud,
                           window_readings=window, write_bytes=io_end["write_bytes"] - io_start["write_bytes"],
                           wchar=io_end["wchar"] - io_start["wchar"])
