"""The core's connection to IoT Core: the nucleus's MqttClient, spooler loop and subscriptions.

Usage (the kernel owns one)::

    bridge = IoTCoreBridge(root, "my-thing", mqtt_config=lambda: {...}, disk_spooler_deployed=lambda: False)
    await bridge.start(CloudSettings(host, port, cert, key, ca))   # None: configured offline
    await bridge.publish("dt/x", b"...", qos=1)     # returns once SPOOLED, not once IoT Core has it
    handle = await bridge.subscribe("cmd/#", 1, deliver)   # returns after SUBACK
    handle.cancel()

Rules (MqttClient.java, Spool.java, AwsIotMqtt5Client.java; docs/mqtt-spool.md):
- PublishToIoTCore succeeds as soon as the message is in the spool; QoS 0 while offline
  (including before the first connection) fails "Device is offline. Dropping QoS 0
  message."; on disconnect, queued QoS 0 messages are dropped unless keepQos0WhenOffline;
- one sender loop while online: up to `maxInFlightPublishes` (5) publishes at once, a
  client-side limit of 100 publishes/s and 512 KiB/s (hard-coded in the nucleus); a
  PUBACK (or reason 16, no subscribers) removes the message; reasons 135/144/153 drop
  it; anything else, a timeout (`operationTimeoutMs`, 30 s) or a lost connection puts it
  back at the FRONT, up to `maxPublishRetry` (100; -1 unlimited) more times;
- in-flight operations fail when the connection drops (the CRT's FAIL_ALL_ON_DISCONNECT);
- reconnect with exponential backoff and jitter between `minimumReconnectDelaySeconds` (1)
  and `maximumReconnectDelaySeconds` (120), reset after 30 s connected; the first
  connection of a run is a clean session, later ones rejoin it; without a session the
  subscriptions are made again;
- the certificate, key and CA files are read once per MQTT client, not per connection:
  every reconnection after a link flap uses the loaded pair (see `_client_tls`);
- SubscribeToIoTCore answers after SUBACK; a topic an existing subscription covers
  answers at once; before the first connection it waits; offline after that it fails.
- storageType Disk with aws.greengrass.DiskSpooler deployed keeps the spool in
  `work/aws.greengrass.DiskSpooler/spooler.db`; the memory spool dies with the process.
  What it held when the core stopped, gracefully or killed, is logged when the next core
  starts and counted in `status()["spool"]["lostAtRestart"]` (a localgg addition: the
  nucleus says nothing; `config/memory-spool.ledger`, `config/spool-lost.json`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..mqtt.client import ConnectionLost, MqttConnection
from ..mqtt.codec import Publish
from . import topics
from .link import Link
from .spool import DEFAULT_MAX_SIZE, Ledger, MemoryStore, Spool, SpoolError, SpoolMessage, SqliteStore

log = logging.getLogger("localgg.iotcore")

NON_RETRYABLE = {135, 144, 153}  # NOT_AUTHORIZED, TOPIC_NAME_INVALID, PAYLOAD_FORMAT_INVALID
SUCCESS_CODES = {0, 16}          # SUCCESS, NO_MATCHING_SUBSCRIBERS
SUBACK_NAMES = {0x80: "UNSPECIFIED_ERROR", 0x83: "IMPLEMENTATION_SPECIFIC_ERROR", 0x87: "NOT_AUTHORIZED",
                0x8F: "TOPIC_FILTER_INVALID", 0x91: "PACKET_IDENTIFIER_IN_USE", 0x97: "QUOTA_EXCEEDED",
                0x9E: "SHARED_SUBSCRIPTIONS_NOT_SUPPORTED", 0xA1: "SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED",
                0xA2: "WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED"}
RATE_MESSAGES = 100.0           # per second, per connection (AwsIotMqtt5Client)
RATE_BYTES = 512 * 1024.0       # payload bytes per second, per connection
DISK_SPOOLER = "aws.greengrass.DiskSpooler"

DEFAULTS = {"maxInFlightPublishes": 5, "maxMessageSizeInBytes": 131072, "maxPublishRetry": 100,
            "minimumReconnectDelaySeconds": 1.0, "maximumReconnectDelaySeconds": 120.0,
            "minimumConnectedTimeBeforeRetryResetSeconds": 30.0, "keepAliveTimeoutMs": 60000,
            "operationTimeoutMs": 30000,
            "spooler": {"storageType": "Memory", "maxSizeInBytes": DEFAULT_MAX_SIZE, "keepQos0WhenOffline": False}}


class PublishError(Exception):
    """The text after "Publish to topic T failed: "."""


class SubscribeError(Exception):
    """The text after "Subscribe to topic T failed with error "."""


@dataclass
class CloudSettings:
    host: str
    port: int
    cert: Path
    key: Path
    ca: Path
    mqtt: str = "mqtt5"   # what the broker speaks; the Nucleus's mqtt.version wins when set

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context from the files as they are now (reads them)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


@dataclass(eq=False)
class LocalSubscription:
    topic: str
    deliver: Callable[[dict], None]
    bridge: "IoTCoreBridge | None" = field(default=None, repr=False)

    def cancel(self) -> None:
        if self.bridge is not None:
            bridge, self.bridge = self.bridge, None
            bridge._unsubscribe_local(self)


class SmoothRateLimiter:
    """Guava's SmoothBursty RateLimiter, as the nucleus's client uses it: permits flow at
    `rate` per second, and up to one second's worth is banked while idle. `reserve(n)`
    returns how long to wait first; the caller after a big request pays for it."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.max_stored = rate * 1.0
        self.stored = 0.0
        self._next_free = clock()

    def reserve(self, permits: float) -> float:
        now = self.clock()
        if now > self._next_free:
            self.stored = min(self.max_stored, self.stored + (now - self._next_free) * self.rate)
            self._next_free = now
        wait = self._next_free - now
        from_store = min(permits, self.stored)
        self.stored -= from_store
        self._next_free += (permits - from_store) / self.rate
        return wait


