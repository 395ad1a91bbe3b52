"""End to end: a Jobs-driven component restarts the core and finishes its job after the restart.

What a certificate rotator does on a device, with a component of our own
(fixtures/jobs/jobs_restarter.py, the real GreengrassCoreIPCClientV2): `localgg cloud start`,
`localgg start --cloud` as a real process, the component deployed with the CLI and allowed
exactly its thing's Jobs topics; a job created with `localgg cloud job create`. The component
gets notify-next, calls start-next, reports IN_PROGRESS, does the work, reports that it
restarts, runs `sudo systemctl restart greengrass.service`, and once the core and the
component have started again it gets the same execution from start-next and marks it
SUCCEEDED. The cloud's view (`localgg cloud job describe`) is checked, every version in between
included."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DEVICE_ENV, short_tmp, wait_for

NAME = "com.example.JobsRestarter"
THING = "pi-rotator"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "jobs" / "jobs_restarter.py"
JOBS = f"$aws/things/{THING}/jobs"   # exact topics of this thing


def recipe() -> dict:
    return {"RecipeFormatVersion": "2020-01-25", "ComponentName": NAME, "ComponentVersion": "1.0.0",
            "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {
                "aws.greengrass.ipc.mqttproxy": {f"{NAME}:jobs:1": {
                    "operations": ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"],
                    "resources": [f"{JOBS}/notify-next", f"{JOBS}/start-next", f"{JOBS}/start-next/accepted",
                                  f"{JOBS}/start-next/rejected", f"{JOBS}/*/update", f"{JOBS}/*/update/accepted",
                                  f"{JOBS}/*/update/rejected"]}}}}},
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {
                # the test's Python has awsiotsdk; on a device it is the component's own runtime
                "Run": f"exec '{sys.executable}' -u '{{artifacts:path}}/jobs_restarter.py'"}}]}


class Process:
    def __init__(self, args: list, out: Path, env: dict) -> None:
        self.out = out
        self.process = subprocess.Popen([sys.executable, "-m", "localgg", *args], env=env,
                                        stdout=open(out, "w"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture
def setup():
    base = short_tmp("lggjr-")
    # as on a device: systemd's PATH; every step runs as the user running the test, so that the
    # component's Python is the test's, with awsiotsdk (LOCALGG_RUN_AS=current)
    env = dict(os.environ, **dict(DEVICE_ENV, LOCALGG_RUN_AS="current"))
    cloud = Process(["cloud", "start", "--dir", str(base / "cloud")], base / "cloud.out", env)
    started = []
    try:
        wait_for(lambda: "localgg cloud running" in cloud.out.read_text(), 60, message="the cloud")
        started.append(cloud)
        root = base / "gg"
        core = Process(["start", "--root", str(root), "--thing", THING, "--cloud", str(base / "cloud")],
                       base / "core.out", env)
        started.append(core)
        wait_for(lambda: (root / "localgg.pid").exists(), 60, message="the core to start")
        yield base, root, env, core
    finally:
        for process in reversed(started):
            process.stop()


def run(env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "localgg", *args], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, f"localgg {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_a_job_restarts_the_core_and_succeeds_after_the_restart(setup):
    base, root, env, core = setup
    recipes, artifacts = base / "recipes", base / "artifacts" / NAME / "1.0.0"
    recipes.mkdir()
    artifacts.mkdir(parents=True)
    (recipes / "restarter.yaml").write_text(yaml.safe_dump(recipe()))
    (artifacts / "jobs_restarter.py").write_text(FIXTURE.read_text())
    log = root / "logs" / f"{NAME}.log"
    deployed = subprocess.run([sys.executable, "-m", "localgg", "deployment", "create", "--root", str(root),
                               "--recipeDir", str(recipes), "--artifactDir", str(base / "artifacts"),
                               "--merge", f"{NAME}=1.0.0", "--wait", "60"], capture_output=True, text=True,
                              env=env, timeout=120)
    assert deployed.returncode == 0, deployed.stdout + (log.read_text() if log.exists() else "no component log")
    wait_for(lambda: log.exists() and "start-next: nothing pending" in log.read_text(), 30,
             message="the component listening, nothing pending yet")

    document = {"operation": "rotate", "file": "rotated.pem", "content": "a new certificate"}
    (base / "job.json").write_text(json.dumps(document))
    created = run(env, "cloud", "job", "create", "--cloud", str(base / "cloud"), "--job-id", "rotate-1",
                  "--thing-name", THING, "--document", f"file://{base / 'job.json'}")
    assert json.loads(created.stdout)["jobId"] == "rotate-1"

    def execution() -> dict:
        return json.loads(run(env, "cloud", "job", "describe", "--cloud", str(base / "cloud"), "--job-id",
                              "rotate-1", "--thing-name", THING).stdout)["execution"]
    wait_for(lambda: execution()["status"] == "SUCCEEDED", 60, interval=0.2, message="the job SUCCEEDED")

    final = execution()
    # QUEUED 1, start-next 2, working 3, restarting 4, SUCCEEDED 5
    assert final["versionNumber"] == 5 and final["statusDetails"] == {"detailsMap": {"step": "done"}}
    lines = log.read_text()
    order = ["notify-next: rotate-1", "start-next: rotate-1 IN_PROGRESS step started version 2",
             "update accepted: rotate-1 IN_PROGRESS step working version 3", "work done: rotated.pem",
             "update accepted: rotate-1 IN_PROGRESS step restarting version 4",
             "restarting the core: sudo systemctl restart greengrass.service",
             "start-next: rotate-1 IN_PROGRESS step restarting version 4",
             "update accepted: rotate-1 SUCCEEDED step done version 5"]
    positions = [lines.find(line) for line in order]
    assert -1 not in positions and positions == sorted(positions), lines
    assert "rejected" not in lines
    assert (root / "work" / NAME / "rotated.pem").read_text() == "a new certificate"
    # the core restarted in place, as systemd restarts greengrass.service
    assert core.process.poll() is None and "localgg core restarting" in core.out.read_text()
    job = json.loads(run(env, "cloud", "job", "list", "--cloud", str(base / "cloud")).stdout)["jobs"][0]
    assert (job["jobId"], job["status"]) == ("rotate-1", "COMPLETED")
