"""GetConfiguration / UpdateConfiguration / SubscribeToConfigurationUpdate with the real client."""

import datetime
import threading

import pytest
from awsiot.greengrasscoreipc.model import (FailedUpdateConditionCheckError, InvalidArgumentsError,
                                            ResourceNotFoundError)

from conftest import wait_for

def now():
    return datetime.datetime.now(datetime.timezone.utc)


CONFIG = {"port": 8080, "limits": {"max": 5, "min": 1}, "name": "box"}


def test_get_whole_configuration(core):
    client = core.client("com.ex.A", CONFIG)
    response = client.get_configuration()
    assert response.component_name == "com.ex.A"
    assert response.value == CONFIG


def test_get_a_leaf_is_wrapped_in_its_key(core):
    client = core.client("com.ex.A", CONFIG)
    assert client.get_configuration(key_path=["port"]).value == {"port": 8080}
    assert client.get_configuration(key_path=["limits"]).value == {"max": 5, "min": 1}


def test_keys_are_case_insensitive_and_keep_their_spelling(core):
    client = core.client("com.ex.A", CONFIG)
    assert client.get_configuration(key_path=["LIMITS", "Max"]).value == {"max": 5}


def test_another_components_configuration_can_be_read(core):
    core.client("com.ex.Other", {"secret": "not really"})
    client = core.client("com.ex.A", CONFIG)
    response = client.get_configuration(component_name="com.ex.Other", key_path=["secret"])
    assert (response.component_name, response.value) == ("com.ex.Other", {"secret": "not really"})


@pytest.mark.parametrize("path", [["missing"], ["port", "below"], ["limits", "nope"]])
def test_missing_key(core, path):
    client = core.client("com.ex.A", CONFIG)
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_configuration(key_path=path)
    assert err.value.message == "Key not found"


def test_unknown_component(core):
    client = core.client("com.ex.A", CONFIG)
    with pytest.raises(ResourceNotFoundError):
        client.get_configuration(component_name="com.ex.Ghost")


def test_update_merges_and_numbers_become_doubles(core):
    client = core.client("com.ex.A", CONFIG)
    client.update_configuration(key_path=["limits"], timestamp=now(), value_to_merge={"max": 9, "new": 2})
    assert client.get_configuration(key_path=["limits"]).value == {"max": 9.0, "min": 1, "new": 2.0}
    assert isinstance(client.get_configuration(key_path=["limits", "max"]).value["max"], float)


def test_update_into_a_leaf_turns_it_into_a_container(core):
    client = core.client("com.ex.A", CONFIG)
    client.update_configuration(key_path=["name"], timestamp=now(), value_to_merge={"first": "a"})
    assert client.get_configuration(key_path=["name"]).value == {"first": "a"}


def test_stale_timestamp_is_refused(core):
    client = core.client("com.ex.A", CONFIG)
    stamp = now()
    client.update_configuration(key_path=[], timestamp=stamp, value_to_merge={"port": 1})
    with pytest.raises(FailedUpdateConditionCheckError) as err:
        client.update_configuration(key_path=[], timestamp=stamp - datetime.timedelta(seconds=60), value_to_merge={"port": 2})
    assert err.value.message == "Proposed timestamp is older than the config's latest modified timestamp"
    assert client.get_configuration(key_path=["port"]).value == {"port": 1.0}


def test_access_control_cannot_be_changed(core):
    client = core.client("com.ex.A", CONFIG)
    with pytest.raises(InvalidArgumentsError) as err:
        client.update_configuration(key_path=["accessControl"], timestamp=now(), value_to_merge={"x": 1})
    assert err.value.message == "Config update is not allowed for following fields [accessControl]"
    with pytest.raises(InvalidArgumentsError):
        client.update_configuration(key_path=[], timestamp=now(), value_to_merge={"accessControl": {}})


