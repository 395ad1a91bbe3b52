"""The MQTT codec: round trips of every packet, both versions, byte by byte."""

import pytest
from hypothesis import given, strategies as st

from localgg.mqtt.codec import (ConnAck, Connect, Disconnect, MalformedPacket, PingReq, PingResp, PubAck, Publish,
                                Reader, SubAck, Subscribe, UnsubAck, Unsubscribe, encode)

PACKETS = [
    Connect("thing", True, 60, {"session_expiry_interval": 3600, "request_problem_information": 1}),
    ConnAck(True, 0, {"receive_maximum": 20, "maximum_qos": 1}),
    Publish("dt/x", b"\x00payload", 1, True, 7, False,
            {"user_property": [("a", "1"), ("b", "2")], "payload_format_indicator": 1, "correlation_data": b"\x01",
             "response_topic": "r", "message_expiry_interval": 5, "content_type": "application/json"}),
    Publish("dt/y", b"", 0),
    PubAck(7, 16), PubAck(8),
    Subscribe(3, (("cmd/#", 1), ("a/+", 0))), SubAck(3, (1, 0x87)),
    Unsubscribe(4, ("cmd/#",)), UnsubAck(4, (0,)),
    PingReq(), PingResp(), Disconnect(0x8E),
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: type(p).__name__)
def test_v5_round_trip_byte_by_byte(packet):
    data = encode(packet, 5)
    reader = Reader(5)
    for i in range(len(data) - 1):
        reader.feed(data[i:i + 1])
        assert reader.next_packet() is None
    reader.feed(data[-1:])
    assert reader.next_packet() == packet


@pytest.mark.parametrize("packet", [Connect("thing", False, 30), Publish("a", b"x", 1, False, 1),
                                    PubAck(1), Subscribe(2, (("a/#", 1),)), PingReq()])
def test_v311_round_trip(packet):
    reader = Reader(4)
    reader.feed(encode(packet, 4))
    decoded = reader.next_packet()
    assert decoded == packet


def test_remaining_length_of_five_bytes_is_malformed():
    reader = Reader()
    reader.feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(MalformedPacket):
        reader.next_packet()


@given(st.text(min_size=1, max_size=50), st.binary(max_size=300000), st.integers(0, 1), st.booleans())
def test_any_publish_round_trips(topic, payload, qos, retain):
    packet = Publish(topic, payload, qos, retain, 9 if qos else None)
    reader = Reader(5)
    reader.feed(encode(packet, 5))
    assert reader.next_packet() == packet
