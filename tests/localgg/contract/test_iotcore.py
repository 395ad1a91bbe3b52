"""PublishToIoTCore / SubscribeToIoTCore with the real client, against mosquitto over mutual TLS."""


import pytest
from awsiot.greengrasscoreipc.model import (InvalidArgumentsError, PayloadFormat, ServiceError, UnauthorizedError,
                                            UserProperty)

from conftest import CloudListener, policy, provisioned_core, wait_for

MQTTPROXY = "aws.greengrass.ipc.mqttproxy"
ALL = policy(MQTTPROXY, ["*"], ["*"])


@pytest.fixture
def listener(cloud_dir):
    listener = CloudListener(cloud_dir, "#")
    yield listener
    listener.close()


def online(core) -> bool:
    return core.call(lambda: core.kernel.iotcore.online)


def test_qos1_publish_reaches_iot_core_with_its_properties(iot, listener):
    client = iot.client("com.ex.Pub", ALL)
    client.publish_to_iot_core(topic_name="dt/thing/temp", qos="1", payload=b'{"t": 21.5}',
                               user_properties=[UserProperty(key="k", value="v")], payload_format=PayloadFormat.UTF8,
                               response_topic="reply/here", correlation_data=b"\x01\x02",
                               message_expiry_interval_seconds=3600, content_type="ignored/by-the-nucleus")
    [message] = wait_for(lambda: listener.messages, 10)
    assert (message.topic, message.payload, message.qos) == ("dt/thing/temp", b'{"t": 21.5}', 1)
    props = message.properties
    assert props.UserProperty == [("k", "v")] and props.PayloadFormatIndicator == 1
    assert props.ResponseTopic == "reply/here" and props.CorrelationData == b"\x01\x02"
    assert not hasattr(props, "ContentType")  # the nucleus does not copy contentType


def test_publish_succeeds_once_spooled_not_once_delivered(iot, listener):
    client = iot.client("com.ex.Pub", ALL)
    iot.call(lambda: iot.kernel.iotcore.link.down())
    wait_for(lambda: not online(iot), 10)
    for i in range(5):
        client.publish_to_iot_core(topic_name="dt/x", qos="1", payload=b"%d" % i)  # returns: it is in the spool
    assert iot.call(lambda: len(iot.kernel.iotcore.spool)) == 5
    assert listener.payloads() == []
    iot.call(lambda: iot.kernel.iotcore.link.up())
    wait_for(lambda: len(listener.payloads()) == 5, 15, message="the spool to drain")
    assert sorted(listener.payloads()) == [b"0", b"1", b"2", b"3", b"4"]
    wait_for(lambda: iot.call(lambda: len(iot.kernel.iotcore.spool)) == 0, 5)


def test_qos0_while_offline_is_refused(iot):
    client = iot.client("com.ex.Pub", ALL)
    iot.call(lambda: iot.kernel.iotcore.link.down())
    wait_for(lambda: not online(iot), 10)
    with pytest.raises(ServiceError) as err:
        client.publish_to_iot_core(topic_name="dt/x", qos="0", payload=b"x")
    assert err.value.message == "Publish to topic dt/x failed: Device is offline. Dropping QoS 0 message."


def test_full_spool_refuses_qos1_and_evicts_qos0(cloud_dir):
    core = provisioned_core(cloud_dir, {"spooler": {"maxSizeInBytes": 100, "keepQos0WhenOffline": True}})
    try:
        wait_for(lambda: online(core), 15)
        core.call(lambda: core.kernel.iotcore.link.down())
        wait_for(lambda: not online(core), 10)
        client = core.client("com.ex.Pub", ALL)
        client.publish_to_iot_core(topic_name="dt/q0", qos="0", payload=b"a" * 40)  # kept offline on request
        client.publish_to_iot_core(topic_name="dt/q1", qos="1", payload=b"b" * 50)
        client.publish_to_iot_core(topic_name="dt/q1", qos="1", payload=b"c" * 40)  # evicts the QoS 0 message
        with pytest.raises(ServiceError) as err:
            client.publish_to_iot_core(topic_name="dt/q1", qos="1", payload=b"d" * 20)
        assert err.value.message == "Publish to topic dt/q1 failed: Message spool is full. Message could not be added."
        with pytest.raises(ServiceError) as err:
            client.publish_to_iot_core(topic_name="dt/q1", qos="1", payload=b"e" * 101)
        assert err.value.message.endswith("Message is larger than the size of message spool.")
        assert core.call(lambda: (len(core.kernel.iotcore.spool), core.kernel.iotcore.spool.size)) == (2, 90)
    finally:
        core.close()


def test_message_over_128_kib_is_refused(iot):
    client = iot.client("com.ex.Pub", ALL)
    with pytest.raises(ServiceError) as err:
        client.publish_to_iot_core(topic_name="dt/big", qos="1", payload=b"x" * (128 * 1024 + 1))
    assert err.value.message == ("Publish to topic dt/big failed: The publishing message size 131073 bytes exceeds "
                                 "the configured limit of 131072 bytes")


