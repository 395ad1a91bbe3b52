"""localgg's systemctl and sudo for components: systemd.py's answers, shim.py's parsing of
sudo, and the real shim programs talking to a ShimServer over its socket (the core's side
stands in: a host that records what it is asked to do)."""

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import device_tmp, wait_for
from localgg import systemd
from localgg.shim import parse_sudo
from localgg.shims import Caller, ShimServer

SERVICE = systemd.Service(pid=4242, since=1_700_000_000.0, now=1_700_000_185.0, root="/greengrass/v2")
AUTH = ("Failed to restart greengrass.service: Interactive authentication required.\n"
        "See system logs and 'systemctl status greengrass.service' for details.\n")


# -- systemd.py: what systemctl answers ---------------------------------------------------------

@pytest.mark.parametrize("unit", ["greengrass", "greengrass.service"])
def test_a_privileged_restart_of_greengrass_restarts_the_core_and_waits_for_the_job(unit):
    answer = systemd.systemctl(["restart", unit], privileged=True, service=SERVICE)
    assert (answer.action, answer.wait, answer.code, answer.out, answer.err) == ("restart", True, 0, "", "")


def test_no_block_returns_at_once_and_stop_stops():
    assert systemd.systemctl(["--no-block", "restart", "greengrass"], True, SERVICE).wait is False
    stop = systemd.systemctl(["stop", "greengrass.service"], True, SERVICE)
    assert (stop.action, stop.wait) == ("stop", True)
    start = systemd.systemctl(["start", "greengrass"], True, SERVICE)
    assert (start.action, start.code) == (None, 0)        # already active


def test_an_unprivileged_restart_is_refused_as_polkit_refuses_it():
    answer = systemd.systemctl(["restart", "greengrass.service"], privileged=False, service=SERVICE)
    assert (answer.action, answer.code, answer.err) == (None, 1, AUTH)


def test_other_units_are_not_found_with_systemctls_exit_statuses():
    restart = systemd.systemctl(["restart", "nginx"], True, SERVICE)
    assert (restart.action, restart.code, restart.err) == (None, 5, "Failed to restart nginx.service: Unit nginx.service not found.\n")
    status = systemd.systemctl(["status", "nginx.service"], False, SERVICE)
    assert (status.code, status.err) == (4, "Unit nginx.service could not be found.\n")
    both = systemd.systemctl(["restart", "greengrass", "nginx"], True, SERVICE)
    assert both.action is None and both.code == 5     # one missing unit: nothing is done


def test_status_of_the_running_core():
    answer = systemd.systemctl(["status", "greengrass"], privileged=False, service=SERVICE)
    assert answer.code == 0
    assert answer.out.splitlines() == [
        "\u25cf greengrass.service - Greengrass Core",
        "     Loaded: loaded (/etc/systemd/system/greengrass.service; enabled; vendor preset: enabled)",
        "     Active: active (running) since Tue 2023-11-14 22:13:20 UTC; 3min 5s ago",
        "   Main PID: 4242 (localgg)",
        "     CGroup: localgg core under /greengrass/v2"]


def test_is_active_unknown_verbs_and_verbs_localgg_does_not_reproduce():
    assert systemd.systemctl(["is-active", "greengrass"], False, SERVICE) == systemd.Answer(out="active\n")
    assert systemd.systemctl(["is-active", "-q", "nope"], False, SERVICE) == systemd.Answer(code=3)
    assert systemd.systemctl(["frobnicate", "greengrass"], True, SERVICE) == systemd.Answer(
        err="Unknown command verb 'frobnicate'.\n", code=1)
    enable = systemd.systemctl(["enable", "greengrass"], True, SERVICE)
    assert enable.code == 1 and enable.action is None and "`systemctl enable` is not reproduced" in enable.err
    assert systemd.systemctl(["--user", "restart", "x"], True, SERVICE).code == 1
    assert systemd.systemctl(["restart"], True, SERVICE) == systemd.Answer(err="Too few arguments.\n", code=1)


# -- shim.py: sudo's arguments --------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["systemctl", "restart", "greengrass"], ({}, ["systemctl", "restart", "greengrass"])),
    (["-n", "-E", "systemctl", "status"], ({}, ["systemctl", "status"])),
    (["-u", "root", "-H", "systemctl"], ({}, ["systemctl"])),
    (["-nu", "root", "id"], ({}, ["id"])),
    (["-uroot", "id", "-u"], ({}, ["id", "-u"])),
    (["--preserve-env=PATH", "--user", "root", "A=1", "B=x=y", "env"], ({"A": "1", "B": "x=y"}, ["env"])),
    (["--", "-weird"], ({}, ["-weird"])),
    (["-n"], ({}, [])),
])
def test_sudo_options_and_assignments_are_skipped(args, expected):
    assert parse_sudo(args) == expected


# -- the shim programs against the core's socket ---------------------------------------------------

class Host:
    """The core's side, as the kernel answers it: every caller is the step of one component."""

    def __init__(self, privileged: bool = False):
        self.privileged = privileged
        self.exits: list[bool] = []
        self.callers: list[tuple[int, str]] = []

    def caller(self, pid: int, token: str) -> Caller:
        self.callers.append((pid, token))
        return Caller("com.example.Rotator", self.privileged)

    def service(self) -> systemd.Service:
        return SERVICE

    def request_exit(self, restart: bool = False) -> None:
        self.exits.append(restart)


