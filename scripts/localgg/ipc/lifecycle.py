"""UpdateState (LifecycleIPCEventStreamAgent, docs/ipc-services.md 5): no authorization;
a transition the lifecycle does not allow is ignored and still answered `{}`."""

from __future__ import annotations

from typing import Callable

from .. import errors
from ..server import Call, Operation


class LifecycleHandlers:
    def __init__(self, report: Callable[[str, str], bool | None]) -> None:
        """`report(component, state)` returns None when the component is unknown."""
        self._report = report

    def operations(self) -> list[Operation]:
        return [Operation("UpdateState", self.update_state)]

    def update_state(self, call: Call) -> dict:
        state = call.request.get("state")
        if state not in ("RUNNING", "ERRORED"):
            raise errors.ServiceError(f"Invalid state {state!r}: a component may report RUNNING or ERRORED")
        if self._report(call.caller, state) is None:
            raise errors.ResourceNotFoundError("Component with given name not found", "Component", call.caller)
        return {}
