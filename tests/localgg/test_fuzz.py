"""Fuzzing the core where input comes in: the IPC socket, the recipe loader, the configuration store.

Whatever arrives, the core stays up and a real client still works afterwards. Bounded in
time: a fixed number of examples, each with its own deadline."""

import json
import socket
import zlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CoreThread, policy, short_tmp
from localgg.configstore import ConfigStore
from localgg.eventstream import Decoder, Header, encode
from localgg.recipe import RecipeError, load_recipe, parse_recipe
from localgg.rpc import MessageType, rpc_message
from localgg.server import KNOWN_OPERATIONS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
ACCESS = {**policy("aws.greengrass.ipc.pubsub", ["*"], ["*"], "a")["accessControl"],
          **policy("aws.greengrass.ipc.mqttproxy", ["*"], ["*"], "b")["accessControl"]}


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12) \
    | st.integers(0, 300).map(nested)
deep_json = st.integers(0, 5000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode())


@pytest.fixture(scope="module")
def core():
    thread = CoreThread(short_tmp("lggz-") / "gg")
    yield thread
    thread.close()


def still_works(core) -> bool:
    from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage
    client = core.client("com.ex.Check", {"accessControl": ACCESS})
    got = []
    client.subscribe_to_topic(topic="check", on_stream_event=got.append)
    client.publish_to_topic(topic="check", publish_message=PublishMessage(json_message=JsonMessage(message={"x": 1})))
    from conftest import wait_for
    wait_for(lambda: got, 10, message="a message through a fresh connection")
    client.close()
    return got[0].json_message.message == {"x": 1.0}


def session(core):
    env = core.call(lambda: core.kernel.add_external_component("com.ex.Fuzz", {"accessControl": ACCESS}))
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(core.kernel.socket_path)
    sock.sendall(encode(rpc_message(MessageType.CONNECT, 0, headers=(Header.string(":version", "0.1.0"),),
                                    payload=json.dumps({"authToken": env["SVCUID"]}).encode())))
    return sock


def settle(sock) -> None:
    """Send a PING and read until its answer, or until the server closes the connection."""
    decoder = Decoder()
    try:
        sock.sendall(encode(rpc_message(MessageType.PING, 0, payload=b"settle")))
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return
            decoder.feed(data)
            for message in decoder.messages():
                if message.header(":message-type") == MessageType.PING_RESPONSE and message.payload == b"settle":
                    return
    except (ConnectionError, socket.timeout) as exc:
        assert not isinstance(exc, socket.timeout), "the server neither answered nor closed the connection"
    except Exception as exc:  # the decoder: the server's own reply was malformed
        raise AssertionError(f"unreadable reply from the server: {exc!r}") from exc


operations = st.sampled_from(sorted(KNOWN_OPERATIONS) + ["aws.greengrass#Nope", "x"])
payloads = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), deep_json,
                     st.fixed_dictionaries({"topic": st.sampled_from(["t", "", "a/#", "+"]),
                                            "publishMessage": st.fixed_dictionaries(
                                                {"jsonMessage": st.fixed_dictionaries({"message": json_values})})},
                                           optional={"keyPath": st.lists(st.text(max_size=5), max_size=70),
                                                     "valueToMerge": json_values, "timestamp": json_values,
                                                     "topicName": st.text(max_size=10), "qos": json_values,
                                                     "payload": st.text(max_size=10), "componentName": json_values,
                                                     "state": json_values, "receiveMode": json_values}
                                           ).map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=64))
frames = st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 4), st.integers(0, 3), operations, payloads),
                  min_size=1, max_size=6)


