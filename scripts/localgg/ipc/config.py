"""GetConfiguration, UpdateConfiguration, SubscribeToConfigurationUpdate,
SubscribeToValidateConfigurationUpdates, SendConfigurationValidityReport.

Texts and rules are ConfigStoreIPCEventStreamAgent's (docs/ipc-services.md 4): no
authorization; any component's configuration may be read or watched; a component
updates only its own; `timestamp` is epoch seconds; a stale one fails with
FailedUpdateConditionCheckError; accessControl cannot be changed over IPC.

Validation (`Validation`, DynamicComponentConfigurationValidator.java): a deployment asks
every component that is already running, keeps its version and gets a different
configuration, and has subscribed, to validate it, and waits for all their reports at
most 20 s (DEFAULT_TIMEOUT_SECOND, what a local deployment always uses). A REJECTED report
or no report in time fails the deployment with the nucleus's text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .. import errors, limits
from ..configstore import ConfigStore, Container, Leaf, to_python
from ..server import Call, Operation, Stream
from .common import gson_numbers

log = logging.getLogger("localgg.deployment.validation")

KEY_NOT_FOUND = "Key not found"
STALE = "Proposed timestamp is older than the config's latest modified timestamp"
VALIDATION_TIMEOUT = 20.0   # DynamicComponentConfigurationValidator.DEFAULT_TIMEOUT_SECOND
NULL_DEPLOYMENT = "Cannot accept configuration validity report, the deployment ID provided was null"
NO_REQUEST = "Validation request either timed out or was never made"
REJECTED = "Components reported that their to-be-deployed configuration is invalid"
# + TimeoutException.getMessage(), which CompletableFuture.get leaves null
TIMED_OUT = "Error while waiting for validation report for one or more components:null"


class Validation:
    """The components listening for validation requests, and the reports a deployment waits for."""

    def __init__(self) -> None:
        self._listeners: dict[str, Stream] = {}
        self._pending: dict[tuple[str, str], asyncio.Future] = {}

    def listen(self, component: str, stream: Stream) -> None:
        """Only a component's first stream gets the requests (computeIfAbsent); closing any of
        its streams ends its listening (onStreamClosed removes the component)."""
        self._listeners.setdefault(component, stream)
        stream.on_close(lambda: self._listeners.pop(component, None))

    def report(self, component: str, report: dict) -> None:
        future = self._pending.pop((component, str(report["deploymentId"])), None)
        if future is None:
            raise errors.InvalidArgumentsError(NO_REQUEST)
        if not future.done():
            future.set_result(report)

    async def validate(self, deployment_id: str, proposed: dict[str, dict], timeout: float) -> str | None:
        """Ask the listening components among `proposed` (name -> new configuration) to validate;
        None if none rejected it in time, else the deployment's failure cause."""
        loop = asyncio.get_running_loop()
        asked: dict[str, asyncio.Future] = {}
        try:
            for name, configuration in proposed.items():
                stream = self._listeners.get(name)
                if stream is None:
                    continue
                asked[name] = self._pending[(name, deployment_id)] = loop.create_future()
                stream.send({"validateConfigurationUpdateEvent": {"configuration": configuration,
                                                                  "deploymentId": deployment_id}})
            if not asked:
                return None
            try:
                await asyncio.wait_for(asyncio.gather(*asked.values()), timeout)
            except asyncio.TimeoutError:
                log.error("%s", TIMED_OUT)
                return TIMED_OUT
            cause, rejected = REJECTED, False
            for name, future in asked.items():
                report = future.result()
                if str(report.get("status")) == "REJECTED":
                    cause += f" {{ name = {name}, message = {report.get('message')} }}"
                    log.error("Component reported that its to-be-deployed configuration is invalid. "
                              "{component=%s, message=%s}", name, report.get("message"))
                    rejected = True
            return cause if rejected else None
        finally:
            for name, future in asked.items():
                if self._pending.get((name, deployment_id)) is future:
                    del self._pending[(name, deployment_id)]
                future.cancel()


def _key_path(request: dict) -> list[str]:
    path = request.get("keyPath") or []
    if not isinstance(path, list):
        raise errors.Unmodelled("keyPath must be a list of strings")
    return [str(k) for k in path]


class ConfigHandlers:
    def __init__(self, store: ConfigStore, on_update: Callable[[str], None] = lambda component: None,
                 validation: Validation | None = None) -> None:
        self.store = store
        self._on_update = on_update
        self.validation = validation or Validation()

    def operations(self) -> list[Operation]:
        return [Operation("GetConfiguration", self.get_configuration),
                Operation("UpdateConfiguration", self.update_configuration),
                Operation("SubscribeToConfigurationUpdate", self.subscribe_to_configuration_update,
                          "ConfigurationUpdateEvents"),
                Operation("SubscribeToValidateConfigurationUpdates", self.subscribe_to_validate_configuration_updates,
                          "ValidateConfigurationUpdateEvents"),
                Operation("SendConfigurationValidityReport", self.send_configuration_validity_report)]

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

    def subscribe_to_validate_configuration_updates(self, call: Call) -> dict:
        self.validation.listen(call.caller, call.stream)
        return {}

    def send_configuration_validity_report(self, call: Call) -> dict:
        report = call.request.get("configurationValidityReport")
        if not isinstance(report, dict):  # getConfigurationValidityReport() is null: a NullPointerException
            raise errors.ServiceError("configurationValidityReport is required")
        if report.get("deploymentId") is None:
            raise errors.InvalidArgumentsError(NULL_DEPLOYMENT)
        self.validation.report(call.caller, report)
        return {}
