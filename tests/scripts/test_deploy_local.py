"""scripts/deploy-local's commands, dry (the real run is tests/pipeline/test_console_pick_e2e.py,
through localgg's CLI): what it would ask greengrass-cli, and what it refuses."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "deploy-local"


def dry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--cli", "greengrass-cli", *args],
                          capture_output=True, text=True)


def test_the_bundle_goes_at_its_recipes_version_with_each_configured_component_as_a_root(tmp_path):
    version = subprocess.run([sys.executable, str(REPO / "scripts" / "bump-version")], capture_output=True,
                             text=True).stdout.split()[0]
    config = {"io.backfill.StoreAndForward": {"MERGE": {"synchronous": "NORMAL"}},
              "aws.greengrass.Nucleus": {"MERGE": {"interpolateComponentConfiguration": True}}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    result = dry("--config", str(tmp_path / "c.json"), "--merge", "aws.greengrass.Nucleus=2.14.3",
                 "--build", str(tmp_path / "build"))
    assert result.returncode == 0, result.stderr
    create = shlex.split(result.stdout.splitlines()[1])       # after the build step (no build here)
    assert create[:3] == ["greengrass-cli", "deployment", "create"]
    merges = [create[i + 1] for i, a in enumerate(create) if a == "--merge"]
    assert merges == [f"io.backfill.SensorPipeline={version}", f"io.backfill.StoreAndForward={version}",
                      "aws.greengrass.Nucleus=2.14.3"]
    assert json.loads(create[create.index("--update-config") + 1]) == config
    assert create[create.index("--recipeDir") + 1] == str(tmp_path / "build" / "recipes")
    assert "deployment status -i" in result.stdout and "component list" in result.stdout


def test_a_configured_component_of_the_nucleus_needs_its_version_on_this_device():
    result = dry("--config", json.dumps({"aws.greengrass.ShadowManager": {"MERGE": {}}}))
    assert result.returncode != 0 and "--merge aws.greengrass.ShadowManager=VERSION" in result.stderr


def test_a_bad_config_is_refused_with_the_shape_it_wants():
    result = dry("--config", "{not json")
    assert result.returncode != 0 and "not JSON" in result.stderr
    result = dry("--config", json.dumps({"io.backfill.StoreAndForward": 5}))
    assert result.returncode != 0 and '"MERGE"' in result.stderr


LAMBDA = "io.backfill.TemperatureCorrectionLambda"


def create_of(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return shlex.split(next(line for line in result.stdout.splitlines() if " deployment create " in line))


def options(create: list[str], flag: str) -> list[str]:
    return [create[i + 1] for i, a in enumerate(create) if a == flag]


def access(name: str, raw: str) -> dict:
    return {name: {"MERGE": {"accessControl": {"aws.greengrass.ipc.pubsub": {f"{name}:pubsub:1": {
        "operations": ["aws.greengrass#SubscribeToTopic"], "resources": [raw]}}}}}}


def test_the_lambda_form_deploys_sensor_lambda_and_store_with_import_lambdas_access_control(tmp_path):
    version = subprocess.run([sys.executable, str(REPO / "scripts" / "bump-version")], capture_output=True,
                             text=True).stdout.split()[0]
    (tmp_path / "lambda-config.json").write_text(json.dumps(access("my.Correction", "site/raw")))
    mine = {"my.Correction": {"MERGE": {"pinned": False}}, "io.backfill.Bme680Sensor": {"MERGE": {"bus": "simulated"}}}
    create = create_of(dry("--correction", "lambda", "--lambda-config", str(tmp_path / "lambda-config.json"),
                           "--lambda-version", "2.0.1", "--config", json.dumps(mine), "--build", str(tmp_path)))
    assert options(create, "--merge") == [f"io.backfill.Bme680Sensor={version}", "my.Correction=2.0.1",
                                          f"io.backfill.StoreAndForward={version}"]
    assert options(create, "--remove") == ["io.backfill.SensorPipeline", "io.backfill.TemperatureCorrection"]
    config = json.loads(options(create, "--update-config")[0])
    assert config["my.Correction"]["MERGE"] == {**access("my.Correction", "site/raw")["my.Correction"]["MERGE"],
                                                "pinned": False}
    assert config["io.backfill.Bme680Sensor"] == mine["io.backfill.Bme680Sensor"]


def test_without_a_lambda_config_it_grants_what_import_lambda_writes_by_default_at_the_version_it_left_in_the_build(
        tmp_path):
    (tmp_path / "recipes").mkdir()
    for v in ("1.2.0", "1.10.0", "1.9.9"):       # import-lambda --local <build>, at three versions
        (tmp_path / "recipes" / f"{LAMBDA}-{v}.json").write_text(json.dumps(
            {"ComponentName": LAMBDA, "ComponentVersion": v}))
    create = create_of(dry("--correction", "lambda", "--build", str(tmp_path)))
    assert f"{LAMBDA}=1.10.0" in options(create, "--merge")
    policy = json.loads(options(create, "--update-config")[0])[LAMBDA]["MERGE"]["accessControl"]
    assert [p["resources"] for p in policy["aws.greengrass.ipc.pubsub"].values()] == [
        ["backfill/readings/raw"], ["backfill/readings/corrected"]]


def test_the_component_form_removes_the_lambda_component_so_the_two_never_run_together(tmp_path):
    create = create_of(dry("--build", str(tmp_path)))
    assert options(create, "--remove") == [LAMBDA]
    assert "--update-config" not in create


def test_each_form_refuses_configuration_for_the_correction_it_leaves_out(tmp_path):
    result = dry("--correction", "lambda", "--config", json.dumps({"io.backfill.TemperatureCorrection": {"MERGE": {}}}))
    assert result.returncode != 0 and "--correction lambda does not deploy" in result.stderr
    result = dry("--config", json.dumps({LAMBDA: {"MERGE": {}}}))
    assert result.returncode != 0 and "--correction component does not deploy" in result.stderr
    (tmp_path / "two.json").write_text(json.dumps({**access("a.B", "x"), **access("c.D", "y")}))
    result = dry("--correction", "lambda", "--lambda-config", str(tmp_path / "two.json"))
    assert result.returncode != 0 and "names 2 components" in result.stderr
    result = dry("--correction", "lambda", "--lambda-config", json.dumps({LAMBDA: {"MERGE": {"pinned": True}}}))
    assert result.returncode != 0 and "accessControl" in result.stderr
    result = dry("--correction", "lambda", "--lambda-config", str(tmp_path / "none.json"))
    assert result.returncode != 0 and f"--lambda-config: no file {tmp_path / 'none.json'}" in result.stderr
    result = dry("--correction", "lambda", "--lambda-config", "{not json")
    assert result.returncode != 0 and "--lambda-config: not JSON" in result.stderr
    result = dry("--lambda-version", "1.0.0")
    assert result.returncode != 0 and "--lambda-version goes with --correction lambda" in result.stderr
