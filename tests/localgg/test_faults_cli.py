"""Every `localgg fault` command, observed from outside.

The cloud (`localgg cloud start`) and the core (`localgg start --cloud`) run as real
processes; a deployed component publishes telemetry to IoT Core every 50 ms with its pid
and send time; a cloud recorder (`localgg cloud record`) stores what arrives. Faults go
through the CLI only."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import short_tmp, wait_for
from localgg.processes import running

TELEMETRY = textwrap.dedent("""\
    import json, os, time
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    client = GreengrassCoreIPCClientV2()
    n = 0
    while True:
        body = json.dumps({"n": n, "pid": os.getpid(), "sent": time.time(), "pad": "x" * int(os.environ["PAD"])})
        try:
            client.publish_to_iot_core(topic_name="dt/test/telemetry", qos="1", payload=body.encode())
        except Exception as exc:
            print("publish failed:", exc, flush=True)
        n += 1
        time.sleep(0.05)
    """)

RECIPE = {
    "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.ex.Telemetry", "ComponentVersion": "1.0.0",
    "ComponentConfiguration": {"DefaultConfiguration": {"pad": 0, "accessControl": {"aws.greengrass.ipc.mqttproxy": {
        "p": {"operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["dt/test/telemetry"]}}}}},
    "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {
        "Install": "echo installed >> installs.txt",
        "Run": {"Script": "python3 -u {artifacts:path}/telemetry.py", "Setenv": {"PAD": "{configuration:/pad}"}}},
        "Artifacts": [{"URI": "s3://b/com.ex.Telemetry/1.0.0/telemetry.py"}]}],
}
FAST = {"minimumReconnectDelaySeconds": 0.1, "maximumReconnectDelaySeconds": 0.5, "keepAliveTimeoutMs": 5000}


class World:
    def __init__(self, base: Path):
        self.base, self.cloud, self.root = base, base / "cloud", base / "gg"
        self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        self.procs = []
        self.spawn("cloud.out", "cloud", "start", "--dir", str(self.cloud))
        wait_for(lambda: (self.cloud / "control.sock").exists(), 30, message="the cloud")
        self.spawn("core.out", "start", "--root", str(self.root), "--thing", "fault-thing", "--cloud", str(self.cloud))
        wait_for(lambda: (self.root / "localgg.pid").exists(), 30, message="the core")
        self.spawn("recorder.out", "cloud", "record", "--cloud", str(self.cloud), "--topic", "dt/#",
                   "--db", str(base / "received.db"))
        wait_for(lambda: "recording" in (base / "recorder.out").read_text(), 30, message="the recorder")

    def spawn(self, log: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "localgg", *args], env=self.env,
                                stdout=open(self.base / log, "w"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, root: bool = True) -> str:
        extra = ["--root", str(self.root)] if root else []
        result = subprocess.run([sys.executable, "-m", "localgg", *args, *extra], env=self.env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"localgg {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def status(self) -> dict:
        return json.loads(self.cli("status"))

    def received(self) -> list[dict]:
        db = sqlite3.connect(self.base / "received.db")
        try:
            rows = db.execute("SELECT payload, received_at FROM messages ORDER BY id").fetchall()
        finally:
            db.close()
        return [{**json.loads(p), "received_at": r} for p, r in rows]

    def deploy_telemetry(self, pad: int = 0) -> None:
        recipes, artifacts = self.base / "recipes", self.base / "artifacts" / "com.ex.Telemetry" / "1.0.0"
        recipes.mkdir(exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        (recipes / "telemetry.yaml").write_text(yaml.safe_dump(RECIPE))
        (artifacts / "telemetry.py").write_text(TELEMETRY)
        update = {"aws.greengrass.Nucleus": {"MERGE": {"mqtt": FAST}}, "com.ex.Telemetry": {"MERGE": {"pad": pad}}}
        self.cli("deployment", "create", "--recipeDir", str(recipes), "--artifactDir", str(self.base / "artifacts"),
                 "--merge", "com.ex.Telemetry=1.0.0", "--merge", "aws.greengrass.Nucleus=2.18.2",
                 "--update-config", json.dumps(update), "--wait", "60")

    def count_after(self, moment: float) -> int:
        return len([m for m in self.received() if m["received_at"] > moment])

    def close(self):
        pid_file = self.root / "localgg.pid"
        if pid_file.exists():  # the core may have been restarted by a fault, detached from us
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
                wait_for(lambda: not pid_file.exists(), 30)
            except (ProcessLookupError, ValueError, AssertionError):
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture(scope="module")
def world():
    base = short_tmp("lggf-")
    w = World(base)
    w.deploy_telemetry()
    wait_for(lambda: len(w.received()) >= 5, 30, message="telemetry at the cloud")
    yield w
    w.close()
    subprocess.run(["rm", "-rf", str(base)])


def flowing(w: World, count: int = 3, timeout: float = 30) -> None:
    start = time.time()
    wait_for(lambda: w.count_after(start) >= count, timeout, message="telemetry to flow")


def test_link_down_and_up(world):
    assert "\"up\": false" in world.cli("fault", "link", "down")
    wait_for(lambda: not world.status()["iotcore"]["online"], 10, message="the core to see it is offline")
    cut = time.time()
    wait_for(lambda: world.status()["iotcore"]["spool"]["messages"] >= 10, 10, message="the spool to fill")
    assert world.count_after(cut + 0.5) == 0  # nothing crosses a down link
    world.cli("fault", "link", "up")
    wait_for(lambda: world.status()["iotcore"]["online"], 15)
    wait_for(lambda: world.status()["iotcore"]["spool"]["messages"] < 5, 15, message="the spool to drain")
    ns = [m["n"] for m in world.received() if m["pid"] == world.received()[-1]["pid"]]
    assert set(range(min(ns), max(ns) + 1)) <= set(ns) | set(range(max(ns) - 5, max(ns) + 1))  # no gap


def test_link_flapping_cuts_real_connections(world):
    before = world.status()["iotcore"]["connections"]
    world.cli("fault", "link", "flap", "--down", "0.3", "--up", "0.7")
    wait_for(lambda: world.status()["iotcore"]["connections"] >= before + 3, 30, message="three reconnects")
    world.cli("fault", "link", "clear")
    assert world.status()["iotcore"]["link"]["cuts"] >= 3
    flowing(world)


def test_link_latency(world):
    world.cli("fault", "link", "limit", "--latency", "400")
    start = time.time()
    wait_for(lambda: world.count_after(start + 1.5) >= 5, 30)
    delays = [m["received_at"] - m["sent"] for m in world.received() if m["received_at"] > start + 1.5]
    cleared = json.loads(world.cli("fault", "link", "clear"))
    assert min(delays) >= 0.4  # at least the one-way delay of the link
    assert (cleared["latency"], cleared["bandwidth"]) == (0.0, None)  # the delay is gone
    assert world.status()["iotcore"]["link"]["latency"] == cleared["latency"]
    flowing(world)  # (how fast, a loaded machine decides: no upper bound on a wall clock)


def test_link_bandwidth(world):
    world.cli("fault", "link", "limit", "--bandwidth", "2000")  # 2 kB/s; each message is ~100 bytes + TLS
    start = time.time()
    time.sleep(3)  # a measurement window, not synchronization
    during = world.count_after(start + 0.5)
    world.cli("fault", "link", "clear")
    assert during < 3 * 20 * 0.8  # the component publishes 20/s: fewer got through
    flowing(world)


def test_broker_restart(world):
    before = world.status()["iotcore"]["connections"]
    first = json.loads(world.cli("fault", "broker", "status", "--cloud", str(world.cloud), root=False))["pid"]
    again = json.loads(world.cli("fault", "broker", "restart", "--cloud", str(world.cloud), root=False))["pid"]
    assert again != first
    wait_for(lambda: world.status()["iotcore"]["connections"] > before, 30, message="the core to reconnect")
    flowing(world)


def test_component_kill(world):
    pid = world.received()[-1]["pid"]
    assert "SIGKILL sent to 1 process groups" in world.cli("fault", "component", "kill", "-n", "com.ex.Telemetry")
    wait_for(lambda: world.received()[-1]["pid"] != pid, 30, message="telemetry from a restarted process")
    assert "exitCode=137" in (world.root / "logs" / "com.ex.Telemetry.log").read_text()


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "sigkill"])
def test_core_restart(world, kill):
    old_core = int((world.root / "localgg.pid").read_text())
    old_component = world.received()[-1]["pid"]
    installs = (world.root / "work" / "com.ex.Telemetry" / "installs.txt").read_text().count("installed")
    out = world.cli("fault", "core", "restart", *(["--kill"] if kill else []))
    assert "restarted" in out
    new_core = int((world.root / "localgg.pid").read_text())
    assert (new_core != old_core) if kill else (new_core == old_core)  # exec keeps the pid; a kill does not
    wait_for(lambda: world.received()[-1]["pid"] != old_component, 30, message="the component to restart")
    assert (world.root / "work" / "com.ex.Telemetry" / "installs.txt").read_text().count("installed") == installs + 1
    assert not running(old_component)

