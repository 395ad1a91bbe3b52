"""The Greengrass side of the store: IPC wiring around the Forwarder, one loop thread.

    runner = Runner(Ipc(), SystemClock(), work_dir=Path.cwd())
    runner.start()          # settings (configuration <- shadow desired.forward), store, subscriptions
    runner.run(stop)        # until the threading.Event `stop` is set (SIGTERM)
    runner.close()          # commit, acknowledge, report, close the database

IPC callbacks only hand messages to the inbox; the loop thread does everything else, so
SQLite is used from one thread. SubscribeToIoTCore answers only after the broker's SUBACK
(and waits while the core has never been online), so it runs on its own thread, retried
with backoff; forwarding starts once it has answered.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional

from backfill_common.access import MQTT, PUBLISH, PUBLISH_IOT, PUBSUB, SUBSCRIBE, SUBSCRIBE_IOT
from backfill_common.follow import Followed
from backfill_common.ipc import Inbox, Message, follow_shadow
from backfill_common.settings import Settings
from backfill_common.shadow_reach import ShadowReach

from .forwarder import Forwarder, expand
from .store import Store, StoreConfig

log = logging.getLogger(__name__)

SHADOW = "backfill"
SECTION = "forward"
CONFIG_SCHEMA = "config-store"
DB_FILE = "store.db"
SUBSCRIBE_RETRY_S = (1, 2, 5, 10, 30, 60)
# Confirmations (echoes, rule acks) at QoS 0: a QoS 1 delivery costs the device's PUBACK too, a
# billed message of its own over MQTT 3.1.1 (../shared/reference/iot-rules-and-lambda.md); a
# lost confirmation only means the batch is sent again (a duplicate the cloud dedupes).
CONFIRM_QOS = 0
INBOX_READINGS = 5_000           # readings queued for the loop at most: beyond, dropped and counted
# the default commit interval: any max_latency_ms goes with it (the forwarder waits at most
# max_latency_ms / 2 for a commit whatever the setting)
COMMIT_FLOOR_MS = 5000
SETTINGS_FILE = "settings.json"       # the last good settings, beside the database
ACCESS = {"corrected_topic": [(PUBSUB, SUBSCRIBE)], "ack_topic": [(PUBSUB, PUBLISH)],
          "iot_topic": [(MQTT, PUBLISH_IOT)], "dead_letter_topic": [(MQTT, PUBLISH_IOT)],
          "rule_ack_topic": [(MQTT, SUBSCRIBE_IOT)]}


class IpcPort:
    """The Forwarder's Port over the IPC adapter (backfill_common.ipc.Ipc)."""

    def __init__(self, ipc, reach: Optional[ShadowReach] = None) -> None:
        self.ipc, self.reach = ipc, reach

    def publish_ack(self, topic: str, doc: dict) -> None:
        self.ipc.publish_json(topic, doc)

    def publish_iot(self, topic: str, payload: bytes) -> None:
        self.ipc.publish_iot(topic, payload, 1)

    def report(self, section: dict) -> None:
        if self.reach is not None and not self.reach.followed:
            return        # out of reach in this deployment (said once); reported in full once in reach
        self.ipc.update_shadow(SHADOW, {"state": {"reported": {"store": section}}})


def consistent(s: dict) -> list:
    """The store's settings checked against each other: (keys, why) for each rule broken.
    (A reading too large for max_payload_bytes is dead-lettered when it is packed.)"""
    broken = []
    if s["commit_interval_ms"] > max(s["max_latency_ms"], COMMIT_FLOOR_MS):
        broken.append((("commit_interval_ms", "max_latency_ms"),
                       "a reading would wait longer for its group commit than max_latency_ms allows "
                       f"(commit_interval_ms at most max(max_latency_ms, {COMMIT_FLOOR_MS}))"))
    if s["billing_unit_bytes"] > s["max_payload_bytes"]:
        broken.append((("billing_unit_bytes", "max_payload_bytes"),
                       "a billing unit larger than a batch (billing_unit_bytes at most max_payload_bytes)"))
    return broken


