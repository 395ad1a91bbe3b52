"""The Greengrass side of the correction: raw readings in, corrected readings out.

    runner = Runner(Ipc())
    runner.start()          # settings from configuration + shadow, subscriptions, first report
    runner.run(stop)        # until the threading.Event `stop` is set

Settings: the schema's defaults <- the deployment configuration <- the `backfill` shadow's
desired.correction, followed live (configuration updates, the shadow's update/documents);
a bad value is refused with its key and allowed range and the last good one stays. What is
in effect is reported under reported.correction.

A message that breaks its contract is counted per kind and logged the first time its kind
appears; nothing a message carries can stop the loop. A correction that leaves the contract
(parameters that give an impossible temperature) publishes the reading uncorrected
(correction "none") so that delivery never stalls on it. The runner holds no state that
delivery depends on: the sensor resends what the store has not acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from pathlib import Path

from backfill_common.access import PUBLISH, PUBSUB, SUBSCRIBE
from backfill_common.follow import Followed
from backfill_common.ipc import Inbox, Message, read_configuration, refused
from backfill_common.problems import Problems
from backfill_common.settings import Settings
from backfill_common.shadow_reach import ShadowReach

from . import handler as lambda_handler
from .correction import Corrector

log = logging.getLogger(__name__)

SHADOW = "backfill"
SECTION = "correction"
CONFIG_SCHEMA = "config-correction"
RETRY_S = 5.0
INBOX_READINGS = 5_000      # raw readings queued at most: beyond, dropped and counted (the sensor resends)
ACCESS = {"raw_topic": [(PUBSUB, SUBSCRIBE)], "corrected_topic": [(PUBSUB, PUBLISH)]}


class Runner:
    """Wires the IPC adapter (or a fake with the same methods) to the Lambda handler.

    `corrector` defaults to the handler module's own (the one `handler()` and `configure()` use);
    `clock` (monotonic seconds) paces the retries of a failed shadow read or report."""

    def __init__(self, ipc, corrector: Optional[Corrector] = None,
                 clock: Callable[[], float] = time.monotonic, settings_path: Optional[Path] = None) -> None:
        self.ipc = ipc
        self.corrector = corrector if corrector is not None else lambda_handler.current()
        self.clock = clock
        self.inbox = Inbox()
        self.problems = Problems(log)
        self.followed = Followed(Settings(CONFIG_SCHEMA, SECTION, access=ACCESS,
                                          thing=getattr(ipc, "thing_name", "") or ""),
                                 log, self.problems, settings_path)   # last good values: settings_path
        self.settings = self.followed.settings
        self.reach = ShadowReach(getattr(ipc, "thing_name", "") or "", SHADOW, log)
        self.corrected = 0
        self._subscribed: set[str] = set()
        self._shadow_pending = False      # GetThingShadow still owed (it failed at start)
        self._report_pending = False      # reported.correction not yet up to date
        self._refused_reported: list = [] # the refused settings the shadow was last told of
        self._retry_at = 0.0
        self._config_pending = False      # GetConfiguration failed: the settings in effect stay
        self._dropped = 0                 # inbox.dropped already counted as a problem

    # -- wiring --------------------------------------------------------------------------
    def start(self) -> None:
        """Follow configuration and shadow first (so no change is missed), read both, apply,
        subscribe to the raw topic and report what is in effect."""
        self.ipc.on_configuration_change(lambda: self.inbox.put(Message("config", "", {})))
        self._apply(config=self._read_configuration())     # follows the shadow when in reach
        self._report_pending = True
        self.maintain()
        log.info("correcting %s -> %s with %s", self.settings.effective["raw_topic"],
                 self.settings.effective["corrected_topic"], self._parameters())

    def run(self, stop: threading.Event) -> None:
        """Handle messages until `stop` is set."""
        while not stop.is_set():
            message = self.inbox.get(timeout=1.0)
            dropped = self.inbox.dropped               # only the IPC thread adds to it
            if dropped != self._dropped:
                self.problems.add("overloaded", f"a flood on the raw topic: readings beyond {INBOX_READINGS:,} "
                                  "waiting were dropped (the sensor sends them again)", dropped - self._dropped)
                self._dropped = dropped
            if message is None:
                self.problems.survive("upkeep", self.maintain)
            else:
                self.problems.survive(f"handling {message.tag.split(':')[0]}", self.step, message)
        if self.problems.counts:
            log.info("problems counted: %s", dict(self.problems.counts))

    def step(self, message: Message) -> None:
        """Handle one message from the inbox (readings, configuration and shadow changes)."""
        if message.tag == "config":
            config = self._read_configuration()
            if config is not None:
                self._apply(config=config)
        elif message.tag == "shadow":
            self._shadow_pending = False          # newer than what a pending read would give
            self._apply(shadow=message.payload)
        elif message.tag.startswith("raw:"):
            # an old subscription after a raw_topic change is still open: ignore its messages
            if message.tag[4:] == self.settings.effective["raw_topic"]:
                self.on_reading(message.payload)
        self.maintain()

    def maintain(self) -> None:
        """Read the shadow if that is still owed, then report if that is owed; after a failure,
        try again RETRY_S later (ShadowManager limits the requests per second)."""
        if self.problems.to_report(self.clock()) is not None:
            self._report_pending = True
        unfollowed = not self.reach.followed and self.reach.pending      # a transient failure
        owed = self._shadow_pending or self._report_pending or self._config_pending or unfollowed
        if owed and self.clock() >= self._retry_at:
            if self._config_pending:
                config = self._read_configuration()
                if config is not None:
                    self._apply(config=config)
            if unfollowed:
                self._follow(None)
            still = not self.reach.followed and self.reach.pending
            if not (self._read_shadow() and self._report()) or self._config_pending or still:
                self._retry_at = self.clock() + RETRY_S

    # -- readings ------------------------------------------------------------------------
    def on_reading(self, payload: object) -> None:
        """Correct one raw reading and publish it; problems are counted, never raised."""
        try:
            out = lambda_handler.correct_event(payload, self.corrector)
        except lambda_handler.InvalidReading as error:
            self.problems.add(error.kind, f"dropped a message that is not a raw reading: {error}")
            return
        except lambda_handler.OutOfContract as error:
            self.problems.add(error.kind, f"published uncorrected, {error}; parameters {self._parameters()}")
            out = error.passthrough
        except Exception as error:  # a bug must not stop the component: count it, keep going
            self.problems.add(f"handler {type(error).__name__}", f"the handler failed: {error!r}")
            log.debug("handler failure", exc_info=True)
            return
        topic = self.settings.effective["corrected_topic"]
        try:
            self.ipc.publish_json(topic, out)
        except Exception as error:   # the sensor resends what the store has not acknowledged
            self.problems.add(f"publish {type(error).__name__}", f"could not publish on {topic}: {describe(error)}")
            return
        self.corrected += 1

    # -- settings ------------------------------------------------------------------------
    def _apply(self, config: Optional[dict] = None, shadow: object = False) -> None:
        change = self.followed.apply(config=config, shadow=shadow)
        if self.settings.problems != self._refused_reported:
            self._report_pending = True   # the cloud learns which setting was refused, and why
            self._retry_at = 0.0
        for refusal in self.corrector.update(change.effective):
            log.warning("parameter refused by the corrector: %s", refusal)
        topic = change.effective["raw_topic"]
        if topic not in self._subscribed:
            self.ipc.subscribe(topic, self.inbox.put_for("raw:" + topic, bound=INBOX_READINGS))
            self._subscribed.add(topic)
        if change.changed:
            log.info("settings changed (%s): now %s", ", ".join(sorted(change.changed)), change.effective)
            self._report_pending = True
            self._retry_at = 0.0

    def _read_configuration(self) -> Optional[dict]:
        """GetConfiguration, or None (counted, read again at the next upkeep) when it fails."""
        config = read_configuration(self.ipc, self.problems)
        self._config_pending = config is None
        self._report_pending = self._report_pending or config is None     # the problem goes in the shadow
        self._follow(config)
        return config

    def _follow(self, config: Optional[dict]) -> None:
        """Follow the shadow's documents once this deployment lets us (backfill_common.shadow_reach);
        out of reach, said once, and the component runs on its configuration alone."""
        if not self.reach.check(config) or self.reach.followed:
            return
        try:
            self.ipc.on_shadow_document(SHADOW, lambda current: self.inbox.put(Message("shadow", "", current)))
        except Exception as error:      # never the end of the component
            if refused(error):
                self.reach.refused(describe(error))
            else:                       # transient: maintain() tries again RETRY_S later
                self.reach.failed(describe(error))
            return
        self.reach.followed = True
        self.reach.succeeded()
        self._shadow_pending = self._report_pending = True

    def _read_shadow(self) -> bool:
        """Apply desired.correction from GetThingShadow, if that is owed. False when it failed."""
        if not (self._shadow_pending and self.reach.followed):
            return True
        try:
            document = self.ipc.get_shadow(SHADOW)
        except Exception as error:
            self.problems.add(f"shadow read {type(error).__name__}",
                              f"could not read the {SHADOW} shadow ({describe(error)}); using the configuration "
                              f"until it can be read")
            return False
        self._shadow_pending = False
        self._apply(shadow=document)
        return True

    def _report(self) -> bool:
        """Report the settings in effect under reported.correction, if owed. False when it failed."""
        if not (self._report_pending and self.reach.followed):
            return True
        now = self.clock()
        problems = self.problems.to_report(now)
        refused = list(self.settings.problems)
        reported: dict = {SECTION: dict(self.settings.effective), "refused": {SECTION: refused or None}}
        if problems is not None:
            reported["problems"] = {"correction": problems}
        try:
            self.ipc.update_shadow(SHADOW, {"state": {"reported": reported}})
        except Exception as error:
            self.problems.add(f"shadow report {type(error).__name__}",
                              f"could not report reported.{SECTION} (retrying): {describe(error)}")
            return False
        self._report_pending, self._refused_reported = False, refused
        if problems is not None:
            self.problems.reported(problems, now)
        return True

    def _parameters(self) -> dict:
        effective = self.settings.effective
        return {key: effective[key] for key in ("method", "factor", "window", "a", "b", "c") if key in effective}


def describe(error: Exception) -> str:
    """An exception as text; awsiot's errors keep theirs in `message` and print as ''."""
    return f"{type(error).__name__}: {getattr(error, 'message', None) or error}"

