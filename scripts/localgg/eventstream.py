"""AWS event-stream framing, with no I/O inside.

Usage::

    data = encode(Message(headers=(Header.string(":content-type", "application/json"),),
                          payload=b"{}"))
    decoder = Decoder()
    decoder.feed(data)
    message = decoder.next_message()   # a Message, or None when more bytes are needed

Frame (all integers big-endian)::

    [u32 total_len][u32 headers_len][u32 prelude_crc][headers][payload][u32 message_crc]

Limits are those of aws-c-event-stream, the C library inside awscrt that the
Greengrass IPC client uses: 16 MiB per message, 128 KiB of headers, header names
of at most 127 bytes, string and bytes values of at most 32767 bytes.

`encode` raises LocalProtocolError when asked to build a frame the peer could not
accept; `Decoder.next_message` raises RemoteProtocolError for bytes that are not a
valid frame, after which the decoder refuses further input (fail fast).
"""

from __future__ import annotations

import enum
import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Iterable

MAX_MESSAGE_SIZE = 16 * 1024 * 1024
MAX_HEADERS_SIZE = 128 * 1024
MAX_HEADER_NAME_LEN = 127
MAX_HEADER_VALUE_LEN = 32767
PRELUDE_LEN = 12
CRC_LEN = 4
MIN_MESSAGE_SIZE = PRELUDE_LEN + CRC_LEN


class LocalProtocolError(ValueError):
    """We were asked to encode something that is not a valid event-stream frame."""


class RemoteProtocolError(ValueError):
    """The peer sent bytes that are not a valid event-stream frame."""


class HeaderType(enum.IntEnum):
    TRUE = 0
    FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTES = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


