"""The console pick (issue 12, item 1), end to end on localgg as processes: the built bundle
`io.backfill.SensorPipeline` deployed alone, with no configuration at all and the Nucleus
as it comes (`interpolateComponentConfiguration` false, so accessControl's `{iot:thingName}`
stays literal). It used to leave all three components BROKEN (the correction's shadow
subscription refused, the store unable to publish) and the deployment FAILED.

Now: the deployment SUCCEEDS, no component is BROKEN, readings reach IoT Core, and each
component says once in its log what to set for the shadow. Then the fix the README gives
(the Nucleus's interpolateComponentConfiguration: true, in a deployment) brings the shadow
in: the store reports its state in it, without a restart."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from conftest import short_tmp, wait_for
from pipeline_harness import BUNDLE, REPO, VERSION, built
from store_harness_e2e import COMPONENTS, SHADOW_DOCUMENTS, World

NUCLEUS = "aws.greengrass.Nucleus"


@pytest.fixture(scope="module")
def world():
    w = World(short_tmp("bfc-"))
    try:
        yield w
    finally:
        w.close()


def deploy(world: World, *extra: str) -> str:
    """scripts/deploy-local, as a user runs it on a device, with localgg's CLI for greengrass-cli."""
    recipes, _ = built()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "deploy-local"), "--cli",
                             f"{shlex.quote(sys.executable)} -m localgg", "--build", str(recipes.parent),
                             "--timeout", "600", *extra], env=dict(world.env, GGC_ROOT_PATH=str(world.root)),
                            capture_output=True, text=True, timeout=660)
    assert result.returncode == 0, f"deploy-local:\n{result.stdout}\n{result.stderr}\n{world.log_tail()}"
    assert re.search(rf"{re.escape(BUNDLE)}\s+{re.escape(VERSION)}\s+(RUNNING|FINISHED)", result.stdout), result.stdout
    assert "SUCCEEDED" in result.stdout, result.stdout
    return result.stdout


def said(world: World, name: str, text: str) -> int:
    path = world.root / "logs" / f"{name}.log"
    return path.read_text(errors="replace").count(text) if path.exists() else 0


def test_the_bundle_alone_with_no_configuration_runs_and_says_what_to_set(world):
    deploy(world)          # fails the test unless the deployment SUCCEEDED
    wait_for(lambda: len(world.cloud.readings()) >= 5, 180, interval=0.5,
             message=f"readings in IoT Core\n{world.log_tail()}")
    states = world.status()["components"]
    assert all(states.get(name) == "RUNNING" for name in COMPONENTS), states
    assert "BROKEN" not in states.values(), states
    for name in COMPONENTS:
        assert said(world, name, "shadow is out of reach") == 1, (name, world.log_tail())
        assert said(world, name, "interpolateComponentConfiguration") >= 1, name
    # the default sensor bus is the real I2C bus, absent here: readings say so, and still arrive
    statuses = {copies[0]["status"] for copies in world.cloud.readings().values()}
    assert statuses and "ok" not in statuses, statuses          # no chip on this machine: said per reading


def test_the_fix_the_component_names_brings_the_shadow_in_without_a_restart(world):
    before = {name: world.pids(name) for name in COMPONENTS}
    documents = len(world.local.got(SHADOW_DOCUMENTS))
    deploy(world, "--merge", f"{NUCLEUS}=2.18.2",
           "--config", json.dumps({NUCLEUS: {"MERGE": {"interpolateComponentConfiguration": True}}}))

    def store_reported():
        for _, doc in world.local.got(SHADOW_DOCUMENTS)[documents:]:
            current = json.loads(doc) if isinstance(doc, (bytes, str)) else doc
            if "store" in current.get("current", {}).get("state", {}).get("reported", {}):
                return True
        return False
    wait_for(store_reported, 60, interval=0.5, message=f"the store's report in the shadow\n{world.log_tail()}")
    for name in COMPONENTS:
        assert said(world, name, "shadow is in reach now") == 1, (name, world.log_tail())
    assert {name: world.pids(name) for name in COMPONENTS} == before      # followed live, no restart