@FUZZ
@given(frames=frames)
def test_ipc_frames(core, frames):
    sock = session(core)
    try:
        next_id = 1
        for kind, stream_delta, flags, operation, payload in frames:
            stream_id = max(0, next_id + stream_delta - 1) if kind == 0 else (0 if kind < 4 else next_id)
            headers = (Header.string("operation", operation),) if kind in (0, 4) else ()
            mtype = {0: MessageType.APPLICATION_MESSAGE, 1: MessageType.PING, 2: MessageType.CONNECT,
                     3: MessageType.PROTOCOL_ERROR, 4: MessageType.APPLICATION_MESSAGE,
                     5: MessageType.APPLICATION_ERROR, 6: MessageType(7)}[kind]
            sock.sendall(encode(rpc_message(mtype, stream_id, flags, headers, payload)))
            next_id += 1 if kind in (0, 4) else 0
        settle(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed it, as it may
    finally:
        sock.close()
    assert core.call(lambda: core.kernel.status())["pid"]  # the core's loop still runs


@FUZZ
@given(data=st.binary(max_size=2048), valid_prelude=st.booleans())
def test_ipc_bytes(core, data, valid_prelude):
    sock = session(core)
    try:
        if valid_prelude:  # a frame that passes the prelude checks, with garbage inside
            total = 16 + len(data)
            prelude = total.to_bytes(4, "big") + min(len(data), 64).to_bytes(4, "big")
            data = prelude + zlib.crc32(prelude).to_bytes(4, "big") + data + b"\0\0\0\0"
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    assert core.call(lambda: core.kernel.status())["pid"]


BASE = {"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.ex.F", "ComponentVersion": "1.0.0",
        "ComponentDependencies": {"com.ex.G": {"VersionRequirement": "^1.0.0", "DependencyType": "SOFT"}},
        "ComponentConfiguration": {"DefaultConfiguration": {"a": 1}},
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": {"Script": "x", "Setenv": {"A": "1"},
                                                                          "Timeout": 5, "RequiresPrivilege": False}},
                       "Artifacts": [{"URI": "s3://b/com.ex.F/1.0.0/a.zip", "Unarchive": "ZIP"}]}]}
FIELDS = [("ComponentName",), ("ComponentVersion",), ("ComponentDependencies",), ("ComponentDependencies", "com.ex.G"),
          ("ComponentConfiguration",), ("ComponentConfiguration", "DefaultConfiguration"), ("Manifests",),
          ("Manifests", 0), ("Manifests", 0, "Platform"), ("Manifests", 0, "Lifecycle"),
          ("Manifests", 0, "Lifecycle", "Run"), ("Manifests", 0, "Lifecycle", "Run", "Setenv"),
          ("Manifests", 0, "Lifecycle", "Run", "Timeout"), ("Manifests", 0, "Lifecycle", "Run", "RequiresPrivilege"),
          ("Manifests", 0, "Artifacts"), ("Manifests", 0, "Artifacts", 0), ("Manifests", 0, "Artifacts", 0, "URI")]


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), json_values), max_size=4))
def test_recipe_fields_of_any_type(changes):
    data = json.loads(json.dumps(BASE))
    for path, value in changes:
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        parse_recipe(data, "fuzz.yaml").select({"os": "linux", "architecture": "amd64"})
    except RecipeError as exc:
        assert str(exc).startswith("fuzz.yaml")


@FUZZ
@given(text=st.text(max_size=300) | st.lists(st.sampled_from(["&a [x]", "*a", "[", "]", "{", "}", ": ", "- ", "\n",
                                                                 "&b [*a, *a, *a]", "*b", "!!python/object x"]),
                                             max_size=40).map("".join))
def test_recipe_files_of_any_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("recipes") / "r.yaml"
    path.write_text(text)
    try:
        load_recipe(path)
    except RecipeError:
        pass


@FUZZ
@given(operations=st.lists(st.tuples(st.lists(st.sampled_from(["a", "A", "b", "c"]), max_size=4), json_values,
                                     st.integers(0, 5)), max_size=8))
def test_configuration_store(operations):
    store = ConfigStore(lambda: 3)
    store.replace("c", {"a": 1}, 1)
    for path, value, ts in operations:
        if isinstance(value, dict):
            store.merge("c", path, value, ts)
        else:
            store.replace("c", {"v": value}, ts)
    again = ConfigStore(lambda: 3)
    again.restore(json.loads(json.dumps(store.snapshot())))
    assert again.value("c") == store.value("c")


def test_the_core_is_up_and_serves_a_real_client_after_the_fuzzing(core):
    # runs after the IPC fuzz tests in this module (pytest keeps the file's order)
    assert core.call(lambda: core.kernel.status())["pid"]
    assert still_works(core)
