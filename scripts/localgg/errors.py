"""IPC errors with the real service's shape names and payloads.

Raise one of these from a service or handler; the server turns it into an
APPLICATION_ERROR whose `service-model-type` is the shape and whose payload carries
`message` (what the Python client reads) plus the Java nucleus's `_message`,
`_errorCode` and `_service` (greengrass-ipc-wire.md, "Errors").
"""

from __future__ import annotations

SERVICE = "aws.greengrass#GreengrassCoreIPC"


class IpcError(Exception):
    """Base class. `shape` is the model name without the `aws.greengrass#` prefix."""

    shape = "ServiceError"

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = {k: v for k, v in fields.items() if v is not None}

    @property
    def model_type(self) -> str:
        return "aws.greengrass#" + self.shape

    def to_payload(self) -> dict:
        return {"message": self.message, **self.fields,
                "_message": self.message, "_errorCode": self.shape, "_service": SERVICE}


class ServiceError(IpcError):
    shape = "ServiceError"


class UnauthorizedError(IpcError):
    shape = "UnauthorizedError"


class InvalidArgumentsError(IpcError):
    shape = "InvalidArgumentsError"


class ResourceNotFoundError(IpcError):
    shape = "ResourceNotFoundError"

    def __init__(self, message: str, resource_type: str | None = None,
                 resource_name: str | None = None) -> None:
        super().__init__(message, resourceType=resource_type, resourceName=resource_name)


class ConflictError(IpcError):
    shape = "ConflictError"


class FailedUpdateConditionCheckError(IpcError):
    shape = "FailedUpdateConditionCheckError"





class InvalidArtifactsDirectoryPathError(IpcError):
    shape = "InvalidArtifactsDirectoryPathError"


class Unmodelled(Exception):
    """The nucleus could not deserialize the request: it answers a plain-text
    `InternalServerError` without a shape, which the Python client sees as
    StreamClosedError. Raise this where Gson would have failed."""