_INT_RANGES = {
    HeaderType.BYTE: (">b", -(2**7), 2**7 - 1),
    HeaderType.INT16: (">h", -(2**15), 2**15 - 1),
    HeaderType.INT32: (">i", -(2**31), 2**31 - 1),
    HeaderType.INT64: (">q", -(2**63), 2**63 - 1),
    HeaderType.TIMESTAMP: (">q", -(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class Header:
    """One typed header. Build with the class methods; a malformed header cannot be built."""

    name: str
    type: HeaderType
    value: object

    def __post_init__(self) -> None:
        encoded_name = self.name.encode("utf-8")
        if not 1 <= len(encoded_name) <= MAX_HEADER_NAME_LEN:
            raise LocalProtocolError(f"header name must be 1..{MAX_HEADER_NAME_LEN} bytes: {self.name!r}")
        _check_value(self.type, self.value)

    @classmethod
    def bool(cls, name: str, value: bool) -> "Header":
        return cls(name, HeaderType.TRUE if value else HeaderType.FALSE, bool(value))

    @classmethod
    def int32(cls, name: str, value: int) -> "Header":
        return cls(name, HeaderType.INT32, value)

    @classmethod
    def int64(cls, name: str, value: int) -> "Header":
        return cls(name, HeaderType.INT64, value)

    @classmethod
    def string(cls, name: str, value: str) -> "Header":
        return cls(name, HeaderType.STRING, value)

    @classmethod
    def bytes(cls, name: str, value: bytes) -> "Header":
        return cls(name, HeaderType.BYTES, bytes(value))


def _check_value(htype: HeaderType, value: object) -> None:
    if htype in (HeaderType.TRUE, HeaderType.FALSE):
        if value is not (htype == HeaderType.TRUE):
            raise LocalProtocolError(f"{htype.name} header carries the value {htype == HeaderType.TRUE}")
    elif htype in _INT_RANGES:
        _, low, high = _INT_RANGES[htype]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise LocalProtocolError(f"{htype.name} header value out of range: {value!r}")
    elif htype == HeaderType.STRING:
        if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_HEADER_VALUE_LEN:
            raise LocalProtocolError(f"STRING header value must be str of <= {MAX_HEADER_VALUE_LEN} bytes")
    elif htype == HeaderType.BYTES:
        if not isinstance(value, bytes) or len(value) > MAX_HEADER_VALUE_LEN:
            raise LocalProtocolError(f"BYTES header value must be bytes of <= {MAX_HEADER_VALUE_LEN} bytes")
    elif htype == HeaderType.UUID:
        if not isinstance(value, uuid.UUID):
            raise LocalProtocolError("UUID header value must be a uuid.UUID")
    else:  # pragma: no cover - HeaderType is closed
        raise LocalProtocolError(f"unknown header type {htype!r}")


@dataclass(frozen=True)
class Message:
    """An event-stream message: ordered headers and an opaque payload."""

    headers: tuple[Header, ...] = ()
    payload: bytes = b""

    def header(self, name: str, default: object = None) -> object:
        """The value of the first header called `name` (case-insensitive), or `default`."""
        lowered = name.lower()
        for header in self.headers:
            if header.name.lower() == lowered:
                return header.value
        return default


def _encode_header(header: Header) -> bytes:
    name = header.name.encode("utf-8")
    out = bytes([len(name)]) + name + bytes([header.type])
    htype, value = header.type, header.value
    if htype in (HeaderType.TRUE, HeaderType.FALSE):
        return out
    if htype in _INT_RANGES:
        return out + struct.pack(_INT_RANGES[htype][0], value)
    if htype == HeaderType.STRING:
        raw = value.encode("utf-8")
        return out + struct.pack(">H", len(raw)) + raw
    if htype == HeaderType.BYTES:
        return out + struct.pack(">H", len(value)) + value
    return out + value.bytes  # UUID


def encode_headers(headers: Iterable[Header]) -> bytes:
    return b"".join(_encode_header(h) for h in headers)


def frame_size(message: Message) -> int:
    """How many bytes `encode(message)` makes (cheap: the payload is not copied)."""
    return PRELUDE_LEN + len(encode_headers(message.headers)) + len(message.payload) + CRC_LEN


def encode(message: Message) -> bytes:
    """The frame for `message`. Raises LocalProtocolError when it exceeds the limits."""
    headers = encode_headers(message.headers)
    if len(headers) > MAX_HEADERS_SIZE:
        raise LocalProtocolError(f"headers are {len(headers)} bytes, more than {MAX_HEADERS_SIZE}")
    total = PRELUDE_LEN + len(headers) + len(message.payload) + CRC_LEN
    if total > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(f"message is {total} bytes, more than {MAX_MESSAGE_SIZE}")
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + message.payload
    return body + struct.pack(">I", zlib.crc32(body))


def decode_headers(data: bytes) -> tuple[Header, ...]:
    """Parse a header block. Raises RemoteProtocolError when it is malformed."""
    headers = []
    pos, end = 0, len(data)

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > end:
            raise RemoteProtocolError("header block is truncated")
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    while pos < end:
        name_len = take(1)[0]
        if name_len == 0:
            raise RemoteProtocolError("header name is empty")
        try:
            name = take(name_len).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("header name is not UTF-8") from exc
        type_byte = take(1)[0]
        try:
            htype = HeaderType(type_byte)
        except ValueError as exc:
            raise RemoteProtocolError(f"unknown header type {type_byte}") from exc
        if htype in (HeaderType.TRUE, HeaderType.FALSE):
            value: object = htype == HeaderType.TRUE
        elif htype in _INT_RANGES:
            fmt = _INT_RANGES[htype][0]
            value = struct.unpack(fmt, take(struct.calcsize(fmt)))[0]
        elif htype in (HeaderType.STRING, HeaderType.BYTES):
            (length,) = struct.unpack(">H", take(2))
            if length > MAX_HEADER_VALUE_LEN:
                raise RemoteProtocolError(f"header value of {length} bytes exceeds {MAX_HEADER_VALUE_LEN}")
            raw = take(length)
            if htype == HeaderType.STRING:
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RemoteProtocolError(f"header {name!r} is not UTF-8") from exc
            else:
                value = raw
        else:
            value = uuid.UUID(bytes=take(16))
        try:
            headers.append(Header(name, htype, value))
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from exc
    return tuple(headers)


class Decoder:
    """Incremental decoder: `feed(bytes)` buffers, `next_message()` returns a Message or None."""

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_message_size
        self._failed: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        self._buffer += data

    def next_message(self) -> Message | None:
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._failed = exc
            raise

    def _next(self) -> Message | None:
        buf = self._buffer
        if len(buf) < PRELUDE_LEN:
            return None
        total, headers_len, prelude_crc = struct.unpack_from(">III", buf, 0)
        if zlib.crc32(buf[:8]) != prelude_crc:
            raise RemoteProtocolError("prelude CRC mismatch")
        if total < MIN_MESSAGE_SIZE or headers_len > total - MIN_MESSAGE_SIZE:
            raise RemoteProtocolError(f"inconsistent lengths: total {total}, headers {headers_len}")
        if total > self._max:
            raise RemoteProtocolError(f"message of {total} bytes exceeds the {self._max}-byte limit")
        if headers_len > MAX_HEADERS_SIZE:
            raise RemoteProtocolError(f"headers of {headers_len} bytes exceed {MAX_HEADERS_SIZE}")
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        (message_crc,) = struct.unpack_from(">I", frame, total - CRC_LEN)
        if zlib.crc32(frame[:total - CRC_LEN]) != message_crc:
            raise RemoteProtocolError("message CRC mismatch")
        del buf[:total]
        headers = decode_headers(frame[PRELUDE_LEN:PRELUDE_LEN + headers_len])
        return Message(headers, frame[PRELUDE_LEN + headers_len:total - CRC_LEN])

    def messages(self) -> list[Message]:
        """Every complete message buffered so far."""
        out = []
        while (message := self.next_message()) is not None:
            out.append(message)
        return out
