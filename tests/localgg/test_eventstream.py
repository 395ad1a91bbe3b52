"""Frame-level tests of the sans-IO codec: whole, byte by byte, corrupted, truncated, oversized."""

import struct
import uuid
import zlib

import pytest
from hypothesis import given, strategies as st

from localgg.eventstream import (MAX_HEADER_VALUE_LEN, MAX_MESSAGE_SIZE, Decoder, Header,
                                 HeaderType, LocalProtocolError, Message, RemoteProtocolError,
                                 encode)


def sample() -> Message:
    return Message(
        headers=(Header.int32(":message-type", 0), Header.string(":content-type", "application/json"),
                 Header.bool("t", True), Header.bool("f", False), Header("b", HeaderType.BYTE, -5),
                 Header("s", HeaderType.INT16, 300), Header.int64("l", 2**40),
                 Header.bytes("raw", b"\x00\xff"), Header("ts", HeaderType.TIMESTAMP, 1_700_000_000_000),
                 Header("id", HeaderType.UUID, uuid.UUID(int=7))),
        payload=b'{"hello": "world"}')


def test_known_frame_layout():
    # An empty message is 16 bytes: the prelude, its CRC and the message CRC.
    data = encode(Message())
    assert len(data) == 16
    total, headers_len, prelude_crc = struct.unpack(">III", data[:12])
    assert (total, headers_len) == (16, 0)
    assert prelude_crc == zlib.crc32(data[:8])
    assert struct.unpack(">I", data[12:])[0] == zlib.crc32(data[:12])


def test_round_trip_whole():
    decoder = Decoder()
    decoder.feed(encode(sample()))
    assert decoder.next_message() == sample()
    assert decoder.next_message() is None
    assert decoder.buffered == 0


def test_byte_by_byte_feeding_yields_each_message_once_complete():
    data = encode(sample()) + encode(Message(payload=b"second"))
    decoder = Decoder()
    got = []
    for i in range(len(data)):
        decoder.feed(data[i:i + 1])
        got.extend(decoder.messages())
        if i < len(encode(sample())) - 1:
            assert got == []
    assert got == [sample(), Message(payload=b"second")]


def test_truncated_input_waits_for_more():
    data = encode(sample())
    decoder = Decoder()
    decoder.feed(data[:-1])
    assert decoder.next_message() is None
    assert decoder.buffered == len(data) - 1


@pytest.mark.parametrize("offset", [0, 5, 9, 20, -1])
def test_corrupted_byte_is_a_crc_error(offset):
    data = bytearray(encode(sample()))
    data[offset] ^= 0x01
    decoder = Decoder()
    decoder.feed(bytes(data))
    with pytest.raises(RemoteProtocolError, match="CRC|lengths"):
        decoder.next_message()


def test_decoder_fails_fast_after_an_error():
    data = bytearray(encode(sample()))
    data[-1] ^= 0xFF
    decoder = Decoder()
    decoder.feed(bytes(data) + encode(Message()))
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(encode(Message()))
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


def test_trailing_garbage_after_a_valid_message():
    decoder = Decoder()
    decoder.feed(encode(sample()) + b"\x00\x00\x00\x05garbage!!!!")
    assert decoder.next_message() == sample()
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


def _frame(total: int, headers_len: int) -> bytes:
    prelude = struct.pack(">II", total, headers_len)
    return prelude + struct.pack(">I", zlib.crc32(prelude))


def test_oversized_message_is_refused_from_the_prelude_alone():
    decoder = Decoder()
    decoder.feed(_frame(MAX_MESSAGE_SIZE + 1, 0))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decoder.next_message()


def test_lengths_that_cannot_fit_are_refused():
    decoder = Decoder()
    decoder.feed(_frame(16, 1))
    with pytest.raises(RemoteProtocolError, match="inconsistent"):
        decoder.next_message()


def test_header_block_overrunning_its_length_is_refused():
    # a STRING header that claims 100 bytes but the block ends first
    headers = b"\x01a\x07\x00\x64abc"
    total = 12 + len(headers) + 4
    prelude = struct.pack(">II", total, len(headers))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers
    decoder = Decoder()
    decoder.feed(body + struct.pack(">I", zlib.crc32(body)))
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decoder.next_message()


def test_unknown_header_type_is_refused():
    headers = b"\x01a\x0a"
    prelude = struct.pack(">II", 12 + len(headers) + 4, len(headers))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers
    decoder = Decoder()
    decoder.feed(body + struct.pack(">I", zlib.crc32(body)))
    with pytest.raises(RemoteProtocolError, match="unknown header type"):
        decoder.next_message()


def test_headers_that_cannot_be_encoded_are_refused_locally():
    with pytest.raises(LocalProtocolError):
        Header.string("x" * 128, "v")
    with pytest.raises(LocalProtocolError):
        Header.string("x", "v" * (MAX_HEADER_VALUE_LEN + 1))
    with pytest.raises(LocalProtocolError):
        Header.int32("x", 2**31)
    with pytest.raises(LocalProtocolError):
        encode(Message(payload=b"x" * MAX_MESSAGE_SIZE))


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: len(s.encode()) <= 127)
_headers = st.one_of(
    st.builds(Header.bool, _names, st.booleans()),
    st.builds(lambda n, v: Header(n, HeaderType.BYTE, v), _names, st.integers(-128, 127)),
    st.builds(lambda n, v: Header(n, HeaderType.INT16, v), _names, st.integers(-(2**15), 2**15 - 1)),
    st.builds(Header.int32, _names, st.integers(-(2**31), 2**31 - 1)),
    st.builds(Header.int64, _names, st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda n, v: Header(n, HeaderType.TIMESTAMP, v), _names, st.integers(-(2**63), 2**63 - 1)),
    st.builds(Header.bytes, _names, st.binary(max_size=300)),
    st.builds(Header.string, _names, st.text(max_size=100)),
    st.builds(lambda n, v: Header(n, HeaderType.UUID, uuid.UUID(int=v)), _names, st.integers(0, 2**128 - 1)),
)
_messages = st.builds(Message, st.lists(_headers, max_size=8).map(tuple), st.binary(max_size=2000))


@given(st.lists(_messages, min_size=1, max_size=5), st.integers(1, 64))
def test_round_trip_any_messages_in_any_chunks(messages, chunk):
    data = b"".join(encode(m) for m in messages)
    decoder = Decoder()
    got = []
    for i in range(0, len(data), chunk):
        decoder.feed(data[i:i + chunk])
        got.extend(decoder.messages())
    assert got == messages


@given(_messages, st.data())
def test_any_single_bit_flip_is_detected(message, data):
    frame = bytearray(encode(message))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    decoder = Decoder()
    decoder.feed(bytes(frame))
    try:
        got = decoder.next_message()
    except RemoteProtocolError:
        return
    # a flip in the length field may leave the decoder waiting for bytes that never come
    assert got is None