def _mqtt_message(packet: Publish) -> dict:
    """The IoTCoreMessage event body: payloadFormat and retain always present."""
    props = packet.properties
    message = {"topicName": packet.topic, "payload": base64.b64encode(packet.payload).decode(),
               "retain": packet.retain, "payloadFormat": "1" if props.get("payload_format_indicator") == 1 else "0"}
    if props.get("user_property"):
        message["userProperties"] = [{"key": k, "value": v} for k, v in props["user_property"]]
    for name, key in (("message_expiry_interval", "messageExpiryIntervalSeconds"), ("response_topic", "responseTopic"),
                      ("content_type", "contentType")):
        if name in props:
            message[key] = props[name]
    if "correlation_data" in props:
        message["correlationData"] = base64.b64encode(props["correlation_data"]).decode()
    return {"message": message}


class IoTCoreBridge:
    def __init__(self, root: Path, thing_name: str, mqtt_config: Callable[[], dict],
                 disk_spooler_deployed: Callable[[], bool]) -> None:
        self.root = root
        self.thing_name = thing_name
        self._mqtt_config = mqtt_config
        self._disk_spooler_deployed = disk_spooler_deployed
        self.settings: CloudSettings | None = None
        self.link: Link | None = None
        self.spool: Spool | None = None
        self.online = False
        self.connections = 0
        self.stats = {"spooled": 0, "acked": 0, "dropped": 0, "retried": 0, "throttled": 0}
        self.throttled = False  # the sender waits for the client-side rate limit right now
        self.lost_at_restart = {"last": 0, "lastBytes": 0, "total": 0}
        self._conn: MqttConnection | None = None
        self._tls: ssl.SSLContext | None = None   # the MQTT client's, made from the files once: _client_tls
        self.failed_connects = 0
        self._connected_once: asyncio.Event | None = None
        self._work = asyncio.Event()       # something was spooled: the sender looks again
        self._lost: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._cloud_subs: dict[str, int] = {}
        self._local: list[LocalSubscription] = []
        self._listeners: list[Callable[[bool], None]] = []
        self._stopping = False
        self._rates = (SmoothRateLimiter(RATE_MESSAGES), SmoothRateLimiter(RATE_BYTES))

    # -- configuration -------------------------------------------------------------------

    def config(self) -> dict:
        merged = dict(DEFAULTS)
        given = self._mqtt_config() or {}
        merged.update({k: v for k, v in given.items() if k != "spooler"})
        merged["spooler"] = {**DEFAULTS["spooler"], **(given.get("spooler") or {})}
        return merged

    def _number(self, key: str, low: float, high: float | None = None) -> float:
        value = self.config().get(key, DEFAULTS[key])
        try:
            value = float(value)
        except (TypeError, ValueError):
            log.warning("mqtt.%s=%r is not a number; using %s", key, value, DEFAULTS[key])
            return float(DEFAULTS[key])
        if value < low or (high is not None and value > high):
            clamped = max(low, value if high is None else min(high, value))
            log.warning("mqtt.%s=%s is outside %s..%s; using %s", key, value, low, high, clamped)
            return clamped
        return value

    @property
    def configured(self) -> bool:
        return self.settings is not None

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """`listener(online)` on every connect and disconnect."""
        self._listeners.append(listener)

    # -- start and stop ------------------------------------------------------------------

    async def start(self, settings: CloudSettings | None) -> None:
        self.settings = settings
        self._connected_once = asyncio.Event()
        spooler = self.config()["spooler"]
        self._count_lost_at_restart()
        if str(spooler.get("storageType")) == "Disk" and self._disk_spooler_deployed():
            store = SqliteStore(self.root / "work" / DISK_SPOOLER / "spooler.db")
            (self.root / "config" / "memory-spool.ledger").unlink(missing_ok=True)
        else:
            if str(spooler.get("storageType")) == "Disk":
                log.warning("storageType Disk but %s is not deployed: using the memory spool", DISK_SPOOLER)
            store = MemoryStore(Ledger(self.root / "config" / "memory-spool.ledger"))
        self.spool = Spool(store, int(spooler.get("maxSizeInBytes", DEFAULT_MAX_SIZE)))
        if settings is None:
            return
        self.link = Link(settings.host, settings.port, self.root / "config" / "link.json")
        await self.link.start()
        self._tasks = [asyncio.ensure_future(self._connection_loop())]

    def _count_lost_at_restart(self) -> None:
        """What the previous run's memory spool held when that core ended: it is gone."""
        record = self.root / "config" / "spool-lost.json"
        try:
            self.lost_at_restart.update(json.loads(record.read_text()))
        except (OSError, ValueError):
            pass
        messages, size = Ledger.read(self.root / "config" / "memory-spool.ledger")
        self.lost_at_restart.update(last=messages, lastBytes=size, total=self.lost_at_restart["total"] + messages)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(self.lost_at_restart))
        if messages:
            log.warning("The memory spool lost %d messages (%d bytes) that never reached IoT Core when the core "
                        "stopped (spooler.storageType Memory; with Disk and %s deployed they are kept)",
                        messages, size, DISK_SPOOLER)

    async def stop(self) -> None:
        self._stopping = True  # asyncio.wait_for (< 3.12) can swallow a cancellation: the loop checks this too
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
        if self.link is not None:
            await self.link.stop()
        if self.spool is not None:
            if not self.spool.store.persistent and len(self.spool):
                log.warning("Stopping: the memory spool loses %d messages (%d bytes) not yet acknowledged by IoT Core",
                            len(self.spool), self.spool.size)
            self.spool.close()

    # -- connection ----------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        attempt = 0
        clean_start = True
        while not self._stopping:
            try:
                conn = await MqttConnection.open(
                    "127.0.0.1", self.link.port, self._client_tls(), client_id=self.thing_name,
                    clean_start=clean_start, on_message=self._on_message, on_lost=self._on_lost,
                    keepalive=int(self._number("keepAliveTimeoutMs", 0) / 1000),  # 0: no keep-alive
                    version=4 if self._mqtt_version() == "mqtt3" else 5, server_hostname=self.settings.host)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, TLS, timeouts, a peer that does not speak MQTT...
                self.failed_connects += 1
                if self._mqtt_version() == "mqtt3" and not self._connected_once.is_set():
                    self._tls = None  # MQTT 3: a connect that fails discards the client (see _client_tls)
                delay = self.backoff(attempt)
                attempt += 1
                log.info("connecting to IoT Core failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                await conn.close()
                return
            clean_start = False
            connected_at = time.monotonic()
            self._conn, self.online = conn, True
            self.connections += 1
            self._lost = asyncio.Event()
            log.info("connected to IoT Core (session present: %s)", conn.session_present)
            if not conn.session_present:
                await self._resubscribe(conn)
            self._connected_once.set()
            self._notify(True)
            sender = asyncio.ensure_future(self.send_spooled(conn))
            try:
                await self._lost.wait()
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            self.online = False
            if not self.config()["spooler"].get("keepQos0WhenOffline"):
                dropped = self.spool.drop_qos0()
                if dropped:
                    log.info("The spooler is configured to drop QoS 0 when offline. Dropped %d messages", dropped)
            self._notify(False)
            if time.monotonic() - connected_at >= self._number("minimumConnectedTimeBeforeRetryResetSeconds", 0):
                attempt = 0
            delay = self.backoff(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _client_tls(self) -> ssl.SSLContext:
        """The TLS context of the core's MQTT client, read from the certificate files once.

        The nucleus reads the files when it builds a client, not per connection:
        MqttClient's builderProvider calls SecurityService.getDeviceIdentityMqttConnectionBuilder
        (AwsIotMqttConnectionBuilder.newMtlsBuilderFromPath, which loads cert and key), and
        AwsIotMqtt5Client.internalConnect builds its Mqtt5Client once (`if (client != null)
        return`); the CRT client then reconnects by itself with that TLS context, after any link
        flap, for the client's life. MQTT 3 (AwsIotMqttClient.connect/establishConnection) is the
        same once connected ("the SDK would reconnect for us"), but a connect that fails calls
        connectionCleanup and the next attempt builds anew, so until the first connection each
        attempt reads the files. A new client (new files read) comes only with a new core, or
        with the reconnect() the nucleus does ~1 s after a change to system.certificateFilePath,
        privateKeyPath, rootCaPath, thingName, iotDataEndpoint or any mqtt key (the MqttClient
        constructor's deviceConfiguration.onAnyChange): localgg has the restart, not that
        reconnect (docs/mqtt-spool.md 24). A context that cannot be made is tried again."""
        if self._tls is None:
            self._tls = self.settings.ssl_context()
        return self._tls

    def _mqtt_version(self) -> str:
        return str(self._mqtt_config().get("version") or self.settings.mqtt)

    def backoff(self, attempt: int) -> float:
        """The wait before reconnection attempt `attempt` (0 first): random, between the configured
        minimumReconnectDelaySeconds and that doubled each attempt, capped by maximumReconnectDelaySeconds."""
        low = self._number("minimumReconnectDelaySeconds", 0.0)
        high = max(low, self._number("maximumReconnectDelaySeconds", 0.0))
        ceiling = min(high, low * (2 ** min(attempt, 20)))
        return random.uniform(low, max(low, ceiling))

    def _on_lost(self, error: Exception | None) -> None:
        log.info("connection to IoT Core lost: %s", error)
        if self._lost is not None:
            self._lost.set()

    def _notify(self, online: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(online)
            except Exception:
                log.exception("connection listener failed")

    async def _resubscribe(self, conn: MqttConnection) -> None:
        for topic, qos in list(self._cloud_subs.items()):
            try:
                codes = await conn.subscribe(topic, qos)
                if codes and codes[0] > 2:
                    log.warning("resubscribing to %s failed with %s", topic, SUBACK_NAMES.get(codes[0], codes[0]))
            except ConnectionLost:
                return

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                      properties: dict | None = None) -> None:
        """Spool a message. Raises PublishError (the nucleus's texts)."""
        if not self.configured:
            raise PublishError("Cannot publish because device is configured to run offline")
        limit = int(self._number("maxMessageSizeInBytes", 0, 268435456))
        if len(payload) > limit:
            raise PublishError(f"The publishing message size {len(payload)} bytes exceeds the configured limit "
                               f"of {limit} bytes")
        try:
            topics.validate(topic, publish=True)
        except topics.TopicError as exc:
            raise PublishError(str(exc)) from exc
        spooler = self.config()["spooler"]
        if not self.online and qos == 0 and not spooler.get("keepQos0WhenOffline"):
            raise PublishError("Device is offline. Dropping QoS 0 message.")
        self.spool.max_size = int(spooler.get("maxSizeInBytes", DEFAULT_MAX_SIZE))
        try:
            self.spool.add(SpoolMessage(topic, payload, qos, retain, properties or {}))
        except SpoolError as exc:
            raise PublishError(str(exc)) from exc
        self.stats["spooled"] += 1
        self._work.set()

    async def send_spooled(self, conn: MqttConnection) -> None:
        """Publish what the spool holds over `conn`, within the rate limits, until it closes or the
        task is cancelled (as a disconnect does)."""
        in_flight: set[asyncio.Task] = set()
        try:
            while not conn.closed:
                limit = int(self._number("maxInFlightPublishes", 1, 100))
                if len(in_flight) >= limit:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                message = self.spool.pop()
                if message is None:
                    self._work.clear()
                    await self._work.wait()
                    continue
                wait = max(self._rates[0].reserve(1), self._rates[1].reserve(len(message.payload)))
                if wait:
                    self.throttled = True
                    self.stats["throttled"] += 1
                    try:
                        await asyncio.sleep(wait)
                    except asyncio.CancelledError:
                        self.spool.requeue(message)  # popped but never sent: it stays first in line
                        raise
                    finally:
                        self.throttled = False
                task = asyncio.ensure_future(self._send_one(conn, message))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _send_one(self, conn: MqttConnection, message: SpoolMessage) -> None:
        timeout = self._number("operationTimeoutMs", 1) / 1000
        code: int | None = None
        try:
            code = await asyncio.wait_for(conn.publish(message.topic, message.payload, message.qos, message.retain,
                                                       message.properties), timeout)
        except (ConnectionLost, asyncio.TimeoutError, OSError):
            code = None
        except asyncio.CancelledError:
            code = None
        if code in SUCCESS_CODES:
            self.spool.remove(message.id)
            self.stats["acked"] += 1
        elif code in NON_RETRYABLE:
            log.warning("Publishing message got a non-retryable reason code %s, not retrying", code)
            self.spool.remove(message.id)
            self.stats["dropped"] += 1
        else:
            retries = int(self._number("maxPublishRetry", -1))
            if retries == -1 or message.retried < retries:
                self.spool.requeue(replace(message, retried=message.retried + 1))
                self.stats["retried"] += 1
            else:
                log.warning("Failed to publish the message via Spooler after retried %d times and will drop "
                            "the message", message.retried)
                self.spool.remove(message.id)
                self.stats["dropped"] += 1
        self._work.set()

    # -- subscribing ---------------------------------------------------------------------

    async def subscribe(self, topic: str, qos: int, deliver: Callable[[dict], None]) -> LocalSubscription:
        """Raises SubscribeError (the text after "failed with error ")."""
        if not self.configured:
            raise SubscribeError("com.aws.greengrass.mqttclient.MqttRequestException: "
                                 "Device is not configured to connect to AWS")
        try:
            topics.validate(topic, publish=False)
        except topics.TopicError as exc:
            raise SubscribeError(f"com.aws.greengrass.mqttclient.MqttRequestException: {exc}") from exc
        if not any(topics.covers(existing, topic) for existing in self._cloud_subs):
            if not self._connected_once.is_set():
                await self._connected_once.wait()
            conn = self._conn
            if not self.online or conn is None or conn.closed:
                raise SubscribeError("java.util.concurrent.CompletionException: software.amazon.awssdk.crt.mqtt5."
                                     "Mqtt5Exception: AWS_ERROR_MQTT5_OPERATION_FAILED_DUE_TO_OFFLINE_QUEUE_POLICY")
            try:
                codes = await conn.subscribe(topic, qos)
            except ConnectionLost as exc:
                raise SubscribeError(f"java.util.concurrent.CompletionException: {exc}") from exc
            if not codes or codes[0] > 2:
                code = codes[0] if codes else 0x80
                raise SubscribeError(SUBACK_NAMES.get(code, "UNSPECIFIED_ERROR"))
            self._cloud_subs[topic] = qos
        local = LocalSubscription(topic, deliver, self)
        self._local.append(local)
        return local

    def _unsubscribe_local(self, local: LocalSubscription) -> None:
        if local in self._local:
            self._local.remove(local)
        for cloud_topic in list(self._cloud_subs):
            if not any(topics.covers(cloud_topic, sub.topic) for sub in self._local):
                del self._cloud_subs[cloud_topic]
                if self.online and self._conn is not None and not self._conn.closed:
                    asyncio.ensure_future(self._quiet_unsubscribe(self._conn, cloud_topic))

    @staticmethod
    async def _quiet_unsubscribe(conn: MqttConnection, topic: str) -> None:
        try:
            await conn.unsubscribe(topic)
        except ConnectionLost:
            pass

    def _on_message(self, packet: Publish) -> None:
        matched = [s for s in self._local if topics.covers(s.topic, packet.topic)]
        if not matched:
            log.info("Somehow got message from topic that no one subscribed to: %s", packet.topic)
            return
        body = _mqtt_message(packet)
        for sub in matched:
            try:
                sub.deliver(body)
            except Exception:
                log.exception("delivering a message on %s failed", packet.topic)

    @property
    def cloud_subscriptions(self) -> list[str]:
        """The filters subscribed to on IoT Core for the local subscribers, sorted."""
        return sorted(self._cloud_subs)

    def status(self) -> dict:
        spool = self.spool  # an empty Spool is falsy (it has a length): compare with None
        return {"configured": self.configured, "online": self.online, "connections": self.connections,
                "failedConnects": self.failed_connects,
                "spool": {"messages": len(spool) if spool is not None else 0,
                          "bytes": spool.size if spool is not None else 0,
                          "storage": "Disk" if spool is not None and spool.store.persistent else "Memory",
                          "lostAtRestart": dict(self.lost_at_restart)},
                **self.stats, "link": self.link.status() if self.link else None}
