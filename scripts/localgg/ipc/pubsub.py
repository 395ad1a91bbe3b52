"""PublishToTopic and SubscribeToTopic: parse, authorize, validate, call the bus.

Order and texts of checks are PubSubIPCEventStreamAgent's (docs/ipc-services.md 2.1-2.2):
authorization first (an empty topic is "Resource cannot be empty"), then the message
union, then the topic.
"""

from __future__ import annotations

from .. import errors
from ..authz import PUBSUB, Authorizer
from ..pubsub import PubSub
from ..server import Call, Operation
from .common import authorize, blob, gson_numbers, string_field

BOTH_SET = "More than one union member set for type: aws.greengrass#PublishMessage"


class PubSubHandlers:
    def __init__(self, bus: PubSub, authz: Authorizer) -> None:
        self.bus = bus
        self.authz = authz

    def operations(self) -> list[Operation]:
        return [Operation("PublishToTopic", self.publish_to_topic),
                Operation("SubscribeToTopic", self.subscribe_to_topic, "SubscriptionResponseMessage")]

    def publish_to_topic(self, call: Call) -> dict:
        topic = string_field(call.request, "topic")
        authorize(self.authz, call.caller, PUBSUB, "PublishToTopic", topic)
        message = call.request.get("publishMessage")
        if not isinstance(message, dict):
            raise errors.ServiceError("publishMessage is required")
        kinds = [k for k in ("jsonMessage", "binaryMessage") if message.get(k) is not None]
        if len(kinds) > 1:
            raise errors.ServiceError(BOTH_SET)
        if topic is None:
            raise errors.InvalidArgumentsError("Publish topic must not be null")
        if any(c in topic for c in "+#*"):
            raise errors.InvalidArgumentsError("Publish topic must not contain a wildcard.")
        outgoing: dict = {}
        if kinds == ["jsonMessage"]:
            payload = message["jsonMessage"].get("message") if isinstance(message["jsonMessage"], dict) else None
            if not isinstance(payload, dict):
                raise errors.Unmodelled("jsonMessage.message must be a JSON object")
            outgoing["jsonMessage"] = {"message": gson_numbers(payload)}
        elif kinds == ["binaryMessage"]:
            body = message["binaryMessage"]
            raw = body.get("message") if isinstance(body, dict) else None
            if raw is None:
                raise errors.ServiceError("binaryMessage.message is required")
            blob(raw, "binaryMessage.message")
            outgoing["binaryMessage"] = {"message": raw}
        self.bus.publish(topic, call.caller, outgoing)
        return {}

    def subscribe_to_topic(self, call: Call) -> dict:
        topic = string_field(call.request, "topic")
        authorize(self.authz, call.caller, PUBSUB, "SubscribeToTopic", topic)
        if not topic:
            raise errors.InvalidArgumentsError("Subscribe topic must not be empty")
        subscription = self.bus.subscribe(topic, call.caller, call.request.get("receiveMode"), call.stream.send)
        call.stream.on_close(subscription.cancel)
        return {}
