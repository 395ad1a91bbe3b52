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