class Shims:
    def __init__(self, directory: Path, host: Host):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.directory, self.host = directory, host
        self.server = self.start()

    def start(self) -> ShimServer:
        server = ShimServer(self.directory, self.host)
        asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(10)
        return server

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def shims():
    base = device_tmp("lggs-")
    bin_dir = base / "bin"      # a PATH with no real sudo or systemctl on it
    bin_dir.mkdir()
    for tool in ("sh", "python3", "id"):   # the system's, as on a device (a pyenv shim needs bash)
        (bin_dir / tool).symlink_to(shutil.which(tool, path="/usr/bin:/bin") or os.path.realpath(sys.executable))
    host = Host()
    s = Shims(base / "localgg-shims", host)
    s.env = {"PATH": f"{s.directory}:{bin_dir}", "SVCUID": "TOKEN1234"}
    yield s
    s.close()


def run(shims, *argv: str, user: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=shims.env, capture_output=True, text=True, timeout=timeout,
                          cwd="/", user=user)


def unprivileged_user() -> str | None:
    """Someone who is not root, to run the shim as a component's user would (None: we are not root)."""
    return "ggc_user" if os.geteuid() == 0 and _exists("ggc_user") else ("nobody" if os.geteuid() == 0 else None)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_systemctl_status_through_the_shim(shims):
    done = run(shims, "systemctl", "status", "greengrass")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == systemd.status_text(SERVICE)
    assert shims.host.callers and shims.host.callers[-1][1] == "TOKEN1234"   # the step's SVCUID goes along
    missing = run(shims, "systemctl", "status", "nginx")
    assert (missing.returncode, missing.stderr) == (4, "Unit nginx.service could not be found.\n")


def test_without_sudo_a_component_user_cannot_restart_the_core(shims):
    done = run(shims, "systemctl", "restart", "greengrass.service", user=unprivileged_user())
    assert (done.returncode, done.stdout, done.stderr) == (1, "", AUTH)
    assert shims.host.exits == []


def test_a_step_with_requires_privilege_may_restart_the_core_without_sudo(shims):
    shims.host.privileged = True
    done = run(shims, "systemctl", "--no-block", "restart", "greengrass.service", user=unprivileged_user())
    assert (done.returncode, done.stderr) == (0, "")
    wait_for(lambda: shims.host.exits == [True], 10, message="the request, which --no-block does not wait for")


def test_sudo_systemctl_restart_no_block_asks_the_core_to_restart(shims):
    done = run(shims, "sudo", "-n", "systemctl", "--no-block", "restart", "greengrass", user=unprivileged_user())
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    wait_for(lambda: shims.host.exits == [True], 10, message="the request, which --no-block does not wait for")


def test_a_systemctl_run_under_sudo_is_privileged_and_sudo_runs_other_commands_as_the_caller(shims):
    user = unprivileged_user()
    done = run(shims, "sudo", "sh", "-c", "id -u; echo $SUDO_USER; systemctl --no-block stop greengrass", user=user)
    assert done.returncode == 0, done.stderr
    uid, sudo_user = done.stdout.split()
    assert int(uid) == (pwd.getpwnam(user).pw_uid if user else os.geteuid())   # no privilege was gained
    assert sudo_user == (user or pwd.getpwuid(os.geteuid()).pw_name)
    wait_for(lambda: shims.host.exits == [False], 10, message="the request, which --no-block does not wait for")
    missing = run(shims, "sudo", "no-such-tool")
    assert (missing.returncode, missing.stderr) == (1, "sudo: no-such-tool: command not found\n")


def test_a_waiting_restart_returns_once_the_core_is_back(shims):
    caller = subprocess.Popen(["sudo", "systemctl", "restart", "greengrass.service"], env=shims.env, cwd="/",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: shims.host.exits == [True], 10, message="the restart request")
        assert caller.poll() is None          # systemctl waits for its job
        shims.stop()                          # the core stops...
        assert caller.poll() is None          # ...and is not back yet
        shims.server = shims.start()          # ...and starts again
        assert caller.wait(10) == 0
    finally:
        if caller.poll() is None:
            caller.kill()


# -- the kernel: who is asking ---------------------------------------------------------------------

def test_the_core_knows_the_step_a_caller_runs_in_and_whether_it_is_privileged(core, tmp_path):
    """A process started by a step (here a child of its shell) is that step's, privileged or not;
    a process outside every step is known only by a component's token."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    run = "sleep 600 & echo $! > {work:path}/child.pid; wait"
    for name, privileged in (("com.ex.Plain", False), ("com.ex.Root", True)):
        recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
                  "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {
                      "Run": {"Script": run, "RequiresPrivilege": privileged}}}]}
        (recipes / f"{name}.json").write_text(json.dumps(recipe))
    cli = core.cli_client()
    cli.create_local_deployment(root_component_versions_to_add={"com.ex.Plain": "1.0.0", "com.ex.Root": "1.0.0"},
                                recipe_directory_path=str(recipes))
    kernel = core.kernel
    pids = {name: wait_for(lambda: _pid(kernel.root / "work" / name / "child.pid"), 30, message=f"{name}'s child")
            for name in ("com.ex.Plain", "com.ex.Root")}
    assert core.call(lambda: kernel.caller(pids["com.ex.Plain"], "")) == Caller("com.ex.Plain", False)
    assert core.call(lambda: kernel.caller(pids["com.ex.Root"], "")) == Caller("com.ex.Root", True)
    token = core.call(lambda: kernel.token_for("com.ex.Plain"))
    assert core.call(lambda: kernel.caller(os.getpid(), token)) == Caller("com.ex.Plain", False)
    assert core.call(lambda: kernel.caller(os.getpid(), "NOT-A-TOKEN")) is None
    env = core.call(lambda: kernel.environment("com.ex.Plain"))
    assert env["PATH"].split(":")[0] == str(kernel.root / "localgg-shims")
    assert sorted(p.name for p in (kernel.root / "localgg-shims").iterdir()) == ["sudo", "systemctl", "systemd.sock"]


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None
