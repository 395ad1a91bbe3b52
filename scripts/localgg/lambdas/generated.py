"""The recipe greengrassv2 CreateComponentVersion generates from a `lambdaFunction` request. Pure.

    recipe = generated_recipe(request["lambdaFunction"], handler="pkg.mod.handler", runtime="python3.11")

Written from the documented shape, not from the service (which is not open): AWS docs
import-lambda-function-cli and API_LambdaFunctionRecipeSource / API_LambdaExecutionParameters
(defaults: componentName = the function's name, componentVersion = <function version>.0.0,
timeoutInSeconds 3, statusTimeoutInSeconds 60, maxIdleTimeInSeconds 60, maxInstancesCount 100,
maxQueueSize 1000, inputPayloadEncodingType json, pinned true, isolationMode
GreengrassContainer), and published generated recipes (ComponentType aws.greengrass.lambda;
artifact greengrass:lambda-artifact.zip; dependencies LambdaLauncher HARD, TokenExchangeService
HARD, LambdaRuntimes SOFT, each ">=2.0.0 <3.0.0"; a top-level Lifecycle whose startup runs
`lambda-launcher start` and whose setenv carries the function as AWS_GREENGRASS_LAMBDA_*).
Facts and their sources: iot-rules-and-lambda.md, section B. The generated recipe has no
accessControl: give it in the deployment's configuration (scripts/import-lambda writes it).
"""

from __future__ import annotations

import json

LAUNCHER = "aws.greengrass.LambdaLauncher"
RUNTIMES = "aws.greengrass.LambdaRuntimes"
TOKEN_EXCHANGE = "aws.greengrass.TokenExchangeService"
ARTIFACT = "lambda-artifact.zip"
DEPENDENCY_RANGE = ">=2.0.0 <3.0.0"
DEFAULTS = {"timeoutInSeconds": 3, "statusTimeoutInSeconds": 60, "maxIdleTimeInSeconds": 60,
            "maxInstancesCount": 100, "maxQueueSize": 1000, "inputPayloadEncodingType": "json", "pinned": True}


def name_and_version(lambda_arn: str) -> tuple[str, str]:
    """(function name, version) of a qualified Lambda ARN; ValueError for $LATEST or an alias."""
    parts = lambda_arn.split(":")
    if len(parts) != 8 or not parts[7].isdigit():
        raise ValueError(f"lambdaArn must name a published version (…:function:NAME:N), not {lambda_arn!r}")
    return parts[6], parts[7]


def generated_recipe(source: dict, handler: str, runtime: str) -> dict:
    """The recipe for `source` (LambdaFunctionRecipeSource, as sent) of a function whose
    configuration has `handler` and `runtime` (Lambda's GetFunctionConfiguration)."""
    arn = source["lambdaArn"]
    function, version = name_and_version(arn)
    params = source.get("componentLambdaParameters") or {}
    linux = params.get("linuxProcessParams") or {}
    config = {"lambdaExecutionParameters": {"EnvironmentVariables": dict(params.get("environmentVariables") or {})},
              "containerParams": dict(linux.get("containerParams") or {"memorySize": 16384, "mountROSysfs": False,
                                                                         "volumes": {}, "devices": {}}),
              "containerMode": linux.get("isolationMode", "GreengrassContainer")}
    for key, default in DEFAULTS.items():
        config[key] = params.get(key, default)
    config["pubsubTopics"] = {str(i): {"topic": s["topic"], "type": s.get("type", "PUB_SUB")}
                              for i, s in enumerate(params.get("eventSources") or [])}
    dependencies = {LAUNCHER: {"VersionRequirement": DEPENDENCY_RANGE, "DependencyType": "HARD"},
                    TOKEN_EXCHANGE: {"VersionRequirement": DEPENDENCY_RANGE, "DependencyType": "HARD"},
                    RUNTIMES: {"VersionRequirement": DEPENDENCY_RANGE, "DependencyType": "SOFT"}}
    for name, dep in (source.get("componentDependencies") or {}).items():
        dependencies[name] = {"VersionRequirement": dep.get("versionRequirement", "*"),
                              "DependencyType": dep.get("dependencyType", "HARD")}
    platforms = source.get("componentPlatforms") or [{}]
    launcher = "{%s:artifacts:path}/lambda-launcher" % LAUNCHER
    exec_args = [runtime, "-u", "/runtime/python/lambda_runtime.py", f"--handler={handler}"]
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": source.get("componentName") or function,
        "ComponentVersion": source.get("componentVersion") or f"{version}.0.0",
        "ComponentType": "aws.greengrass.lambda",
        "ComponentDescription": f"Lambda function {function} version {version}",
        "ComponentPublisher": "AWS Lambda",
        "ComponentSource": arn,
        "ComponentConfiguration": {"DefaultConfiguration": config},
        "ComponentDependencies": dependencies,
        "Manifests": [{"Platform": dict(p.get("attributes") or {}), "Lifecycle": {},
                       "Artifacts": [{"Uri": f"greengrass:{ARTIFACT}", "Unarchive": "ZIP",
                                      "Permission": {"Read": "OWNER", "Execute": "NONE"}}]}
                      for p in platforms],
        "Lifecycle": {
            "startup": {"requiresPrivilege": True, "script": f"{launcher} start"},
            "setenv": {
                "AWS_GREENGRASS_LAMBDA_CONTAINER_MODE": "{configuration:/containerMode}",
                "AWS_GREENGRASS_LAMBDA_ARN": arn,
                "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": handler,
                "AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "{artifacts:decompressedPath}/lambda-artifact",
                "AWS_GREENGRASS_LAMBDA_CONTAINER_PARAMS": "{configuration:/containerParams}",
                "AWS_GREENGRASS_LAMBDA_STATUS_TIMEOUT_SECONDS": "{configuration:/statusTimeoutInSeconds}",
                "AWS_GREENGRASS_LAMBDA_ENCODING_TYPE": "{configuration:/inputPayloadEncodingType}",
                "AWS_GREENGRASS_LAMBDA_PARAMS": "{configuration:/lambdaExecutionParameters}",
                "AWS_GREENGRASS_LAMBDA_RUNTIME_PATH": "{%s:artifacts:decompressedPath}/runtime/" % RUNTIMES,
                "AWS_GREENGRASS_LAMBDA_EXEC_ARGS": json.dumps(exec_args, separators=(",", ":")),
                "AWS_GREENGRASS_LAMBDA_RUNTIME": runtime,
            },
            "shutdown": {"requiresPrivilege": True, "script": f"{launcher} stop; {launcher} clean"},
        },
    }
