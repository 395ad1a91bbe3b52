"""The operations greengrass-cli uses, served as aws.greengrass.Cli serves them.

CLIEventStreamAgent (docs/ipc-services.md 6, docs/lifecycle-recipes.md 4-5): the Cli's own
token is always allowed; any other component needs an accessControl policy for
`aws.greengrass.Cli`. Unknown components are ResourceNotFoundError
"Component with name <n> not found in Greengrass".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import errors
from ..authz import CLI, MQTTPROXY, PUBSUB
from ..server import Call, Operation
from .common import authorize

if TYPE_CHECKING:
    from ..kernel import Kernel


# What CLIService.authorizePubSubPermission writes for each of its clients (CLIService.java:
# policies "aws.greengrass.Cli:pubsub:<n>" and "...1000", `*` operations on `*` resources), so
# that `greengrass-cli pubsub|iotcore pub|sub` work. localgg's CLI client is aws.greengrass.Cli
# itself, whose configuration stays as it was: the grant is given by the Authorizer.
CLI_CLIENT_ACCESS = {
    service: {policy: {"policyDescription": "Allows access to publish/subscribe topic.",
                       "operations": ["*"], "resources": ["*"]}}
    for service, policy in ((PUBSUB, "aws.greengrass.Cli:pubsub:1"), (MQTTPROXY, "aws.greengrass.Cli:pubsub:11000"))}


class CliHandlers:
    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel

    def operations(self) -> list[Operation]:
        return [Operation(name, getattr(self, _snake(name))) for name in (
            "CreateLocalDeployment", "GetLocalDeploymentStatus", "ListLocalDeployments", "ListComponents",
            "GetComponentDetails", "RestartComponent", "StopComponent")]

    def _authorize(self, call: Call, operation: str, resource: str) -> None:
        if call.caller != CLI:
            authorize(self.kernel.authz, call.caller, CLI, operation, resource)

    def _component(self, call: Call, operation: str) -> str:
        name = call.request.get("componentName")
        if not name:
            raise errors.InvalidArgumentsError("Component name cannot be empty")
        self._authorize(call, operation, name)
        if self.kernel.state_of(name) is None:
            raise errors.ResourceNotFoundError(f"Component with name {name} not found in Greengrass",
                                               "Component", name)
        return name

    def create_local_deployment(self, call: Call) -> dict:
        self._authorize(call, "CreateLocalDeployment", "*")
        request = call.request
        for key in ("recipeDirectoryPath", "artifactsDirectoryPath"):
            if request.get(key) is not None and not isinstance(request[key], str):
                raise errors.Unmodelled(f"{key} must be a string")
        artifacts = request.get("artifactsDirectoryPath")
        if artifacts and self.kernel.path("packages", "artifacts").is_relative_to(Path(artifacts).resolve()):
            raise errors.InvalidArtifactsDirectoryPathError(
                "Requested artifacts directory path is parent of kernel artifacts directory path. Specify another "
                "path to avoid recursive copy")
        if ":" in str(request.get("groupName") or ""):
            raise errors.InvalidArgumentsError("Thing group name cannot contain colon characters")
        return {"deploymentId": self.kernel.submit_deployment(request)}

    def get_local_deployment_status(self, call: Call) -> dict:
        self._authorize(call, "GetLocalDeploymentStatus", "*")
        deployment = self.kernel.deployment(str(call.request.get("deploymentId") or ""))
        if deployment is None:
            raise errors.ResourceNotFoundError("Cannot find deployment", "LocalDeployment",
                                               call.request.get("deploymentId"))
        return {"deployment": deployment.to_model()}

    def list_local_deployments(self, call: Call) -> dict:
        self._authorize(call, "ListLocalDeployments", "*")
        return {"localDeployments": [d.to_model() for d in self.kernel.list_deployments()]}

    def list_components(self, call: Call) -> dict:
        self._authorize(call, "ListComponents", "*")
        return {"components": self.kernel.list_components()}

    def get_component_details(self, call: Call) -> dict:
        name = self._component(call, "GetComponentDetails")
        return {"componentDetails": self.kernel.component_details(name)}

    def restart_component(self, call: Call) -> dict:
        name = self._component(call, "RestartComponent")
        return {"restartStatus": "SUCCEEDED" if self.kernel.restart_component(name) else "FAILED"}

    def stop_component(self, call: Call) -> dict:
        name = self._component(call, "StopComponent")
        return {"stopStatus": "SUCCEEDED" if self.kernel.stop_component(name) else "FAILED"}


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
