"""The IPC server at the wire: handshake, malformed frames, unknown operations.

Raw-socket tests speak event-stream by hand (with our codec); a real client on another
connection shows the server keeps serving everyone else."""

import datetime
import json
import socket
import struct

import pytest
from awsiot.eventstreamrpc import AccessDeniedError, StreamClosedError
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage, ServiceError

from conftest import policy, wait_for
from localgg.eventstream import Decoder, Header, encode
from localgg.rpc import Flag, MessageType, rpc_message

PUBSUB_ALL = policy("aws.greengrass.ipc.pubsub", ["*"], ["*"])


def raw_connect(core):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(core.kernel.socket_path)
    return sock


def read_first(sock):
    decoder = Decoder()
    while (message := decoder.next_message()) is None:
        decoder.feed(sock.recv(65536))
    return message


def read_messages(sock):
    """Everything the server sends until it closes the connection."""
    decoder, out = Decoder(), []
    while True:
        data = sock.recv(65536)
        if not data:
            return out
        decoder.feed(data)
        out.extend(decoder.messages())


def connect_message(token, version="0.1.0"):
    return rpc_message(MessageType.CONNECT, 0, headers=(Header.string(":version", version),),
                       payload=json.dumps({"authToken": token}).encode())


def healthy(core):
    """A real client still publishes and receives on another connection: whether it got its message back."""
    client = core.client("com.ex.Healthy", PUBSUB_ALL)
    got = []
    client.subscribe_to_topic(topic="health", on_stream_event=got.append)
    client.publish_to_topic(topic="health", publish_message=PublishMessage(json_message=JsonMessage(message={"ok": 1})))
    try:
        wait_for(lambda: got, 10, message="the health message")
    except AssertionError:
        return False
    return [e.json_message.message for e in got] == [{"ok": 1.0}]


def raw_session(core, component="com.ex.Raw"):
    """A raw connection, accepted, with a subscription to "t" on stream 1."""
    env = core.call(lambda: core.kernel.add_external_component(component, PUBSUB_ALL))
    sock = raw_connect(core)
    sock.sendall(encode(connect_message(env["SVCUID"])))
    decoder = Decoder()
    assert read_from(sock, decoder).header(":message-flags") == Flag.CONNECTION_ACCEPTED
    sock.sendall(encode(operation(1, "SubscribeToTopic", {"topic": "t"})))
    assert read_from(sock, decoder).header("service-model-type") == "aws.greengrass#SubscribeToTopicResponse"
    return sock, decoder


def read_from(sock, decoder):
    while (message := decoder.next_message()) is None:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        decoder.feed(data)
    return message


def operation(stream_id, name, body, raw=None):
    return rpc_message(MessageType.APPLICATION_MESSAGE, stream_id,
                       headers=(Header.string("operation", "aws.greengrass#" + name),),
                       payload=raw if raw is not None else json.dumps(body).encode())


def publish_to_t(core, payload):
    client = core.client("com.ex.Pub", PUBSUB_ALL)
    client.publish_to_topic(topic="t", publish_message=PublishMessage(json_message=JsonMessage(message=payload)))


def test_unknown_token_is_refused_with_access_denied(core):
    import awsiot.greengrasscoreipc
    with pytest.raises(AccessDeniedError):
        awsiot.greengrasscoreipc.connect(ipc_socket=core.kernel.socket_path, authtoken="NOTAVALIDTOKEN00")


@pytest.mark.parametrize("version", ["0.2.0", "1"])
def test_wrong_version_gets_connect_ack_without_accepted_flag(core, version):
    token = core.call(lambda: core.kernel.token_for("com.ex.A"))
    sock = raw_connect(core)
    sock.sendall(encode(connect_message(token, version)))
    ack = read_first(sock)
    assert ack.header(":message-type") == MessageType.CONNECT_ACK
    assert ack.header(":message-flags") == 0


def test_valid_connect_is_accepted(core):
    token = core.call(lambda: core.kernel.token_for("com.ex.A"))
    sock = raw_connect(core)
    sock.sendall(encode(connect_message(token)))
    decoder = Decoder()
    decoder.feed(sock.recv(65536))
    ack = decoder.next_message()
    assert (ack.header(":message-type"), ack.header(":message-flags")) == (MessageType.CONNECT_ACK,
                                                                          Flag.CONNECTION_ACCEPTED)
    sock.sendall(encode(rpc_message(MessageType.PING, 0, headers=(Header.string("x", "y"),), payload=b"p")))
    decoder.feed(sock.recv(65536))
    pong = decoder.next_message()
    assert pong.header(":message-type") == MessageType.PING_RESPONSE and pong.payload == b"p"
    assert pong.header("x") == "y"


