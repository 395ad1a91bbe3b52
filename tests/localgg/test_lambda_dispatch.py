"""localgg's Lambda stand-ins, pure parts: the dispatch of work items to instances (pinned and
on-demand, queue bound, timeout, idle exit), the settings from a Lambda component's
configuration, and the recipe CreateComponentVersion generates as localgg parses it."""

from __future__ import annotations

import pytest

from localgg.lambdas.dispatch import Dispatch, Drop, Invoke, Kill, Settings, Start, Stop
from localgg.lambdas.generated import generated_recipe, name_and_version
from localgg.lambdas.launcher import event_sources, function_settings
from localgg.recipe import parse_recipe, step

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:backfill-correction:7"


def test_pinned_one_instance_from_the_start_invocations_queued_one_at_a_time():
    plan = Dispatch(Settings(pinned=True))
    assert plan.begin(0.0) == [Start(0)]
    assert plan.arrive("a", 0.1) == [Invoke(0, "a")]
    assert plan.arrive("b", 0.2) == [] and plan.arrive("c", 0.3) == []      # queued behind a
    assert plan.finished(0, 0.4) == [Invoke(0, "b")]
    assert plan.finished(0, 0.5) == [Invoke(0, "c")]
    assert plan.finished(0, 100.0) == [] and plan.tick(1000.0) == []       # never idles out


def test_pinned_timeout_kills_the_instance_and_a_new_one_takes_the_queue():
    plan = Dispatch(Settings(pinned=True, timeout_s=3))
    plan.begin(0.0)
    plan.arrive("slow", 0.0)
    plan.arrive("next", 0.1)
    assert plan.tick(2.9) == []
    assert plan.tick(3.0) == [Kill(0, "the invocation ran over timeoutInSeconds (3 s)"), Start(1), Invoke(1, "next")]
    assert plan.timed_out == 1
    assert plan.exited(0, 3.1) == []                                        # the killed one, already gone


def test_a_pinned_instance_that_dies_is_replaced():
    plan = Dispatch(Settings(pinned=True))
    plan.begin(0.0)
    assert plan.exited(0, 1.0) == [Start(1)]


def test_on_demand_starts_instances_per_work_item_up_to_the_limit_and_they_exit_when_idle():
    plan = Dispatch(Settings(pinned=False, max_instances=2, max_idle_s=60))
    assert plan.begin(0.0) == []
    assert plan.arrive("a", 0.0) == [Start(0), Invoke(0, "a")]
    assert plan.arrive("b", 0.0) == [Start(1), Invoke(1, "b")]
    assert plan.arrive("c", 0.0) == []                                      # both busy, the limit reached
    assert plan.finished(1, 1.0) == [Invoke(1, "c")]
    assert plan.finished(1, 1.5) == [] and plan.finished(0, 2.0) == []
    assert plan.tick(61.0) == []
    assert plan.tick(61.5) == [Stop(1)]
    assert plan.tick(62.0) == [Stop(0)] and plan.instances == {}
    assert plan.arrive("d", 70.0) == [Start(2), Invoke(2, "d")]


def test_the_queue_is_bounded():
    plan = Dispatch(Settings(pinned=True, max_queue=2))
    plan.begin(0.0)
    plan.arrive("a", 0.0)                      # running
    plan.arrive("b", 0.0)
    plan.arrive("c", 0.0)
    assert plan.arrive("d", 0.0) == [Drop("d", "2 work items already wait (maxQueueSize 2)")]
    assert plan.dropped == 1


def test_settings_from_the_configuration_and_bad_values_named():
    settings = Settings.from_configuration({"pinned": "false", "timeoutInSeconds": "5", "maxInstancesCount": 4,
                                            "maxQueueSize": 10, "inputPayloadEncodingType": "binary"})
    assert settings == Settings(pinned=False, timeout_s=5.0, max_idle_s=60.0, max_instances=4, max_queue=10,
                                encoding="binary")
    assert Settings.from_configuration({"pinned": True, "maxInstancesCount": 9}).max_instances == 1
    for config, says in (({"timeoutInSeconds": 0}, "timeoutInSeconds: 0 refused, allowed a whole number 1.."),
                         ({"maxIdleTimeInSeconds": 10}, "maxIdleTimeInSeconds: 10 refused, allowed a whole number 30"),
                         ({"pinned": "yes"}, "pinned: 'yes' refused, allowed true | false"),
                         ({"inputPayloadEncodingType": "xml"}, "inputPayloadEncodingType: 'xml' refused")):
        with pytest.raises(ValueError, match=says.replace("|", r"\|")):
            Settings.from_configuration(config)


