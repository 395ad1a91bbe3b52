"""The RPC connection/stream state machine, without sockets."""

import json

import pytest

from localgg.eventstream import Header, LocalProtocolError
from localgg.rpc import (ConnectRequested, ConnState, Flag, MessageType, OperationRequested,
                         ProtocolViolation, Send, ServerConnection, StreamClosedByClient, rpc_message)


def connect_msg(token="T", version="0.1.0"):
    headers = (Header.string(":version", version),) if version else ()
    return rpc_message(MessageType.CONNECT, 0, headers=headers,
                       payload=json.dumps({"authToken": token}).encode())


def request(stream_id, op="aws.greengrass#PublishToTopic", flags=0):
    return rpc_message(MessageType.APPLICATION_MESSAGE, stream_id, flags,
                       headers=(Header.string("operation", op),), payload=b"{}")


def connected():
    conn = ServerConnection()
    assert conn.receive(connect_msg()) == [ConnectRequested("T")]
    ack = conn.accept()
    assert ack.header(":message-type") == MessageType.CONNECT_ACK
    assert ack.header(":message-flags") == Flag.CONNECTION_ACCEPTED
    return conn


def test_first_message_must_be_connect():
    conn = ServerConnection()
    [event] = conn.receive(request(1))
    assert isinstance(event, ProtocolViolation) and "CONNECT" in event.reason
    assert event.reply[0].header(":message-type") == MessageType.PROTOCOL_ERROR
    assert conn.state == ConnState.CLOSED
    assert conn.receive(connect_msg()) == []


@pytest.mark.parametrize("version", ["0.2.0", None])
def test_connect_with_wrong_or_missing_version_is_to_be_refused(version):
    # the nucleus answers CONNECT_ACK without the accepted flag, not a PROTOCOL_ERROR
    conn = ServerConnection()
    [event] = conn.receive(connect_msg(version=version))
    assert isinstance(event, ConnectRequested) and ":version" in event.problem
    assert conn.reject().header(":message-flags") == 0


def test_connect_without_a_token_is_reported_for_the_server_to_refuse():
    conn = ServerConnection()
    msg = rpc_message(MessageType.CONNECT, 0, headers=(Header.string(":version", "0.1.0"),), payload=b"{}")
    assert conn.receive(msg) == [ConnectRequested(None)]
    nack = conn.reject()
    assert nack.header(":message-flags") == 0
    assert conn.state == ConnState.CLOSED


def test_messages_before_the_verdict_are_violations():
    conn = ServerConnection()
    conn.receive(connect_msg())
    [event] = conn.receive(request(1))
    assert isinstance(event, ProtocolViolation)


def test_unary_operation_lifecycle():
    conn = connected()
    assert conn.receive(request(1)) == [OperationRequested(1, "aws.greengrass#PublishToTopic", b"{}")]
    reply = conn.respond(1, "aws.greengrass#PublishToTopicResponse", {}, terminate=True)
    assert reply.header(":message-flags") == Flag.TERMINATE_STREAM
    assert reply.header("service-model-type") == "aws.greengrass#PublishToTopicResponse"
    assert reply.header(":content-type") == "application/json"
    assert not conn.is_open(1)
    with pytest.raises(LocalProtocolError):
        conn.respond(1, "x", {}, terminate=True)


def test_streaming_operation_events_only_after_response_and_client_close():
    conn = connected()
    conn.receive(request(1, "aws.greengrass#SubscribeToTopic"))
    with pytest.raises(LocalProtocolError):
        conn.event(1, "aws.greengrass#SubscriptionResponseMessage", {})
    conn.respond(1, "aws.greengrass#SubscribeToTopicResponse", {}, terminate=False)
    event = conn.event(1, "aws.greengrass#SubscriptionResponseMessage", {"a": 1})
    assert event.header(":message-flags") == 0 and json.loads(event.payload) == {"a": 1}
    close = rpc_message(MessageType.APPLICATION_MESSAGE, 1, Flag.TERMINATE_STREAM)
    assert conn.receive(close) == [StreamClosedByClient(1)]
    assert not conn.is_open(1)
    assert conn.receive(close) == []  # a second close is harmless


