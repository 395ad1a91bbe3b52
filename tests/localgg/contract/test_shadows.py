"""Local shadows (aws.greengrass.ShadowManager) with the real client, and their local pub/sub topics."""

import json
import threading

import pytest
from awsiot.greengrasscoreipc.model import (BinaryMessage, ConflictError, InvalidArgumentsError, PublishMessage,
                                            ResourceNotFoundError, ServiceError, UnauthorizedError)

from conftest import policy, wait_for

SHADOW = "aws.greengrass.ShadowManager"
ALL_SHADOW = {**policy(SHADOW, ["*"], ["*"]),
              "accessControl": {SHADOW: {"p": {"operations": ["*"], "resources": ["*"]}},
                                "aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["*"]}}}}


def deploy_shadow_manager(core, configuration: dict | None = None) -> None:
    cli = core.cli_client()
    kwargs = {"root_component_versions_to_add": {SHADOW: "2.3.12"}}
    if configuration is not None:
        kwargs["component_to_configuration"] = {SHADOW: {"MERGE": configuration}}
    deployment = cli.create_local_deployment(**kwargs).deployment_id
    wait_for(lambda: cli.get_local_deployment_status(deployment_id=deployment).deployment.status == "SUCCEEDED", 30)


@pytest.fixture
def shadows(core):
    deploy_shadow_manager(core)
    return core.client("com.ex.App", ALL_SHADOW)


def update(client, thing, body, name=None):
    response = client.update_thing_shadow(thing_name=thing, shadow_name=name, payload=json.dumps(body).encode())
    return json.loads(response.payload)


class Topics:
    """Every binary message on local pub/sub under a prefix, in arrival order."""

    def __init__(self, client, prefix: str):
        self.items, self.lock = [], threading.Lock()
        client.subscribe_to_topic(topic=prefix + "/#", on_stream_event=self._on)

    def _on(self, event):
        with self.lock:
            message = event.binary_message
            self.items.append((message.context.topic, json.loads(message.message)))

    def get(self):
        with self.lock:
            return list(self.items)


def test_not_deployed_means_not_supported(core):
    client = core.client("com.ex.App", ALL_SHADOW)
    with pytest.raises(ServiceError) as err:
        client.get_thing_shadow(thing_name="t")
    assert err.value.message == "Operation aws.greengrass#GetThingShadow is not supported by Greengrass"


def test_update_get_delete_round_trip(shadows):
    accepted = update(shadows, "t", {"state": {"desired": {"color": "red"}, "reported": {"color": "blue"}},
                                     "clientToken": "c1"})
    assert (accepted["version"], accepted["clientToken"]) == (1, "c1")
    assert accepted["state"] == {"desired": {"color": "red"}, "reported": {"color": "blue"}}
    got = json.loads(shadows.get_thing_shadow(thing_name="t").payload)
    assert got["state"]["delta"] == {"color": "red"} and got["version"] == 1
    assert set(got["metadata"]["desired"]["color"]) == {"timestamp"}
    assert shadows.delete_thing_shadow(thing_name="t").payload == b""
    with pytest.raises(ResourceNotFoundError) as err:
        shadows.get_thing_shadow(thing_name="t")
    assert (err.value.message, err.value.resource_type) == ("No shadow found", "shadow")
    assert update(shadows, "t", {"state": {"reported": {"x": 1}}})["version"] == 1  # local versions restart


def test_version_conflict_and_invalid_version(shadows):
    update(shadows, "t", {"state": {"reported": {"a": 1}}})
    update(shadows, "t", {"state": {"reported": {"a": 2}}, "version": 1})
    with pytest.raises(ConflictError) as err:
        update(shadows, "t", {"state": {"reported": {"a": 3}}, "version": 1})
    assert err.value.message == "Version conflict"
    with pytest.raises(InvalidArgumentsError) as err:
        update(shadows, "fresh", {"state": {"reported": {"a": 1}}, "version": 5})
    assert err.value.message == "Invalid version"


@pytest.mark.parametrize("thing, name, message", [
    ("", None, "ThingName is missing"), ("bad thing", None, "ThingName must match pattern [a-zA-Z0-9:_-]+"),
    ("t", "n" * 65, "ShadowName has a maximum length of 64"),
])
def test_name_rules(shadows, thing, name, message):
    with pytest.raises(InvalidArgumentsError) as err:
        update(shadows, thing, {"state": {"reported": {"a": 1}}}, name)
    assert err.value.message == message


def test_size_and_depth_limits(shadows):
    with pytest.raises(InvalidArgumentsError) as err:
        update(shadows, "t", {"state": {"reported": {"big": "x" * 9000}}})
    assert err.value.message == "The payload exceeds the maximum size allowed"
    deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}
    with pytest.raises(InvalidArgumentsError) as err:
        update(shadows, "t", {"state": {"reported": deep}})
    assert err.value.message == "JSON contains too many levels of nesting; maximum is 6"


def test_bad_json_is_a_service_error(shadows):
    with pytest.raises(ServiceError):
        shadows.update_thing_shadow(thing_name="t", payload=b"{not json")


def test_authorization_resources_are_shadow_topics(core):
    deploy_shadow_manager(core)
    client = core.client("com.ex.Limited", policy(SHADOW, ["aws.greengrass#GetThingShadow",
                                                           "aws.greengrass#UpdateThingShadow"],
                                                  ["$aws/things/mine/shadow/name/config"]))
    update(client, "mine", {"state": {"reported": {"a": 1}}}, "config")
    with pytest.raises(UnauthorizedError) as err:
        update(client, "mine", {"state": {"reported": {"a": 1}}})
    assert err.value.message == ("Principal com.ex.Limited is not authorized to perform aws.greengrass.ShadowManager:"
                                 "aws.greengrass#UpdateThingShadow on resource $aws/things/mine/shadow")


def test_local_pubsub_gets_delta_documents_accepted_in_order(shadows):
    topics = Topics(shadows, "$aws/things/t/shadow")
    update(shadows, "t", {"state": {"desired": {"on": True}}})
    wait_for(lambda: len(topics.get()) >= 3)
    names = [topic.rsplit("shadow/", 1)[1] for topic, _ in topics.get()]
    assert names == ["update/delta", "update/documents", "update/accepted"]
    delta, documents = topics.get()[0][1], topics.get()[1][1]
    assert delta["state"] == {"on": True} and documents["previous"] is None
    assert documents["current"]["version"] == 1
    update(shadows, "t", {"state": {"reported": {"on": True}}})
    wait_for(lambda: len(topics.get()) >= 5)
    assert [t.rsplit("shadow/", 1)[1] for t, _ in topics.get()[3:]] == ["update/documents", "update/accepted"]


def test_rejected_is_published_too(shadows):
    topics = Topics(shadows, "$aws/things/t/shadow")
    with pytest.raises(ResourceNotFoundError):
        shadows.get_thing_shadow(thing_name="t", shadow_name="nope")
    [(topic, body)] = wait_for(topics.get)
    assert topic == "$aws/things/t/shadow/name/nope/get/rejected"
    assert (body["code"], body["message"]) == (404, "No shadow exists with name: nope")


def test_requests_over_local_pubsub(shadows):
    topics = Topics(shadows, "$aws/things/p/shadow/update")
    shadows.publish_to_topic(topic="$aws/things/p/shadow/update", publish_message=PublishMessage(
        binary_message=BinaryMessage(message=json.dumps({"state": {"reported": {"v": 7}}}).encode())))
    wait_for(lambda: any(t.endswith("/accepted") for t, _ in topics.get()))
    assert json.loads(shadows.get_thing_shadow(thing_name="p").payload)["state"]["reported"] == {"v": 7}


def test_list_named_shadows_pages_with_tokens(shadows):
    for name in ("a", "b", "c"):
        update(shadows, "t", {"state": {"reported": {"n": name}}}, name)
    update(shadows, "t", {"state": {"reported": {"classic": 1}}})
    first = shadows.list_named_shadows_for_thing(thing_name="t", page_size=2)
    assert first.results == ["a", "b"] and first.next_token
    second = shadows.list_named_shadows_for_thing(thing_name="t", page_size=2, next_token=first.next_token)
    assert second.results == ["c"] and second.next_token is None
    with pytest.raises(InvalidArgumentsError) as err:
        shadows.list_named_shadows_for_thing(thing_name="t", page_size=101)
    assert err.value.message == "pageSize argument must be between 1 and 100"


def test_rate_limit_per_thing(core):
    deploy_shadow_manager(core, {"rateLimits": {"maxLocalRequestsPerSecondPerThing": 2}})
    client = core.client("com.ex.App", ALL_SHADOW)
    errors = []
    for _ in range(6):
        try:
            update(client, "busy", {"state": {"reported": {"a": 1}}})
        except ServiceError as exc:
            errors.append(exc.message)
    assert "Too Many Requests" in errors


def test_shadows_persist_across_a_core_restart():
    from conftest import CoreThread, short_tmp
    root = short_tmp("lggs-") / "gg"
    first = CoreThread(root)
    try:
        deploy_shadow_manager(first)
        update(first.client("com.ex.App", ALL_SHADOW), "t", {"state": {"reported": {"kept": True}}})
    finally:
        first.close()
    again = CoreThread(root)
    try:
        client = again.client("com.ex.App", ALL_SHADOW)
        assert json.loads(client.get_thing_shadow(thing_name="t").payload)["state"]["reported"] == {"kept": True}
        assert (root / "work" / SHADOW / "shadow.db").exists()
    finally:
        again.close()
