"""scripts/import-lambda, offline: the zip for the device's architecture and Python (from a warm
wheel cache of made-up wheels: io.backfill.Runtime's selection, narrowed to what the handler
imports, unpacked), the Lambda requests (moto: create, then update, a version published each
time) and the CreateComponentVersion request (botocore's Stubber checks it against the
greengrassv2 model), --local's generated recipe, and bad arguments refused."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from build_testkit import load_script, make_wheel

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "import-lambda"
build = load_script("build")


def script():
    sys.path.insert(0, str(REPO / "scripts"))
    loader = importlib.machinery.SourceFileLoader("import_lambda", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("import_lambda", loader))
    loader.exec_module(module)
    return module


def native(name: str, target) -> str:
    py = f"cp{target.python.replace('.', '')}"
    return f"{py}-{py}-manylinux_2_17_{target.arch}.manylinux2014_{target.arch}"


@pytest.fixture(scope="module")
def house(tmp_path_factory):
    """A warm wheel cache for io.backfill.Runtime's requirements.txt: no pip, no index."""
    cache = tmp_path_factory.mktemp("wheels")
    requirements = (REPO / "components" / "io.backfill.Runtime" / "requirements.txt").read_text()
    folder = cache / build.cache_key(requirements, build.TARGETS, build.PIP_VERSION)
    pure = [make_wheel(folder, "awsiotsdk", "1.31.0", requires=["awscrt==0.29.0"]),
            make_wheel(folder, "jsonschema", "4.26.0", requires=[
                "attrs>=22.2.0", "rpds-py>=0.7.1", 'fqdn; extra == "format"']),
            make_wheel(folder, "attrs", "25.4.0"), make_wheel(folder, "bme680", "2.0.0"),
            make_wheel(folder, "smbus2", "0.6.1"), make_wheel(folder, "sqlite-utils", "4.2.1")]
    targets = {}
    for target in build.TARGETS:
        own = [make_wheel(folder, name, version, native(name, target),
                          modules={f"{name.replace('-', '_')}/__init__.py": f"ARCH = {target.label!r}\n",
                                   f"{name.replace('-', '_')}-{version}.data/scripts/tool": "#!/bin/sh\n"})
               for name, version in (("awscrt", "0.29.0"), ("rpds-py", "0.30.0"))]
        targets[target.label] = sorted(p.name for p in pure + own)
    files = sorted({n for names in targets.values() for n in names})
    (folder / "manifest.json").write_text(json.dumps({"files": files, "targets": targets}))
    return build.Wheelhouse(cache, log=lambda text: None)


def test_the_zip_holds_the_handler_and_what_it_imports_for_the_devices_target(house, tmp_path):
    lam = script()
    target = tmp_path / "f.zip"
    wheels = lam.package(target, "aarch64", "3.11", house)
    assert [build.parse_wheel(w)[0] for w in wheels] == ["attrs", "awscrt", "awsiotsdk", "jsonschema", "rpds-py"]
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
        assert archive.read("rpds_py/__init__.py") == b"ARCH = 'cp311-aarch64'\n"
        assert archive.read("awscrt/__init__.py") == b"ARCH = 'cp311-aarch64'\n"
    assert {"temperature_correction/greengrass_lambda.py", "temperature_correction/handler.py",
            "backfill_common/contracts.py", "backfill_common/schemas/reading.json", "jsonschema/__init__.py",
            "awsiotsdk-1.31.0.dist-info/METADATA"} <= names
    assert not any(n.startswith(("bme680", "smbus2", "sqlite_utils")) or ".data/" in n or n.endswith("/tool")
                   for n in names)
    lam.package(target, "x86_64", "3.13", house)
    with zipfile.ZipFile(target) as archive:
        assert archive.read("rpds_py/__init__.py") == b"ARCH = 'cp313-x86_64'\n"


