"""The correction as an imported Lambda, end to end on localgg: scripts/import-lambda --local
makes the component as CreateComponentVersion would (the generated recipe, ComponentType
aws.greengrass.lambda, its lambda-artifact.zip for this machine's architecture and Python
3.11), written into a copy of the build, and `scripts/deploy-local --correction lambda`
deploys it through localgg's CLI as a user would: in place of
io.backfill.TemperatureCorrection, between the sensor and the store, with the accessControl
import-lambda wrote (the sensor, the Lambda and the store RUNNING, neither the bundle nor
the generic correction deployed). localgg's LambdaLauncher stand-in runs it as the recipe says: `lambda-launcher start`, pinned, NoContainer, the handler invoked
per message on backfill/readings/raw with /usr/bin/python3.11 and only the zip's packages.

Checked: readings corrected by the Lambda reach the store's database, with the CPU window
of the pinned instance (one process for every invocation: globals kept), and the sensor's
readings are all acknowledged (the store got them through the Lambda); on demand, likewise;
and deploy-local's component form takes the Lambda's place (the generic correction RUNNING,
the Lambda component removed and its processes gone)."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEVICE_ENV, CoreThread, component_user, device_tmp, process_user, short_tmp, wait_for
from pipeline_harness import (BUNDLE, CORRECTION, REPO, SENSOR, STORE, VERSION, Observer, built, component_pids, log_tail,
                              nucleus_setup)

LAMBDA = "io.backfill.TemperatureCorrectionLambda"
RAW, CORRECTED = "backfill/readings/raw", "backfill/readings/corrected"
SIMULATED = {"bus": "simulated", "cpu_source": "simulated", "interval_s": 0.2, "resend_after_s": 1.0,
             "sim_temperature": 24.0}
ARCH = {"x86_64": "amd64", "aarch64": "aarch64"}[platform.machine()]


@pytest.fixture(scope="module")
def world():
    recipes, _ = built()                          # the components, and the runtime's wheels in the cache
    build, out = short_tmp("bfl-") / "greengrass-build", short_tmp("bflo-")
    shutil.copytree(recipes.parent, build)        # the session's build stays as built
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "import-lambda"), "--arch", ARCH,
                             "--python", "3.11", "--local", str(build), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with pytest.MonkeyPatch.context() as env:
        for key, value in DEVICE_ENV.items():
            env.setenv(key, value)
        core = CoreThread(device_tmp("bfL-") / "gg", nucleus_setup())
        try:
            observer = Observer(core).watch(RAW).watch(CORRECTED)
            listed = deploy_local(core, build, "--correction", "lambda", "--lambda-config",
                                  str(out / "lambda-config.json"), "--config", json.dumps({SENSOR: {"MERGE": SIMULATED}}))
            assert {name: listed.get(name) for name in (SENSOR, LAMBDA, STORE)} == dict.fromkeys(
                (SENSOR, LAMBDA, STORE), "RUNNING"), listed
            assert CORRECTION not in listed and BUNDLE not in listed, listed
            yield core, observer, build
        finally:
            core.close()


def deploy_local(core, build: Path, *args: str) -> dict[str, str]:
    """scripts/deploy-local as a user runs it, with localgg's CLI for greengrass-cli: the
    components' states it printed (it fails the test unless the deployment SUCCEEDED)."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "deploy-local"), "--cli",
                             f"{shlex.quote(sys.executable)} -m localgg", "--build", str(build), "--timeout", "300",
                             *args], env=dict(os.environ, GGC_ROOT_PATH=str(core.kernel.root)),
                            capture_output=True, text=True, timeout=330)
    assert result.returncode == 0, f"deploy-local:\n{result.stdout}\n{result.stderr}\n{log_tail(core)}"
    return dict(re.findall(r"^  (\S+)\s+\S+\s+(\S+)$", result.stdout, re.M))


