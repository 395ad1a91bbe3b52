"""The cloud shadow service on IoT Core's topics, and ShadowManager's sync with it."""

import json
import threading

import pytest

from conftest import provisioned_core, wait_for

SHADOW = "aws.greengrass.ShadowManager"
APP = {"accessControl": {SHADOW: {"p": {"operations": ["*"], "resources": ["*"]}}}}


class CloudClient:
    """A cloud-side application using the shadow MQTT API (paho)."""

    def __init__(self, cloud, thing: str):
        from localgg.cloud import mqtt
        self.thing, self.messages, self.lock = thing, [], threading.Lock()
        self.client = mqtt.connect(cloud.directory, f"app-{thing}", self._on)
        mqtt.subscribe(self.client, f"$aws/things/{thing}/shadow/#", 1)

    def _on(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def request(self, op: str, body: dict, name: str = "") -> tuple[str, dict]:
        token = f"tok-{len(self.messages)}-{op}"
        prefix = f"$aws/things/{self.thing}/shadow" + (f"/name/{name}" if name else "")
        self.client.publish(f"{prefix}/{op}", json.dumps({**body, "clientToken": token}).encode(), qos=1)

        def answer():
            with self.lock:
                return next(((t, b) for t, b in self.messages if b.get("clientToken") == token
                             and t.startswith(f"{prefix}/{op}/")), None)
        return wait_for(answer, 10, message=f"the answer to {op}")

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def app(cloud_dir):
    client = CloudClient(cloud_dir, "dev")
    yield client
    client.close()


def test_cloud_update_get_delete(app):
    topic, body = app.request("update", {"state": {"desired": {"fan": "on"}}})
    assert topic.endswith("/update/accepted") and body["version"] == 1
    wait_for(lambda: any(t.endswith("/update/delta") for t, _ in app.messages))
    topic, body = app.request("get", {})
    assert topic.endswith("/get/accepted") and body["state"]["delta"] == {"fan": "on"}
    topic, body = app.request("delete", {})
    assert topic.endswith("/delete/accepted") and body["version"] == 1
    topic, body = app.request("get", {})
    assert topic.endswith("/get/rejected") and body["code"] == 404
    topic, body = app.request("update", {"state": {"reported": {"fan": "off"}}})
    assert body["version"] > 1  # the cloud continues its versions after a delete


def test_cloud_errors(app, cloud_dir):
    app.request("update", {"state": {"reported": {"a": 1}}}, name="cfg")
    topic, body = app.request("update", {"state": {"reported": {"a": 2}}, "version": 7}, name="cfg")
    assert topic.endswith("/update/rejected") and (body["code"], body["message"]) == (409, "Version conflict")
    topic, body = app.request("update", {"stat": {}}, name="cfg")
    assert (body["code"], body["message"]) == (400, "Missing required node: state")


def sync_config(thing: str) -> dict:
    return {"synchronize": {"shadowDocuments": [{"thingName": thing, "classic": True, "namedShadows": ["cfg"]}]}}


@pytest.fixture
def synced(cloud_dir):
    core = provisioned_core(cloud_dir)
    cli = core.cli_client()
    deployment = cli.create_local_deployment(
        root_component_versions_to_add={SHADOW: "2.3.12"},
        component_to_configuration={SHADOW: {"MERGE": sync_config("dev")}}).deployment_id
    wait_for(lambda: cli.get_local_deployment_status(deployment_id=deployment).deployment.status == "SUCCEEDED", 30)
    wait_for(lambda: core.call(lambda: core.kernel.iotcore.online), 15)
    yield core
    core.close()


def local_state(core, client, name=None):
    from awsiot.greengrasscoreipc.model import ResourceNotFoundError
    try:
        return json.loads(client.get_thing_shadow(thing_name="dev", shadow_name=name).payload)["state"]
    except ResourceNotFoundError:
        return None


def cloud_state(cloud, name=""):
    shadow = cloud.shadows.document("dev", name)
    return shadow.state if shadow else None


def test_local_update_reaches_the_cloud_and_cloud_update_reaches_the_device(synced, cloud_dir, app):
    client = synced.client("com.ex.App", APP)
    client.update_thing_shadow(thing_name="dev", payload=b'{"state":{"reported":{"temp":21}}}')
    wait_for(lambda: cloud_state(cloud_dir) == {"reported": {"temp": 21}}, 15, message="the cloud copy")
    app.request("update", {"state": {"desired": {"interval": 10}}})
    wait_for(lambda: (local_state(synced, client) or {}).get("desired") == {"interval": 10}, 15,
             message="the cloud's desired state on the device")
    assert local_state(synced, client)["delta"] == {"interval": 10}


def test_offline_changes_meet_in_a_full_sync(synced, cloud_dir, app):
    client = synced.client("com.ex.App", APP)
    client.update_thing_shadow(thing_name="dev", shadow_name="cfg",
                               payload=b'{"state":{"desired":{"mode":"a"},"reported":{"mode":"a","x":1}}}')
    wait_for(lambda: cloud_state(cloud_dir, "cfg") is not None, 15)
    wait_for(lambda: synced.call(lambda: synced.kernel.shadows.store.sync_record("dev", "cfg").cloud_version) > 0, 15)
    synced.call(lambda: synced.kernel.iotcore.link.down())
    wait_for(lambda: not synced.call(lambda: synced.kernel.iotcore.online), 10)
    # both sides change the same fields while the device is offline
    client.update_thing_shadow(thing_name="dev", shadow_name="cfg",
                               payload=b'{"state":{"desired":{"mode":"device"},"reported":{"mode":"device"}}}')
    app.request("update", {"state": {"desired": {"mode": "cloud"}, "reported": {"mode": "cloud", "y": 2}}},
                name="cfg")
    synced.call(lambda: synced.kernel.iotcore.link.up())
    expected = {"desired": {"mode": "cloud"}, "reported": {"mode": "device", "x": 1, "y": 2}}
    wait_for(lambda: cloud_state(cloud_dir, "cfg") == expected, 20, message="the cloud after the full sync")
    wait_for(lambda: {k: v for k, v in (local_state(synced, client, "cfg") or {}).items() if k != "delta"} == expected,
             20, message="the device after the full sync")


def test_device_to_cloud_direction_ignores_cloud_changes(cloud_dir, app):
    core = provisioned_core(cloud_dir)
    try:
        cli = core.cli_client()
        config = {**sync_config("dev"), "synchronize": {**sync_config("dev")["synchronize"],
                                                        "direction": "deviceToCloud"}}
        deployment = cli.create_local_deployment(root_component_versions_to_add={SHADOW: "2.3.12"},
                                                 component_to_configuration={SHADOW: {"MERGE": config}}).deployment_id
        wait_for(lambda: cli.get_local_deployment_status(deployment_id=deployment).deployment.status == "SUCCEEDED")
        wait_for(lambda: core.call(lambda: core.kernel.iotcore.online), 15)
        client = core.client("com.ex.App", APP)
        client.update_thing_shadow(thing_name="dev", payload=b'{"state":{"reported":{"v":1}}}')
        wait_for(lambda: cloud_state(cloud_dir) == {"reported": {"v": 1}}, 15)
        app.request("update", {"state": {"desired": {"v": 2}}})
        client.update_thing_shadow(thing_name="dev", payload=b'{"state":{"reported":{"v":3}}}')
        wait_for(lambda: (cloud_state(cloud_dir) or {}).get("reported") == {"v": 3}, 15)
        assert "desired" not in local_state(core, client)
    finally:
        core.close()


def test_a_cloud_delete_reaches_the_device(synced, cloud_dir, app):
    client = synced.client("com.ex.App", APP)
    client.update_thing_shadow(thing_name="dev", payload=b'{"state":{"reported":{"temp":21}}}')
    wait_for(lambda: cloud_state(cloud_dir) == {"reported": {"temp": 21}}, 15)
    wait_for(lambda: synced.call(lambda: synced.kernel.shadows.store.sync_record("dev", "").cloud_version) > 0, 15)
    topic, _ = app.request("delete", {})
    assert topic.endswith("/delete/accepted")
    wait_for(lambda: local_state(synced, client) is None, 15, message="the local shadow to be deleted")


def test_a_number_beyond_a_double_is_refused_and_later_desired_changes_still_reach_the_device(synced, cloud_dir, app):
    """Issue item 7: stored, 1e999 came back as `Infinity` in every delta, every sync failed
    ("Non-standard token 'Infinity'") and no later desired change reached the device."""
    import subprocess
    import sys
    client = synced.client("com.ex.App", APP)
    client.update_thing_shadow(thing_name="dev", payload=b'{"state":{"reported":{"sampling":{"interval_s":2}}}}')
    wait_for(lambda: cloud_state(cloud_dir) is not None, 15, message="the cloud copy")
    payload = '{"state":{"desired":{"sampling":{"interval_s":1e999}}},"clientToken":"too-big"}'
    result = subprocess.run([sys.executable, "-m", "localgg", "cloud", "publish", "--cloud", str(cloud_dir.directory),
                             "--topic", "$aws/things/dev/shadow/update", "--payload", payload],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    topic, body = wait_for(lambda: next(((t, b) for t, b in list(app.messages) if b.get("clientToken") == "too-big"
                                         and t.startswith("$aws/things/dev/shadow/update/")), None),
                           10, message="the answer to the update")
    assert topic == "$aws/things/dev/shadow/update/rejected"
    assert (body["code"], body["message"]) == (400, "Invalid JSON")
    assert "desired" not in cloud_state(cloud_dir)
    app.request("update", {"state": {"desired": {"sampling": {"interval_s": 5}}}})
    wait_for(lambda: (local_state(synced, client) or {}).get("desired") == {"sampling": {"interval_s": 5}}, 15,
             message="the later desired change on the device")
