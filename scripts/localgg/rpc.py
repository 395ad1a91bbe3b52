"""The server side of event-stream RPC, as a state machine with no I/O inside.

Usage::

    conn = ServerConnection()
    for event in conn.receive(message):          # a decoded eventstream.Message
        ...                                        # ConnectRequested, OperationRequested, ...
    outgoing = conn.accept(); conn.respond(...)    # each returns Messages to write

Everything that affects a connection's or a stream's state lives in this file.
`receive` never raises for what the peer sent: a violation becomes a
ProtocolViolation event carrying the PROTOCOL_ERROR to send, after which the
connection is CLOSED and refuses everything. Misuse by the server (an event before
the response, a message on a closed stream) raises LocalProtocolError.

The rules and the violation texts are those of aws-c-event-stream's RPC server
(`source/event_stream_rpc_server.c`), which the Java nucleus runs on: a CONNECT
first and only once; new stream ids exactly one above the last; an `operation`
header on a stream's first message; a late TERMINATE_STREAM on a finished stream
is ignored ("simultaneous close"). A bad `:version` or token is not a violation:
the nucleus answers CONNECT_ACK without the accepted flag and closes.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from . import limits
from .eventstream import MAX_MESSAGE_SIZE, Header, LocalProtocolError, Message, frame_size

PROTOCOL_VERSION = "0.1.0"
CONTENT_TYPE_JSON = "application/json"


class MessageType(enum.IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class Flag(enum.IntFlag):
    NONE = 0
    CONNECTION_ACCEPTED = 1
    TERMINATE_STREAM = 2


class ConnState(enum.Enum):
    AWAIT_CONNECT = "await-connect"
    CONNECTING = "connecting"  # CONNECT received, verdict not yet given
    CONNECTED = "connected"
    CLOSED = "closed"


class StreamState(enum.Enum):
    AWAIT_RESPONSE = "await-response"
    STREAMING = "streaming"  # response sent, events may follow


# --- events returned by ServerConnection.receive -----------------------------------

@dataclass(frozen=True)
class ConnectRequested:
    auth_token: str | None  # None when the payload is not {"authToken": "..."}
    problem: str | None = None  # why the CONNECT must be refused whatever the token


@dataclass(frozen=True)
class OperationRequested:
    stream_id: int
    operation: str          # e.g. "aws.greengrass#PublishToTopic"
    payload: bytes


@dataclass(frozen=True)
class StreamClosedByClient:
    stream_id: int


@dataclass(frozen=True)
class ProtocolViolation:
    reason: str
    reply: tuple[Message, ...]  # what to write before closing the socket


@dataclass(frozen=True)
class Send:
    """Messages to write that the peer's message called for (a PING answer)."""
    messages: tuple[Message, ...]


# --- message construction ---------------------------------------------------------

def rpc_message(mtype: MessageType, stream_id: int, flags: int = 0,
                headers: tuple[Header, ...] = (), payload: bytes = b"") -> Message:
    return Message(
        headers=(Header.int32(":message-type", int(mtype)),
                 Header.int32(":message-flags", int(flags)),
                 Header.int32(":stream-id", stream_id)) + headers,
        payload=payload,
    )


def _json_headers(model_type: str) -> tuple[Header, ...]:
    return (Header.string(":content-type", CONTENT_TYPE_JSON),
            Header.string("service-model-type", model_type))


# The texts of aws-c-event-stream (include/aws/event-stream/private/event_stream_rpc_priv.h)
CONNECT_FIRST = ("A CONNECT message must be received, and the CONNECT_ACK must be sent in response, "
                 "before any other message-types can be sent on this connection. In addition, only one "
                 "CONNECT message is allowed on a connection.")
MISSING_FIELDS = ("A message was received with missing required fields. Check that your client is sending "
                  "at least, :message-type, :message-flags, and :stream-id")
NONZERO_STREAM_TYPE = ("non-zero stream-id field is only allowed for messages of type APPLICATION_MESSAGE. "
                       "The stream id max value is INT32_MAX.")
STREAM_ID_SKIPPED = ("stream-id values must be monotonically incrementing. A new stream-id arrived that was "
                     "incremented by more than 1.")
