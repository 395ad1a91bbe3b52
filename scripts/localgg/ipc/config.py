"""GetConfiguration, UpdateConfiguration, SubscribeToConfigurationUpdate.

Texts and rules are ConfigStoreIPCEventStreamAgent's (docs/ipc-services.md 4): no
authorization; any component's configuration may be read or watched; a component
updates only its own; `timestamp` is epoch seconds; a stale one fails with
FailedUpdateConditionCheckError; accessControl cannot be changed over IPC.
"""

from __future__ import annotations

from typing import Callable

from .. import errors, limits
from ..configstore import ConfigStore, Container, Leaf, to_python
from ..server import Call, Operation
from .common import gson_numbers

KEY_NOT_FOUND = "Key not found"
STALE = "Proposed timestamp is older than the config's latest modified timestamp"


def _key_path(request: dict) -> list[str]:
    path = request.get("keyPath") or []
    if not isinstance(path, list):
        raise errors.Unmodelled("keyPath must be a list of strings")
    return [str(k) for k in path]


class ConfigHandlers:
    def __init__(self, store: ConfigStore, on_update: Callable[[str], None] = lambda component: None) -> None:
        self.store = store
        self._on_update = on_update

    def operations(self) -> list[Operation]:
        return [Operation("GetConfiguration", self.get_configuration),
                Operation("UpdateConfiguration", self.update_configuration),
                Operation("SubscribeToConfigurationUpdate", self.subscribe_to_configuration_update,
                          "ConfigurationUpdateEvents")]

    def get_configuration(self, call: Call) -> dict:
        component = call.request.get("componentName") or call.caller
        node = self.store.get(component, _key_path(call.request)) if self.store.has(component) else None
        if node is None:
            raise errors.ResourceNotFoundError(KEY_NOT_FOUND)
        value = {node.name: to_python(node)} if isinstance(node, Leaf) else to_python(node)
        return {"componentName": component, "value": value}

    def update_configuration(self, call: Call) -> dict:
        request = call.request
        timestamp = request.get("timestamp")
        if timestamp is None:
            raise errors.InvalidArgumentsError("Timestamp is required")
        value = request.get("valueToMerge")
        if value is None:
            raise errors.InvalidArgumentsError("ValueToMerge is required")
        if not isinstance(value, dict) or not isinstance(timestamp, (int, float)):
            raise errors.Unmodelled("valueToMerge must be an object and timestamp a number")
        path = _key_path(request)
        if (not path and "accessControl" in value) or (path and path[0] == "accessControl"):
            raise errors.InvalidArgumentsError("Config update is not allowed for following fields [accessControl]")
        if not self.store.has(call.caller):
            raise errors.InvalidArgumentsError(f"Component config not found for component {call.caller}")
        if len(path) + limits.depth(value, limits.MAX_DEPTH) > limits.MAX_DEPTH:
            raise errors.InvalidArgumentsError(
                f"Configuration cannot nest deeper than {limits.MAX_DEPTH} levels, key path included (localgg's limit)")
        ts_ms = int(timestamp * 1000)
        if self.store.get(call.caller, path) is None:
            ts_ms = self.store.clock_ms()  # a new node: the nucleus merges at the new node's modtime
        self.store.merge(call.caller, path, gson_numbers(value), ts_ms)
        node = self.store.get(call.caller, path)
        latest = node.latest() if isinstance(node, Container) else node.modtime
        self._on_update(call.caller)
        if ts_ms < latest:
            raise errors.FailedUpdateConditionCheckError(STALE)
        return {}

    def subscribe_to_configuration_update(self, call: Call) -> dict:
        component = call.request.get("componentName") or call.caller
        path = _key_path(call.request)
        if not self.store.has(component) or self.store.get(component, path) is None:
            raise errors.ResourceNotFoundError(KEY_NOT_FOUND)
        stream = call.stream

        def changed(name: str, leaf_path: list[str]) -> None:
            stream.send({"configurationUpdateEvent": {"componentName": name, "keyPath": leaf_path}})
        stream.on_close(self.store.watch(component, path, changed))
        return {}
