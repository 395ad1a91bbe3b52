"""One MQTT connection on asyncio, with the CRT client's failure semantics.

Usage::

    conn = await MqttConnection.open(host, port, ssl_context, client_id="thing",
                                     clean_start=True, on_message=handle, on_lost=lost)
    await conn.publish("dt/x", b"{}", qos=1)        # returns the PUBACK reason code
    await conn.subscribe("cmd/#", qos=1)            # returns the SUBACK reason codes
    await conn.close()

Like the AWS CRT's MQTT5 client that the nucleus uses with FAIL_ALL_ON_DISCONNECT: an
operation in flight when the connection drops fails with ConnectionLost (nothing is
re-sent by this layer: the nucleus's spooler decides), and nothing can be sent on a
closed connection. Keep-alive pings; a missing PINGRESP drops the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable

from .codec import (ConnAck, Connect, Disconnect, MalformedPacket, PingReq, PingResp, PubAck, Publish, Reader,
                    SubAck, Subscribe, UnsubAck, Unsubscribe, encode)


class ConnectionLost(ConnectionError):
    """The connection dropped before the operation completed."""


class ConnectRefused(ConnectionError):
    def __init__(self, reason_code: int) -> None:
        super().__init__(f"CONNACK reason code {reason_code}")
        self.reason_code = reason_code


MessageHandler = Callable[[Publish], None]


class MqttConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int,
                 keepalive: int, on_message: MessageHandler, on_lost: Callable[[Exception | None], None]) -> None:
        self._reader, self._writer = reader, writer
        self.version = version
        self._keepalive = keepalive
        self._on_message = on_message
        self._on_lost = on_lost
        self._packets = Reader(version)
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._closed = False
        self._pong: asyncio.Event = asyncio.Event()
        self.session_present = False
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def open(cls, host: str, port: int, ssl_context: ssl.SSLContext | None, *, client_id: str,
                   clean_start: bool, on_message: MessageHandler, on_lost: Callable[[Exception | None], None],
                   keepalive: int = 60, version: int = 5, session_expiry: int = 604800,
                   timeout: float = 10.0, server_hostname: str | None = None) -> "MqttConnection":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context,
                                    server_hostname=server_hostname if ssl_context else None), timeout)
        conn = cls(reader, writer, version, keepalive, on_message, on_lost)
        try:
            await asyncio.wait_for(conn._handshake(client_id, clean_start, session_expiry), timeout)
        except BaseException:
            writer.close()
            raise
        conn._tasks = [asyncio.ensure_future(conn._read_loop()), asyncio.ensure_future(conn._ping_loop())]
        return conn

    async def _handshake(self, client_id: str, clean_start: bool, session_expiry: int) -> None:
        props = {"session_expiry_interval": session_expiry, "request_problem_information": 1} \
            if self.version == 5 else {}
        self._writer.write(encode(Connect(client_id, clean_start, self._keepalive, props), self.version))
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionLost("connection closed before CONNACK")
            self._packets.feed(data)
            packet = self._packets.next_packet()
            if packet is not None:
                break
        if not isinstance(packet, ConnAck):
            raise ConnectionLost(f"expected CONNACK, got {type(packet).__name__}")
        if packet.reason_code != 0:
            raise ConnectRefused(packet.reason_code)
        self.session_present = packet.session_present

    @property
    def closed(self) -> bool:
        return self._closed

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._pending:
                return self._next_id
        raise RuntimeError("no free packet id")

    def _send(self, packet: object) -> None:
        if self._closed:
            raise ConnectionLost("the connection is closed")
        self._writer.write(encode(packet, self.version))

    async def _request(self, make: Callable[[int], object]) -> object:
        packet_id = self._packet_id()
        future = asyncio.get_running_loop().create_future()
        self._pending[packet_id] = future
        try:
            self._send(make(packet_id))
            return await future
        finally:
            self._pending.pop(packet_id, None)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                      properties: dict | None = None) -> int:
        """QoS 0: once written. QoS 1: waits for PUBACK and returns its reason code."""
        if qos == 0:
            self._send(Publish(topic, payload, 0, retain, None, False, properties or {}))
            await self._writer.drain()
            return 0
        ack = await self._request(lambda pid: Publish(topic, payload, 1, retain, pid, False, properties or {}))
        return ack.reason_code

    async def subscribe(self, topic: str, qos: int = 1) -> tuple[int, ...]:
        ack = await self._request(lambda pid: Subscribe(pid, ((topic, qos),)))
        return ack.reason_codes

    async def unsubscribe(self, topic: str) -> None:
        await self._request(lambda pid: Unsubscribe(pid, (topic,)))

    async def close(self) -> None:
        """A purposeful DISCONNECT."""
        if not self._closed:
            try:
                self._send(Disconnect())
                await self._writer.drain()
            except (ConnectionError, OSError):
                pass
            self._lost(None)

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT."""
        self._lost(ConnectionLost("aborted"))

    def _lost(self, error: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(str(error or "connection closed")))
        self._pending.clear()
        self._writer.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._on_lost(error)

    async def _read_loop(self) -> None:
        error: Exception | None = ConnectionLost("the server closed the connection")
        try:
            while (packet := self._packets.next_packet()) is not None:  # what came with the CONNACK
                self._dispatch(packet)
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                self._packets.feed(data)
                while (packet := self._packets.next_packet()) is not None:
                    self._dispatch(packet)
        except (ConnectionError, OSError, MalformedPacket, ssl.SSLError) as exc:
            error = ConnectionLost(f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            return
        self._lost(error)

    def _dispatch(self, packet: object) -> None:
        if isinstance(packet, Publish):
            if packet.qos == 1:
                self._send(PubAck(packet.packet_id))
            self._on_message(packet)
        elif isinstance(packet, (PubAck, SubAck, UnsubAck)):
            future = self._pending.get(packet.packet_id)
            if future is not None and not future.done():
                future.set_result(packet)
        elif isinstance(packet, PingResp):
            self._pong.set()
        elif isinstance(packet, Disconnect):
            raise ConnectionError(f"server DISCONNECT, reason code {packet.reason_code}")

    async def _ping_loop(self) -> None:
        if not self._keepalive:
            return
        try:
            while not self._closed:
                await asyncio.sleep(self._keepalive)
                self._pong.clear()
                self._send(PingReq())
                try:
                    await asyncio.wait_for(self._pong.wait(), max(1.0, self._keepalive / 2))
                except asyncio.TimeoutError:
                    self._lost(ConnectionLost("no PINGRESP"))
                    return
        except (asyncio.CancelledError, ConnectionLost):
            return

