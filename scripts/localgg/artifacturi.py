"""Artifact URIs as the nucleus checks them before a deployment prepares any component.

Usage::

    check_prerequisites([(name, [artifact.uri, ...]), ...], closure={name, ...})   # or raises ArtifactUriError
    scheme("s3://bucket/key")            # "s3"; None when the URI has none

The nucleus (aws-greengrass-nucleus componentmanager/builtins/ArtifactDownloaderFactory.java
checkDownloadPrerequisites and validateArtifactUri, called by DefaultDeploymentTask for every
component the deployment resolves, before anything is downloaded or merged):
- a URI without a scheme: "Artifact URI X is invalid. It does not have a scheme";
- a scheme other than greengrass, s3 or docker (any case; `file:`, `http:`, ...):
  "Artifact URI X is invalid. Only URI schemes supported are [GREENGRASS, S3, DOCKER]";
  both wrapped as "Failed to download due to bad artifact URI: X for component C", the
  deployment FAILED_NO_STATE_CHANGE with the causes joined by ". " (Utils.generateFailureMessage);
- `docker:` needs aws.greengrass.DockerApplicationManager in the deployment ("Deployments
  containing docker artifacts must include the aws.greengrass.DockerApplicationManager
  component"), then a URI that follows docker's grammar (plugins/docker/DockerImageArtifactParser
  .java: `docker:[registry/]name[:tag|@digest]`), then, for a private ECR registry (a registry
  with "dkr.ecr" and "amazonaws" in it), aws.greengrass.TokenExchangeService ("Deployments
  containing private ECR Docker artifacts must include the aws.greengrass.TokenExchangeService
  component").
Error codes and types: DeploymentErrorCode.java, DeploymentErrorCodeUtils.java (DEPLOYMENT_FAILURE
first, then each exception's codes along the cause chain; the types of those codes).
"""

from __future__ import annotations

import re
from typing import Iterable

SUPPORTED = ("GREENGRASS", "S3", "DOCKER")
DOCKER_MANAGER = "aws.greengrass.DockerApplicationManager"
TOKEN_EXCHANGE = "aws.greengrass.TokenExchangeService"
RECIPE_ERROR = "COMPONENT_RECIPE_ERROR"
REQUEST_ERROR = "REQUEST_ERROR"

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")     # java.net.URI's scheme
_DOMAIN_PART = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^{_DOMAIN_PART}(\.{_DOMAIN_PART})*(:[0-9]+)?$")
_PATH_PART = r"([a-z0-9]+)(([_.]|__|[-]*)([a-z0-9]+))*"
_PATH = re.compile(rf"^({_PATH_PART}(/{_PATH_PART})*)$")
_TAG = re.compile(r"^([\w][\w.-]{0,127})$")
_DIGEST = re.compile(r"^([A-Za-z][A-Za-z0-9]*:[0-9a-fA-F]{32,})$")
INVALID_DOCKER_URI = ("Invalid Docker image artifact uri. URI should follow the format of "
                      "`docker:registry/image_name[:tag]|[@digest]`, where registry, tag or digest are optional")


class ArtifactUriError(ValueError):
    """A deployment the nucleus fails before it changes anything: the message is its failure
    cause; `stack` and `types` its deploymentErrorStack and deploymentErrorTypes."""

    def __init__(self, message: str, stack: list[str], types: list[str]) -> None:
        super().__init__(message)
        self.stack, self.types = stack, types


def scheme(uri: str) -> str | None:
    found = _SCHEME.match(uri)
    return found.group(1) if found else None


def _bad_uri(uri: str, component: str, reason: str, code: str) -> ArtifactUriError:
    return ArtifactUriError(f"Failed to download due to bad artifact URI: {uri} for component {component}. {reason}",
                            ["DEPLOYMENT_FAILURE", "COMPONENT_PACKAGE_LOADING_ERROR", "ARTIFACT_URI_NOT_VALID", code],
                            [RECIPE_ERROR])


def docker_registry(uri: str) -> str | None:
    """The registry of a `docker:` URI (None: Docker Hub's), or raises ValueError if it is not one."""
    rest = uri[uri.index(":") + 1:]
    registry = None
    if "/" in rest:
        registry, _, rest = rest.partition("/")
        if not rest or not _DOMAIN.search(registry):
            raise ValueError(INVALID_DOCKER_URI)
    if "@" in rest:
        name, _, digest = rest.partition("@")
        if not digest or not _DIGEST.search(digest):
            raise ValueError(INVALID_DOCKER_URI)
    elif ":" in rest:
        name, _, tag = rest.partition(":")
        if not tag or not _TAG.search(tag):
            raise ValueError(INVALID_DOCKER_URI)
    else:
        name = rest
    if not _PATH.search(name):
        raise ValueError(INVALID_DOCKER_URI)
    return registry


def _private_ecr(registry: str | None) -> bool:
    return (registry is not None and "public.ecr.aws" not in registry
            and "dkr.ecr" in registry and "amazonaws" in registry)


def check_prerequisites(components: Iterable[tuple[str, list[str]]], closure: set[str]) -> None:
    """`components`: each component the deployment resolves and its artifacts' URIs, in order."""
    for component, uris in components:
        for uri in uris:
            found = scheme(uri)
            if found is None:
                raise _bad_uri(uri, component, f"Artifact URI {uri} is invalid. It does not have a scheme",
                               "EMPTY_ARTIFACT_SCHEME")
            if found.upper() not in SUPPORTED:
                raise _bad_uri(uri, component, f"Artifact URI {uri} is invalid. Only URI schemes supported are "
                                               f"[{', '.join(SUPPORTED)}]", "UNSUPPORTED_ARTIFACT_SCHEME")
            if found.upper() != "DOCKER":
                continue
            if DOCKER_MANAGER not in closure:
                raise ArtifactUriError(f"Deployments containing docker artifacts must include the {DOCKER_MANAGER} "
                                       f"component", ["DEPLOYMENT_FAILURE", "MISSING_DOCKER_APPLICATION_MANAGER"],
                                       [REQUEST_ERROR])
            try:
                registry = docker_registry(uri)
            except ValueError as exc:
                raise _bad_uri(uri, component, str(exc), "DOCKER_ARTIFACT_URI_NOT_VALID") from None
            if _private_ecr(registry) and TOKEN_EXCHANGE not in closure:
                raise ArtifactUriError(f"Deployments containing private ECR Docker artifacts must include the "
                                       f"{TOKEN_EXCHANGE} component",
                                       ["DEPLOYMENT_FAILURE", "MISSING_TOKEN_EXCHANGE_SERVICE"], [REQUEST_ERROR])
