"""Helpers shared by the IPC handlers: request fields, Gson's number handling, authorization."""

from __future__ import annotations

import base64
import binascii
import logging

from .. import errors
from ..authz import Authorizer, Denied

log = logging.getLogger("localgg.ipc.authorization")


def gson_numbers(value: object) -> object:
    """Numbers inside a free-form JSON object come back from the nucleus as doubles
    (Gson reads Object-typed numbers as Double: `{"n": 42}` arrives as `{"n": 42.0}`)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: gson_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [gson_numbers(v) for v in value]
    return value


def blob(value: object, field: str) -> bytes:
    """A base64 blob field; Gson fails on anything else."""
    if not isinstance(value, str):
        raise errors.Unmodelled(f"{field} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.Unmodelled(f"{field} is not valid base64: {exc}") from exc


def authorize(authz: Authorizer, principal: str, service: str, operation: str, resource: str | None,
              *, mqtt_style: bool = False, message: str | None = None) -> None:
    """UnauthorizedError with the nucleus's text (or `message`, e.g. mqttproxy's "Not Authorized").

    Every refusal is logged with the principal, operation and resource: as MqttProxyIPCAgent
    logs it (`Not Authorized. {error=...}`), and for the other services too, which the
    nucleus only tells the client."""
    try:
        authz.check(principal, service, "aws.greengrass#" + operation, resource, mqtt_style)
    except Denied as exc:
        log.info("%s. {error=%s, principal=%s, operation=%s:aws.greengrass#%s, resource=%s}",
                 message or "Unauthorized", exc, principal, service, operation, resource)
        raise errors.UnauthorizedError(message or str(exc)) from exc


def string_field(request: dict, name: str) -> str | None:
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise errors.Unmodelled(f"{name} must be a string")
    return str(value) if not isinstance(value, bool) else str(value).lower()
