"""The operations greengrass-cli uses, served as aws.greengrass.Cli serves them.

CLIEventStreamAgent (docs/ipc-services.md 6, docs/lifecycle-recipes.md 4-5): the Cli's own
token is always allowed; any other component needs an accessControl policy for
`aws.greengrass.Cli`. Unknown components are ResourceNotFoundError
"Component with name <n> not found in Greengrass".
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .. import errors
from ..authz import CLI, MQTTPROXY, PUBSUB, Authorizer
from ..deployer import Deployment
from ..server import Call, Operation
from .common import authorize


# What CLIService.authorizePubSubPermission writes for each of its clients (CLIService.java:
# policies "aws.greengrass.Cli:pubsub:<n>" and "...1000", `*` operations on `*` resources), so
# that `greengrass-cli pubsub|iotcore pub|sub` work. localgg's CLI client is aws.greengrass.Cli
# itself, whose configuration stays as it was: the grant is given by the Authorizer.
CLI_CLIENT_ACCESS = {
    service: {policy: {"policyDescription": "Allows access to publish/subscribe topic.",
                       "operations": ["*"], "resources": ["*"]}}
    for service, policy in ((PUBSUB, "aws.greengrass.Cli:pubsub:1"), (MQTTPROXY, "aws.greengrass.Cli:pubsub:11000"))}


class Components(Protocol):
    """The deployed components as the CLI sees them (the kernel is one)."""

    def state_of(self, name: str) -> str | None: ...
    def component_details(self, name: str) -> dict | None: ...
    def list_components(self) -> list[dict]: ...
    def restart_component(self, name: str) -> bool: ...
    def stop_component(self, name: str) -> bool: ...


class Deployments(Protocol):
    """Local deployments (deployer.Deployer is one)."""

    def submit(self, request: dict) -> str: ...
    def get(self, deployment_id: str) -> Deployment | None: ...
    def history(self) -> list[Deployment]: ...


class CliHandlers:
    def __init__(self, authz: Authorizer, components: Components, deployments: Deployments,
                 artifacts: Path) -> None:
        self.authz = authz
        self.components = components
        self.deployments = deployments
        self.artifacts = artifacts   # the core's packages/artifacts: a deployment must not copy it into itself

    def operations(self) -> list[Operation]:
        return [Operation("CreateLocalDeployment", self.create_local_deployment),
                Operation("GetLocalDeploymentStatus", self.get_local_deployment_status),
                Operation("ListLocalDeployments", self.list_local_deployments),
                Operation("ListComponents", self.list_components),
                Operation("GetComponentDetails", self.get_component_details),
                Operation("RestartComponent", self.restart_component),
                Operation("StopComponent", self.stop_component)]

    def _authorize(self, call: Call, operation: str, resource: str) -> None:
        if call.caller != CLI:
            authorize(self.authz, call.caller, CLI, operation, resource)

    def _component(self, call: Call, operation: str) -> str:
        name = call.request.get("componentName")
        if not name:
            raise errors.InvalidArgumentsError("Component name cannot be empty")
        self._authorize(call, operation, name)
        if self.components.state_of(name) is None:
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
        if artifacts and self.artifacts.is_relative_to(Path(artifacts).resolve()):
            raise errors.InvalidArtifactsDirectoryPathError(
                "Requested artifacts directory path is parent of kernel artifacts directory path. Specify another "
                "path to avoid recursive copy")
        if ":" in str(request.get("groupName") or ""):
            raise errors.InvalidArgumentsError("Thing group name cannot contain colon characters")
        return {"deploymentId": self.deployments.submit(request)}

    def get_local_deployment_status(self, call: Call) -> dict:
        self._authorize(call, "GetLocalDeploymentStatus", "*")
        deployment = self.deployments.get(str(call.request.get("deploymentId") or ""))
        if deployment is None:
            raise errors.ResourceNotFoundError("Cannot find deployment", "LocalDeployment",
                                               call.request.get("deploymentId"))
        return {"deployment": deployment.to_model()}

    def list_local_deployments(self, call: Call) -> dict:
        self._authorize(call, "ListLocalDeployments", "*")
        return {"localDeployments": [d.to_model() for d in self.deployments.history()]}

    def list_components(self, call: Call) -> dict:
        self._authorize(call, "ListComponents", "*")
        return {"components": self.components.list_components()}

    def get_component_details(self, call: Call) -> dict:
        name = self._component(call, "GetComponentDetails")
        return {"componentDetails": self.components.component_details(name)}

    def restart_component(self, call: Call) -> dict:
        name = self._component(call, "RestartComponent")
        return {"restartStatus": "SUCCEEDED" if self.components.restart_component(name) else "FAILED"}

    def stop_component(self, call: Call) -> dict:
        name = self._component(call, "StopComponent")
        return {"stopStatus": "SUCCEEDED" if self.components.stop_component(name) else "FAILED"}