def test_timestamp_and_value_are_required(core):
    client = core.client("com.ex.A", CONFIG)
    with pytest.raises(InvalidArgumentsError) as err:
        client.update_configuration(key_path=["x"], value_to_merge={"a": 1})
    assert err.value.message == "Timestamp is required"
    with pytest.raises(InvalidArgumentsError) as err:
        client.update_configuration(key_path=["x"], timestamp=now())
    assert err.value.message == "ValueToMerge is required"


class Events:
    def __init__(self):
        self.items, self.lock = [], threading.Lock()

    def __call__(self, event):
        with self.lock:
            e = event.configuration_update_event
            self.items.append((e.component_name, tuple(e.key_path)))

    def get(self):
        with self.lock:
            return list(self.items)


def test_subscribe_gets_one_event_per_changed_leaf(core):
    watcher = core.client("com.ex.Watcher", {})
    owner = core.client("com.ex.A", CONFIG)
    events = Events()
    watcher.subscribe_to_configuration_update(component_name="com.ex.A", key_path=["limits"], on_stream_event=events)
    owner.update_configuration(key_path=["limits"], timestamp=now(), value_to_merge={"max": 6, "min": 1})
    owner.update_configuration(key_path=[], timestamp=now(), value_to_merge={"port": 9})  # not watched
    owner.update_configuration(key_path=["limits"], timestamp=now(), value_to_merge={"min": 0})
    wait_for(lambda: len(events.get()) >= 3)
    # "min": 1 -> 1.0 changes the stored type (Gson double), so it is an event too
    assert events.get() == [("com.ex.A", ("limits", "max")), ("com.ex.A", ("limits", "min")),
                            ("com.ex.A", ("limits", "min"))]


def test_closed_configuration_stream_gets_no_more_events(core):
    owner = core.client("com.ex.A", CONFIG)
    events, control = Events(), Events()
    _, operation = owner.subscribe_to_configuration_update(key_path=["port"], on_stream_event=events)
    owner.subscribe_to_configuration_update(key_path=["name"], on_stream_event=control)
    operation.close().result(5)
    owner.update_configuration(key_path=[], timestamp=now(), value_to_merge={"port": 1, "name": "n"})
    wait_for(control.get)
    assert events.get() == []


def test_subscribe_to_a_missing_key(core):
    owner = core.client("com.ex.A", CONFIG)
    with pytest.raises(ResourceNotFoundError):
        owner.subscribe_to_configuration_update(key_path=["nope"], on_stream_event=Events())


def nested(levels, leaf=1):
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def test_configuration_nested_too_deeply_is_refused_key_path_included(core):
    client = core.client("com.ex.A", CONFIG)
    with pytest.raises(InvalidArgumentsError) as err:
        client.update_configuration(key_path=["k"] * 10, timestamp=now(), value_to_merge=nested(60))
    assert err.value.message == "Configuration cannot nest deeper than 64 levels, key path included (localgg's limit)"
    client.update_configuration(key_path=["k"] * 10, timestamp=now(), value_to_merge=nested(50))
    assert client.get_configuration(key_path=["k"] * 10 + ["a"] * 50).value == {"a": 1.0}
    assert core.call(core.kernel.save)  # and it can be saved


def test_one_value_that_cannot_be_saved_does_not_poison_the_others(core):
    client = core.client("com.ex.A", CONFIG)
    # no entry point stores such a value any more (they bound depth and take JSON only): put it in directly
    core.call(lambda: core.kernel.config.replace("com.ex.Deep", nested(40, b"not JSON"), 1))
    client.update_configuration(key_path=["limits"], timestamp=now(), value_to_merge={"max": 7})
    state = core.kernel.root / "config" / "state.json"
    state.unlink(missing_ok=True)
    assert core.call(core.kernel.save) is False
    assert state.exists()  # the other file is still written
    log = (core.kernel.root / "logs" / "greengrass.log").read_text()
    assert "could not save configuration.json: what changed since it was last saved is lost on restart" in log
    assert "TypeError: Object of type bytes is not JSON serializable" in log  # with its traceback
    core.call(lambda: core.kernel.config.remove_component("com.ex.Deep"))
    assert core.call(core.kernel.save) is True
