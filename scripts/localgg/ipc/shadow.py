"""Get/Update/DeleteThingShadow and ListNamedShadowsForThing: translate to ShadowManager.

Payloads are base64 blobs on the wire; errors keep ShadowManager's shapes and texts
(ResourceNotFoundError "No shadow found" with resourceType "shadow")."""

from __future__ import annotations

import base64

from .. import errors
from ..server import Call, Operation
from ..shadow.manager import ShadowManager, ShadowRequestError
from .common import blob, string_field

_SHAPES = {"InvalidArgumentsError": errors.InvalidArgumentsError, "ConflictError": errors.ConflictError,
           "UnauthorizedError": errors.UnauthorizedError, "ServiceError": errors.ServiceError}


def _translate(error: ShadowRequestError) -> errors.IpcError:
    if error.shape == "ResourceNotFoundError":
        return errors.ResourceNotFoundError(error.message, error.resource_type)
    return _SHAPES.get(error.shape, errors.ServiceError)(error.message)


class ShadowHandlers:
    def __init__(self, manager: ShadowManager) -> None:
        self.manager = manager

    def operations(self) -> list[Operation]:
        return [Operation("GetThingShadow", self.get_thing_shadow),
                Operation("UpdateThingShadow", self.update_thing_shadow),
                Operation("DeleteThingShadow", self.delete_thing_shadow),
                Operation("ListNamedShadowsForThing", self.list_named_shadows_for_thing)]

    def _call(self, fn, *args) -> object:
        try:
            return fn(*args)
        except ShadowRequestError as exc:
            raise _translate(exc) from exc

    def get_thing_shadow(self, call: Call) -> dict:
        r = call.request
        payload = self._call(self.manager.get, call.caller, string_field(r, "thingName"), string_field(r, "shadowName"))
        return {"payload": base64.b64encode(payload).decode()}

    def update_thing_shadow(self, call: Call) -> dict:
        r = call.request
        raw = blob(r["payload"], "payload") if r.get("payload") is not None else None
        payload = self._call(self.manager.update, call.caller, string_field(r, "thingName"),
                             string_field(r, "shadowName"), raw)
        return {"payload": base64.b64encode(payload).decode()}

    def delete_thing_shadow(self, call: Call) -> dict:
        r = call.request
        payload = self._call(self.manager.delete, call.caller, string_field(r, "thingName"),
                             string_field(r, "shadowName"))
        return {"payload": base64.b64encode(payload).decode()}

    def list_named_shadows_for_thing(self, call: Call) -> dict:
        r = call.request
        body = self._call(self.manager.list_named, call.caller, string_field(r, "thingName"), r.get("pageSize"),
                          string_field(r, "nextToken"))
        return body
