"""The runner with the real backfill_common.ipc.Ipc and awsiot client on an in-process localgg
core connected to mosquitto (IoT Core stand-in): readings reach the cloud in batches, are
confirmed by their echo and deleted; a link outage loses nothing and the newest reading
leads the back-fill."""

import threading

from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

from backfill_common.clock import SystemClock
from backfill_common.ipc import Ipc
from conftest import CloudListener, wait_for
from store_and_forward import packer
from store_and_forward.runner import Runner

from store_harness import corrected

COMPONENT = "io.backfill.StoreAndForward"
THING = "test-thing"
TOPIC = f"dt/backfill/{THING}/readings"
SHADOW = f"$aws/things/{THING}/shadow/name/backfill"
CONFIG = {"commit_interval_ms": 50, "max_latency_ms": 200, "confirm_timeout_s": 2, "probe_max_s": 2,
          "accessControl": {
              "aws.greengrass.ipc.pubsub": {f"{COMPONENT}:pubsub:1": {
                  "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
                  "resources": ["backfill/readings/corrected", "backfill/acks", f"{SHADOW}/update/documents"]}},
              "aws.greengrass.ipc.mqttproxy": {f"{COMPONENT}:mqttproxy:1": {
                  "operations": ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"],
                  "resources": ["dt/backfill/{iot:thingName}/readings", TOPIC,
                                "dt/backfill/{iot:thingName}/dead-letters"]}}}}
PRODUCER = {"accessControl": {"aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["*"]}}}}


class RecordingIpc(Ipc):
    """The real adapter, remembering what it handed to PublishToIoTCore."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent = []

    def publish_iot(self, topic, payload, qos=1):
        super().publish_iot(topic, payload, qos)
        self.sent.append(payload)


def readings_in(payloads):
    return {r["seq"]: r for p in payloads for r in packer.decode(p)}


def test_batches_reach_iot_core_survive_an_outage_and_are_deleted(iot, cloud_dir, tmp_path):
    listener = CloudListener(cloud_dir, TOPIC)
    producer = iot.client("com.test.Producer", PRODUCER)
    acks, lock = [], threading.Lock()

    def on_ack(event):
        with lock:
            acks.append(event.json_message.message)
    producer.subscribe_to_topic(topic="backfill/acks", on_stream_event=on_ack)

    def send(seqs):
        for seq in seqs:
            producer.publish_to_topic(topic="backfill/readings/corrected", publish_message=PublishMessage(
                json_message=JsonMessage(message=corrected(seq, device=THING))))

    ipc = RecordingIpc(client=iot.client(COMPONENT, CONFIG), thing_name=THING)
    runner = Runner(ipc, SystemClock(), tmp_path)
    runner.start()
    stop = threading.Event()
    loop = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    loop.start()
    try:
        send(range(0, 200))
        wait_for(lambda: set(range(200)) <= set(readings_in(listener.payloads())), 20, message="200 in the cloud")
        wait_for(lambda: any(int(a["seq"]) == 199 for a in list(acks)), 10, message="ack of 199")
        wait_for(lambda: runner.forwarder.store.count == 0, 10, message="the store emptied by echoes")
        assert len(listener.payloads()) < 20                     # batches, not a message per reading

        iot.call(lambda: iot.kernel.iotcore.link.down())
        send([200])
        wait_for(lambda: runner.forwarder.ledger.link == "offline", 10, message="the store sees the outage")
        send(range(201, 400))
        def taken(c):       # readings taken: stored, or (online) sent from memory and confirmed unstored
            return c["stored"] + c["live"]
        wait_for(lambda: taken(runner.forwarder.store.counters) == 400, 10, message="a backlog while offline")
        before = len(listener.payloads())
        published = set(readings_in(ipc.sent))              # handed to the core before the link returned
        iot.call(lambda: iot.kernel.iotcore.link.up())
        wait_for(lambda: set(range(400)) <= set(readings_in(listener.payloads())), 30, message="all 400 in the cloud")
        wait_for(lambda: runner.forwarder.store.count == 0, 15, message="the backlog confirmed and deleted")
        after = [{r["seq"] for r in packer.decode(p)} for p in listener.payloads()[before:]]
        backlog = min(set(range(200, 400)) - published)   # the oldest reading never sent before
        newest = next(i for i, seqs in enumerate(after) if 399 in seqs)
        assert newest <= next(i for i, seqs in enumerate(after) if backlog in seqs)   # the newest first
        counters = runner.forwarder.store.counters
        assert taken(counters) == 400 and counters["confirmed"] == 400
        assert counters["evicted"] == 0
    finally:
        stop.set()
        loop.join(10)
        runner.close()
        ipc.close()
        listener.close()
