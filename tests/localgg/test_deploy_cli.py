"""End to end: `localgg start` as a real process, deployments with the CLI, real lifecycle scripts.

Two example components come from a recipe directory and an artifact directory of ZIPs;
their Install and Run scripts run; they read their configuration and exchange messages;
one killed with SIGKILL is restarted; one that keeps failing ends BROKEN."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import short_tmp, wait_for



EXAMPLES = Path(__file__).resolve().parent / "fixtures" / "examples"


def build(dest: Path) -> tuple[Path, Path]:
    """Two example components and their bundle (tests/localgg/fixtures/examples), laid out
    as `gdk component build` does: recipes/, and artifacts/<Name>/<version>/<Name>.zip."""
    shutil.copytree(EXAMPLES / "recipes", dest / "recipes")
    for name, script in (("com.example.Producer", "producer.py"), ("com.example.Consumer", "consumer.py")):
        target = dest / "artifacts" / name / "1.0.0" / f"{name}.zip"
        target.parent.mkdir(parents=True)
        with zipfile.ZipFile(target, "w") as archive:
            archive.write(EXAMPLES / "artifacts" / script, script)
    return dest / "recipes", dest / "artifacts"


class RunningCore:
    def __init__(self, root: Path):
        self.root = root
        self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        self.output = open(root.parent / "core.out", "w")
        self.process = subprocess.Popen([sys.executable, "-m", "localgg", "start", "--root", str(root),
                                         "--thing", "e2e-thing"], stdout=self.output, stderr=subprocess.STDOUT,
                                        env=self.env)
        wait_for(lambda: (root / "localgg.pid").exists(), 30, message="the core to start")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "localgg", *args, "--root", str(self.root)],
                                capture_output=True, text=True, env=self.env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"localgg {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def state(self, name: str) -> str:
        out = self.cli("component", "details", "-n", name).stdout
        return out.split("State: ")[1].split()[0]

    def work(self, name: str) -> Path:
        return self.root / "work" / name

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.output.close()


@pytest.fixture
def gg():
    base = short_tmp("lgge-")
    core = RunningCore(base / "gg")
    yield core
    if core.process.poll() is None:
        core.stop()
    subprocess.run(["rm", "-rf", str(base)])


def received(core: RunningCore) -> list[dict]:
    path = core.work("com.example.Consumer") / "received.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pids_in(work: Path, needle: str) -> list[int]:
    """Processes whose working directory is `work` and whose command line has `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(work) and needle in (entry / "cmdline").read_bytes().decode():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_two_components_deploy_run_talk_restart_and_update(gg, tmp_path):
    recipes, artifacts = build(tmp_path / "build")
    result = gg.cli("deployment", "create", "--recipeDir", str(recipes), "--artifactDir", str(artifacts),
                    "--merge", "com.example.Bundle=1.0.0", "--wait", "60")
    assert "Local deployment submitted! Deployment Id: " in result.stdout
    assert ": SUCCEEDED" in result.stdout

    # both came in as the bundle's dependencies; the producer's Install ran with its configuration
    assert (gg.work("com.example.Producer") / "install-marker").read_text() == "installed with greeting hello\n"
    unzipped = gg.root / "packages/artifacts-unarchived/com.example.Producer/1.0.0/com.example.Producer/producer.py"
    assert unzipped.is_file()
    listing = gg.cli("component", "list").stdout
    assert "Component Name: com.example.Consumer\n    Version: 1.0.0\n    State: RUNNING\n" in listing
    assert "Component Name: com.example.Producer\n    Version: 1.0.0\n    State: RUNNING\n" in listing

    # they exchange messages over local pub/sub (the topic reached the consumer as a
    # cross-component recipe variable)
    wait_for(lambda: len(received(gg)) >= 3, 30, message="messages at the consumer")
    first = received(gg)
    assert first[0]["greeting"] == "hello"
    assert [m["n"] for m in first[:3]] == sorted(m["n"] for m in first[:3])

    # SIGKILL the consumer's Python process: the core restarts it and messages flow again
    victim = first[-1]["consumer_pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: any(m["consumer_pid"] != victim for m in received(gg)), 30,
             message="messages at a restarted consumer")
    assert gg.state("com.example.Consumer") == "RUNNING"
    log = gg.cli("logs", "get", "--component", "com.example.Consumer").stdout
    assert "Run script exited. {exitCode=137" in log

    # a configuration update in a second deployment reaches the running producer
    update = json.dumps({"com.example.Producer": {"MERGE": {"greeting": "bonjour"}}})
    gg.cli("deployment", "create", "--merge", "com.example.Producer=1.0.0", "--update-config", update,
           "--wait", "60")
    wait_for(lambda: any(m["greeting"] == "bonjour" for m in received(gg)), 30, message="the new greeting")

    # removing the bundle stops both and forgets them; the producer stays as a root of its own
    assert "State: FINISHED" in gg.cli("component", "details", "-n", "com.example.Bundle").stdout
    gg.cli("deployment", "create", "--remove", "com.example.Bundle", "--wait", "60")
    wait_for(lambda: not pids_in(gg.work("com.example.Consumer"), "consumer.py"), 15, message="the consumer to stop")
    assert "com.example.Consumer" not in gg.cli("component", "list").stdout
    assert "com.example.Producer" in gg.cli("component", "list").stdout


CRASHY = textwrap.dedent("""\
    RecipeFormatVersion: "2020-01-25"
    ComponentName: com.example.Crashy
    ComponentVersion: "1.0.0"
    Manifests:
      - Platform: {os: linux}
        Lifecycle:
          Run: "echo about to fail; exit 3"
    """)


def test_a_component_that_keeps_failing_ends_broken_and_fails_the_deployment(gg, tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "crashy.yaml").write_text(CRASHY)
    result = gg.cli("deployment", "create", "--recipeDir", str(tmp_path / "recipes"),
                    "--merge", "com.example.Crashy=1.0.0", "--wait", "60", check=False)
    assert result.returncode == 1
    assert ": FAILED" in result.stdout
    assert "Detailed Status: FAILED_ROLLBACK_NOT_REQUESTED" in result.stdout
    assert "Deployment Failure Cause: Service com.example.Crashy in broken state after deployment" in result.stdout
    assert gg.state("com.example.Crashy") == "BROKEN"
    log = (gg.root / "logs" / "com.example.Crashy.log").read_text()
    assert log.count("Run script exited. {exitCode=3") == 3


def test_deployment_status_and_list(gg, tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "crashy.yaml").write_text(CRASHY.replace("exit 3", "exit 0"))
    out = gg.cli("deployment", "create", "-r", str(tmp_path / "recipes"), "-m", "com.example.Crashy=1.0.0",
                 "--wait", "60").stdout
    deployment_id = out.split("Deployment Id: ")[1].split()[0]
    status = gg.cli("deployment", "status", "-i", deployment_id).stdout
    assert status.startswith(f"{deployment_id}: SUCCEEDED\nCreated on: ")
    assert f"Deployment ID: {deployment_id}\n" in gg.cli("deployment", "list").stdout
    assert gg.state("com.example.Crashy") == "FINISHED"  # Run exited 0


def test_a_file_uri_fails_the_deployment_as_the_nucleus_does_and_recipe_errors_name_the_users_file(gg, tmp_path):
    """A `file:` artifact URI is the nucleus's unsupported scheme, not part of a file name; a
    recipe error found after the recipe was stored names the user's file, not the store's copy."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    uri = "file:ipc_greengrass.py"
    (recipes / "fileuri.yaml").write_text(CRASHY + f"    Artifacts:\n      - URI: {uri}\n")
    result = gg.cli("deployment", "create", "--recipeDir", str(recipes), "--artifactDir", str(tmp_path),
                    "--merge", "com.example.Crashy=1.0.0", "--wait", "60", check=False)
    assert result.returncode == 1
    assert "Detailed Status: FAILED_NO_STATE_CHANGE" in result.stdout
    assert (f"Deployment Failure Cause: Failed to download due to bad artifact URI: {uri} for component "
            f"com.example.Crashy. Artifact URI {uri} is invalid. Only URI schemes supported are "
            f"[GREENGRASS, S3, DOCKER]") in result.stdout
    assert ("Deployment Error Stack: DEPLOYMENT_FAILURE, COMPONENT_PACKAGE_LOADING_ERROR, ARTIFACT_URI_NOT_VALID, "
            "UNSUPPORTED_ARTIFACT_SCHEME") in result.stdout
    assert "Deployment Error Types: COMPONENT_RECIPE_ERROR" in result.stdout
    assert "com.example.Crashy" not in gg.cli("component", "list").stdout      # nothing changed

    (recipes / "fileuri.yaml").write_text(CRASHY.replace('Run: "', 'Run:\n        Timeout: soon\n        Script: "'))
    result = gg.cli("deployment", "create", "--recipeDir", str(recipes), "--merge", "com.example.Crashy=1.0.0",
                    "--wait", "60", check=False)
    assert result.returncode == 1
    cause = result.stdout.split("Deployment Failure Cause: ")[1]
    assert cause.startswith(f"{recipes / 'fileuri.yaml'}: ") and "Timeout" in cause, result.stdout
    assert "packages" not in cause
