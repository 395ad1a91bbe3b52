"""The IPC server: event-stream RPC on a Unix socket, on one asyncio loop.

Usage::

    dispatcher = Dispatcher()
    dispatcher.add(Operation("PublishToTopic", handler))   # handler(Call) -> dict, or a coroutine
    server = IpcServer(socket_path, authenticate=lambda token: component_or_None, dispatcher=dispatcher)
    await server.start()
    ...
    await server.stop()

The server only moves bytes: it decodes frames (eventstream), drives one
rpc.ServerConnection per client, and hands each OperationRequested to the
Dispatcher, which finds the handler and translates errors. A malformed frame or
protocol violation gets a PROTOCOL_ERROR and closes that one connection.

Bounds (limits.py; localgg's own, the nucleus has none of these): a request nested
deeper than MAX_DEPTH gets the nucleus's answer to a request it cannot deserialize,
and the connection stays; a response too big for a frame (16 MiB) is a ServiceError
instead; an event too big for a frame is dropped and logged. Each connection's unsent
bytes are bounded: above MAX_OUTGOING_BYTES its subscriptions' events are dropped
(counted in the log) until it reads again; above MAX_OUTGOING_HARD it is closed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from . import errors, limits, rpc
from .eventstream import Decoder, Message, RemoteProtocolError, encode

log = logging.getLogger("localgg.ipc")

# Every operation of the nucleus's GreengrassCoreIPC model (awsiotsdk 1.31.0 also has
# SubscribeToIoTCoreConnectionStatus, which the nucleus does not know).
KNOWN_OPERATIONS = frozenset("aws.greengrass#" + name for name in """
    AuthorizeClientDeviceAction CancelLocalDeployment CreateDebugPassword CreateLocalDeployment
    DeferComponentUpdate DeleteThingShadow GetClientDeviceAuthToken GetComponentDetails
    GetConfiguration GetLocalDeploymentStatus GetSecretValue GetThingShadow ListComponents
    ListLocalDeployments ListNamedShadowsForThing PauseComponent PublishToIoTCore PublishToTopic
    PutComponentMetric RestartComponent ResumeComponent SendConfigurationValidityReport StopComponent
    SubscribeToCertificateUpdates SubscribeToComponentUpdates SubscribeToConfigurationUpdate
    SubscribeToIoTCore SubscribeToTopic SubscribeToValidateConfigurationUpdates UpdateConfiguration
    UpdateState UpdateThingShadow ValidateAuthorizationToken VerifyClientDeviceIdentity""".split())

MAX_UNIX_PATH = 107
REFUSED_CLOSE_DELAY = 2.0


@dataclass
class Call:
    """One operation invocation, as a handler sees it."""

    caller: str                 # the authenticated component
    request: dict               # the decoded JSON request
    stream: "Stream | None"     # for streaming operations: where events go


Handler = Callable[[Call], "dict | Awaitable[dict]"]


@dataclass(frozen=True)
class Operation:
    """An IPC operation: `name` without the `aws.greengrass#` prefix."""

    name: str
    handler: Handler
    stream_shape: str | None = None   # e.g. "SubscriptionResponseMessage"

    @property
    def full_name(self) -> str:
        return "aws.greengrass#" + self.name


class Stream:
    """The server side of a streaming operation. Events sent before the response are held."""

    def __init__(self, conn: "_Connection", stream_id: int, shape: str) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.model_type = "aws.greengrass#" + shape
        self._held: list[dict] | None = []
        self._on_close: list[Callable[[], None]] = []
        self.closed = False

    def send(self, body: dict) -> None:
        """Queue an event; a stream whose connection is gone drops it (the nucleus ignores
        send failures)."""
        if self.closed:
            return
        if self._held is not None:
            self._held.append(body)
            return
        if not self._conn.rpc.is_open(self.stream_id):
            return
        try:
            message = self._conn.rpc.event(self.stream_id, self.model_type, body)
        except rpc.FrameTooLarge as exc:
            log.warning("dropped an event for %s on stream %d: %s", self._conn.component, self.stream_id, exc)
            return
        self._conn.write(message, event=True)

    def close(self) -> None:
        """The server ends the stream."""
        if self.closed:
            return
        if self._conn.rpc.is_open(self.stream_id) and self._held is None:
            self._conn.write(self._conn.rpc.end_stream(self.stream_id))
        self._closed()

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` once when the stream ends, whoever ends it."""
        if self.closed:
            callback()
        else:
            self._on_close.append(callback)

    def responded(self) -> None:
        """The operation's response went out: the events held until then follow it."""
        held, self._held = self._held or [], None
        for body in held:
            self.send(body)

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._conn.streams.pop(self.stream_id, None)
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a cleanup failure must not break the connection
                log.exception("stream close callback failed")


