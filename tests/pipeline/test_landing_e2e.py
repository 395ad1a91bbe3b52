"""`confirm: landing` end to end on localgg (issue 12): the store deletes a batch only once the
cloud landing has it in its table, not merely once IoT Core has it. The landing here is a
stand-in for the IoT rule and Lambda: a cloud-side MQTT client on localgg's IoT Core that hands
each batch, as the rule's SQL would (`encode(*, 'base64') AS payload, topic(3) AS thing`), to
the landing's own code (scripts/cloud/landing.py `land`), against a local table that keeps the
same conditions as the DynamoDB one (tested against moto in tests/cloud), and publishes its
acknowledgement on IoT Core.

- With the landing down, batches reach IoT Core and the store deletes none of them.
- With it up, every reading produced is in the table exactly once and the backlog drains."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import threading
from pathlib import Path

import pytest

from conftest import short_tmp, wait_for
from pipeline_harness import REPO, SENSOR, STORE, THING
from store_harness_e2e import FAST_MQTT, World

sys.path.insert(0, str(REPO / "scripts" / "cloud"))
import landing  # noqa: E402

SENSOR_FAST = {"interval_s": 0.1, "resend_after_s": 1.0}
STORE_LANDING = {"confirm": "landing", "confirm_timeout_s": 2, "probe_max_s": 2, "commit_interval_ms": 200,
                 "max_latency_ms": 500}


class LocalTable:
    """The readings table, in memory, with DynamoDB's conditional put as the landing uses it."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()

    def put(self, item: dict, condition: str) -> bool:
        key = (item["device"], item["run_seq"])
        with self.lock:
            old = self.items.get(key)
            ok = old is None or (condition == landing.RETIMED and "t_orig" not in old)
            if ok:
                self.items[key] = item
            return ok


class LandingStandIn:
    """The IoT rule + Lambda: subscribes to dt/backfill/+/readings on localgg's IoT Core."""

    def __init__(self, cloud_dir: Path, table: LocalTable) -> None:
        import paho.mqtt.client as paho
        from localgg.cloud import mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.table, self.kept, self.results = table, [], []
        info = mqtt.endpoint(cloud_dir)
        cert, key, ca = mqtt.client_files(cloud_dir, "backfill-landing")
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=mqtt.unique_client_id("backfill-landing"),
                                  protocol=paho.MQTTv5)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        subscribed = threading.Event()
        self.clients = landing.Clients(put=table.put, keep=lambda k, body: self.kept.append((k, body)),
                                       publish=lambda topic, payload: self.client.publish(topic, payload, qos=0))

        def on_connect(client, userdata, flags, rc, properties) -> None:
            if not rc.is_failure:
                client.subscribe([("dt/backfill/+/readings", 1)])

        def on_message(client, userdata, message) -> None:
            event = {"payload": base64.b64encode(bytes(message.payload)).decode(),
                     "thing": message.topic.split("/")[2]}
            self.results.append(landing.land(event, self.clients))     # paho's thread, one at a time
        self.client.on_connect, self.client.on_message = on_connect, on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(info["host"], info["port"], keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(15):
            raise ConnectionError("the landing stand-in could not subscribe")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def deployment() -> dict:
    config = json.loads((REPO / "scripts" / "deployment" / "local.json").read_text())
    config["aws.greengrass.Nucleus"]["MERGE"]["mqtt"] = FAST_MQTT
    config[SENSOR]["MERGE"].update(SENSOR_FAST)
    config[STORE] = {"MERGE": STORE_LANDING}
    return config


@pytest.fixture(scope="module")
def world():
    w = World(short_tmp("bfl-"))
    try:
        w.deploy(deployment())
        yield w
    finally:
        w.close()


def test_a_batch_at_the_broker_is_not_deleted_until_the_landing_has_it(world):
    wait_for(lambda: len(world.cloud.readings()) >= 30, 120, interval=0.25,
             message=f"batches at IoT Core\n{world.log_tail()}")
    assert world.counters().get("confirmed", 0) == 0           # at the broker, not in a table: kept
    assert world.backlog() >= 30

    table = LocalTable()
    standin = LandingStandIn(world.cloud_dir, table)
    try:
        end = world.highest()
        keys = world.expected({}, end)
        wait_for(lambda: keys <= {(item["run"], item["seq"]) for item in list(table.items.values())}, 90,
                 interval=0.25, message=f"every reading produced up to {end} in the table\n{world.log_tail()}")
        wait_for(lambda: world.counters().get("confirmed", 0) >= len(keys), 60, interval=0.25,
                 message="the store's confirmations")
    finally:
        standin.close()
    assert all(item["device"] == THING for item in table.items.values())
    landed = sum(r["landed"] + r["retimed"] for r in standin.results)
    assert landed == len(table.items)                          # each reading written once
    assert not standin.kept                                    # nothing the landing could not decode
