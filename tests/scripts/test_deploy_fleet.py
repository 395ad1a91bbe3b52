"""scripts/deploy-fleet, offline: the CreateDeployment request it sends (botocore's Stubber
checks it against the greengrassv2 model; STS answered by moto), --dry-run sends nothing,
and a bad configuration is refused before any request."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.session
from botocore.stub import Stubber
from moto import mock_aws

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "deploy-fleet"


def script():
    loader = importlib.machinery.SourceFileLoader("deploy_fleet", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("deploy_fleet", loader))
    loader.exec_module(module)
    return module


def test_the_request_sent_is_the_filled_template_and_fits_the_model(capsys):
    fleet = script()
    config = {"io.backfill.StoreAndForward": {"MERGE": {"max_latency_ms": 60000}, "RESET": ["/confirm"]}}
    client = botocore.session.get_session().create_client(
        "greengrassv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with mock_aws():
        sts = boto3.client("sts", region_name="eu-west-1")
        account = sts.get_caller_identity()["Account"]
        expected = fleet.request(f"arn:aws:iot:eu-west-1:{account}:thinggroup/backfill-sensors", config, "2.14.3")
        with Stubber(client) as stub:
            stub.add_response("create_deployment", {"deploymentId": "d-1", "iotJobId": "j-1"}, expected)
            assert fleet.main(["--thing-group", "backfill-sensors", "--region", "eu-west-1", "--config",
                               json.dumps(config), "--nucleus-version", "2.14.3"], client=client, sts=sts) == 0
            stub.assert_no_pending_responses()
    assert "deployment d-1 (IoT job j-1)" in capsys.readouterr().out
    components = expected["components"]
    version = fleet.bundle_version()
    assert {c["componentVersion"] for n, c in components.items() if n.startswith("io.backfill.")} == {version}
    assert components["aws.greengrass.Nucleus"]["componentVersion"] == "2.14.3"
    store = components["io.backfill.StoreAndForward"]["configurationUpdate"]
    assert json.loads(store["merge"]) == {"max_latency_ms": 60000} and store["reset"] == ["/confirm"]
    assert expected["deploymentPolicies"]["failureHandlingPolicy"] == "ROLLBACK"
    assert expected["iotJobConfiguration"]["abortConfig"]["criteriaList"][0]["action"] == "CANCEL"


def test_dry_run_prints_the_request_and_needs_no_credentials():
    result = subprocess.run([sys.executable, str(SCRIPT), "--thing-group", "g1", "--account", "123456789012",
                             "--dry-run"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["targetArn"] == "arn:aws:iot:us-east-1:123456789012:thinggroup/g1"


def test_a_configuration_for_a_component_not_deployed_or_out_of_shape_is_refused():
    for config in ('{"aws.greengrass.LogManager": {"MERGE": {}}}', '{"io.backfill.StoreAndForward": {"merge": {}}}',
                   "{not json"):
        result = subprocess.run([sys.executable, str(SCRIPT), "--thing-group", "g1", "--account", "1", "--dry-run",
                                 "--config", config], capture_output=True, text=True)
        assert result.returncode != 0 and "--config" in result.stderr, (config, result.stderr)
    result = subprocess.run([sys.executable, str(SCRIPT), "--thing-group", "bad/group", "--account", "1", "--dry-run"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "--thing-group" in result.stderr


LAMBDA = "io.backfill.TemperatureCorrectionLambda"


def test_the_lambda_form_sends_sensor_lambda_and_store_with_import_lambdas_configuration(tmp_path, capsys):
    fleet = script()
    access = {"accessControl": {"aws.greengrass.ipc.pubsub": {"my.Correction:pubsub:1": {
        "operations": ["aws.greengrass#SubscribeToTopic"], "resources": ["site/raw"]}}}}
    (tmp_path / "lambda-config.json").write_text(json.dumps({"my.Correction": {"MERGE": access}}))
    config = {"my.Correction": {"MERGE": {"pinned": False}}}
    client = botocore.session.get_session().create_client(
        "greengrassv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    lam = fleet.LambdaForm("my.Correction", "2.0.1", access)
    expected = fleet.request("arn:aws:iot:eu-west-1:123456789012:thinggroup/g1", config, None, None, lam)
    with Stubber(client) as stub:          # checks the request against the greengrassv2 model
        stub.add_response("create_deployment", {"deploymentId": "d-2"}, expected)
        assert fleet.main(["--thing-group", "g1", "--region", "eu-west-1", "--account", "123456789012",
                           "--correction", "lambda", "--lambda-config", str(tmp_path / "lambda-config.json"),
                           "--lambda-version", "2.0.1", "--config", json.dumps(config)], client=client) == 0
        stub.assert_no_pending_responses()
    version = fleet.bundle_version()
    assert f"io.backfill.Bme680Sensor {version}, my.Correction 2.0.1, io.backfill.StoreAndForward" in \
        capsys.readouterr().out
    components = expected["components"]
    assert list(components) == ["io.backfill.Bme680Sensor", "my.Correction", "io.backfill.StoreAndForward",
                                "aws.greengrass.Nucleus", "aws.greengrass.ShadowManager"]
    assert components["my.Correction"]["componentVersion"] == "2.0.1"
    assert json.loads(components["my.Correction"]["configurationUpdate"]["merge"]) == {**access, "pinned": False}
    assert components["io.backfill.StoreAndForward"]["componentVersion"] == version
    assert json.loads(components["io.backfill.Bme680Sensor"]["configurationUpdate"]["merge"])["bus"] == "i2c"


def test_the_lambda_forms_dry_run_grants_what_import_lambda_writes_by_default():
    result = subprocess.run([sys.executable, str(SCRIPT), "--thing-group", "g1", "--account", "123456789012",
                             "--dry-run", "--correction", "lambda"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    components = json.loads(result.stdout)["components"]
    assert "io.backfill.SensorPipeline" not in components and "io.backfill.TemperatureCorrection" not in components
    policy = json.loads(components[LAMBDA]["configurationUpdate"]["merge"])["accessControl"]
    assert [p["resources"] for p in policy["aws.greengrass.ipc.pubsub"].values()] == [
        ["backfill/readings/raw"], ["backfill/readings/corrected"]]


def test_each_form_refuses_what_it_does_not_deploy():
    for args, said in ((["--correction", "lambda", "--config", '{"io.backfill.TemperatureCorrection": {"MERGE": {}}}'],
                        "--correction lambda does not deploy"),
                       (["--config", json.dumps({LAMBDA: {"MERGE": {}}})], "--correction component does not deploy"),
                       (["--lambda-version", "1.0.0"], "go with --correction lambda"),
                       (["--correction", "lambda", "--lambda-config", '{"a.B": {"MERGE": {}}}'], "accessControl")):
        result = subprocess.run([sys.executable, str(SCRIPT), "--thing-group", "g1", "--account", "1", "--dry-run",
                                 *args], capture_output=True, text=True)
        assert result.returncode != 0 and said in result.stderr, (args, result.stderr)
