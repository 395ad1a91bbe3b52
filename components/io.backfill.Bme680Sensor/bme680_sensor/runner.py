"""The Greengrass side of the sensor: the sampling loop, publishing, acknowledgements, settings.

    runner = Runner(Ipc(), SystemClock())
    runner.start()          # settings from configuration + shadow, subscriptions, first report
    runner.run(stop)        # until the threading.Event `stop` is set

Each slot's reading is checked against the reading-raw contract, held until the store
acknowledges it (backfill/acks) and published on raw_topic with the current held_from; when
the acknowledgement stops advancing for resend_after_s everything held is published again,
oldest first. Settings: the schema's defaults <- deployment configuration <- the `backfill`
shadow's desired.sampling, followed live (interval_s from the next slot on; bus settings
re-open the sensor); what is in effect is reported under reported.sampling.

The log stays short: a sensor fault once per change of status, a kind of problem the first
time it appears (then it is counted).
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Callable, Optional

from pathlib import Path

from backfill_common import contracts
from backfill_common.access import PUBLISH, PUBSUB, SUBSCRIBE
from backfill_common.follow import Followed
from backfill_common.ipc import Inbox, Message, follow_shadow, read_configuration
from backfill_common.problems import Problems
from backfill_common.settings import Settings
from backfill_common.shadow_reach import ShadowReach

from . import cpu, device
from .sampler import Sampler
from .simclock import OffsetClock
from .journal import Journal
from .unacked import Unacked

log = logging.getLogger(__name__)

SHADOW = "backfill"
SECTION = "sampling"
CONFIG_SCHEMA = "config-sensor"
VALUE_KEYS = ("temperature", "humidity", "pressure", "gas_resistance", "heat_stable")
IDLE_S = 1.0
JOURNAL_SLACK = 200             # lines beyond what is held before the journal is compacted
CONFIG_RETRY_S = 5.0            # a failed GetConfiguration is tried again this often
ACCESS = {"raw_topic": [(PUBSUB, PUBLISH)], "ack_topic": [(PUBSUB, SUBSCRIBE)]}


class Runner:
    """Wires the IPC adapter (or a fake with its methods) and a clock to the sampler.

    `opener(settings, wall_ms)` and `cpu_source(settings)` build the sensor opener and the
    CPU temperature source from the effective settings (device.opener, cpu.source)."""

    def __init__(self, ipc, clock, run: Optional[str] = None,
                 opener: Callable = device.opener, cpu_source: Callable = cpu.source,
                 journal: Optional[Journal] = None, settings_path: Optional[Path] = None) -> None:
        self.ipc = ipc
        self.clock = OffsetClock(clock)     # simulation only: sim_clock_offset_s (0: the clock as given)
        self.run_id = run or secrets.token_hex(8)   # 64 bits: a device never draws one twice
        self.device = getattr(ipc, "thing_name", "") or "unknown-device"
        self.make_opener, self.make_cpu = opener, cpu_source
        self.inbox = Inbox()
        self.problems = Problems(log)
        self.followed = Followed(Settings(CONFIG_SCHEMA, SECTION, access=ACCESS, thing=self.device),
                                 log, self.problems, settings_path)   # last good values: settings_path
        self.settings = self.followed.settings
        self.reach = ShadowReach(getattr(ipc, "thing_name", "") or "", SHADOW, log)
        self.sampler: Optional[Sampler] = None
        self.unacked: Optional[Unacked] = None
        self.journal = journal                 # held readings on disk (None: memory only)
        self.earlier: dict[str, Unacked] = {}  # what earlier processes held, by run
        self.published = 0
        self.given_up_earlier = 0              # earlier runs' readings given up, once their holder is gone
        self._config_pending = False
        self._config_retry_at = 0.0
        self._shadow_retry_at = 0.0
        self._subscribed: set[str] = set()
        self._report_pending = False
        self._refused_reported: list = []      # the refused settings the shadow was last told of
        self._status: Optional[str] = None
        self._stalled = False
        self._skipped = 0

    # -- wiring --------------------------------------------------------------------------
    def start(self) -> None:
        """Follow configuration and shadow first (so no change is missed), read both, build
        the sampler, subscribe to acknowledgements and report what is in effect."""
        self.ipc.on_configuration_change(lambda: self.inbox.put(Message("config", "", {})))
        config = self._read_configuration()
        change = self.followed.apply(config=config, shadow=self._follow_shadow(config))
        eff = change.effective
        self._set_clock_offset(eff["sim_clock_offset_s"])
        self.sampler = Sampler(self.clock, self.make_opener(eff, self.clock.wall_ms), self.make_cpu(eff),
                               device=self.device, run=self.run_id, interval_s=eff["interval_s"])
        self.unacked = Unacked(self.run_id, eff["max_unacked"], round(eff["resend_after_s"] * 1000))
        self._subscribe_acks(eff["ack_topic"])
        self._recover(eff)
        self._report_pending = True
        self._report()
        log.info("run %s of %s: %s bus%s, every %s s, on %s", self.run_id, self.device, eff["bus"],
                 f" (scenario {eff['scenario']})" if eff["bus"] == "simulated" else
                 f" {eff['i2c_bus']} at 0x{eff['i2c_address']:02x}", eff["interval_s"], eff["raw_topic"])

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step(block=True)
        if self.journal is not None:
            self.problems.survive("journal close", self.journal.close)
        log.info("stopping: %d published, %d held unacknowledged, %d given up, problems %s",
                 self.published, len(self.unacked), self.given_up, dict(self.problems.counts))

    def step(self, block: bool = True) -> None:
        """Wait (when `block`) for a message or the next slot, handle the message, sample if
        a slot is due, resend if the acknowledgement stalled, retry a pending shadow report."""
        wait_s = min(max(self.sampler.due_in_ms(), 0) / 1000, IDLE_S) if block else 0
        message = self.inbox.get(timeout=wait_s)
        if message is not None:
            self.problems.survive(f"handling {message.tag.split(':')[0]}", self.handle, message)
        self.problems.survive("sampling", self._sample)
        self.problems.survive("resending", self._resend_if_due)
        self.problems.survive("shadow report", self._report)

    def _sample(self) -> None:
        reading = self.sampler.tick()
        if reading is not None:
            self._on_reading(reading)

    def handle(self, message: Message) -> None:
        if message.tag == "config":
            config = self._read_configuration()
            if config is not None:
                self._apply(config=config, shadow=self._follow_shadow(config))
        elif message.tag == "shadow":
            self._apply(shadow=message.payload)
        elif message.tag.startswith("ack:"):
            # an old subscription after an ack_topic change is still open: ignore its messages
            if message.tag[4:] == self.settings.effective["ack_topic"]:
                self._on_ack(message.payload)

    # -- readings ------------------------------------------------------------------------
    def _on_reading(self, reading: dict) -> None:
        """Held and published whatever else fails: its seq is drawn, so losing it here would
        leave a gap that nothing counts."""
        self.problems.survive("sensor status", self._log_status)
        try:
            errors = contracts.check("reading-raw", reading)
        except Exception as error:       # a bug in the check must not cost the reading
            errors = [f"the check failed: {error!r}"]
        if errors:
            self.problems.add("reading out of contract",
                              f"reading {reading['seq']} breaks reading-raw ({'; '.join(errors)}): published as out_of_range")
            reading = dict(reading, status="out_of_range", **{key: None for key in VALUE_KEYS})
        self.unacked.add(reading, self.clock.mono_ms())
        self._trim_total()
        if self.journal is not None:     # a full disk: held in memory, published, counted
            self.problems.survive("journal append", self.journal.append, reading)
            if self.journal.lines > self._journal_bound():
                self.problems.survive("journal rewrite", self.journal.rewrite, self._held_readings())
        self._publish(reading)

    def _follow_shadow(self, config: Optional[dict]) -> object:
        """The shadow's document once this deployment lets us follow it (False: nothing new)."""
        return follow_shadow(self.ipc, self.reach, config,
                             lambda current: self.inbox.put(Message("shadow", "", current)))

    def _read_configuration(self) -> Optional[dict]:
        """GetConfiguration, or None (counted) when it fails: the last settings stay, and the
        next configuration change or report reads it again."""
        config = read_configuration(self.ipc, self.problems)
        self._config_pending = config is None
        return config

    def _journal_bound(self) -> int:
        """Lines the journal may reach before it is compacted to what is held."""
        return self.unacked.max_unacked + max(JOURNAL_SLACK, self.unacked.max_unacked // 10)

    def _trim_total(self) -> None:
        """At most max_unacked readings held in all, across this run and earlier ones:
        the oldest run gives up first (counted in its given_up)."""
        excess = sum(len(h) for h in self.earlier.values()) + len(self.unacked) - self.unacked.max_unacked
        for run in list(self.earlier):
            if excess <= 0:
                break
            holder = self.earlier[run]
            excess -= holder.give_up_oldest(excess)
            if not len(holder):
                self.given_up_earlier += holder.given_up
                del self.earlier[run]

    @property
    def given_up(self) -> int:
        """Readings dropped unacknowledged because the holding bound was reached."""
        return self.unacked.given_up + self.given_up_earlier + sum(h.given_up for h in self.earlier.values())

    def _recover(self, eff: dict) -> None:
        """Publish again what an earlier process held unacknowledged (its run and seq kept)."""
        if self.journal is None:
            return
        now = self.clock.mono_ms()
        loaded = self.journal.load()
        for reading in loaded:
            holder = self.earlier.setdefault(reading["run"], Unacked(reading["run"], eff["max_unacked"],
                                                                     round(eff["resend_after_s"] * 1000)))
            if holder.newest_seq is None or reading["seq"] > holder.newest_seq:
                holder.add(reading, now)
        self._trim_total()
        self.problems.survive("journal rewrite", self.journal.rewrite, self._held_readings())
        for holder in self.earlier.values():      # the store may have most: ask with the oldest first
            log.info("run %s held %d readings unacknowledged when it stopped: publishing seq %d again, then "
                     "what the store's acknowledgement shows it lacks", holder.run, len(holder), holder.held_from)
            self._publish(holder.probe(now), holder)

    def _held_readings(self) -> list[dict]:
        held = [r for holder in self.earlier.values() for r in holder.held()]
        return held + (self.unacked.held() if self.unacked is not None else [])

    def _publish(self, reading: dict, holder: Optional[Unacked] = None) -> None:
        topic = self.settings.effective["raw_topic"]
        try:
            self.ipc.publish_json(topic, (holder or self.unacked).stamp(reading))
        except Exception as error:      # held: published again when the ack stalls
            self.problems.add(f"publish {type(error).__name__}", f"could not publish on {topic}: {error}")
            return
        self.published += 1

    def _on_ack(self, payload: object) -> None:
        errors = contracts.check("ack", payload)
        if errors:
            self.problems.add("invalid ack", f"ignored a message that is not an ack ({'; '.join(errors)})")
            return
        if payload["device"] != self.device:
            return
        earlier = self.earlier.get(payload["run"])
        if earlier is not None:
            earlier.ack(payload["run"], int(payload["seq"]), self.clock.mono_ms())
            if not len(earlier):
                self.given_up_earlier += earlier.given_up
                del self.earlier[payload["run"]]
        elif self.unacked.ack(payload["run"], int(payload["seq"]), self.clock.mono_ms()) and self._stalled:
            self._stalled = False
            log.info("acknowledgements advance again (up to seq %d)", self.unacked.acked)
        if self.journal is not None:
            held = len(self.unacked) + sum(len(h) for h in self.earlier.values())
            if self.journal.lines > 2 * held + JOURNAL_SLACK:
                self.problems.survive("journal rewrite", self.journal.rewrite, self._held_readings())

    def _resend_if_due(self) -> None:
        for holder in list(self.earlier.values()):
            for reading in holder.due_for_resend(self.clock.mono_ms()):
                self._publish(reading, holder)
        due = self.unacked.due_for_resend(self.clock.mono_ms())
        if not due:
            return
        if not self._stalled:
            self._stalled = True
            log.warning("no acknowledgement for %s s: publishing the %d held readings again from seq %d "
                        "(seq %d..%d now), chunk by chunk as they are acknowledged, and every %s s while they "
                        "are not", self.settings.effective["resend_after_s"], len(self.unacked), due[0]["seq"],
                        due[0]["seq"], due[-1]["seq"], self.settings.effective["resend_after_s"])
        for reading in due:
            self._publish(reading)

    def _log_status(self) -> None:
        sampler = self.sampler
        if sampler.status != self._status:
            if sampler.status == "ok":
                log.info("sensor ok%s", f" (was {self._status})" if self._status else "")
            else:
                retry_s = max(sampler.retry_at_ms - self.clock.mono_ms(), 0) / 1000
                log.warning("sensor %s: %s; re-initialising with backoff (next attempt in %.0f s)",
                            sampler.status, sampler.last_error, retry_s)
            self._status = sampler.status
        if sampler.schedule.skipped > self._skipped:
            self.problems.add("late", f"sampling ran late: skipped {sampler.schedule.skipped - self._skipped} slot(s)")
            self._skipped = sampler.schedule.skipped

    # -- settings ------------------------------------------------------------------------
    def _apply(self, config: Optional[dict] = None, shadow: object = False) -> None:
        change = self.followed.apply(config=config, shadow=shadow)
        if self.settings.problems != self._refused_reported:
            self._report_pending = True         # the cloud learns which setting was refused, and why
        if not change.changed:
            return
        eff = change.effective
        log.info("settings changed (%s): now %s", ", ".join(sorted(change.changed)),
                 {key: eff[key] for key in sorted(change.changed)})
        self.sampler.set_interval(eff["interval_s"])
        if "sim_clock_offset_s" in change.changed:
            self._set_clock_offset(eff["sim_clock_offset_s"])
        if change.changed & set(device.BUS_KEYS):
            self.sampler.reopen(self.make_opener(eff, self.clock.wall_ms))
        if change.changed & {"cpu_source", "cpu_path"}:
            self.sampler.cpu = self.make_cpu(eff)
        self.unacked.resize(eff["max_unacked"])
        self.unacked.resend_after_ms = round(eff["resend_after_s"] * 1000)
        self._subscribe_acks(eff["ack_topic"])
        self._report_pending = True

    def _set_clock_offset(self, seconds: float) -> None:
        if round(float(seconds) * 1000) != self.clock.offset_ms:
            log.warning("SIMULATION: the sensor's wall clock is now %s s off the system clock%s", seconds,
                        " (it says unsynchronised)" if seconds else "")
        self.clock.set_offset_s(seconds)

    def _subscribe_acks(self, topic: str) -> None:
        if topic not in self._subscribed:
            self.ipc.subscribe(topic, self.inbox.put_for("ack:" + topic))
            self._subscribed.add(topic)

    def _report(self) -> None:
        now_s = self.clock.mono_ms() / 1000
        if self._config_pending and now_s >= self._config_retry_at:
            self._config_retry_at = now_s + CONFIG_RETRY_S
            config = self._read_configuration()
            if config is not None:
                self._apply(config=config, shadow=self._follow_shadow(config))
        if self.reach.pending and now_s >= self._shadow_retry_at:   # a transient failure: again
            self._shadow_retry_at = now_s + CONFIG_RETRY_S
            shadow = self._follow_shadow(None)
            if shadow is not False:
                self._apply(shadow=shadow)
        if not self.reach.followed:      # out of reach in this deployment: said once, at start
            return
        problems = self.problems.to_report(now_s)
        if not self._report_pending and problems is None:
            return
        reported: dict = {SECTION: dict(self.settings.effective)} if self._report_pending else {}
        refused = list(self.settings.problems)
        if self._report_pending:
            reported["refused"] = {SECTION: refused or None}      # null clears it in the shadow
        if problems is not None:
            reported["problems"] = {"sensor": dict(problems, given_up=self.given_up)}
        try:
            self.ipc.update_shadow(SHADOW, {"state": {"reported": reported}})
        except Exception as error:
            self.problems.add(f"shadow report {type(error).__name__}",
                              f"could not report reported.{SECTION} (retrying): {error}")
            return
        if self._report_pending:
            self._refused_reported = refused
        self._report_pending = False
        if problems is not None:
            self.problems.reported(problems, now_s)