def greengrass_client():
    return botocore.session.get_session().create_client(
        "greengrassv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_create_then_update_publishes_a_version_and_imports_it(house, tmp_path, capsys):
    lam_script = script()
    gg = greengrass_client()
    with mock_aws():
        iam = boto3.client("iam", region_name="eu-west-1")
        role = iam.create_role(RoleName="backfill-lambda", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
        lam = boto3.client("lambda", region_name="eu-west-1")
        sts = boto3.client("sts", region_name="eu-west-1")
        argv = ["--arch", "aarch64", "--python", "3.11", "--region", "eu-west-1", "--role", role,
                "--env", "CORRECTION_WINDOW=10", "--out", str(tmp_path), "--component-version", "1.4.0"]
        for version in ("1", "2"):
            arn = f"arn:aws:lambda:eu-west-1:123456789012:function:backfill-temperature-correction:{version}"
            expected = {"lambdaFunction": {
                "lambdaArn": arn, "componentName": "io.backfill.TemperatureCorrectionLambda",
                "componentVersion": "1.4.0",
                "componentPlatforms": [{"name": "Linux aarch64", "attributes": {"os": "linux", "architecture": "aarch64"}}],
                "componentLambdaParameters": {
                    "eventSources": [{"topic": "backfill/readings/raw", "type": "PUB_SUB"}], "pinned": True,
                    "timeoutInSeconds": 3, "inputPayloadEncodingType": "json", "maxQueueSize": 1000,
                    "environmentVariables": {"CORRECTED_TOPIC": "backfill/readings/corrected", "CORRECTION_WINDOW": "10"},
                    "linuxProcessParams": {"isolationMode": "NoContainer"}}}}
            component_arn = "arn:aws:greengrass:eu-west-1:123456789012:components:io.backfill.TemperatureCorrectionLambda:versions:1.4.0"
            with Stubber(gg) as stub:
                stub.add_response("create_component_version", {
                    "arn": component_arn, "componentName": "io.backfill.TemperatureCorrectionLambda",
                    "componentVersion": "1.4.0", "creationTimestamp": 0,
                    "status": {"componentState": "REQUESTED"}}, expected)
                stub.add_response("describe_component", {"status": {"componentState": "DEPLOYABLE"}},
                                  {"arn": component_arn})
                assert lam_script.main(argv, lam=lam, gg=gg, sts=sts, house=house) == 0
                stub.assert_no_pending_responses()
        function = lam.get_function(FunctionName="backfill-temperature-correction")["Configuration"]
        assert function["Handler"] == "temperature_correction.greengrass_lambda.handler"
        assert function["Runtime"] == "python3.11" and function["Architectures"] == ["arm64"]
        assert function["Environment"]["Variables"]["CORRECTION_WINDOW"] == "10"
        versions = lam.list_versions_by_function(FunctionName="backfill-temperature-correction")["Versions"]
        assert sorted(v["Version"] for v in versions) == ["$LATEST", "1", "2"]
    assert "imported as io.backfill.TemperatureCorrectionLambda 1.4.0" in capsys.readouterr().out
    config = json.loads((tmp_path / "lambda-config.json").read_text())
    policy = config["io.backfill.TemperatureCorrectionLambda"]["MERGE"]["accessControl"]["aws.greengrass.ipc.pubsub"]
    assert [p["resources"] for p in policy.values()] == [["backfill/readings/raw"], ["backfill/readings/corrected"]]


def test_a_component_that_fails_to_import_says_why():
    lam_script = script()
    gg = greengrass_client()
    request = {"lambdaFunction": {"lambdaArn": "arn:aws:lambda:eu-west-1:123456789012:function:f:1"}}
    with Stubber(gg) as stub:
        stub.add_response("create_component_version", {"arn": "arn:aws:greengrass:eu-west-1:1:components:f:versions:1.0.0",
                                                       "componentName": "f", "componentVersion": "1.0.0",
                                                       "creationTimestamp": 0, "status": {}}, request)
        stub.add_response("describe_component", {"status": {"componentState": "FAILED", "message": "no such function"}})
        with pytest.raises(SystemExit, match="FAILED: no such function"):
            lam_script.import_component(gg, request)


def test_local_writes_the_component_as_imported(house, tmp_path):
    lam_script = script()
    local = tmp_path / "local"
    assert lam_script.main(["--arch", "amd64", "--python", "3.11", "--local", str(local), "--on-demand",
                            "--out", str(tmp_path / "out")], house=house) == 0
    version = lam_script.bundleinfo.version()
    recipe = json.loads((local / "recipes" / f"io.backfill.TemperatureCorrectionLambda-{version}.json").read_text())
    assert recipe["ComponentType"] == "aws.greengrass.lambda"
    assert recipe["Manifests"][0]["Platform"] == {"os": "linux", "architecture": "amd64"}
    config = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert config["pinned"] is False and config["maxInstancesCount"] == 1 and config["containerMode"] == "NoContainer"
    assert (local / "artifacts" / "io.backfill.TemperatureCorrectionLambda" / version / "lambda-artifact.zip").is_file()


@pytest.mark.parametrize("extra, says", [
    (["--python", "3.9"], "--python: 3.9 refused, allowed 3.10, 3.11, 3.12, 3.13"),
    (["--timeout", "0"], "--timeout: 0 refused, allowed 1..900"),
    (["--env", "PATH=/x"], "--env 'PATH=/x'"),
])
def test_bad_arguments_are_refused_before_any_request(extra, says, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--arch", "amd64", "--account", "1", "--dry-run",
                             "--out", str(tmp_path), *extra], capture_output=True, text=True)
    assert result.returncode != 0 and says in result.stderr, result.stderr
