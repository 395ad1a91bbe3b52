"""The main job's fallback when mosquitto cannot be installed: the pip-installable amqtt
broker (MQTT 3.1.1), reached with the nucleus's own `mqtt.version: mqtt3` client mode."""

import shutil

import pytest

from conftest import CloudListener, CoreThread, policy, short_tmp, wait_for
from localgg.cloud.service import Cloud


@pytest.fixture
def amqtt_cloud():
    base = short_tmp("lgga-")
    cloud = Cloud(base / "cloud", broker="amqtt")
    cloud.start()
    yield cloud
    cloud.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_core_publishes_and_subscribes_through_the_embedded_broker(amqtt_cloud):
    root = short_tmp("lggi-") / "gg"
    amqtt_cloud.provision(root, "fallback-thing")
    core = CoreThread(root)
    listener = CloudListener(amqtt_cloud, "dt/#")
    try:
        wait_for(lambda: core.call(lambda: core.kernel.iotcore.online), 20, message="an mqtt3 connection")
        client = core.client("com.ex.Pub", policy("aws.greengrass.ipc.mqttproxy", ["*"], ["*"]))
        client.publish_to_iot_core(topic_name="dt/fallback", qos="1", payload=b"via amqtt")
        wait_for(lambda: listener.payloads() == [b"via amqtt"], 10)
        events = []
        client.subscribe_to_iot_core(topic_name="cmd/#", qos="1", on_stream_event=events.append)
        listener.client.publish("cmd/x", b"down", qos=1).wait_for_publish(5)
        [event] = wait_for(lambda: events, 10)
        assert (event.message.topic_name, event.message.payload) == ("cmd/x", b"down")
    finally:
        listener.close()
        core.close()
        shutil.rmtree(root.parent, ignore_errors=True)
