"""Shared fixtures: a localgg core running in-process, and waiting on conditions."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import pytest


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition") -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


_TEMP_DIRS: list[Path] = []

# As on a device: systemd's PATH (greengrass.service has no other), so the components' `python3` is
# the system's, and every non-privileged step as the nucleus's default user (ggc_user:ggc_group when
# the core runs as root), whatever breaks (runwith.py: LOCALGG_RUN_AS=default).
DEVICE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LOCALGG_RUN_AS": "default"}


def device_tmp(prefix: str) -> Path:
    """short_tmp for a core run as a device would: reachable by the component user (/greengrass/v2 is 755)."""
    path = short_tmp(prefix)
    path.chmod(0o755)
    return path


def component_user() -> str:
    """Who runs the components of a core started here as a device would: ggc_user under root."""
    import os
    import pwd
    return "ggc_user" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def process_user(pid: int) -> str:
    """The user a process runs as (its real uid)."""
    import pwd
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return pwd.getpwuid(int(line.split()[1])).pw_name
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def short_tmp(prefix: str) -> Path:
    """A temporary directory with a short path (Unix socket paths are limited to 107 bytes),
    removed when the test session ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    _TEMP_DIRS.append(path)
    return path


def pytest_sessionfinish(session, exitstatus):
    for path in _TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


class CoreThread:
    """A Kernel on its own event loop in a background thread, with helpers for tests."""

    def __init__(self, root: Path, setup: Callable | None = None) -> None:
        from localgg.kernel import Kernel
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.kernel = self.call(lambda: Kernel(root, thing_name="test-thing"))
        if setup is not None:
            self.call(lambda: setup(self.kernel))
        self.run(self.kernel.start())
        self.clients: list = []

    def call(self, fn: Callable):
        """Run `fn()` on the core's loop thread and return its result."""
        async def wrapper():
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(30)

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self, component: str, configuration: dict | None = None):
        """A real GreengrassCoreIPCClientV2 authenticated as `component`.

        Its stream callbacks run on the connection's thread (executor=None), so they see
        events in the order the server sent them; the default thread pool may reorder them."""
        import awsiot.greengrasscoreipc
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
        env = self.call(lambda: self.kernel.add_external_component(component, configuration))
        raw = awsiot.greengrasscoreipc.connect(ipc_socket=env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
                                               authtoken=env["SVCUID"])
        client = GreengrassCoreIPCClientV2(client=raw, executor=None)
        self.clients.append(client)
        return client

    def cli_client(self):
        import awsiot.greengrasscoreipc
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
        token = self.call(lambda: self.kernel.token_for("aws.greengrass.Cli"))
        client = GreengrassCoreIPCClientV2(client=awsiot.greengrasscoreipc.connect(
            ipc_socket=self.kernel.socket_path, authtoken=token))
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            try:
                client.close()
            except Exception:
                pass
        self.run(self.kernel.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def core():
    root = short_tmp("lgg-")
    thread = CoreThread(root / "gg")
    yield thread
    thread.close()
    shutil.rmtree(root, ignore_errors=True)


# Reconnect quickly in tests (the nucleus's defaults are 1 s to 120 s).
FAST_MQTT = {"minimumReconnectDelaySeconds": 0.1, "maximumReconnectDelaySeconds": 0.5,
             "keepAliveTimeoutMs": 5000, "operationTimeoutMs": 5000}


@pytest.fixture
def cloud_dir():
    """A running IoT Core stand-in (mosquitto with mutual TLS) and the cloud shadow service."""
    from localgg.cloud.service import Cloud
    base = short_tmp("lggc-")
    cloud = Cloud(base / "cloud")
    cloud.start()
    yield cloud
    cloud.stop()
    shutil.rmtree(base, ignore_errors=True)


def provisioned_core(cloud, mqtt: dict | None = None) -> CoreThread:
    """A core provisioned against `cloud`, with the Nucleus's mqtt configuration `mqtt`."""
    root = short_tmp("lggi-") / "gg"
    cloud.provision(root, "test-thing")

    def configure(kernel):
        kernel.config.replace("aws.greengrass.Nucleus", {"mqtt": {**FAST_MQTT, **(mqtt or {})}}, 1)
    return CoreThread(root, configure)


@pytest.fixture
def iot(cloud_dir):
    """A core connected to the cloud, online."""
    core = provisioned_core(cloud_dir)
    wait_for(lambda: core.call(lambda: core.kernel.iotcore.online), 15, message="the core to connect to IoT Core")
    yield core
    core.close()
    shutil.rmtree(core.kernel.root.parent, ignore_errors=True)


class CloudListener:
    """A cloud-side MQTT subscriber (paho) that keeps what it receives."""

    def __init__(self, cloud, topic: str, name: str = "test-listener"):
        import threading
        from localgg.cloud import mqtt
        self.messages = []
        self._lock = threading.Lock()
        self.client = mqtt.connect(cloud.directory, name, self._on_message)
        mqtt.subscribe(self.client, topic, 1)

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append(message)

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def policy(service: str, operations: list[str], resources: list[str], policy_id: str = "p1") -> dict:
    """An accessControl block for one service."""
    return {"accessControl": {service: {policy_id: {"operations": operations, "resources": resources}}}}
