"""End to end: a component restarts the core with `sudo systemctl restart greengrass.service`.

As a certificate rotator or a device-management component does on a device: `localgg
start` as a real process run as a device runs the nucleus (components as ggc_user, with
the system's python3), a component of our own deployed with the CLI, and in its Run
script, once, `sudo systemctl restart greengrass.service`. On a device systemd stops the
nucleus (the component's Shutdown runs, its processes are stopped, so systemctl never
returns) and starts it again (the component installs and runs anew); nothing is BROKEN
and the deployment that brought it stays SUCCEEDED."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import DEVICE_ENV, device_tmp, wait_for

NAME = "com.example.Restarter"


def recipe(shared: Path) -> dict:
    run = textwrap.dedent(f"""\
        echo "run $$" >> {shared}/runs.txt
        if [ ! -f {shared}/restarted ]; then
          while [ ! -f {shared}/go ]; do sleep 0.05; done
          touch {shared}/restarted
          sudo systemctl restart greengrass.service
          echo "systemctl returned $?" >> {shared}/after.txt
        fi
        exec sleep 600
        """)
    return {"RecipeFormatVersion": "2020-01-25", "ComponentName": NAME, "ComponentVersion": "1.0.0",
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {
                "Install": f"echo install >> {shared}/events.txt",
                "Run": run,
                "Shutdown": f"echo shutdown >> {shared}/events.txt"}}]}


class Core:
    def __init__(self, base: Path):
        self.base, self.root = base, base / "gg"
        self.env = dict(os.environ, **DEVICE_ENV)
        self.out = open(base / "core.out", "w")
        self.process = subprocess.Popen([sys.executable, "-m", "localgg", "start", "--root", str(self.root)],
                                        env=self.env, stdout=self.out, stderr=subprocess.STDOUT)
        wait_for(lambda: (self.root / "localgg.pid").exists(), 60, message="the core to start")

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "localgg", *args, "--root", str(self.root)],
                                capture_output=True, text=True, env=self.env, timeout=120)
        assert result.returncode == 0, f"localgg {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def state(self) -> str:
        return self.cli("component", "details", "-n", NAME).split("State: ")[1].split()[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self.out.close()


@pytest.fixture
def core():
    base = device_tmp("lggr-")
    c = Core(base)
    yield c
    c.stop()
    subprocess.run(["rm", "-rf", str(base)])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sudo_systemctl_restart_greengrass_restarts_the_core_and_the_component_runs_again(core):
    shared = core.base / "shared"
    shared.mkdir()
    shared.chmod(0o777)          # the component runs as ggc_user
    recipes = core.base / "recipes"
    recipes.mkdir()
    (recipes / "restarter.yaml").write_text(yaml.safe_dump(recipe(shared)))
    core.cli("deployment", "create", "--recipeDir", str(recipes), "--merge", f"{NAME}=1.0.0", "--wait", "60")
    first_pid = core.process.pid

    (shared / "go").touch()
    # the core stops (the Shutdown step runs), starts again, and the component installs and runs anew
    wait_for(lambda: len(lines(shared / "runs.txt")) == 2, 60, message="the second Run")
    wait_for(lambda: core.state() == "RUNNING", 30, message="the component RUNNING again")

    assert lines(shared / "events.txt") == ["install", "shutdown", "install"]
    assert not (shared / "after.txt").exists()   # stopped with the core: its systemctl never returned
    assert core.process.poll() is None and core.process.pid == first_pid   # `localgg start` restarted in place
    out = (core.base / "core.out").read_text()
    assert "localgg core restarting" in out
    log = (core.root / "logs" / "greengrass.log").read_text()
    assert f"systemctl restart greengrass.service from {NAME}: Shutting down Nucleus due to external signal" in log
    assert "BROKEN" not in log and "ERRORED" not in log
    listing = core.cli("deployment", "list")
    assert listing.count("SUCCEEDED") == 1 and "FAILED" not in listing
    component_log = (core.root / "logs" / f"{NAME}.log").read_text()
    assert "sudo: not found" not in component_log