def test_error_terminates_the_stream():
    conn = connected()
    conn.receive(request(1))
    err = conn.error(1, "aws.greengrass#UnauthorizedError", {"message": "no"})
    assert err.header(":message-type") == MessageType.APPLICATION_ERROR
    assert err.header(":message-flags") == Flag.TERMINATE_STREAM
    assert not conn.is_open(1)


def test_server_ends_a_stream_with_an_empty_terminate():
    conn = connected()
    conn.receive(request(1, "aws.greengrass#SubscribeToTopic"))
    conn.respond(1, "r", {}, terminate=False)
    end = conn.end_stream(1)
    assert end.payload == b"" and end.header(":message-flags") == Flag.TERMINATE_STREAM


def test_a_late_close_of_a_finished_stream_is_ignored():
    conn = connected()
    conn.receive(request(1))
    conn.respond(1, "r", {}, terminate=True)
    assert conn.receive(request(1, flags=Flag.TERMINATE_STREAM)) == []
    assert conn.receive(request(2)) == [OperationRequested(2, "aws.greengrass#PublishToTopic", b"{}")]


def test_a_message_on_a_finished_stream_is_a_violation():
    conn = connected()
    conn.receive(request(1))
    conn.respond(1, "r", {}, terminate=True)
    [event] = conn.receive(request(1))
    assert isinstance(event, ProtocolViolation) and "lower than the last seen" in event.reason


def test_new_stream_ids_must_be_one_above_the_last():
    conn = connected()
    [event] = conn.receive(request(2))
    assert isinstance(event, ProtocolViolation) and "incremented by more than 1" in event.reason


def test_a_stream_opened_with_terminate_is_not_run():
    conn = connected()
    assert conn.receive(request(1, flags=Flag.TERMINATE_STREAM)) == []
    assert not conn.is_open(1)


def test_request_without_operation_header_is_a_violation():
    conn = connected()
    msg = rpc_message(MessageType.APPLICATION_MESSAGE, 1, payload=b"{}")
    [event] = conn.receive(msg)
    assert isinstance(event, ProtocolViolation)


def test_application_message_on_stream_zero_is_a_violation():
    conn = connected()
    [event] = conn.receive(request(0))
    assert isinstance(event, ProtocolViolation)


def test_ping_is_answered_with_its_payload():
    conn = connected()
    [event] = conn.receive(rpc_message(MessageType.PING, 0, payload=b"hi"))
    assert isinstance(event, Send)
    [reply] = event.messages
    assert reply.header(":message-type") == MessageType.PING_RESPONSE and reply.payload == b"hi"


@pytest.mark.parametrize("mtype", [MessageType.CONNECT, MessageType.CONNECT_ACK,
                                   MessageType.APPLICATION_ERROR, MessageType.INTERNAL_ERROR])
def test_messages_a_client_may_not_send_when_connected(mtype):
    conn = connected()
    [event] = conn.receive(rpc_message(mtype, 0, headers=(Header.string(":version", "0.1.0"),)))
    assert isinstance(event, ProtocolViolation)


def test_missing_rpc_headers_is_a_violation():
    from localgg.eventstream import Message
    [event] = ServerConnection().receive(Message(payload=b"x"))
    assert isinstance(event, ProtocolViolation)


def test_unknown_message_type_is_a_violation():
    from localgg.eventstream import Message
    msg = Message(headers=(Header.int32(":message-type", 42), Header.int32(":message-flags", 0),
                           Header.int32(":stream-id", 0)))
    [event] = connected().receive(msg)
    assert isinstance(event, ProtocolViolation) and "invalid value for message-type" in event.reason
