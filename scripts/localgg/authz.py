"""Authorization from each component's `accessControl` configuration.

Usage::

    authz = Authorizer(lambda component: store.value(component, ["accessControl"]))
    authz.check("com.example.Pub", PUBSUB, "aws.greengrass#PublishToTopic", "sensors/t")
    # raises Denied("Principal com.example.Pub is not authorized to perform ...")

The rules are the nucleus's (`authorization/AuthorizationHandler.java`,
`WildcardTrie.java`; docs/ipc-services.md section 3):
- policies live at `accessControl.<service>.<policyId>.{operations, resources}`; the
  principal is the component that declares them; no policy means denied;
- an operation matches when it is listed by full name or `*` is listed;
- resources: `*` matches any run of characters ('/' included); `${*}`, `${$}`, `${?}`
  stand for those characters. For the MQTT proxy only (`mqtt_style=True`), `+` as a
  whole level matches one level and a final `#` matches the rest, the parent included.
  Elsewhere `+` and `#` are literal: subscribing to `a/#` needs a resource matching
  the string `a/#`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable

PUBSUB = "aws.greengrass.ipc.pubsub"
MQTTPROXY = "aws.greengrass.ipc.mqttproxy"
CLI = "aws.greengrass.Cli"


class Denied(Exception):
    """The principal may not do this; `str(exc)` is the nucleus's message."""


def _ci(mapping: object, key: str) -> object:
    if not isinstance(mapping, dict):
        return None
    for k, v in mapping.items():
        if str(k).lower() == key.lower():
            return v
    return None


@lru_cache(maxsize=2048)
def _resource_regex(pattern: str, mqtt_style: bool) -> re.Pattern:
    levels = pattern.split("/")
    parts = []
    for index, level in enumerate(levels):
        if mqtt_style and level == "#" and index == len(levels) - 1:
            if index == 0:
                return re.compile(r".*", re.S)
            return re.compile("/".join(parts) + r"(?:/.*)?", re.S)
        if mqtt_style and level == "+":
            parts.append(r"[^/]*")
            continue
        out, i = [], 0
        while i < len(level):
            escape = level[i:i + 4]
            if len(escape) == 4 and escape[:2] == "${" and escape[3] == "}" and escape[2] in "*$?":
                out.append(re.escape(level[i + 2]))
                i += 4
            elif level[i] == "*":
                out.append(r".*")
                i += 1
            else:
                out.append(re.escape(level[i]))
                i += 1
        parts.append("".join(out))
    return re.compile("/".join(parts), re.S)


def resource_matches(pattern: str, resource: str, mqtt_style: bool = False) -> bool:
    return _resource_regex(pattern, mqtt_style).fullmatch(resource) is not None


class Authorizer:
    """`granted`: principal -> an accessControl block the core gives it besides its own
    configuration (greengrass-cli's clients get `*` on pub/sub and the MQTT proxy)."""

    def __init__(self, access_control_of: Callable[[str], object],
                 granted: dict[str, dict] | None = None) -> None:
        self._access_control_of = access_control_of
        self._granted = granted or {}

    def policies(self, principal: str, service: str) -> list[tuple[list[str], list[str]]]:
        """(operations, resources) pairs the principal declared for `service`."""
        declared = []
        for access_control in (self._access_control_of(principal), self._granted.get(principal)):
            service_policies = _ci(access_control, service)
            if isinstance(service_policies, dict):
                declared.extend(service_policies.values())
        out = []
        for policy in declared:
            operations = _ci(policy, "operations")
            if not isinstance(operations, list) or not operations:
                continue  # a policy without operations is dropped
            resources = _ci(policy, "resources")
            out.append(([str(o) for o in operations],
                        [str(r) for r in resources] if isinstance(resources, list) else []))
        return out

    def allowed(self, principal: str, service: str, operation: str, resource: str | None,
                mqtt_style: bool = False) -> bool:
        for operations, resources in self.policies(principal, service):
            if operation not in operations and "*" not in operations:
                continue
            if resource is None:
                return True
            if any(resource_matches(r, resource, mqtt_style) for r in resources if r):
                return True
        return False

    def check(self, principal: str, service: str, operation: str, resource: str | None,
              mqtt_style: bool = False) -> None:
        """Raise Denied with the nucleus's message unless allowed."""
        if resource == "":
            raise Denied("Resource cannot be empty")
        if not self.allowed(principal, service, operation, resource, mqtt_style):
            raise Denied(f"Principal {principal} is not authorized to perform "
                         f"{service}:{operation} on resource {resource}")
