"""The core's MQTT connection and sender against fake peers: what a real broker rarely shows."""

import asyncio
from pathlib import Path

from localgg.iotcore.bridge import IoTCoreBridge
from localgg.iotcore.spool import MemoryStore, Spool, SpoolMessage
from localgg.mqtt.client import MqttConnection
from localgg.mqtt.codec import ConnAck, Publish, encode


def test_a_message_that_comes_with_the_connack_is_delivered_at_once():
    async def scenario():
        async def broker(reader, writer):
            await reader.read(65536)  # CONNECT
            # a resumed session: CONNACK and a queued QoS 1 message in one segment
            writer.write(encode(ConnAck(True, 0, {}), 5) + encode(Publish("cmd/x", b"hi", 1, False, 7), 5))
            await writer.drain()
            await asyncio.sleep(5)
        server = await asyncio.start_server(broker, "127.0.0.1", 0)
        got = asyncio.Event()
        conn = await MqttConnection.open("127.0.0.1", server.sockets[0].getsockname()[1], None, client_id="t",
                                         clean_start=False, on_message=lambda p: got.set(), on_lost=lambda e: None,
                                         keepalive=0)
        await asyncio.wait_for(got.wait(), 2)
        await conn.close()
        server.close()
    asyncio.run(scenario())


class FakeConnection:
    closed = False

    def __init__(self):
        self.sent = []

    async def publish(self, topic, payload, qos, retain, properties):
        self.sent.append(int(payload))
        await asyncio.sleep(0.001)
        return 0


def test_a_disconnect_while_the_rate_limiter_waits_loses_nothing(tmp_path: Path):
    async def scenario():
        bridge = IoTCoreBridge(tmp_path, "thing", lambda: {}, lambda: False)
        bridge.spool = Spool(MemoryStore())
        for i in range(150):
            bridge.spool.add(SpoolMessage("dt/x", str(i).encode(), 1))
        first = FakeConnection()
        sender = asyncio.ensure_future(bridge.send_spooled(first))
        deadline = asyncio.get_running_loop().time() + 10
        while not bridge.throttled:  # past the banked permits: the sender waits between messages
            assert asyncio.get_running_loop().time() < deadline, "the sender never waited for the rate limit"
            await asyncio.sleep(0.001)
        sender.cancel()  # what a disconnect does, while it waits
        await asyncio.gather(sender, return_exceptions=True)
        second = FakeConnection()
        sender = asyncio.ensure_future(bridge.send_spooled(second))
        deadline = asyncio.get_running_loop().time() + 10
        while len(bridge.spool) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        return first.sent + second.sent, bridge.spool.size
    sent, left = asyncio.run(scenario())
    assert set(sent) == set(range(150)) and left == 0


def test_a_peer_that_answers_garbage_does_not_stop_the_retries(tmp_path: Path):
    async def scenario():
        attempts = []

        async def garbage(reader, writer):
            attempts.append(1)
            await reader.read(1024)
            writer.write(b"\xf0\x00")  # a packet type the client cannot decode
            await writer.drain()
            await asyncio.sleep(1)
            writer.close()
        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        from localgg.iotcore.bridge import CloudSettings
        from localgg.cloud.pki import CertificateAuthority
        ca = CertificateAuthority.load_or_create(tmp_path / "pki")
        cert, key, root_ca = ca.issue_client(tmp_path, "thing")
        bridge = IoTCoreBridge(tmp_path, "thing", lambda: {"minimumReconnectDelaySeconds": 0.05,
                                                           "maximumReconnectDelaySeconds": 0.1}, lambda: False)
        settings = CloudSettings("127.0.0.1", server.sockets[0].getsockname()[1], cert, key, root_ca)
        settings.ssl_context = lambda: None  # plain TCP: the peer answers HTTP
        (tmp_path / "config").mkdir()
        await bridge.start(settings)
        for _ in range(100):
            if len(attempts) >= 3:
                break
            await asyncio.sleep(0.05)
        await bridge.stop()
        server.close()
        return len(attempts)
    assert asyncio.run(scenario()) >= 3