def source(**params):
    return {"lambdaArn": ARN, "componentName": "io.backfill.CorrectionLambda", "componentVersion": "1.2.0",
            "componentPlatforms": [{"name": "Linux aarch64", "attributes": {"os": "linux", "architecture": "aarch64"}}],
            "componentLambdaParameters": {
                "eventSources": [{"topic": "backfill/readings/raw", "type": "PUB_SUB"}], "pinned": True,
                "linuxProcessParams": {"isolationMode": "NoContainer"}, **params}}


def test_the_generated_recipe_parses_and_selects_on_its_platform():
    doc = generated_recipe(source(environmentVariables={"CORRECTION_WINDOW": "5"}),
                           "temperature_correction.greengrass_lambda.handler", "python3.11")
    recipe = parse_recipe(doc, "generated.json")
    assert recipe.type == "aws.greengrass.lambda"
    assert set(recipe.dependencies) == {"aws.greengrass.LambdaLauncher", "aws.greengrass.TokenExchangeService",
                                        "aws.greengrass.LambdaRuntimes"}
    chosen = recipe.select({"os": "linux", "architecture": "aarch64"})
    assert chosen.artifacts[0].file_name == "lambda-artifact.zip" and chosen.artifacts[0].unarchive == "ZIP"
    assert step(chosen.lifecycle, "startup").script == "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start"
    config = recipe.default_configuration
    assert config["containerMode"] == "NoContainer" and config["pinned"] is True and config["timeoutInSeconds"] == 3
    assert config["lambdaExecutionParameters"] == {"EnvironmentVariables": {"CORRECTION_WINDOW": "5"}}
    assert event_sources(config) == [("backfill/readings/raw", "PUB_SUB")]
    with pytest.raises(Exception):
        recipe.select({"os": "linux", "architecture": "amd64"})


def test_defaults_when_the_request_leaves_them_out():
    doc = generated_recipe({"lambdaArn": ARN}, "m.handler", "python3.11")
    assert (doc["ComponentName"], doc["ComponentVersion"]) == ("backfill-correction", "7.0.0")
    assert doc["ComponentConfiguration"]["DefaultConfiguration"]["containerMode"] == "GreengrassContainer"
    with pytest.raises(ValueError, match="published version"):
        name_and_version(ARN.rsplit(":", 1)[0] + ":$LATEST")


def test_the_launcher_reads_the_function_from_the_recipes_setenv():
    env = {"AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "/a", "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": "m.h",
           "AWS_GREENGRASS_LAMBDA_EXEC_ARGS": '["python3.11","-u","/runtime/python/lambda_runtime.py"]',
           "AWS_GREENGRASS_LAMBDA_PARAMS": '{"EnvironmentVariables":{"K":1}}'}
    assert function_settings(env) == {"python": "python3.11", "handler": "m.h", "artifact": "/a",
                                      "variables": {"K": "1"}, "user": None}
    env["AWS_GREENGRASS_LAMBDA_LINUX_PROCESS_PARAMS"] = '{"user": "ggc_user", "group": "ggc_group"}'
    assert function_settings(env)["user"] == {"user": "ggc_user", "group": "ggc_group"}
    with pytest.raises(ValueError, match="lacks AWS_GREENGRASS_LAMBDA_EXEC_ARGS"):
        function_settings({k: v for k, v in env.items() if k != "AWS_GREENGRASS_LAMBDA_EXEC_ARGS"})
    with pytest.raises(ValueError, match="pubsubTopics"):
        event_sources({"pubsubTopics": {"0": {"topic": "t", "type": "MQTT"}}})
