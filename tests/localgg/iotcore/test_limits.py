"""IoT Core's quotas as a device meets them: the broker's payload limit, the nucleus's own
client-side publish rate limit, its reconnect backoff, and subscribing before the first connection."""

import threading
import time

import pytest

from conftest import CloudListener, policy, provisioned_core, wait_for
from localgg.iotcore.bridge import SmoothRateLimiter

ALL = policy("aws.greengrass.ipc.mqttproxy", ["*"], ["*"])


def test_the_broker_drops_a_connection_that_sends_more_than_128_kb(cloud_dir):
    from localgg.cloud import mqtt
    dropped = threading.Event()
    client = mqtt.connect(cloud_dir.directory, "oversized-sender")
    client.on_disconnect = lambda *args: dropped.set()
    client.publish("dt/big", b"x" * (140 * 1024), qos=1)
    assert dropped.wait(10)
    client.loop_stop()


def test_the_nucleus_limits_itself_to_100_publishes_per_second(iot, cloud_dir):
    listener = CloudListener(cloud_dir, "dt/#")
    try:
        client = iot.client("com.ex.Pub", ALL)
        time.sleep(1.2)  # let the limiter bank its one second of permits, as an idle core would
        futures = [client.publish_to_iot_core_async(topic_name="dt/rate", qos="1", payload=b"%d" % i)
                   for i in range(250)]
        for future in futures:
            future.result(30)
        wait_for(lambda: len(listener.payloads()) >= 250, 30)
        arrivals = sorted(m.timestamp for m in listener.messages)
        # 100 banked permits go at once; the other 150 need 1.5 s at 100/s (a lower bound: a slow
        # machine only makes it longer)
        assert arrivals[-1] - arrivals[0] >= 1.3
    finally:
        listener.close()


def test_rate_limiter_banks_one_second_of_permits():
    now = [100.0]
    limiter = SmoothRateLimiter(10, clock=lambda: now[0])
    now[0] += 5  # idle: only one second's worth (10) is banked
    waits = [limiter.reserve(1) for _ in range(12)]
    assert waits[:11] == [0.0] * 11  # 10 banked + the one that pays in advance
    assert waits[11] == pytest.approx(0.1)


def test_backoff_stays_within_the_configured_bounds(iot):
    bridge = iot.kernel.iotcore
    delays = iot.call(lambda: [bridge.backoff(attempt) for attempt in range(12)])
    assert all(0.1 <= d <= 0.5 for d in delays)  # FAST_MQTT: 0.1 s .. 0.5 s


def test_subscribe_before_the_first_connection_waits_for_it(cloud_dir):
    core = provisioned_core(cloud_dir)
    try:
        core.call(lambda: core.kernel.iotcore.link.down())
        core.close()  # the outage outlives the core: it starts offline
        from conftest import CoreThread
        core = CoreThread(core.kernel.root)
        client = core.client("com.ex.Sub", ALL)
        response, _ = client.subscribe_to_iot_core_async(topic_name="cmd/x", qos="1",
                                                         on_stream_event=lambda e: None)
        time.sleep(1.0)  # a window in which an answer would be wrong, not synchronization
        assert not response.done()
        core.call(lambda: core.kernel.iotcore.link.up())
        response.result(15)
    finally:
        core.close()
