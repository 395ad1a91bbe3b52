"""PublishToIoTCore and SubscribeToIoTCore (MqttProxyIPCAgent, docs/mqtt-spool.md 1).

Checks in the nucleus's order: topic required, then authorization (MQTT-style resources;
the only text is "Not Authorized"), then payload, then QoS. Failures of the MQTT client
are ServiceErrors "Publish to topic T failed: ..." / "Subscribe to topic T failed with error ...".
`contentType` in a publish request is ignored, as the nucleus ignores it.
"""

from __future__ import annotations


from .. import errors
from ..authz import MQTTPROXY, Authorizer
from ..iotcore.bridge import IoTCoreBridge, PublishError, SubscribeError
from ..server import Call, Operation
from .common import authorize, blob, string_field

NOT_AUTHORIZED = "Not Authorized"


def _qos(request: dict) -> int:
    qos = request.get("qos")
    if qos is None:
        raise errors.InvalidArgumentsError("QoS is required")
    if str(qos) not in ("0", "1"):
        raise errors.InvalidArgumentsError(f"Invalid QoS value: {qos}")
    return int(qos)


def _properties(request: dict) -> dict:
    props: dict = {}
    if request.get("userProperties"):
        props["user_property"] = [(str(p.get("key")), str(p.get("value"))) for p in request["userProperties"]]
    if request.get("messageExpiryIntervalSeconds") is not None:
        props["message_expiry_interval"] = int(request["messageExpiryIntervalSeconds"])
    if request.get("correlationData") is not None:
        props["correlation_data"] = blob(request["correlationData"], "correlationData")
    if request.get("responseTopic") is not None:
        props["response_topic"] = str(request["responseTopic"])
    props["payload_format_indicator"] = 1 if str(request.get("payloadFormat")) in ("1", "UTF8") else 0
    return props


class MqttProxyHandlers:
    def __init__(self, bridge: IoTCoreBridge, authz: Authorizer) -> None:
        self.bridge = bridge
        self.authz = authz

    def operations(self) -> list[Operation]:
        return [Operation("PublishToIoTCore", self.publish_to_iot_core),
                Operation("SubscribeToIoTCore", self.subscribe_to_iot_core, "IoTCoreMessage")]

    def _topic(self, call: Call, operation: str) -> str:
        topic = string_field(call.request, "topicName")
        if topic is None:
            raise errors.InvalidArgumentsError("Topic is required")
        authorize(self.authz, call.caller, MQTTPROXY, operation, topic, mqtt_style=True, message=NOT_AUTHORIZED)
        return topic

    async def publish_to_iot_core(self, call: Call) -> dict:
        topic = self._topic(call, "PublishToIoTCore")
        if call.request.get("payload") is None:
            raise errors.InvalidArgumentsError("Payload is required")
        qos = _qos(call.request)
        payload = blob(call.request["payload"], "payload")
        try:
            await self.bridge.publish(topic, payload, qos, bool(call.request.get("retain")), _properties(call.request))
        except PublishError as exc:
            raise errors.ServiceError(f"Publish to topic {topic} failed: {exc}") from exc
        return {}

    async def subscribe_to_iot_core(self, call: Call) -> dict:
        topic = self._topic(call, "SubscribeToIoTCore")
        qos = _qos(call.request)
        try:
            local = await self.bridge.subscribe(topic, qos, call.stream.send)
        except SubscribeError as exc:
            raise errors.ServiceError(f"Subscribe to topic {topic} failed with error {exc}") from exc
        call.stream.on_close(local.cancel)
        return {}


