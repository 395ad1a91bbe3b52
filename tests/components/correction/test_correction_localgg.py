"""The runner with the real backfill_common.ipc.Ipc and awsiot client on an in-process localgg
core with ShadowManager: readings flow, desired.correction applies live, reported follows."""

import json
import threading

import pytest
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

from backfill_common.ipc import Ipc
from conftest import wait_for
from temperature_correction.correction import Corrector
from temperature_correction.runner import Runner

COMPONENT = "io.backfill.TemperatureCorrection"
SHADOW_MANAGER = "aws.greengrass.ShadowManager"
THING = "test-thing"
RAW, CORRECTED = "backfill/readings/raw", "backfill/readings/corrected"
SHADOW_TOPIC = f"$aws/things/{THING}/shadow/name/backfill"
COMPONENT_CONFIG = {"accessControl": {
    "aws.greengrass.ipc.pubsub": {f"{COMPONENT}:pubsub:1": {
        "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
        "resources": [RAW, CORRECTED, f"{SHADOW_TOPIC}/update/documents"]}},
    SHADOW_MANAGER: {f"{COMPONENT}:shadow:1": {
        "operations": ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow"],
        "resources": [SHADOW_TOPIC]}}}}
OBSERVER_CONFIG = {"accessControl": {
    "aws.greengrass.ipc.pubsub": {"o": {"operations": ["*"], "resources": ["*"]}},
    SHADOW_MANAGER: {"o": {"operations": ["*"], "resources": ["*"]}}}}


def reading(seq, temperature=30.0, cpu=50.0, run="0badcafe"):
    return {"device": THING, "run": run, "seq": seq, "t": 1764338400000 + seq * 1000, "mono": seq * 1000,
            "clock_synced": False, "status": "ok", "temperature": temperature, "humidity": 45.0,
            "pressure": 1013.25, "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": cpu}


@pytest.fixture
def observer(core):
    cli = core.cli_client()
    deployment = cli.create_local_deployment(root_component_versions_to_add={SHADOW_MANAGER: "2.3.12"}).deployment_id
    wait_for(lambda: cli.get_local_deployment_status(deployment_id=deployment).deployment.status == "SUCCEEDED", 30,
             message="ShadowManager deployed")
    return core.client("com.test.Observer", OBSERVER_CONFIG)


def test_pipeline_through_the_real_ipc(core, observer):
    # a per-device override is already there when the component starts
    observer.update_thing_shadow(thing_name=THING, shadow_name="backfill", payload=json.dumps(
        {"state": {"desired": {"correction": {"window": 1}}}}).encode())
    received, lock = [], threading.Lock()

    def on_corrected(event):
        with lock:
            received.append(event.json_message.message)
    observer.subscribe_to_topic(topic=CORRECTED, on_stream_event=on_corrected)

    ipc = Ipc(client=core.client(COMPONENT, {"factor": 1.0, **COMPONENT_CONFIG}), thing_name=THING)
    runner = Runner(ipc, Corrector())
    runner.start()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()

    def publish(doc):
        observer.publish_to_topic(topic=RAW, publish_message=PublishMessage(json_message=JsonMessage(message=doc)))

    def reported():
        doc = json.loads(observer.get_thing_shadow(thing_name=THING, shadow_name="backfill").payload)
        return doc["state"].get("reported", {}).get("correction")

    def got(n):
        return wait_for(lambda: len(received) >= n and list(received), message=f"{n} corrected readings")

    try:
        assert wait_for(reported, interval=0.2, message="reported.correction")["window"] == 1
        publish(reading(0, 30.0, 52.5))
        first = got(1)[0]
        assert (first["temperature"], first["temperature_raw"], first["correction"]) == (7.5, 30.0, "cpu_factor")
        assert first["seq"] == 0 and first["run"] == "0badcafe"

        observer.update_thing_shadow(thing_name=THING, shadow_name="backfill", payload=json.dumps(
            {"state": {"desired": {"correction": {"method": "linear", "a": 1.0, "b": -0.5, "c": 2.0,
                                                  "factor": 0}}}}).encode())
        wait_for(lambda: (reported() or {}).get("method") == "linear", interval=0.2, message="linear reported")
        assert reported()["factor"] == 1.0                       # 0 refused, the configuration's 1.0 stays
        publish({"not": "a reading"})
        publish(reading(1, 30.0, 40.0))
        second = got(2)[1]
        assert (second["temperature"], second["correction"]) == (12.0, "linear")
        assert sum(runner.problems.counts.values()) == 1
    finally:
        stop.set()
        thread.join(10)
        ipc.close()
    assert not thread.is_alive()


def test_main_runs_as_the_component_and_stops_on_sigterm(core, observer):
    """`python -m temperature_correction` with the environment Greengrass gives a component."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[3]
    env = core.call(lambda: core.kernel.add_external_component(COMPONENT, COMPONENT_CONFIG))
    env["PYTHONPATH"] = os.pathsep.join([str(repo / "components" / "_common"),
                                         str(repo / "components" / COMPONENT)])
    received = []
    observer.subscribe_to_topic(topic=CORRECTED, on_stream_event=lambda e: received.append(e.json_message.message))
    process = subprocess.Popen([sys.executable, "-u", "-m", "temperature_correction"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def reported():
            assert process.poll() is None, process.communicate()[0]
            try:
                doc = json.loads(observer.get_thing_shadow(thing_name=THING, shadow_name="backfill").payload)
            except Exception:          # no shadow yet
                return None
            return doc["state"].get("reported", {}).get("correction")
        wait_for(reported, 30, interval=0.2, message="the component to start and report")
        seq = 0

        def flowing():
            nonlocal seq
            observer.publish_to_topic(topic=RAW, publish_message=PublishMessage(
                json_message=JsonMessage(message=reading(seq))))
            seq += 1
            return received
        wait_for(flowing, 30, interval=0.2, message="a corrected reading")
        assert received[0]["correction"] == "cpu_factor" and received[0]["temperature_raw"] == 30.0
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            print(process.communicate()[0])   # shown with the failure
    assert process.returncode == 0, output
    assert "correcting backfill/readings/raw -> backfill/readings/corrected" in output