def test_first_message_not_connect_is_a_protocol_error(core):
    sock = raw_connect(core)
    sock.sendall(encode(rpc_message(MessageType.APPLICATION_MESSAGE, 1,
                                    headers=(Header.string("operation", "aws.greengrass#PublishToTopic"),))))
    [error] = read_messages(sock)
    assert error.header(":message-type") == MessageType.PROTOCOL_ERROR
    assert json.loads(error.payload)["message"].startswith("A CONNECT message must be received")
    assert healthy(core)


def test_corrupted_crc_closes_only_that_connection(core):
    survivor = core.client("com.ex.Survivor", PUBSUB_ALL)
    frame = bytearray(encode(connect_message("X")))
    frame[-1] ^= 0xFF
    sock = raw_connect(core)
    sock.sendall(bytes(frame))
    [error] = read_messages(sock)  # the server answers, then closes
    assert error.header(":message-type") == MessageType.PROTOCOL_ERROR
    assert "CRC" in json.loads(error.payload)["message"]
    survivor.publish_to_topic(topic="x", publish_message=PublishMessage(json_message=JsonMessage(message={})))
    assert healthy(core)


def test_oversized_frame_is_refused_from_its_prelude(core):
    prelude = struct.pack(">II", 64 * 1024 * 1024, 0)
    import zlib
    sock = raw_connect(core)
    sock.sendall(prelude + struct.pack(">I", zlib.crc32(prelude)))
    [error] = read_messages(sock)
    assert "exceeds" in json.loads(error.payload)["message"]
    assert healthy(core)


def test_truncated_frame_then_hang_up_leaves_the_server_healthy(core):
    sock = raw_connect(core)
    sock.sendall(encode(connect_message("X"))[:10])
    sock.close()
    assert healthy(core)


def test_stream_ids_must_grow_by_one(core):
    token = core.call(lambda: core.kernel.token_for("com.ex.A"))
    sock = raw_connect(core)
    sock.sendall(encode(connect_message(token)))
    sock.recv(65536)
    sock.sendall(encode(rpc_message(MessageType.APPLICATION_MESSAGE, 5,
                                    headers=(Header.string("operation", "aws.greengrass#PublishToTopic"),),
                                    payload=b"{}")))
    [error] = read_messages(sock)
    assert "incremented by more than 1" in json.loads(error.payload)["message"]


def test_operation_in_the_model_but_not_implemented_is_a_service_error(core):
    client = core.client("com.ex.A", {})
    with pytest.raises(ServiceError) as err:
        client.get_secret_value(secret_id="s")
    assert err.value.message == "Operation aws.greengrass#GetSecretValue is not supported by Greengrass"


def test_operation_the_nucleus_does_not_know_closes_the_stream(core):
    # awsiotsdk 1.31 has SubscribeToIoTCoreConnectionStatus; the nucleus answers "Unsupported Operation"
    client = core.client("com.ex.A", {})
    with pytest.raises(StreamClosedError):
        client.subscribe_to_iot_core_connection_status(on_stream_event=lambda e: None)
    assert client.get_configuration().component_name == "com.ex.A"  # the connection still works


def test_events_for_a_connection_that_broke_are_dropped_not_raised():
    """A subscriber whose connection just hit a protocol error must not fail other components' publishes."""
    from localgg.server import Stream, _Connection

    class Transport:
        def is_closing(self):
            return False

        def write(self, data):
            pass

    conn = _Connection(server=None)
    conn.transport = Transport()
    conn.rpc.receive(connect_message("T"))
    conn.rpc.accept()
    conn.rpc.receive(rpc_message(MessageType.APPLICATION_MESSAGE, 1,
                                 headers=(Header.string("operation", "aws.greengrass#SubscribeToTopic"),),
                                 payload=b"{}"))
    stream = Stream(conn, 1, "SubscriptionResponseMessage")
    conn.rpc.respond(1, "aws.greengrass#SubscribeToTopicResponse", {}, terminate=False)
    stream.responded()
    conn.rpc.close()  # a protocol violation closed it; connection_lost has not run yet
    stream.send({"jsonMessage": {"message": {}}})  # must not raise


