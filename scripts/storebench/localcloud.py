"""localgg for the benchmark: mosquitto as IoT Core, a core provisioned against it running
in this process (its own event-loop thread, as tests/conftest.py's CoreThread), components
as separate processes with the environment the nucleus gives them, and `localgg cloud
record` as the cloud's witness.

    with LocalCloud(base, thing="bench-thing") as lc:
        lc.deploy_shadow_manager()
        env = lc.component_env("io.backfill.StoreAndForward", configuration)
        recorder = lc.record(["dt/#"], base / "received.db")      # a `localgg cloud record` process
        ...

IoT Core's quotas are localgg's own: the bridge's client-side 100 publishes/s and 512 KiB/s
(the nucleus's), its 2.5 MiB memory spooler, and mosquitto's 128 KB packet limit.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
COMPONENT_PATHS = [ROOT / "components" / "_common", ROOT / "components" / "io.backfill.StoreAndForward"]
SHADOW_MANAGER = "aws.greengrass.ShadowManager"


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def recipe_configuration(component: str, thing: str) -> dict:
    """The recipe's DefaultConfiguration, {iot:thingName} filled in as a deployment does."""
    recipe = yaml.safe_load((RECIPES / f"{component}.yaml").read_text())
    text = yaml.safe_dump(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    return yaml.safe_load(text.replace("{iot:thingName}", thing))


class LocalCloud:
    def __init__(self, base: Path, thing: str = "bench-thing") -> None:
        from localgg.cloud.service import Cloud
        from localgg.kernel import Kernel
        self.base, self.thing = Path(base), thing
        self.cloud = Cloud(self.base / "cloud")
        self.cloud.start()
        root = self.base / "gg"
        self.cloud.provision(root, thing)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="localgg core", daemon=True)
        self.thread.start()
        self.kernel = self.call(lambda: Kernel(root, thing_name=thing))
        self.run(self.kernel.start())
        self.processes: list[subprocess.Popen] = []
        wait_until(lambda: self.call(lambda: self.kernel.iotcore.online), 30, "the core to connect to IoT Core")

    def __enter__(self) -> "LocalCloud":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, fn: Callable):
        async def wrapper():
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(60)

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def deploy_shadow_manager(self) -> None:
        """A local deployment of ShadowManager, as the bundle's (the store reports to its shadow)."""
        import awsiot.greengrasscoreipc
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
        token = self.call(lambda: self.kernel.token_for("aws.greengrass.Cli"))
        cli = GreengrassCoreIPCClientV2(client=awsiot.greengrasscoreipc.connect(
            ipc_socket=self.kernel.socket_path, authtoken=token))
        try:
            deployment = cli.create_local_deployment(root_component_versions_to_add={SHADOW_MANAGER: "2.3.12"})
            wait_until(lambda: cli.get_local_deployment_status(deployment_id=deployment.deployment_id)
                       .deployment.status == "SUCCEEDED", 30, "ShadowManager deployed")
        finally:
            cli.close()

    def component_env(self, name: str, configuration: Optional[dict] = None) -> dict:
        """The environment of a component process (its IPC token and socket), run from the
        source tree with the component's packages on PYTHONPATH as its artifact lays them out."""
        env = self.call(lambda: self.kernel.add_external_component(name, configuration))
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join([str(p) for p in COMPONENT_PATHS] + [str(ROOT / "scripts")])
        return env

    def spawn(self, args: list[str], env: dict, log: Path, cwd: Optional[Path] = None) -> subprocess.Popen:
        out = open(log, "ab")
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.processes.append(process)
        return process

    def record(self, topics: list[str], db: Path) -> subprocess.Popen:
        """`localgg cloud record` in its own process; returns once it is subscribed."""
        args = ["-m", "localgg", "cloud", "record", "--cloud", str(self.cloud.directory), "--db", str(db)]
        for topic in topics:
            args += ["--topic", topic]
        process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True)
        self.processes.append(process)
        line = process.stdout.readline()
        if not line.startswith("recording"):
            raise RuntimeError(f"localgg cloud record did not start: {line!r}")
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 20) -> Optional[int]:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def close(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)
        try:
            self.run(self.kernel.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.cloud.stop()