@pytest.mark.parametrize("kwargs, message", [
    ({"qos": "1", "payload": b"x"}, "Topic is required"),
    ({"topic_name": "dt/x", "qos": "1"}, "Payload is required"),
    ({"topic_name": "dt/x", "payload": b"x"}, "QoS is required"),
    ({"topic_name": "dt/x", "qos": "2", "payload": b"x"}, "Invalid QoS value: 2"),
])
def test_invalid_arguments(iot, kwargs, message):
    client = iot.client("com.ex.Pub", ALL)
    with pytest.raises(InvalidArgumentsError) as err:
        client.publish_to_iot_core(**kwargs)
    assert err.value.message == message


@pytest.mark.parametrize("topic, text", [
    ("dt/+", "Publish topics must not contain wildcard characters of '#' or '+'"),
    ("a/b/c/d/e/f/g/h/i", "The request topic must have no more than 7 forward slashes (/)"),
    ("t" * 257, "The topic size of request must be no larger than 256 bytes"),
])
def test_topics_iot_core_would_refuse(iot, topic, text):
    client = iot.client("com.ex.Pub", ALL)
    with pytest.raises(ServiceError) as err:
        client.publish_to_iot_core(topic_name=topic, qos="1", payload=b"x")
    assert err.value.message.startswith(f"Publish to topic {topic} failed: {text}")


def test_basic_ingest_prefix_is_not_counted(iot, cloud_dir):
    # 10 slashes, 7 after the basic-ingest prefix: IoT Core takes it, and so does the core
    rules = CloudListener(cloud_dir, "$aws/rules/#", name="rules-listener")
    try:
        client = iot.client("com.ex.Pub", ALL)
        client.publish_to_iot_core(topic_name="$aws/rules/my_rule/a/b/c/d/e/f/g", qos="1", payload=b"x")
        [message] = wait_for(lambda: rules.messages, 10, message="the message at IoT Core")
        assert (message.topic, message.payload) == ("$aws/rules/my_rule/a/b/c/d/e/f/g", b"x")
    finally:
        rules.close()


def test_authorization_is_mqtt_aware_and_says_only_not_authorized(iot):
    client = iot.client("com.ex.Pub", policy(MQTTPROXY, ["aws.greengrass#PublishToIoTCore"], ["dt/#"]))
    client.publish_to_iot_core(topic_name="dt", qos="1", payload=b"x")   # "dt/#" also covers "dt"
    client.publish_to_iot_core(topic_name="dt/a/b", qos="1", payload=b"x")
    with pytest.raises(UnauthorizedError) as err:
        client.publish_to_iot_core(topic_name="other", qos="1", payload=b"x")
    assert err.value.message == "Not Authorized"
    with pytest.raises(UnauthorizedError):  # authorization comes before the payload check
        client.publish_to_iot_core(topic_name="other", qos="1")
    log = (iot.kernel.root / "logs" / "greengrass.log").read_text()  # logged as MqttProxyIPCAgent logs it
    assert ("Not Authorized. {error=Principal com.ex.Pub is not authorized to perform aws.greengrass.ipc.mqttproxy:"
            "aws.greengrass#PublishToIoTCore on resource other, principal=com.ex.Pub") in log


def test_subscribe_receives_cloud_messages_after_suback(iot, cloud_dir):
    from localgg.cloud import mqtt
    client = iot.client("com.ex.Sub", ALL)
    events = []
    client.subscribe_to_iot_core(topic_name="cmd/+", qos="1", on_stream_event=events.append)
    cloud = mqtt.connect(cloud_dir.directory, "test-cloud")
    cloud.publish("cmd/reboot", b"now", qos=1).wait_for_publish(5)
    [event] = wait_for(lambda: events, 10)
    assert (event.message.topic_name, event.message.payload, event.message.retain) == ("cmd/reboot", b"now", False)
    assert event.message.payload_format == PayloadFormat.BYTES
    cloud.loop_stop()


def test_local_routing_does_not_cover_the_parent_of_a_hash(iot, cloud_dir):
    from localgg.cloud import mqtt
    client = iot.client("com.ex.Sub", ALL)
    hashed, control = [], []
    client.subscribe_to_iot_core(topic_name="a/#", qos="1", on_stream_event=hashed.append)
    client.subscribe_to_iot_core(topic_name="ctl", qos="1", on_stream_event=control.append)
    cloud = mqtt.connect(cloud_dir.directory, "test-cloud")
    cloud.publish("a", b"parent", qos=1).wait_for_publish(5)   # the broker delivers it (MQTT: a/# covers a) ...
    cloud.publish("a/b", b"child", qos=1).wait_for_publish(5)
    cloud.publish("ctl", b"done", qos=1).wait_for_publish(5)
    wait_for(lambda: control, 10)
    assert [e.message.payload for e in hashed] == [b"child"]   # ... but the nucleus routes only a/b
    cloud.loop_stop()