STREAM_ID_LOWER = ("stream-id values must be monotonically incrementing. A stream-id arrived that was lower "
                   "than the last seen stream-id.")
NO_OPERATION = "The first message for on a non-zero :stream-id must contain an operation header value."
INVALID_TYPE = "an invalid value for message-type field was received."


def protocol_error(reason: str, mtype: MessageType = MessageType.PROTOCOL_ERROR) -> Message:
    payload = json.dumps({"message": reason}).encode()
    return rpc_message(mtype, 0,
                       headers=(Header.string(":content-type", CONTENT_TYPE_JSON),),
                       payload=payload)


class FrameTooLarge(LocalProtocolError):
    """A response or event that no frame can carry (over 16 MiB); nothing has changed."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the message would be {size} bytes, over the event-stream limit of {MAX_MESSAGE_SIZE}")
        self.size = size


def _fits(message: Message) -> Message:
    size = frame_size(message)
    if size > MAX_MESSAGE_SIZE:
        raise FrameTooLarge(size)
    return message


class ServerConnection:
    """One client connection's RPC state. Not thread-safe; drive it from one task."""

    def __init__(self) -> None:
        self.state = ConnState.AWAIT_CONNECT
        self.streams: dict[int, StreamState] = {}
        self._last_stream_id = 0

    # -- input ----------------------------------------------------------------------

    def receive(self, message: Message) -> list[object]:
        if self.state == ConnState.CLOSED:
            return []
        mtype = message.header(":message-type")
        flags = message.header(":message-flags")
        stream_id = message.header(":stream-id")
        if not all(isinstance(v, int) for v in (mtype, flags, stream_id)):
            return [self._violation(MISSING_FIELDS)]
        if self.state != ConnState.CONNECTED:
            if mtype != MessageType.CONNECT or self.state == ConnState.CONNECTING:
                return [self._violation(CONNECT_FIRST)]
            return [self._on_connect(message)]
        if stream_id != 0:
            if mtype not in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR):
                return [self._violation(NONZERO_STREAM_TYPE)]
            return self._on_stream_message(message, stream_id, flags)
        if mtype == MessageType.PING:
            return [Send((rpc_message(MessageType.PING_RESPONSE, 0, headers=_user_headers(message),
                                      payload=message.payload),))]
        if mtype == MessageType.PING_RESPONSE:
            return []
        if mtype == MessageType.CONNECT:
            return [self._violation(CONNECT_FIRST)]
        if mtype in (MessageType.CONNECT_ACK, MessageType.PROTOCOL_ERROR, MessageType.INTERNAL_ERROR):
            reason = f"message type value: {int(mtype)} is not recognized as a valid request path."
            return [self._violation(reason, MessageType.INTERNAL_ERROR)]
        return [self._violation(INVALID_TYPE)]

    def _on_connect(self, message: Message) -> object:
        self.state = ConnState.CONNECTING
        version = message.header(":version")
        problem = None
        if version != PROTOCOL_VERSION:
            problem = f"unsupported :version {version!r}, expected {PROTOCOL_VERSION!r}"
        token = None
        try:
            body = limits.loads(message.payload or b"null")
            if isinstance(body, dict) and isinstance(body.get("authToken"), str):
                token = body["authToken"]
        except ValueError:
            problem = problem or "Invalid auth token in connect message"
        return ConnectRequested(token, problem)

    def _on_stream_message(self, message: Message, stream_id: int, flags: int) -> list[object]:
        terminate = bool(flags & Flag.TERMINATE_STREAM)
        if stream_id in self.streams:
            if terminate:
                del self.streams[stream_id]
                return [StreamClosedByClient(stream_id)]
            return []  # no Greengrass operation has a client-side event stream
        if stream_id <= self._last_stream_id:
            # a stream we already ended: a late close is fine, anything else is not
            return [] if terminate else [self._violation(STREAM_ID_LOWER)]
        if stream_id != self._last_stream_id + 1:
            return [self._violation(STREAM_ID_SKIPPED)]
        self._last_stream_id = stream_id
        operation = message.header("operation")
        if not isinstance(operation, str) or not operation:
            return [self._violation(NO_OPERATION)]
        if terminate:
            return []  # opened and closed at once: the operation is not run
        self.streams[stream_id] = StreamState.AWAIT_RESPONSE
        return [OperationRequested(stream_id, operation, message.payload)]

    def _violation(self, reason: str, mtype: MessageType = None) -> ProtocolViolation:
        self.state = ConnState.CLOSED
        self.streams.clear()
        return ProtocolViolation(reason, (protocol_error(reason, mtype or MessageType.PROTOCOL_ERROR),))

    # -- output ---------------------------------------------------------------------

    def accept(self) -> Message:
        self._require(ConnState.CONNECTING)
        self.state = ConnState.CONNECTED
        return rpc_message(MessageType.CONNECT_ACK, 0, Flag.CONNECTION_ACCEPTED)

    def reject(self) -> Message:
        """CONNECT_ACK without the accepted flag; the caller then closes the socket."""
        self._require(ConnState.CONNECTING)
        self.state = ConnState.CLOSED
        return rpc_message(MessageType.CONNECT_ACK, 0, Flag.NONE)

    def respond(self, stream_id: int, model_type: str, body: dict, *, terminate: bool) -> Message:
        """The operation's response: the first APPLICATION_MESSAGE on its stream. Raises
        FrameTooLarge, with the stream still awaiting its response, when it cannot be sent."""
        self._require_stream(stream_id, StreamState.AWAIT_RESPONSE)
        flags = Flag.TERMINATE_STREAM if terminate else Flag.NONE
        message = _fits(rpc_message(MessageType.APPLICATION_MESSAGE, stream_id, flags,
                                    _json_headers(model_type), _dumps(body)))
        if terminate:
            del self.streams[stream_id]
        else:
            self.streams[stream_id] = StreamState.STREAMING
        return message

    def event(self, stream_id: int, model_type: str, body: dict) -> Message:
        """A stream event; only after the response. Raises FrameTooLarge."""
        self._require_stream(stream_id, StreamState.STREAMING)
        return _fits(rpc_message(MessageType.APPLICATION_MESSAGE, stream_id, Flag.NONE,
                                 _json_headers(model_type), _dumps(body)))

    def error(self, stream_id: int, model_type: str, body: dict) -> Message:
        """An APPLICATION_ERROR; it ends the stream."""
        if stream_id not in self.streams:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        message = _fits(rpc_message(MessageType.APPLICATION_ERROR, stream_id, Flag.TERMINATE_STREAM,
                                    _json_headers(model_type), _dumps(body)))
        del self.streams[stream_id]
        return message

    def error_unmodelled(self, stream_id: int, content_type: str, payload: bytes) -> Message:
        """An APPLICATION_ERROR with no service-model-type, as the nucleus sends for an unknown
        operation or an unparsable request; it ends the stream."""
        if stream_id not in self.streams:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        del self.streams[stream_id]
        return rpc_message(MessageType.APPLICATION_ERROR, stream_id, Flag.TERMINATE_STREAM,
                           (Header.string(":content-type", content_type),), payload)

    def end_stream(self, stream_id: int) -> Message:
        """The server ends a stream: an empty APPLICATION_MESSAGE with TERMINATE_STREAM."""
        self._require_stream(stream_id, StreamState.STREAMING)
        del self.streams[stream_id]
        return rpc_message(MessageType.APPLICATION_MESSAGE, stream_id, Flag.TERMINATE_STREAM)

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self.streams

    def close(self) -> None:
        self.state = ConnState.CLOSED
        self.streams.clear()

    def _require(self, state: ConnState) -> None:
        if self.state != state:
            raise LocalProtocolError(f"connection is {self.state.value}, not {state.value}")

    def _require_stream(self, stream_id: int, state: StreamState) -> None:
        self._require(ConnState.CONNECTED)
        actual = self.streams.get(stream_id)
        if actual != state:
            raise LocalProtocolError(f"stream {stream_id} is {actual and actual.value}, not {state.value}")


def _user_headers(message: Message) -> tuple[Header, ...]:
    return tuple(h for h in message.headers if not h.name.startswith(":"))


def _dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