class Dispatcher:
    """Maps operation names to handlers."""

    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}

    def add(self, *operations: Operation) -> None:
        for op in operations:
            self._ops[op.full_name] = op

    def get(self, full_name: str) -> Operation | None:
        return self._ops.get(full_name)

    @property
    def names(self) -> list[str]:
        return sorted(self._ops)


@dataclass(eq=False)
class _Connection(asyncio.Protocol):
    server: "IpcServer"
    rpc: rpc.ServerConnection = field(default_factory=rpc.ServerConnection)
    decoder: Decoder = field(default_factory=Decoder)
    transport: asyncio.Transport | None = None
    component: str | None = None
    streams: dict[int, Stream] = field(default_factory=dict)
    tasks: set = field(default_factory=set)
    dropped_events: int = 0   # since the outgoing buffer last went over MAX_OUTGOING_BYTES

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server._connections.add(self)

    def connection_lost(self, exc) -> None:
        self.server._connections.discard(self)
        self.rpc.close()
        for stream in list(self.streams.values()):
            stream._closed()
        for task in self.tasks:
            task.cancel()

    def write(self, message: Message, event: bool = False) -> None:
        """Send `message`, within the connection's bound on unsent bytes (see the module doc)."""
        if self.transport is None or self.transport.is_closing():
            return
        unsent = self.transport.get_write_buffer_size()
        if unsent > limits.MAX_OUTGOING_HARD:
            log.warning("closing the IPC connection of %s: %d bytes it has not read (limit %d)", self.component,
                        unsent, limits.MAX_OUTGOING_HARD)
            self.transport.abort()
            return
        if event and unsent > limits.MAX_OUTGOING_BYTES:
            if not self.dropped_events:
                log.warning("%s does not read its IPC connection (%d bytes unsent): dropping its subscriptions' "
                            "events until it does", self.component, unsent)
            self.dropped_events += 1
            return
        if self.dropped_events and unsent <= limits.MAX_OUTGOING_BYTES // 2:
            log.warning("%s reads its IPC connection again: %d events were dropped", self.component,
                        self.dropped_events)
            self.dropped_events = 0
        self.transport.write(encode(message))

    def data_received(self, data: bytes) -> None:
        try:
            self.decoder.feed(data)
            while (message := self.decoder.next_message()) is not None:
                for event in self.rpc.receive(message):
                    self._handle(event)
                if self.rpc.state == rpc.ConnState.CLOSED:
                    return
        except RemoteProtocolError as exc:
            log.warning("closing IPC connection (%s): malformed frame: %s", self.component, exc)
            self.write(rpc.protocol_error(f"malformed frame: {exc}"))
            self.rpc.close()
            self.transport.close()

    def _handle(self, event: object) -> None:
        if isinstance(event, rpc.ConnectRequested):
            if event.problem is None:
                self.component = self.server.authenticate(event.auth_token)
            if self.component is None:
                log.warning("IPC connection refused: %s", event.problem or "unknown or missing auth token")
                self.write(self.rpc.reject())
                # The client closes on its own once it has read the refusal; closing at once
                # can make it see "socket closed" before the CONNECT_ACK.
                asyncio.get_running_loop().call_later(REFUSED_CLOSE_DELAY, self.transport.close)
            else:
                self.write(self.rpc.accept())
        elif isinstance(event, rpc.OperationRequested):
            self._start_operation(event)
        elif isinstance(event, rpc.StreamClosedByClient):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._closed()
        elif isinstance(event, rpc.Send):
            for message in event.messages:
                self.write(message)
        elif isinstance(event, rpc.ProtocolViolation):
            log.warning("closing IPC connection (%s): %s", self.component, event.reason)
            for message in event.reply:
                self.write(message)
            self.transport.close()

    def _start_operation(self, event: rpc.OperationRequested) -> None:
        op = self.server.dispatcher.get(event.operation)
        if op is None:
            self._unsupported(event)
            return
        try:
            request = limits.loads(event.payload)  # measured first: json.loads never recurses deeply
            if not isinstance(request, dict):
                raise ValueError("request is not a JSON object")
        except ValueError as exc:
            # The nucleus cannot deserialize it: a plain-text, unmodelled error (the
            # Python client sees StreamClosedError). The connection and its other streams stay.
            reason = str(exc)
            log.warning("%s sent %s a request that cannot be deserialized: %s", self.component,
                        op.name, limits.clip(reason, 200))
            self.write(self.rpc.error_unmodelled(event.stream_id, "text/plain", b"InternalServerError"))
            return
        stream = None
        if op.stream_shape is not None:
            stream = Stream(self, event.stream_id, op.stream_shape)
            self.streams[event.stream_id] = stream
        call = Call(self.component, request, stream)
        try:
            result = op.handler(call)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an IPC error
            self._finish_with_error(op, event.stream_id, stream, exc)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await(op, event.stream_id, stream, result))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self._respond(op, event.stream_id, stream, result)

    async def _await(self, op: Operation, stream_id: int, stream: Stream | None, result) -> None:
        try:
            body = await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._finish_with_error(op, stream_id, stream, exc)
            return
        self._respond(op, stream_id, stream, body)

    def _respond(self, op: Operation, stream_id: int, stream: Stream | None, body: dict) -> None:
        if not self.rpc.is_open(stream_id):  # the client gave up meanwhile
            if stream is not None:
                stream._closed()
            return
        streaming = stream is not None and not stream.closed
        try:
            response = self.rpc.respond(stream_id, f"{op.full_name}Response", body or {}, terminate=not streaming)
        except rpc.FrameTooLarge as exc:
            log.warning("%s's %s response cannot be sent: %s", self.component, op.name, exc)
            self._fail(stream_id, errors.ServiceError(f"{op.name} failed: {exc}"))
            if stream is not None:
                stream._closed()
            return
        self.write(response)
        if streaming:
            stream.responded()

    def _finish_with_error(self, op: Operation, stream_id: int, stream: Stream | None,
                           exc: Exception) -> None:
        if isinstance(exc, errors.Unmodelled):
            log.warning("%s sent %s a request the nucleus could not deserialize: %s", self.component, op.name, exc)
            if self.rpc.is_open(stream_id):
                self.write(self.rpc.error_unmodelled(stream_id, "text/plain", b"InternalServerError"))
            if stream is not None:
                stream._closed()
            return
        if not isinstance(exc, errors.IpcError):
            log.exception("%s failed for %s", op.name, self.component, exc_info=exc)
            exc = errors.ServiceError(f"{op.name} failed: {exc}")
        self._fail(stream_id, exc)
        if stream is not None:
            stream._closed()  # the error ended it: run its cleanups

    def _unsupported(self, event: rpc.OperationRequested) -> None:
        if event.operation in KNOWN_OPERATIONS:
            # in the service model, but no handler: the nucleus's DefaultOperationHandler
            error = errors.ServiceError(f"Operation {event.operation} is not supported by Greengrass")
            log.warning("%s called %s, which localgg does not implement", self.component, event.operation)
            self._fail(event.stream_id, error)
            return
        body = {"error": "Unsupported Operation", "message": f"{event.operation} is an unsupported operation."}
        log.warning("%s called the unknown operation %s", self.component, event.operation)
        self.write(self.rpc.error_unmodelled(event.stream_id, rpc.CONTENT_TYPE_JSON, json.dumps(body).encode()))

    def _fail(self, stream_id: int, error: errors.IpcError) -> None:
        if not self.rpc.is_open(stream_id):
            return
        try:
            message = self.rpc.error(stream_id, error.model_type, error.to_payload())
        except rpc.FrameTooLarge:  # a message that echoes a huge input: keep its start
            text = limits.clip(error.message)
            message = self.rpc.error(stream_id, error.model_type,
                                     {**errors.IpcError(text).to_payload(), "_errorCode": error.shape})
        self.write(message)


class IpcServer:
    def __init__(self, socket_path: str, authenticate: Callable[[str | None], str | None],
                 dispatcher: Dispatcher) -> None:
        if len(os.fsencode(socket_path)) > MAX_UNIX_PATH:
            raise ValueError(f"IPC socket path is longer than {MAX_UNIX_PATH} bytes: {socket_path}; "
                             "use a shorter --root")
        self.socket_path = socket_path
        self.authenticate = authenticate
        self.dispatcher = dispatcher
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), self.socket_path)
        os.chmod(self.socket_path, 0o666)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                if conn.transport is not None:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def status(self) -> list[dict]:
        """Each connection: its component, open streams, unsent bytes, events dropped since it stopped reading."""
        return [{"component": c.component, "streams": len(c.streams),
                 "unsent": c.transport.get_write_buffer_size() if c.transport is not None else 0,
                 "droppedEvents": c.dropped_events}
                for c in sorted(self._connections, key=lambda c: str(c.component))]

    def disconnect(self, component: str) -> int:
        """Close every connection of `component` (used when it is stopped). Returns how many."""
        closing = [c for c in self._connections if c.component == component]
        for conn in closing:
            conn.transport.close()
        return len(closing)