def test_subscribe_offline_after_first_connection_fails(iot):
    client = iot.client("com.ex.Sub", ALL)
    iot.call(lambda: iot.kernel.iotcore.link.down())
    wait_for(lambda: not online(iot), 10)
    with pytest.raises(ServiceError) as err:
        client.subscribe_to_iot_core(topic_name="cmd/x", qos="1", on_stream_event=lambda e: None)
    assert err.value.message.startswith("Subscribe to topic cmd/x failed with error ")


def test_covered_subscription_answers_while_offline_and_stream_close_unsubscribes(iot):
    client = iot.client("com.ex.Sub", ALL)
    _, wide = client.subscribe_to_iot_core(topic_name="cmd/#", qos="1", on_stream_event=lambda e: None)
    iot.call(lambda: iot.kernel.iotcore.link.down())
    wait_for(lambda: not online(iot), 10)
    _, narrow = client.subscribe_to_iot_core(topic_name="cmd/x", qos="1",
                                             on_stream_event=lambda e: None)  # covered by cmd/#: no SUBSCRIBE
    iot.call(lambda: iot.kernel.iotcore.link.up())
    wait_for(lambda: online(iot), 10)
    cloud_topics = lambda: iot.call(lambda: iot.kernel.iotcore.cloud_subscriptions)  # noqa: E731
    wide.close().result(5)
    assert cloud_topics() == ["cmd/#"]  # still needed: it covers cmd/x
    narrow.close().result(5)
    wait_for(lambda: cloud_topics() == [], 10, message="cmd/# to go once no local subscriber needs it")


def test_subscription_survives_a_reconnect(iot, cloud_dir):
    from localgg.cloud import mqtt
    client = iot.client("com.ex.Sub", ALL)
    events = []
    client.subscribe_to_iot_core(topic_name="cmd/x", qos="1", on_stream_event=events.append)
    before = iot.call(lambda: iot.kernel.iotcore.connections)
    iot.call(lambda: iot.kernel.iotcore.link.down())
    wait_for(lambda: not online(iot), 10)
    iot.call(lambda: iot.kernel.iotcore.link.up())
    wait_for(lambda: iot.call(lambda: iot.kernel.iotcore.connections) > before and online(iot), 15)
    cloud = mqtt.connect(cloud_dir.directory, "test-cloud")
    cloud.publish("cmd/x", b"after", qos=1).wait_for_publish(5)
    wait_for(lambda: [e.message.payload for e in events] == [b"after"], 10)
    cloud.loop_stop()


def test_device_without_cloud_is_configured_offline(core):
    client = core.client("com.ex.Pub", ALL)
    with pytest.raises(ServiceError) as err:
        client.publish_to_iot_core(topic_name="dt/x", qos="1", payload=b"x")
    assert err.value.message == "Publish to topic dt/x failed: Cannot publish because device is configured to run offline"


def test_overlapping_cloud_filters_deliver_a_copy_per_filter_for_the_life_of_the_core(iot, cloud_dir):
    """Issue item 5, as the nucleus does it (MqttClient.java): subscribe skips the SUBSCRIBE only
    for a filter that an existing cloud filter covers (findExistingSubscriberForTopic), so base/#
    after base/x is a second cloud filter; unsubscribe drops a cloud filter only when it covers
    no local subscriber left, so base/# stays while the component's base/x lives; and the message
    handler gives every PUBLISH the broker sends to each local subscriber whose filter matches.
    The broker sends one PUBLISH per matching subscription (MQTT 5 section 3.3.4 allows it;
    mosquitto 2 does it), so the component gets each message twice."""
    from localgg.cloud import mqtt
    component = iot.client("com.ex.Sub", ALL)
    events = []
    component.subscribe_to_iot_core(topic_name="base/x", qos="1", on_stream_event=events.append)
    cli = iot.cli_client()   # what `localgg iotcore sub -t 'base/#'` does, as aws.greengrass.Cli
    _, operation = cli.subscribe_to_iot_core(topic_name="base/#", qos="1", on_stream_event=lambda e: None)
    cloud_topics = lambda: iot.call(lambda: iot.kernel.iotcore.cloud_subscriptions)  # noqa: E731
    assert cloud_topics() == ["base/#", "base/x"]
    operation.close().result(5)   # Ctrl-C on the CLI
    assert cloud_topics() == ["base/#", "base/x"]   # base/# covers the component's base/x: kept
    cloud = mqtt.connect(cloud_dir.directory, "test-cloud")
    cloud.publish("base/x", b"one", qos=1).wait_for_publish(5)
    cloud.publish("base/x", b"end", qos=1).wait_for_publish(5)
    payloads = lambda: [e.message.payload for e in events]  # noqa: E731
    wait_for(lambda: payloads().count(b"end") == 2, 10, message="both copies of the last message")
    assert payloads() == [b"one", b"one", b"end", b"end"]
    cloud.loop_stop()