def stored(core) -> list[dict]:
    path = core.kernel.root / "work" / STORE / "store.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [{**json.loads(body), "device": device, "run": run, "seq": seq}
                for device, run, seq, body in db.execute("SELECT device, run, seq, body FROM readings ORDER BY id")]
    except sqlite3.OperationalError:          # the store has not made its tables yet
        return []
    finally:
        db.close()


def test_readings_corrected_by_the_imported_lambda_reach_the_store(world):
    core, observer, _ = world
    assert core.kernel.state_of(LAMBDA) == "RUNNING"
    wait_for(lambda: len(stored(core)) >= 10, 60, interval=0.2, message=f"corrected readings in the store\n{log_tail(core)}")
    raw = {(r["run"], int(r["seq"])): r for r in observer.got(RAW)}
    rows = stored(core)
    for row in rows[:10]:
        assert row["correction"] == "cpu_factor" and row["device"] == "test-thing"
        source = raw[(row["run"], int(row["seq"]))]
        assert row["temperature_raw"] == source["temperature"]
        # Pimoroni's formula over the run's last five CPU temperatures: the pinned instance kept them
        run = {int(r["seq"]): r["cpu_temperature"] for (run, _), r in raw.items()
               if run == row["run"] and int(r["seq"]) <= int(row["seq"])}
        cpus = [run[s] for s in range(int(row["seq"]) - 4, int(row["seq"]) + 1) if s in run]
        average = sum(cpus) / len(cpus)
        expected = source["temperature"] - (average - source["temperature"]) / 2.25
        assert row["temperature"] == pytest.approx(expected, abs=0.011)
    log = (core.kernel.root / "logs" / f"{LAMBDA}.log").read_text(errors="replace")
    assert log.count("lambda-launcher: instance ") == 1 and "instance 0 started" in log and "pinned" in log
    assert "invocation" not in log and "dropped" not in log, log
    launcher = component_pids(core, LAMBDA)
    instances = [pid for pid in launcher if "runtime.py" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(instances) == 1 and process_user(instances[0]) == component_user()     # as a device runs it
    # the store acknowledged them: the sensor moved on (nothing waits for a resend)
    top = max(int(r["seq"]) for r in rows if r["run"] == rows[0]["run"])
    observer.watch("backfill/acks")
    wait_for(lambda: [a for a in observer.got("backfill/acks") if int(a["seq"]) >= top], 30,
             message="the store's acknowledgement")


def test_on_demand_the_lambda_starts_an_instance_for_the_work_and_readings_still_reach_the_store(world):
    core, observer, _ = world
    cli = core.cli_client()
    deployment = cli.create_local_deployment(root_component_versions_to_add={LAMBDA: VERSION}, component_to_configuration={
        LAMBDA: {"MERGE": {"pinned": False, "maxInstancesCount": 1}}}).deployment_id
    wait_for(lambda: cli.get_local_deployment_status(deployment_id=deployment).deployment.status == "SUCCEEDED", 60)
    log = core.kernel.root / "logs" / f"{LAMBDA}.log"
    before = log.read_text(errors="replace").count("on-demand, timeout")
    cli.restart_component(component_name=LAMBDA)              # the launcher reads its settings when it starts
    wait_for(lambda: log.read_text(errors="replace").count("on-demand, timeout") > before, 30,
             message=f"the launcher started on demand\n{log_tail(core)}")
    count = len(stored(core))
    wait_for(lambda: len(stored(core)) >= count + 5, 60, interval=0.2, message=f"readings in the store\n{log_tail(core)}")
    assert all(row["correction"] == "cpu_factor" for row in stored(core)[count:])
    assert "on-demand)" in log.read_text(errors="replace")     # "instance N started (pid P, on-demand)"


def test_the_component_form_takes_the_lambdas_place_and_the_two_never_run_together(world):
    core, _, build = world
    listed = deploy_local(core, build)           # --correction component, the default
    assert listed.get(CORRECTION) == "RUNNING" and LAMBDA not in listed, listed
    assert core.kernel.state_of(LAMBDA) is None
    wait_for(lambda: not component_pids(core, LAMBDA), 30, message="the Lambda's processes stopped")
