"""MQTT 3.1.1 and 5 packets, with no I/O inside: the subset a device client needs.

Usage::

    data = encode(Publish("dt/x", b"{}", qos=1, packet_id=7), version=5)
    reader = Reader(version=5)
    reader.feed(data)
    packet = reader.next_packet()     # a packet dataclass, or None when more bytes are needed

Packets: Connect, ConnAck, Publish, PubAck, Subscribe, SubAck, Unsubscribe, UnsubAck,
PingReq, PingResp, Disconnect. MQTT 5 properties are a dict keyed by property name
(`user_property` is a list of (key, value) pairs). Malformed input raises
MalformedPacket; the reader then refuses further input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_PACKET = 268435455


class MalformedPacket(ValueError):
    pass


# -- primitives ------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def binary(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedPacket("packet is shorter than its fields")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def varint(self) -> int:
        value, shift = 0, 0
        for _ in range(4):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise MalformedPacket("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacket("string is not UTF-8") from exc

    def rest(self) -> bytes:
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


# -- MQTT 5 properties ------------------------------------------------------------------------

_PROPS = {  # id: (name, type)
    0x01: ("payload_format_indicator", "u8"), 0x02: ("message_expiry_interval", "u32"),
    0x03: ("content_type", "str"), 0x08: ("response_topic", "str"), 0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_identifier", "varint"), 0x11: ("session_expiry_interval", "u32"),
    0x12: ("assigned_client_identifier", "str"), 0x13: ("server_keep_alive", "u16"),
    0x15: ("authentication_method", "str"), 0x16: ("authentication_data", "bin"),
    0x17: ("request_problem_information", "u8"), 0x18: ("will_delay_interval", "u32"),
    0x19: ("request_response_information", "u8"), 0x1A: ("response_information", "str"),
    0x1C: ("server_reference", "str"), 0x1F: ("reason_string", "str"), 0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"), 0x23: ("topic_alias", "u16"), 0x24: ("maximum_qos", "u8"),
    0x25: ("retain_available", "u8"), 0x26: ("user_property", "pair"), 0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_subscription_available", "u8"), 0x29: ("subscription_identifier_available", "u8"),
    0x2A: ("shared_subscription_available", "u8"),
}
_PROP_IDS = {name: (pid, kind) for pid, (name, kind) in _PROPS.items()}


def encode_properties(props: dict) -> bytes:
    out = bytearray()
    for name, value in props.items():
        pid, kind = _PROP_IDS[name]
        values = value if kind == "pair" else [value]
        for item in values:
            out.append(pid)
            if kind == "u8":
                out.append(item)
            elif kind == "u16":
                out += struct.pack(">H", item)
            elif kind == "u32":
                out += struct.pack(">I", item)
            elif kind == "varint":
                out += varint(item)
            elif kind == "str":
                out += string(item)
            elif kind == "bin":
                out += binary(item)
            else:
                out += string(item[0]) + string(item[1])
    return varint(len(out)) + bytes(out)


def decode_properties(buf: _Buf) -> dict:
    length = buf.varint()
    end = buf.pos + length
    props: dict = {}
    while buf.pos < end:
        pid = buf.u8()
        if pid not in _PROPS:
            raise MalformedPacket(f"unknown property 0x{pid:02x}")
        name, kind = _PROPS[pid]
        value = {"u8": buf.u8, "u16": buf.u16, "u32": buf.u32, "varint": buf.varint, "str": buf.string,
                 "bin": buf.binary}.get(kind, lambda: (buf.string(), buf.string()))()
        if kind == "pair":
            props.setdefault(name, []).append(value)
        else:
            props[name] = value
    if buf.pos != end:
        raise MalformedPacket("properties overrun their length")
    return props


# -- packets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Connect:
    client_id: str
    clean_start: bool = True
    keepalive: int = 60
    properties: dict = field(default_factory=dict)
    username: str | None = None
    password: bytes | None = None


@dataclass(frozen=True)
class ConnAck:
    session_present: bool
    reason_code: int
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    packet_id: int | None = None
    dup: bool = False
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PubAck:
    packet_id: int
    reason_code: int = 0
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Subscribe:
    packet_id: int
    topics: tuple[tuple[str, int], ...]   # (filter, qos)
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Unsubscribe:
    packet_id: int
    topics: tuple[str, ...]


@dataclass(frozen=True)
class UnsubAck:
    packet_id: int
    reason_codes: tuple[int, ...] = ()


@dataclass(frozen=True)
class PingReq:
    pass


@dataclass(frozen=True)
class PingResp:
    pass


@dataclass(frozen=True)
class Disconnect:
    reason_code: int = 0
    properties: dict = field(default_factory=dict)


def _frame(first: int, body: bytes) -> bytes:
    if len(body) > MAX_PACKET:
        raise MalformedPacket("packet too large")
    return bytes([first]) + varint(len(body)) + body


def encode(packet: object, version: int = 5) -> bytes:
    v5 = version == 5
    props = (lambda p: encode_properties(p)) if v5 else (lambda p: b"")
    if isinstance(packet, Connect):
        flags = 0x02 if packet.clean_start else 0
        payload = string(packet.client_id)
        if packet.username is not None:
            flags |= 0x80
            payload += string(packet.username)
        if packet.password is not None:
            flags |= 0x40
            payload += binary(packet.password)
        body = string("MQTT") + bytes([version, flags]) + struct.pack(">H", packet.keepalive)
        return _frame(0x10, body + props(packet.properties) + payload)
    if isinstance(packet, Publish):
        first = 0x30 | (0x08 if packet.dup else 0) | (packet.qos << 1) | (0x01 if packet.retain else 0)
        body = string(packet.topic)
        if packet.qos:
            body += struct.pack(">H", packet.packet_id)
        return _frame(first, body + props(packet.properties) + packet.payload)
    if isinstance(packet, PubAck):
        body = struct.pack(">H", packet.packet_id)
        if v5 and (packet.reason_code or packet.properties):
            body += bytes([packet.reason_code]) + props(packet.properties)
        return _frame(0x40, body)
    if isinstance(packet, Subscribe):
        body = struct.pack(">H", packet.packet_id) + props(packet.properties)
        for topic, qos in packet.topics:
            body += string(topic) + bytes([qos])
        return _frame(0x82, body)
    if isinstance(packet, Unsubscribe):
        body = struct.pack(">H", packet.packet_id) + props({})
        for topic in packet.topics:
            body += string(topic)
        return _frame(0xA2, body)
    if isinstance(packet, PingReq):
        return b"\xc0\x00"
    if isinstance(packet, PingResp):
        return b"\xd0\x00"
    if isinstance(packet, Disconnect):
        return _frame(0xE0, bytes([packet.reason_code]) + props(packet.properties) if v5 else b"")
    if isinstance(packet, ConnAck):
        return _frame(0x20, bytes([int(packet.session_present), packet.reason_code]) + props(packet.properties))
    if isinstance(packet, SubAck):
        return _frame(0x90, struct.pack(">H", packet.packet_id) + props(packet.properties)
                      + bytes(packet.reason_codes))
    if isinstance(packet, UnsubAck):
        return _frame(0xB0, struct.pack(">H", packet.packet_id) + props({}) + bytes(packet.reason_codes))
    raise TypeError(f"cannot encode {packet!r}")


def decode(first: int, body: bytes, version: int = 5) -> object:
    v5 = version == 5
    kind, flags = first >> 4, first & 0x0F
    buf = _Buf(body)
    props = (lambda: decode_properties(buf)) if v5 else (lambda: {})
    if kind == 2:
        session, code = buf.u8() & 1, buf.u8()
        return ConnAck(bool(session), code, props() if buf.left else {})
    if kind == 3:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")
        topic = buf.string()
        packet_id = buf.u16() if qos else None
        properties = props()
        return Publish(topic, buf.rest(), qos, bool(flags & 1), packet_id, bool(flags & 8), properties)
    if kind == 4:
        packet_id = buf.u16()
        code = buf.u8() if v5 and buf.left else 0
        return PubAck(packet_id, code, props() if v5 and buf.left else {})
    if kind == 9:
        packet_id = buf.u16()
        properties = props()
        return SubAck(packet_id, tuple(buf.rest()), properties)
    if kind == 11:
        packet_id = buf.u16()
        if v5:
            props()
        return UnsubAck(packet_id, tuple(buf.rest()))
    if kind == 13:
        return PingResp()
    if kind == 12:
        return PingReq()
    if kind == 14:
        code = buf.u8() if buf.left else 0
        return Disconnect(code, props() if v5 and buf.left else {})
    if kind == 1:
        if buf.string() != "MQTT":
            raise MalformedPacket("not an MQTT CONNECT")
        level, cflags, keepalive = buf.u8(), buf.u8(), buf.u16()
        properties = decode_properties(buf) if level == 5 else {}
        client_id = buf.string()
        username = buf.string() if cflags & 0x80 else None
        password = buf.binary() if cflags & 0x40 else None
        return Connect(client_id, bool(cflags & 2), keepalive, properties, username, password)
    if kind == 8:
        packet_id = buf.u16()
        properties = props()
        topics = []
        while buf.left:
            topics.append((buf.string(), buf.u8() & 3))
        return Subscribe(packet_id, tuple(topics), properties)
    if kind == 10:
        packet_id = buf.u16()
        if v5:
            props()
        topics = []
        while buf.left:
            topics.append(buf.string())
        return Unsubscribe(packet_id, tuple(topics))
    raise MalformedPacket(f"unsupported packet type {kind}")


class Reader:
    """Incremental packet reader."""

    def __init__(self, version: int = 5) -> None:
        self.version = version
        self._buffer = bytearray()
        self._failed: MalformedPacket | None = None

    def feed(self, data: bytes) -> None:
        if self._failed:
            raise self._failed
        self._buffer += data

    def next_packet(self) -> object | None:
        if self._failed:
            raise self._failed
        buf = self._buffer
        if len(buf) < 2:
            return None
        length, shift, pos = 0, 0, 1
        while True:
            if pos >= len(buf):
                return None
            byte = buf[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                self._failed = MalformedPacket("remaining length longer than 4 bytes")
                raise self._failed
        if len(buf) < pos + length:
            return None
        first, body = buf[0], bytes(buf[pos:pos + length])
        del buf[:pos + length]
        try:
            return decode(first, body, self.version)
        except MalformedPacket as exc:
            self._failed = exc
            raise