@pytest.mark.parametrize("levels", [100, 1000, 100_000])
def test_a_deeply_nested_request_is_refused_and_the_connection_keeps_its_subscriptions(core, levels):
    sock, decoder = raw_session(core)
    nested = '{"topic": "t", "publishMessage": {"jsonMessage": {"message": ' + '{"a": ' * levels + "1" \
        + "}" * levels + "}}}"
    sock.sendall(encode(operation(2, "PublishToTopic", None, nested.encode())))
    error = read_from(sock, decoder)
    assert (error.header(":message-type"), error.header(":stream-id")) == (MessageType.APPLICATION_ERROR, 2)
    assert error.payload == b"InternalServerError"  # what the nucleus answers a request it cannot deserialize
    publish_to_t(core, {"after": 1})
    event = read_from(sock, decoder)
    assert event.header(":stream-id") == 1 and json.loads(event.payload)["jsonMessage"]["message"] == {"after": 1.0}
    sock.sendall(encode(operation(3, "PublishToTopic", {"topic": "t", "publishMessage": {"jsonMessage": {
        "message": {"shallow": True}}}})))
    assert {read_from(sock, decoder).header(":stream-id") for _ in range(2)} == {1, 3}  # its own echo, and the answer
    assert healthy(core)


def recursion_headroom() -> int:
    """How many more Python calls this thread can make before RecursionError."""
    def down(n):
        try:
            return down(n + 1)
        except RecursionError:
            return n
    return down(0)


def test_a_deeply_nested_request_never_runs_the_core_to_the_recursion_limit(core):
    """The cause of a flaky failure: the core parsed a 100,000-level request with json.loads,
    which recursed to the interpreter's limit; a garbage collection that started down there
    ran finalizers (of any object of any earlier test) with no stack left, and they failed
    with RecursionError ("multiple unraisable exception warnings"). A collection every few
    allocations, and how much stack each one had, show whether the parse went deep."""
    import gc
    sock, decoder = raw_session(core)
    nested = '{"topic": "t", "publishMessage": {"jsonMessage": {"message": ' + '{"a": ' * 100_000 + "1" \
        + "}" * 100_000 + "}}}"
    headroom = []

    def measure(phase, info):
        if phase == "start" and len(headroom) < 500:
            try:
                headroom.append(recursion_headroom())
            except RecursionError:
                headroom.append(0)

    threshold = gc.get_threshold()
    gc.callbacks.append(measure)
    gc.set_threshold(5)
    try:
        sock.sendall(encode(operation(2, "PublishToTopic", None, nested.encode())))
        error = read_from(sock, decoder)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(measure)
    assert error.payload == b"InternalServerError"
    assert headroom, "no garbage collection ran: the measurement did not happen"
    assert min(headroom) > 200, f"a collection ran with {min(headroom)} calls of stack left"
    assert healthy(core)


def test_a_response_over_the_frame_limit_is_an_error_not_a_dead_connection(core):
    client = core.client("com.ex.Big", {})
    ten_mb = "x" * (10 * 1024 * 1024)
    for key in ("a", "b"):
        client.update_configuration(key_path=[key], timestamp=datetime.datetime.now(datetime.timezone.utc),
                                    value_to_merge={"v": ten_mb})
    with pytest.raises(ServiceError) as err:
        client.get_configuration()
    assert "GetConfiguration failed: the message would be" in err.value.message
    assert "over the event-stream limit of 16777216" in err.value.message
    assert client.get_configuration(key_path=["a", "v"]).value == {"v": ten_mb}  # the same connection
    assert healthy(core)


def test_a_subscriber_that_never_reads_is_bounded(core, monkeypatch):
    from localgg import limits
    monkeypatch.setattr(limits, "MAX_OUTGOING_BYTES", 1024 * 1024)
    sock, _ = raw_session(core, "com.ex.Stuck")  # subscribed to "t", and never reads again
    chunk = "y" * 8192
    publisher = core.client("com.ex.Pub", PUBSUB_ALL)
    for i in range(2000):  # 16 MB of events, far more than the socket and the bound hold
        publisher.publish_to_topic(topic="t", publish_message=PublishMessage(json_message=JsonMessage(
            message={"i": i, "pad": chunk})))
    [stuck] = [c for c in core.call(core.kernel.status)["ipc"] if c["component"] == "com.ex.Stuck"]
    assert stuck["unsent"] <= limits.MAX_OUTGOING_BYTES + 2 * 8300  # one event may go over
    assert stuck["droppedEvents"] > 0
    log = (core.kernel.root / "logs" / "greengrass.log").read_text()
    assert "com.ex.Stuck does not read its IPC connection" in log
    assert healthy(core)
    sock.close()
