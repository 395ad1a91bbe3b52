"""PublishToTopic / SubscribeToTopic through the real GreengrassCoreIPCClientV2."""

import threading

import pytest
from awsiot.greengrasscoreipc.model import (BinaryMessage, InvalidArgumentsError, JsonMessage, PublishMessage,
                                            ReceiveMode, ServiceError, UnauthorizedError)
from awsiot.eventstreamrpc import StreamClosedError

from conftest import policy, wait_for

PUBSUB = "aws.greengrass.ipc.pubsub"
ALL_OPS = ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"]


def allow(resources=("*",)):
    return policy(PUBSUB, ALL_OPS, list(resources))


class Inbox:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.events.append(event)

    def messages(self):
        with self.lock:
            return [e.json_message.message if e.json_message else e.binary_message.message for e in self.events]


def json_msg(payload):
    return PublishMessage(json_message=JsonMessage(message=payload))


def test_json_message_reaches_subscriber_with_topic_and_gson_numbers(core):
    pub, sub = core.client("com.ex.Pub", allow()), core.client("com.ex.Sub", allow())
    inbox = Inbox()
    sub.subscribe_to_topic(topic="sensors/temp", on_stream_event=inbox)
    pub.publish_to_topic(topic="sensors/temp", publish_message=json_msg({"n": 42, "ok": True, "s": "x"}))
    wait_for(inbox.messages)
    event = inbox.events[0]
    assert event.json_message.context.topic == "sensors/temp"
    # the nucleus re-encodes JSON numbers as doubles (Gson): 42 arrives as 42.0
    assert event.json_message.message == {"n": 42.0, "ok": True, "s": "x"}
    assert isinstance(event.json_message.message["n"], float)


def test_binary_message_stays_binary(core):
    pub, sub = core.client("com.ex.Pub", allow()), core.client("com.ex.Sub", allow())
    inbox = Inbox()
    sub.subscribe_to_topic(topic="raw", on_stream_event=inbox)
    pub.publish_to_topic(topic="raw", publish_message=PublishMessage(binary_message=BinaryMessage(message=b"\x00\xff")))
    wait_for(inbox.messages)
    assert inbox.events[0].binary_message.message == b"\x00\xff"
    assert inbox.events[0].binary_message.context.topic == "raw"
    assert inbox.events[0].json_message is None


@pytest.mark.parametrize("filter_, topic, delivered", [
    ("a/+/c", "a/b/c", True), ("a/+/c", "a/b/d", False), ("a/#", "a/b/c", True),
    ("a/#", "a", False),  # the nucleus's trie: '#' does not match the parent level
    ("#", "$aws/things/x", True), ("a/b", "a/b/", True),  # a trailing '/' is ignored
])
def test_wildcard_matching(core, filter_, topic, delivered):
    pub, sub = core.client("com.ex.Pub", allow()), core.client("com.ex.Sub", allow())
    inbox, control = Inbox(), Inbox()
    sub.subscribe_to_topic(topic=filter_, on_stream_event=inbox)
    sub.subscribe_to_topic(topic="control", on_stream_event=control)
    pub.publish_to_topic(topic=topic, publish_message=json_msg({"v": 1}))
    pub.publish_to_topic(topic="control", publish_message=json_msg({"done": 1}))
    wait_for(control.messages)  # ordered per subscriber connection: the first publish was routed before
    assert bool(inbox.messages()) is delivered


def test_receive_mode_defaults_and_override(core):
    me = core.client("com.ex.Self", allow())
    wild, exact, wild_all, control = Inbox(), Inbox(), Inbox(), Inbox()
    me.subscribe_to_topic(topic="t/+", on_stream_event=wild)          # default: from others
    me.subscribe_to_topic(topic="t/x", on_stream_event=exact)         # default: all
    me.subscribe_to_topic(topic="t/#", on_stream_event=wild_all, receive_mode=ReceiveMode.RECEIVE_ALL_MESSAGES)
    me.subscribe_to_topic(topic="control", on_stream_event=control)
    me.publish_to_topic(topic="t/x", publish_message=json_msg({"v": 1}))
    me.publish_to_topic(topic="control", publish_message=json_msg({"v": 2}))
    wait_for(control.messages)
    wait_for(wild_all.messages)
    assert wild.messages() == [] and exact.messages() == [{"v": 1.0}]


def test_from_others_is_by_component_not_connection(core):
    first = core.client("com.ex.Same", allow())
    second = core.client("com.ex.Same", allow())
    other = core.client("com.ex.Other", allow())
    inbox = Inbox()
    first.subscribe_to_topic(topic="t/+", on_stream_event=inbox)
    second.publish_to_topic(topic="t/a", publish_message=json_msg({"from": "same"}))
    other.publish_to_topic(topic="t/a", publish_message=json_msg({"from": "other"}))
    wait_for(inbox.messages)
    assert inbox.messages() == [{"from": "other"}]


def test_delivery_is_ordered_per_subscriber(core):
    pub, sub = core.client("com.ex.Pub", allow()), core.client("com.ex.Sub", allow())
    inbox = Inbox()
    sub.subscribe_to_topic(topic="seq", on_stream_event=inbox)
    futures = [pub.publish_to_topic_async(topic="seq", publish_message=json_msg({"i": i})) for i in range(300)]
    for f in futures:
        f.result(10)
    wait_for(lambda: len(inbox.messages()) == 300)
    assert [m["i"] for m in inbox.messages()] == [float(i) for i in range(300)]


