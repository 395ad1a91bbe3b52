"""What a component's own accessControl lets it do, judged as the nucleus judges it. Pure.

    why = denied(config["accessControl"], PUBSUB, PUBLISH, "backfill/readings/raw", thing="pi-1")
    # None, or why the nucleus would answer UnauthorizedError

A topic setting that the component's accessControl does not allow would deploy as
SUCCEEDED and then fail every publish or subscription (the pipeline stalls without a word
in the deployment); the settings refuse it with this reason instead.

The rules (aws-greengrass-nucleus `authorization/AuthorizationHandler.java`, and
`../shared/reference/greengrass-semantics.md`): policies are
`accessControl.<service>.<policyId>.{operations, resources}`; an operation is named in full
or `*`; a resource may hold `*` (any characters); mqttproxy resources also match MQTT `+`
(one level) and `#` (the rest). `{iot:thingName}` is replaced only when the nucleus
interpolates the component's configuration, so both readings of it are accepted here: a
refusal must be certain.
"""

from __future__ import annotations

import re
from typing import Optional

PUBSUB = "aws.greengrass.ipc.pubsub"
MQTT = "aws.greengrass.ipc.mqttproxy"
PUBLISH = "aws.greengrass#PublishToTopic"
SUBSCRIBE = "aws.greengrass#SubscribeToTopic"
PUBLISH_IOT = "aws.greengrass#PublishToIoTCore"
SUBSCRIBE_IOT = "aws.greengrass#SubscribeToIoTCore"
THING = "{iot:thingName}"


def _pattern(resource: str, mqtt_style: bool) -> re.Pattern:
    levels = resource.split("/")
    out = []
    for index, level in enumerate(levels):
        if mqtt_style and level == "#" and index == len(levels) - 1:
            return re.compile("/".join(out) + ("(?:/.*)?" if out else ".*"), re.S)
        if mqtt_style and level == "+":
            out.append("[^/]*")
        else:
            out.append(".*".join(re.escape(part) for part in level.split("*")))
    return re.compile("/".join(out), re.S)


def _matches(resource: str, topic: str, mqtt_style: bool, thing: str) -> bool:
    readings = {resource, resource.replace(THING, thing)} if thing else {resource}
    return any(_pattern(r, mqtt_style).fullmatch(topic) for r in readings)


def policies(access_control: object, service: str) -> list[tuple[list, list]]:
    """(operations, resources) of each of `service`'s policies (service names as the nucleus
    compares them, without regard to case)."""
    if not isinstance(access_control, dict):
        return []
    found = [v for k, v in access_control.items() if str(k).lower() == service.lower()]
    out = []
    for block in found:
        for policy in (block.values() if isinstance(block, dict) else ()):
            if isinstance(policy, dict):
                operations, resources = policy.get("operations"), policy.get("resources")
                if isinstance(operations, list) and operations:
                    out.append(([str(o) for o in operations],
                                [str(r) for r in resources] if isinstance(resources, list) else []))
    return out


def denied(access_control: object, service: str, operation: str, topic: str, thing: str = "") -> Optional[str]:
    """Why `operation` on `topic` is not allowed, or None when it is. No accessControl at
    all (not a dict): nothing to judge by, None."""
    if not isinstance(access_control, dict):
        return None
    mqtt_style = service == MQTT
    allowing = []
    for operations, resources in policies(access_control, service):
        if operation in operations or "*" in operations:
            allowing += resources
            if any(r and _matches(r, topic, mqtt_style, thing) for r in resources):
                return None
    return (f"{topic!r} is not in this component's accessControl ({service} {operation} allows "
            f"{', '.join(allowing) if allowing else 'nothing'}): the nucleus would refuse it with "
            f"UnauthorizedError; add the topic to accessControl in the same deployment")


def foreign_thing(access_control: object, operation: str, topic: str, thing: str) -> Optional[str]:
    """Why an IoT Core `topic` would be refused in the cloud although the component's mqttproxy
    accessControl allows it, or None. The recipes allow IoT Core topics with `+` at the thing's
    level (so that a deployment without interpolation forwards); that `+` stands for this core's
    own thing, and IoT Core's policy (${iot:Connection.Thing.ThingName}) refuses any other. A
    topic that one of those resources allows only with another name there is refused here."""
    if not isinstance(access_control, dict) or not thing:
        return None
    exact = False
    others = set()
    for operations, resources in policies(access_control, MQTT):
        if operation not in operations and "*" not in operations:
            continue
        for resource in resources:
            if not _matches(resource, topic, True, thing):
                continue
            levels, parts = resource.split("/"), topic.split("/")
            named = {parts[i] for i, level in enumerate(levels) if level == "+" and i < len(parts)}
            if not named or named == {thing}:
                exact = True
            else:
                others |= named - {thing}
    if exact or not others:
        return None
    return (f"{topic!r} names {', '.join(sorted(others))} where this core's own thing "
            f"({thing}) belongs: IoT Core's policy would refuse it")