class Runner:
    def __init__(self, ipc, clock, work_dir: Path, port=None) -> None:
        self.ipc, self.clock, self.work_dir = ipc, clock, Path(work_dir)
        self.reach = ShadowReach(getattr(ipc, "thing_name", "") or "", SHADOW, log)
        self.port = port if port is not None else IpcPort(ipc, self.reach)
        self.followed = Followed(Settings(CONFIG_SCHEMA, SECTION, together=consistent, access=ACCESS,
                                          thing=getattr(ipc, "thing_name", "") or "", expand=expand),
                                 log, path=self.work_dir / SETTINGS_FILE)
        self.settings = self.followed.settings
        self.inbox = Inbox()
        self.forwarder: Optional[Forwarder] = None
        self._local: set[str] = set()
        self._iot: set[str] = set()
        self._stop = threading.Event()
        self._dropped = 0
        self._refused_reported: Optional[list] = None    # None: not yet (a start reports them once)
        self._refused_retry_at = 0.0
        self._shadow_retry_at = 0.0

    def start(self) -> None:
        self.ipc.on_configuration_change(lambda: self.inbox.put(Message("config", "", {})))
        config = self._configuration({})
        change = self.followed.apply(config=config, shadow=self._follow_shadow(config))
        s = change.effective
        store = Store(StoreConfig(self.work_dir / DB_FILE, synchronous=s["synchronous"]), self.clock)
        log.info("store %s: %d readings waiting, counters %s", self.work_dir / DB_FILE, store.count, store.counters)
        self.forwarder = Forwarder(store, self.port, self.clock, s, self.ipc.thing_name)
        self._subscribe()

    def _configuration(self, fallback: Optional[dict] = None) -> Optional[dict]:
        """GetConfiguration; `fallback` when it fails (at start {}: the defaults; on a change
        None: the settings in effect stay)."""
        try:
            return self.ipc.get_configuration()
        except Exception as error:
            log.warning("could not read the configuration (%s); %s", error,
                        "using the defaults" if fallback is not None else "keeping the settings in effect")
            return fallback

    def _report_refused(self) -> int:
        """reported.refused.forward: the settings refused now, with why (null: none). Returns
        the milliseconds until it should be tried again (a failure retries in 5 s)."""
        now = self.clock.mono_ms() / 1000
        if not self.reach.followed:
            return 60_000          # reported once it is in reach (the loop runs on every message)
        if now < self._refused_retry_at:
            return 5000
        refused = list(self.followed.settings.problems)
        try:
            self.ipc.update_shadow(SHADOW, {"state": {"reported": {"refused": {SECTION: refused or None}}}})
        except Exception as error:
            self._refused_retry_at = now + 5
            self.forwarder.problems.add(f"shadow {type(error).__name__}", f"could not report refused settings: {error}")
            return 5000
        self._refused_reported = refused
        return 60_000

    def _retry_shadow(self) -> int:
        """After a transient failure to follow or read the shadow: again every 5 s."""
        now = self.clock.mono_ms() / 1000
        if now >= self._shadow_retry_at:
            self._shadow_retry_at = now + 5
            was = self.reach.followed
            shadow = self._follow_shadow(None)
            if shadow is not False:
                self._apply(shadow=shadow)
            if self.reach.followed and not was:
                self.forwarder.report_all()
        return 5000

    def _follow_shadow(self, config: Optional[dict]) -> object:
        """The shadow's document once this deployment lets us follow it (False: nothing new)."""
        return follow_shadow(self.ipc, self.reach, config,
                             lambda current: self.inbox.put(Message("shadow", "", current)))

    def _subscribe(self) -> None:
        fwd = self.forwarder
        topic = fwd.settings["corrected_topic"]
        if topic not in self._local:
            # a flood is dropped at the door (counted as overloaded): the sensor resends what is not acknowledged
            self.ipc.subscribe(topic, self.inbox.put_for("reading:" + topic, bound=INBOX_READINGS))
            self._local.add(topic)
        for iot in fwd.iot_topics():
            if iot not in self._iot:
                self._iot.add(iot)
                threading.Thread(target=self._subscribe_iot, args=(iot,), name=f"subscribe {iot}",
                                 daemon=True).start()

    def _subscribe_iot(self, topic: str) -> None:
        attempt = 0
        while not self._stop.is_set():
            answered: list = []              # a stream that was never answered closing means nothing

            def closed(answered=answered) -> None:
                if answered:
                    self.inbox.put(Message("iot-closed", topic, b""))
            try:
                self.ipc.subscribe_iot(topic, self.inbox.put_for("iot"), qos=CONFIRM_QOS, on_closed=closed)
                answered.append(True)
            except Exception as error:
                delay = SUBSCRIBE_RETRY_S[min(attempt, len(SUBSCRIBE_RETRY_S) - 1)]
                log.warning("SubscribeToIoTCore %s failed (%s); retrying in %s s", topic, error, delay)
                attempt += 1
                self._stop.wait(delay)
                continue
            log.info("subscribed to %s on IoT Core", topic)
            self.inbox.put(Message("iot-subscribed", topic, b""))
            return

    def run(self, stop: threading.Event) -> None:
        fwd = self.forwarder
        delay = 0
        while not stop.is_set():
            message = self.inbox.get(timeout=delay / 1000.0)
            if self.inbox.dropped != self._dropped:        # only the IPC thread adds to it; we only read
                dropped = self.inbox.dropped
                fwd.overloaded(dropped - self._dropped)
                self._dropped = dropped
            try:
                if message is not None:
                    self.step(message)
                delay = fwd.tick()
                if self.reach.pending:
                    delay = min(delay, self._retry_shadow())
                if self.followed.settings.problems != self._refused_reported:
                    delay = min(delay, self._report_refused())
            except Exception as error:     # a bug must not stop the component: counted, logged once per kind
                fwd.problems.add(f"loop {type(error).__name__}", f"the loop failed: {error!r}")
                log.debug("loop failure", exc_info=True)
                delay = 1000
        self._stop.set()

    def step(self, message: Message) -> None:
        fwd = self.forwarder
        if message.tag.startswith("reading:"):
            if message.tag[8:] == fwd.settings["corrected_topic"]:
                fwd.on_reading(message.topic, message.payload)
        elif message.tag == "iot":
            fwd.on_iot(message.topic, message.payload)
        elif message.tag == "iot-subscribed":
            fwd.iot_subscribed(message.topic)
        elif message.tag == "iot-closed":      # no more confirmations would come: subscribe again
            log.warning("the SubscribeToIoTCore stream of %s closed; subscribing again", message.topic)
            fwd.iot_unsubscribed(message.topic)
            self._iot.discard(message.topic)
            if not self._stop.is_set():
                self._subscribe()
        elif message.tag == "config":
            config = self._configuration()
            if config is not None:
                was = self.reach.followed
                self._apply(config=config, shadow=self._follow_shadow(config))
                if self.reach.followed and not was:
                    self.forwarder.report_all()
        elif message.tag == "shadow":
            self._apply(shadow=message.payload)
        elif message.tag == "stop":
            self._stop.set()

    def _apply(self, config: Optional[dict] = None, shadow: object = False) -> None:
        change = self.followed.apply(config=config, shadow=shadow)
        if change.changed:
            log.info("settings changed (%s)", ", ".join(sorted(change.changed)))
            self.forwarder.configure(change.effective)
            self._subscribe()

    def close(self) -> None:
        self._stop.set()
        if self.forwarder is not None:
            self.forwarder.close()


__all__ = ["Runner", "IpcPort", "expand"]