def test_publishing_with_no_subscriber_succeeds(core):
    from awsiot.greengrasscoreipc.model import PublishToTopicResponse
    pub = core.client("com.ex.Pub", allow())
    response = pub.publish_to_topic(topic="nobody/listens", publish_message=json_msg({}))
    assert isinstance(response, PublishToTopicResponse)  # a response, not an error
    later = Inbox()  # and the message is not kept for a later subscriber
    pub.subscribe_to_topic(topic="nobody/listens", on_stream_event=later)
    pub.publish_to_topic(topic="nobody/listens", publish_message=json_msg({"second": True}))
    wait_for(later.messages)
    assert later.messages() == [{"second": True}]


def test_closing_the_stream_unsubscribes(core):
    pub, sub = core.client("com.ex.Pub", allow()), core.client("com.ex.Sub", allow())
    closed, still = Inbox(), Inbox()
    _, operation = sub.subscribe_to_topic(topic="t", on_stream_event=closed)
    sub.subscribe_to_topic(topic="t", on_stream_event=still)
    before = core.call(lambda: core.kernel.bus.subscription_count)
    operation.close().result(5)
    wait_for(lambda: core.call(lambda: core.kernel.bus.subscription_count) == before - 1)
    pub.publish_to_topic(topic="t", publish_message=json_msg({"after": 1}))
    wait_for(still.messages)
    assert closed.messages() == []


def test_disconnecting_unsubscribes(core):
    count = lambda: core.call(lambda: core.kernel.bus.subscription_count)  # noqa: E731
    before = count()  # the core's own subscriptions (ShadowManager listens on $aws/things/+/shadow/#)
    sub = core.client("com.ex.Sub", allow())
    sub.subscribe_to_topic(topic="t", on_stream_event=Inbox())
    wait_for(lambda: count() == before + 1)
    sub.close()
    wait_for(lambda: count() == before)


def test_unauthorized_publish_has_the_nucleus_message(core):
    pub = core.client("com.ex.Pub", allow(["allowed/*"]))
    with pytest.raises(UnauthorizedError) as err:
        pub.publish_to_topic(topic="secret/x", publish_message=json_msg({}))
    assert err.value.message == ("Principal com.ex.Pub is not authorized to perform "
                                 "aws.greengrass.ipc.pubsub:aws.greengrass#PublishToTopic on resource secret/x")
    pub.publish_to_topic(topic="allowed/x", publish_message=json_msg({}))
    log = (core.kernel.root / "logs" / "greengrass.log").read_text()  # the refusal is in the core's log too
    assert ("Unauthorized. {error=Principal com.ex.Pub is not authorized to perform aws.greengrass.ipc.pubsub:"
            "aws.greengrass#PublishToTopic on resource secret/x, principal=com.ex.Pub, operation=aws.greengrass.ipc."
            "pubsub:aws.greengrass#PublishToTopic, resource=secret/x}") in log
    assert "allowed/x" not in log


def test_component_without_policy_is_denied(core):
    nobody = core.client("com.ex.Nobody", {})
    with pytest.raises(UnauthorizedError):
        nobody.subscribe_to_topic(topic="t", on_stream_event=Inbox())


def test_wildcard_subscription_needs_a_resource_matching_the_literal_filter(core):
    # '+' and '#' are literal in pub/sub policies: "a/b" does not allow subscribing to "a/+"
    sub = core.client("com.ex.Sub", policy(PUBSUB, ALL_OPS, ["a/b", "c/#"]))
    with pytest.raises(UnauthorizedError):
        sub.subscribe_to_topic(topic="a/+", on_stream_event=Inbox())
    sub.subscribe_to_topic(topic="c/#", on_stream_event=Inbox())
    with pytest.raises(UnauthorizedError):
        sub.subscribe_to_topic(topic="c/x", on_stream_event=Inbox())


def test_operation_wildcard_and_escape_in_policies(core):
    pub = core.client("com.ex.Pub", policy(PUBSUB, ["*"], ["q/${*}"]))
    with pytest.raises(InvalidArgumentsError):  # authorized: the literal '*' policy matched, then refused
        pub.publish_to_topic(topic="q/*", publish_message=json_msg({}))
    with pytest.raises(UnauthorizedError):
        pub.publish_to_topic(topic="q/anything", publish_message=json_msg({}))


def test_publish_to_wildcard_topic_is_invalid(core):
    pub = core.client("com.ex.Pub", allow())
    for topic in ("a/+", "a/#", "a+b"):
        with pytest.raises(InvalidArgumentsError) as err:
            pub.publish_to_topic(topic=topic, publish_message=json_msg({}))
        assert err.value.message == "Publish topic must not contain a wildcard."


def test_empty_topic_is_refused_by_authorization_first(core):
    pub = core.client("com.ex.Pub", allow())
    with pytest.raises(UnauthorizedError) as err:
        pub.publish_to_topic(topic="", publish_message=json_msg({}))
    assert err.value.message == "Resource cannot be empty"


def test_both_message_kinds_is_a_service_error(core):
    pub = core.client("com.ex.Pub", allow())
    both = PublishMessage(json_message=JsonMessage(message={}), binary_message=BinaryMessage(message=b"x"))
    with pytest.raises(ServiceError) as err:
        pub.publish_to_topic(topic="t", publish_message=both)
    assert "More than one union member set" in err.value.message


def test_a_json_message_that_is_not_an_object_cannot_be_deserialized(core):
    pub = core.client("com.ex.Pub", allow())
    with pytest.raises(StreamClosedError):  # the nucleus answers an unmodelled InternalServerError
        pub.publish_to_topic(topic="t", publish_message=PublishMessage(json_message=JsonMessage(message=[1, 2])))
    pub.publish_to_topic(topic="t", publish_message=json_msg({"still": "works"}))
