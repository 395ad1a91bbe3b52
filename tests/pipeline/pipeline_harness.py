"""Helpers for the pipeline's end-to-end tests: the components built exactly as GDK lays
them out, deployed on an in-process localgg core with the CLI's IPC operations, and
observed through the real awsiot client (no mock anywhere)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import bundleinfo
from conftest import CoreThread, short_tmp, wait_for

REPO = Path(__file__).resolve().parents[2]
THING = "test-thing"
SHADOW = "backfill"
SENSOR, CORRECTION, STORE, BUNDLE = ("io.backfill.Bme680Sensor", "io.backfill.TemperatureCorrection",
                                     "io.backfill.StoreAndForward", "io.backfill.SensorPipeline")
OBSERVER_POLICY = {"accessControl": {
    "aws.greengrass.ipc.pubsub": {"observe": {"operations": ["aws.greengrass#SubscribeToTopic",
                                                             "aws.greengrass#PublishToTopic"],
                                              "resources": ["backfill/*"]}},
    "aws.greengrass.ShadowManager": {"shadow": {"operations": ["*"], "resources": ["*"]}},
}}
VERSION = bundleinfo.version()        # the components' one version (scripts/bump-version)
_BUILT: dict[str, tuple[Path, Path]] = {}


def built() -> tuple[Path, Path]:
    """(recipes, artifacts) of `scripts/build.py`, built once per test session."""
    if "out" not in _BUILT:
        out = short_tmp("bfb-") / "greengrass-build"
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "build.py"), "--out", str(out)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"build failed:\n{result.stdout}\n{result.stderr}"
        _BUILT["out"] = (out / "recipes", out / "artifacts")
    return _BUILT["out"]


def nucleus_setup(extra: dict | None = None):
    """The Nucleus configuration our deployments need: accessControl names the core's thing."""
    def setup(kernel) -> None:
        current = kernel.config.value("aws.greengrass.Nucleus", []) or {}
        kernel.config.replace("aws.greengrass.Nucleus",
                              {**current, "interpolateComponentConfiguration": True, **(extra or {})}, 1)
    return setup


def deploy(core: CoreThread, versions: dict[str, str], config: dict | None = None, timeout: float = 300) -> str:
    """A local deployment of the built components; returns once it SUCCEEDED (fails the test otherwise)."""
    recipes, artifacts = built()
    cli = core.cli_client()
    deployment = cli.create_local_deployment(
        recipe_directory_path=str(recipes), artifacts_directory_path=str(artifacts),
        root_component_versions_to_add=versions, component_to_configuration=config).deployment_id

    def finished():
        status = cli.get_local_deployment_status(deployment_id=deployment).deployment
        return status if status.status in ("SUCCEEDED", "FAILED") else None
    status = wait_for(finished, timeout, interval=0.2, message=f"deployment of {versions}")
    assert status.status == "SUCCEEDED", f"deployment {status}:\n{log_tail(core)}"
    return deployment


def log_tail(core: CoreThread, lines: int = 60) -> str:
    logs = core.kernel.root / "logs"
    out = []
    for path in sorted(logs.glob("*.log")):
        out.append(f"--- {path.name}")
        out.extend(path.read_text(errors="replace").splitlines()[-lines:])
    return "\n".join(out)


class Observer:
    """A test component on the core: collects JSON messages per topic, can publish and use the shadow."""

    def __init__(self, core: CoreThread, name: str = "test.Observer") -> None:
        self.client = core.client(name, OBSERVER_POLICY)
        self._lock = threading.Lock()
        self.messages: dict[str, list] = {}

    def watch(self, topic: str) -> "Observer":
        self.messages.setdefault(topic, [])

        def on_event(event) -> None:
            message = event.json_message.message if event.json_message else bytes(event.binary_message.message)
            with self._lock:
                self.messages[topic].append(message)
        self.client.subscribe_to_topic(topic=topic, on_stream_event=on_event)
        return self

    def got(self, topic: str) -> list:
        with self._lock:
            return list(self.messages[topic])

    def publish(self, topic: str, doc: dict) -> None:
        from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage
        self.client.publish_to_topic(topic=topic, publish_message=PublishMessage(json_message=JsonMessage(message=doc)))

    def shadow(self) -> dict:
        return json.loads(self.client.get_thing_shadow(thing_name=THING, shadow_name=SHADOW).payload)

    def desire(self, state: dict) -> None:
        self.client.update_thing_shadow(thing_name=THING, shadow_name=SHADOW,
                                        payload=json.dumps({"state": {"desired": state}}).encode())


class Acknowledger:
    """Stands in for the store: acknowledges, per run, the highest seq up to which every
    corrected reading has been seen (what io.backfill.StoreAndForward does once it has stored them)."""

    def __init__(self, observer: Observer, topic: str = "backfill/readings/corrected",
                 ack_topic: str = "backfill/acks") -> None:
        self.observer, self.topic, self.ack_topic = observer, topic, ack_topic
        self.acked: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            seen: dict[str, set[int]] = {}
            device = THING
            for reading in self.observer.got(self.topic):
                seen.setdefault(reading["run"], set()).add(int(reading["seq"]))
                device = reading["device"]
            for run, seqs in seen.items():
                top = self.acked.get(run, -1)
                while top + 1 in seqs:
                    top += 1
                if top > self.acked.get(run, -1):
                    self.acked[run] = top
                    self.observer.publish(self.ack_topic, {"device": device, "run": run, "seq": top})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def component_pids(core: CoreThread, name: str) -> list[int]:
    """The processes the core runs for a component (its lifecycle script's process group)."""
    import os
    work = str(core.kernel.work_dir(name))
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == work:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
