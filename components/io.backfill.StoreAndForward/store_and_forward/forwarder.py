"""The store-and-forward loop's logic: ingest, group commit, acknowledgements, batches to
IoT Core, confirmation, shadow report. All I/O goes through a small Port and the Store;
the clock is injected, so the loop runs unchanged over an in-memory port in tests.

    fwd = Forwarder(store, port, clock, settings, thing="pi-1")   # settings: config-store keys
    fwd.on_reading(topic, payload)      # a message on corrected_topic (dict or bytes)
    fwd.on_iot(topic, payload)          # an echo (confirm: echo) or a rule ack (confirm: rule)
    fwd.iot_subscribed(topic)           # SubscribeToIoTCore answered: forwarding may start
    delay_ms = fwd.tick()               # commit, ack, send, resend, report; when to call again
    fwd.close()                         # SIGTERM: commit what is held, ack it, close the store

Port: publish_ack(topic, doc) on local pub/sub; publish_iot(topic, payload) =
PublishToIoTCore QoS 1 (returns once the nucleus has SPOOLED it, raises when refused);
report(section) = reported.store of the `backfill` shadow.

Order of sending: resends of timed-out batches first; then new batches: the newest reading
not sent yet (live first), then the backlog oldest first, packed toward whole billing
units. A partial batch waits for more readings until its oldest reading has waited
max_latency_ms (minus the commit wait); a full one goes at once, within the rate plan.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
from operator import itemgetter
from typing import Iterator, Optional, Protocol

from backfill_common import contracts, strictjson
from backfill_common.fastcheck import compile_contract
from backfill_common.problems import Problems

from . import live, packer, watermark
from .ledger import ONLINE, UNKNOWN, InFlight, Ledger
from .rate import RatePlan
from .planner import Planner, Prepared
from . import store as store_module
from .store import CommitResult, DeadLetter, DiskFull, Store, is_corruption, is_damaged_read

log = logging.getLogger(__name__)

CONTRACT = "reading-corrected"
MAX_PENDING = 20_000            # readings held in memory while the disk is full (not acknowledged)
MAX_PENDING_DEAD = 1_000        # dead letters likewise (20,050 of up to 16 KiB each were 307 MB)
DISK_RETRY_MS = 5_000
STATE_REPORT_MIN_MS = 1_000
MAINTENANCE_MS = 60_000
SHADOW_LIMIT = 7_680            # bytes of the update document (ShadowManager's limit: 8 KiB)
LATEST_KEYS = ("run", "seq", "t", "status", "temperature", "temperature_raw", "humidity", "pressure",
               "gas_resistance", "heat_stable", "cpu_temperature", "clock_synced", "correction")
SCAN_PAGE = 500
DEAD_EVERY_MS = 1_000           # dead letters go to IoT Core one a second at most
LIVE_WAIT_MS = 12_000           # the longest a reading waits unacknowledged to go from memory: the sensor
                                # republishes what is unacknowledged after resend_after_s (15 s by default)
RESERVED = ("t_orig", "batch", "v", "fields", "rows", "common", "mono_lag", "t_base", "mono_offset")   # the store's and the batch format's names


class Port(Protocol):
    def publish_ack(self, topic: str, doc: dict) -> None: ...
    def publish_iot(self, topic: str, payload: bytes) -> None: ...
    def report(self, section: dict) -> None: ...


def expand(topic: str, thing: str) -> str:
    return topic.replace("{iot:thingName}", thing).replace("{thing}", thing)


MAX_SEQ = 2**53 - 1                       # the contract's bound on seq
DEVICE = re.compile(r"[a-zA-Z0-9:_-]+")   # the contract's pattern for device


def identity_of(doc: object) -> Optional[tuple]:
    """(device, run, seq) of a message that failed its contract, when they can be read."""
    if not isinstance(doc, dict):
        return None
    device, run, seq = doc.get("device"), doc.get("run"), doc.get("seq")
    if not (isinstance(device, str) and 0 < len(device) <= 128 and DEVICE.fullmatch(device) and isinstance(run, str)
            and len(run) in (8, 16) and all(c in "0123456789abcdef" for c in run)):
        return None
    if isinstance(seq, bool) or not isinstance(seq, (int, float)) or not 0 <= seq <= MAX_SEQ:
        return None                          # MAX_SEQ also keeps out inf and 1e300 (SQLite INTEGER is 64-bit)
    if seq != int(seq):
        return None
    return (device, run, int(seq))


def _dumped(payload: object) -> bytes:
    try:
        return json.dumps(payload, separators=(",", ":")).encode()   # NaN shown as it came, in a dead letter
    except (TypeError, ValueError):
        return repr(payload).encode(errors="replace")


def dead_letter_message(letter: dict, key: str, thing: str) -> bytes:
    """A dead letter as forwarded: what arrived (base64, as kept), why, and when."""
    identity = {"device": letter["device"], "run": letter["run"], "seq": letter["seq"]} \
        if letter.get("run") is not None else None
    return strictjson.dumps({"v": 1, "device": thing, "dead_letter": key, "at": letter["at"],
                             "topic": letter["topic"], "reason": letter["reason"], "size": letter["size"],
                             "identity": identity, "raw": base64.b64encode(letter["raw"] or b"").decode()}).encode()


def _raw(payload: object) -> bytes:
    return bytes(payload) if isinstance(payload, (bytes, bytearray)) else _dumped(payload)


def _parsed(raw: bytes) -> object:
    """The JSON in a message too large to keep, for its identity (None if unreadable)."""
    if len(raw) > 1_048_576:
        return None
    try:
        return strictjson.loads(raw)
    except ValueError:
        return None


class Forwarder:
    def __init__(self, store: Store, port: Port, clock, settings: dict, thing: str) -> None:
        self.store, self.port, self.clock, self.thing = store, port, clock, thing
        self.problems = Problems(log)
        self._fast = compile_contract(CONTRACT)
        now = clock.mono_ms()
        self._pending: list[dict] = []
        self._dead: list[DeadLetter] = []
        self._pending_since: Optional[int] = None
        self._live_keys: dict[tuple, str] = {}          # (device, run, seq) in a batch sent from memory -> its id
        self._must_commit = False                       # readings taken back from memory: committed next
        self.plan: Optional[Planner] = None             # what to send next, and when
        self._retry_at = 0
        self._subscribed: set[str] = set()
        self._latest: Optional[dict] = None
        self._synced_runs: dict[tuple, bool] = {}
        self._hold_anchor = now
        self._holding = False
        self.disk_full = False
        self._disk_retry_at = 0
        self._undeleted: set = set()       # confirmed rows a full disk kept: deleted again at upkeep
        self._undeleted_at = 0
        self._salvage_at = 0               # a set-aside file's readings the disk could not take yet
        self.evicting = False
        self._state: Optional[tuple] = None
        self._report_at = 0
        self._last_report: Optional[dict] = None
        self._state_report_at = 0
        self._maintenance_at = now + MAINTENANCE_MS
        self._checkpoint_at = now
        self._counters_at = now                         # live confirmations save the counters from then on
        self._changes_at = self._live_changes = 0       # rows changed: at the last checkpoint; by live confirmations since
        self.ledger: Optional[Ledger] = None
        self._more = False
        self._dead_flight: Optional[tuple] = None       # (letter id, key, payload, sent ms): one at a time
        self._dead_gone: Optional[int] = None           # a letter IoT Core has that the disk kept us from deleting
        self._dead_at = 0
        self.settings: dict = {}
        self.configure(settings)

    # -- settings -----------------------------------------------------------------------------
    def configure(self, settings: dict) -> None:
        """Apply (new) effective settings live."""
        s = dict(settings)
        switched = bool(self.settings) and self.settings["confirm"] != s["confirm"]
        self.settings = s
        self.topic = expand(s["iot_topic"], self.thing)
        self.rule_topic = expand(s["rule_ack_topic"], self.thing)
        self.dead_topic = expand(s["dead_letter_topic"], self.thing)
        self.capacity = packer.capacity(s["max_payload_bytes"], self.topic, s["billing_unit_bytes"])
        self.commit_wait_ms = min(s["commit_interval_ms"], s["max_latency_ms"] // 2)
        self.rate = RatePlan(s["max_publishes_per_s"], s["max_bytes_per_s"],
                             burst_bytes=s["max_payload_bytes"] + len(self.topic))
        timeout_ms, probe_ms = int(s["confirm_timeout_s"] * 1000), int(s["probe_max_s"] * 1000)
        if self.ledger is None:
            self.ledger = Ledger(timeout_ms, s["max_in_flight"], probe_ms, unit_bytes=s["billing_unit_bytes"])
        else:
            self.ledger.unit_bytes = s["billing_unit_bytes"]
            self.ledger.confirm_timeout_ms, self.ledger.max_in_flight = timeout_ms, s["max_in_flight"]
            self.ledger.probe_max_ms = probe_ms
        if s["confirm"] == "spooled":
            self.ledger.link = ONLINE
        config = self.store.config
        config.max_rows, config.max_bytes = s["max_rows"], s["max_bytes"]
        config.max_age_ms = s["max_age_s"] * 1000
        config.full_policy = s["full_policy"]
        config.max_dead_letters, config.dead_letter_max_bytes = s["max_dead_letters"], s["dead_letter_max_bytes"]
        config.retime_threshold_ms = self.store.retimer.threshold_ms = s["retime_threshold_ms"]
        if s["synchronous"] != config.synchronous:
            self.store.set_synchronous(s["synchronous"])
        if self.plan is None:
            self.plan = Planner(s["max_latency_ms"], self.commit_wait_ms, stored=self.store.count > 0,
                                now=self.clock.mono_ms())
        else:
            self.plan.timing(s["max_latency_ms"], self.commit_wait_ms)
        self._spill(self.clock.mono_ms(), "new settings")     # what went from memory is committed
        if switched:        # batches (and a dead letter) in flight wait for a confirmation that will not come now
            self.ledger.forget(lambda entry: True)
            self._dead_flight = None       # still stored: sent again under the new mode, once
            self._rewind()

    def confirm_topic(self) -> Optional[str]:
        """The IoT Core topic to subscribe to for confirmations (None: confirm spooled)."""
        return {"echo": self.topic, "rule": self.rule_topic, "landing": self.rule_topic}.get(self.settings["confirm"])

    def iot_topics(self) -> list[str]:
        """Every IoT Core topic to subscribe to: the confirmations', and the dead letters' echo."""
        confirm = self.confirm_topic()
        return [] if confirm is None else [confirm, self.dead_topic]

    def iot_subscribed(self, topic: str) -> None:
        self._subscribed.add(topic)

    def iot_unsubscribed(self, topic: str) -> None:
        """The subscription ended: hold new batches until it is back (in flight ones time out)."""
        self._subscribed.discard(topic)

    # -- ingest -------------------------------------------------------------------------------
    def on_reading(self, topic: str, payload: object) -> None:
        """One message from the corrected topic: queued for the next group commit, or
        dead-lettered (never raises, never blocks what follows)."""
        self.store.add_counts(received=1)
        now = self.clock.mono_ms()
        limit = self.settings["max_message_bytes"]
        doc = payload
        if isinstance(payload, (bytes, bytearray)):
            if len(payload) > limit:
                self._dead_letter(topic, payload, f"too large: {len(payload)} bytes > {limit}", _parsed(payload), now)
                return
            try:
                doc = strictjson.loads(payload)
            except ValueError as error:
                self._dead_letter(topic, payload, f"not JSON: {error}", None, now)
                return
        if self._fast is None or not self._fast(doc):
            errors, extras = contracts.check_tolerant(CONTRACT, doc, reserved=RESERVED)
            if extras and len(_raw(payload)) > limit:
                errors = [f"too large with fields the contract does not know ({', '.join(extras)})"]
            elif extras:            # a newer correction added fields: stored and forwarded with them
                self.problems.add("extra fields " + ",".join(extras)[:80],
                                  f"readings carry fields the contract does not know ({', '.join(extras)}): "
                                  "stored and forwarded with them")
            if errors:
                raw = _raw(payload)
                reason = f"too large: {len(raw)} bytes > {limit}" if len(raw) > limit else \
                    "contract: " + "; ".join(errors)
                self._dead_letter(topic, raw, reason, doc, now)
                return
        reading = contracts.integers(doc)
        why = watermark.implausible(reading)
        if why is not None:         # its seq counts toward the watermark only if the seq is plausible
            trusted = doc if watermark.implausible(dict(reading, held_from=None)) is None else None
            self._dead_letter(topic, _raw(payload), "implausible: " + why, trusted, now)
            return
        key = (reading["device"], reading["run"])
        if key not in self._synced_runs and not self.store.knows(key) and \
                max(len(self._synced_runs), self.store.run_count()) >= store_module.MAX_RUNS:
            # each run costs memory (its watermark, its clock): a flood of run ids must not grow
            # the process without limit. Kept as a dead letter, not acknowledged (no identity).
            self._dead_letter(topic, _raw(payload), f"too many runs: {store_module.MAX_RUNS:,} runs have "
                              "readings on the device; a new run waits until some are sent", None, now)
            return
        self._latest = reading
        self._synced_runs[key] = bool(reading["clock_synced"])
        if (key[0], key[1], reading["seq"]) in self._live_keys:    # a resend of what is in flight from memory
            self.store.add_counts(duplicates=1)                     # acknowledged at its confirmation
            return
        self._queue(reading, now)

    def _dead_letter(self, topic: str, raw: bytes, reason: str, doc: object, now: int) -> None:
        self.problems.add("dead letter " + reason.split(":")[0], f"dead-lettered a message on {topic}: {reason}")
        if len(self._dead) >= MAX_PENDING_DEAD:     # the disk is full: not kept, not acknowledged
            self.problems.add("pending dead letters full", "the disk is still full: a dead letter was not "
                              "taken (not acknowledged: the sensor sends it again)")
            self.store.add_counts(dead_dropped=1)
            return
        self._dead.append(DeadLetter(topic, bytes(raw), reason, identity_of(doc)))   # at most max_message_bytes
        self._queue(None, now)

    def _queue(self, reading: Optional[dict], now: int) -> None:
        if reading is not None:
            if len(self._pending) >= MAX_PENDING:
                self.problems.add("pending full", "the disk is still full: a reading was not taken "
                                  "(not acknowledged: the sensor keeps it)")
                return
            self._pending.append(reading)
        if self._pending_since is None:
            self._pending_since = now
        if len(self._pending) + len(self._dead) >= self.settings["commit_every"] and not self.disk_full:
            self.commit(now)

    def commit(self, now: Optional[int] = None) -> bool:
        """Group commit of what is waiting, then its acknowledgements. False if the disk
        refused it (kept in memory, retried); what a one-by-one commit stored before the disk
        or the file failed is acknowledged and forwarded all the same."""
        now = self.clock.mono_ms() if now is None else now
        if not self._pending and not self._dead:
            return True
        arrived = self._pending_since if self._pending_since is not None else now
        self._pending = self._below_memory(self._pending)
        try:
            result = self._commit_or_isolate()
        except sqlite3.DatabaseError as error:      # corruption: the others were isolated
            self._landed(getattr(error, "partial", None), arrived)
            self._corrupt(error)           # kept in memory: committed to the new database next tick
            return False
        except DiskFull as error:
            self._landed(getattr(error, "partial", None), arrived)
            self.store.add_counts(storage_errors=1)
            self.problems.add("storage", f"could not write the database ({error}); "
                              "keeping readings in memory, not acknowledging them; retrying")
            self.disk_full = True
            self._disk_retry_at = now + DISK_RETRY_MS
            return False
        except Exception as error:                 # unforeseen: what landed is still acknowledged
            self._landed(getattr(error, "partial", None), arrived)
            raise
        if self.disk_full:
            log.info("the database is writable again")
        self.disk_full = False
        self._pending, self._dead, self._pending_since = [], [], None
        self._must_commit = False
        self._landed(result, arrived)
        return True

    def _landed(self, result: Optional[CommitResult], arrived: int) -> None:
        """What a commit stored: its acknowledgements (the newest per run), the planner told
        of new rows, re-timed runs' batches forgotten, the storage bound noted."""
        if result is None:
            return
        newest = {(ack["device"], ack["run"]): ack for ack in result.acks}     # in commit order
        self._publish_acks(list(newest.values()))
        if result.inserted:
            self.plan.committed(arrived)
        if result.retimed_runs:
            self._spill(self.clock.mono_ms(), "a run re-timed", lambda e: bool(e.runs & result.retimed_runs),
                        commit=False)
            self.ledger.forget(lambda e: bool(e.runs & result.retimed_runs))
            self._rewind()
            self.plan.changed()
        if result.evicted or result.rejected:
            if not self.evicting:
                log.warning("storage bound reached: %d readings evicted, %d refused (counted)",
                            result.evicted, result.rejected)
            self.evicting = True
            self.plan.changed()
            self._rewind()          # rows in flight may be gone: the in-flight count overstates what is sent
        else:
            self.evicting = False

    def _publish_acks(self, acks: list[dict]) -> None:
        for ack in acks:
            try:
                self.port.publish_ack(self.settings["ack_topic"], ack)
            except Exception as error:          # the sensor resends; its duplicate re-acks
                self.problems.add(f"ack {type(error).__name__}", f"could not publish an acknowledgement: {error}")

    def _try_commit(self, readings: list, dead: list) -> CommitResult | BaseException:
        """store.commit, or the error of a message the database cannot take. The disk (DiskFull,
        or any SQLite error that is not the message's own: locked, busy, interrupted...) and
        corruption propagate."""
        try:
            return self.store.commit(readings, dead)
        except sqlite3.DatabaseError as error:
            if is_corruption(error):
                raise
            failure: BaseException = error
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as error:
            failure = error
        if store_module.is_storage_error(failure):     # the database, not this message: retried
            raise DiskFull(str(failure)) from failure
        return failure

    def _commit_or_isolate(self) -> CommitResult:
        """The group commit; if one message the database cannot take makes it fail (neither
        the disk nor corruption), commit one by one, so that one message never blocks the
        others (a poison pill would strand every reading behind it)."""
        outcome = self._try_commit(self._pending, self._dead)
        return outcome if isinstance(outcome, CommitResult) else self._isolate(outcome)

    def _isolate(self, failure: BaseException) -> CommitResult:
        """Each reading alone, then each dead letter alone, each leaving _pending/_dead as soon
        as it is committed (a DiskFull or corruption meanwhile keeps only the rest, as after an
        ordinary group commit). A reading the database refuses becomes a dead letter with the
        reason and its identity; a dead letter it refuses is kept without its identity, and if
        even that fails it is dropped and counted (dead_dropped). The acknowledgements go out
        as they are earned, the newest per run."""
        self.problems.add(f"commit {type(failure).__name__}",
                          f"a group commit failed ({failure!r}); committing its messages one by one")
        total = CommitResult()

        def committed(outcome: CommitResult | BaseException) -> bool:
            if not isinstance(outcome, CommitResult):
                return False
            total.acks += outcome.acks
            total.retimed_runs |= outcome.retimed_runs
            total.changed = total.changed or outcome.changed
            for name in ("inserted", "duplicates", "rejected", "evicted", "given_up", "retimed", "dead_lettered"):
                setattr(total, name, getattr(total, name) + getattr(outcome, name))
            return True

        try:
            while self._pending:
                reading = self._pending[0]
                outcome = self._try_commit([reading], [])
                self._pending.pop(0)
                if not committed(outcome):
                    self._dead.append(DeadLetter(self.settings["corrected_topic"],
                                                 _dumped(reading)[:self.settings["max_message_bytes"]],
                                                 f"the store could not keep it: {outcome!r}"[:500],
                                                 identity_of(reading)))
            while self._dead:
                letter = self._dead[0]
                if not committed(self._try_commit([], [letter])) and not committed(
                        self._try_commit([], [DeadLetter(letter.topic, letter.raw, letter.reason)])):
                    self.store.add_counts(dead_dropped=1)
                self._dead.pop(0)
        except Exception as error:
            error.partial = total          # what landed before it: commit() acknowledges and forwards it
            raise
        finally:
            if total.changed:
                self.plan.changed()
        return total

    # -- confirmation -------------------------------------------------------------------------
    def on_iot(self, topic: str, payload: bytes) -> None:
        """A message from IoT Core: our batch's echo, or the rule's {"batch": id}."""
        was = self.ledger.link
        try:
            self._on_iot(topic, payload)
        except sqlite3.DatabaseError as error:
            if not is_damaged_read(error):
                raise
            self._corrupt(error)
        if was != ONLINE and self.ledger.link == ONLINE:   # any message back (even unreadable): scan again
            self._hold_anchor = self.clock.mono_ms()
            self._rewind()

    def report_all(self) -> None:
        """Report everything at once, settings included (the shadow came into reach)."""
        self._state = self._last_report = None

    def _corrupt(self, error: Exception) -> None:
        """The database file is damaged: it is set aside (kept) and a new one takes over;
        what was in flight is forgotten (its readings stay in the old file, counted)."""
        ids = [tag for entry in self.ledger.entries() for tag in entry.tags]
        min_id = max([self.plan.live_upto, self.plan.cursor, *ids])
        self._spill(self.clock.mono_ms(), "database damaged", commit=False)   # committed to the new database
        # first: whatever set_aside meets, no old batch may confirm (delete) rows of the new file
        self.ledger.forget(lambda entry: True)
        self._undeleted.clear()            # row ids of the old file
        self._dead_flight = self._dead_gone = None
        self.plan = Planner(self.settings["max_latency_ms"], self.commit_wait_ms, stored=True, now=self.clock.mono_ms())
        self._state = None                 # report it at once
        path = self.store.set_aside(str(error), min_id=min_id)
        self.problems.add("database corrupt", f"the database was damaged ({error}); set aside as {path.name}, "
                          "going on with a new one (acknowledgements continue)")
        if self.store.closed is not None:          # tick() opens it again
            self.disk_full = True
            self._disk_retry_at = self.clock.mono_ms() + DISK_RETRY_MS

    def _on_iot(self, topic: str, payload: bytes) -> None:
        now = self.clock.mono_ms()
        mode = self.settings["confirm"]
        if topic == self.dead_topic and topic != self.topic:
            self.ledger.heard(now)
            try:
                key = json.loads(payload).get("dead_letter")
            except (ValueError, AttributeError, UnicodeDecodeError):
                return
            if self._dead_flight is not None and key == self._dead_flight[1]:
                self._dead_gone, self._dead_flight = self._dead_flight[0], None
                self._forget_dead(now)
            return
        if mode == "echo" and topic == self.topic:
            batch_id = self.ledger.echoed(payload)
            if batch_id is not None:           # our bytes back: the batch they carry
                self._confirmed(batch_id, now, None)
                return
            doc = packer.batch_of(payload)
            if doc is None or any(e.batch_id == doc["batch"] for e in self.ledger.memory_entries()):
                self.ledger.heard(now)         # a batch from memory is confirmed by its own bytes only
                return
            self._confirmed(doc["batch"], now, doc)
        elif mode in ("rule", "landing") and topic == self.rule_topic:   # the same message; landing: once in the table
            try:
                doc = json.loads(payload)
                batch = doc["batch"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.ledger.heard(now)
                return
            self._confirmed(str(batch), now, None)

    def _confirmed(self, batch_id: str, now: int, echo: Optional[dict]) -> None:
        was = self.ledger.link
        entry = self.ledger.confirm(batch_id, now)
        if was != ONLINE:
            self._hold_anchor = now
            self._rewind()
        if entry is not None and entry.memory is not None:
            self._confirmed_live(entry, now)
            return
        try:
            if entry is not None:
                if entry.keep:
                    self._rewind()
                else:                           # rows in flight: never in a packed batch
                    self._delete(entry.tags, now)
            elif echo is not None and echo.get("device") is not None and self.store.closed is None:
                # not in flight (sent before a restart, or forgotten): what arrived unchanged goes
                rows = packer.decode(echo)
                keys = [(r["run"], r["seq"], r["t"]) for r in rows if r.get("clock_synced") is not False]
                ids = self.store.match(echo["device"], keys)
                if ids:
                    self._delete(ids, now)
                    self.plan.changed()
        except (ValueError, KeyError, TypeError) as error:
            self.problems.add("echo", f"an unreadable echo: {error!r}")

    # -- the loop -----------------------------------------------------------------------------
    def tick(self) -> int:
        """Do what is due; returns the milliseconds until something else will be."""
        now = self.clock.mono_ms()
        if self.store.closed is not None and not self._reopen(now):
            self._report(now)
            return max(1, min(1000, self._disk_retry_at - now))
        self._live_watch(now)
        if self._pending_since is not None and now >= self.plan.due_at(self._pending_since) and self._live_open(now):
            self._send_live(now)
        if self._commit_due(now) and (not self.disk_full or now >= self._disk_retry_at):
            self.commit(now)
        try:
            self._forward(now)
            self._forward_dead(now)
            self._upkeep(now)
            self._retime(now)
        except sqlite3.DatabaseError as error:
            if not is_damaged_read(error):
                raise
            self._corrupt(error)
        finally:                           # whatever failed above, the shadow says so
            self._report(now)
        self._unsendable()
        return self._next_delay(self.clock.mono_ms())

    def _reopen(self, now: int) -> bool:
        """The store is closed (a set-aside could not open its new database): every
        DISK_RETRY_MS, try to open it again; until then nothing is stored, acknowledged or
        sent (what waits stays in memory, the sensor keeps what was not acknowledged)."""
        if now < self._disk_retry_at:
            return False
        self._disk_retry_at = now + DISK_RETRY_MS
        if self.store.reopen():
            log.info("the new database is open: going on")
            self.disk_full = False
            self.plan.changed()
            self._rewind()
            return True
        self.disk_full = True
        self.problems.add("storage", f"could not open a new database ({self.store.closed}); keeping readings "
                          "in memory, not acknowledging them; retrying")
        return False

    def _commit_due(self, now: int) -> bool:
        """What waits in memory is committed after commit_wait_ms, or sooner when a batch is
        about to go for the latency deadline: it goes in that batch (one commit and one
        message where there would be two of each; a commit writes its pages to flash). Only
        when that batch will really go now: the link answering (or spooled), the
        confirmations subscribed, nothing in flight, no batch kept for the rate plan, no
        retry pending and the rate plan letting a publish through. Otherwise (offline, a boot without network, a drain) a
        commit early would go nowhere sooner, and each tick would commit one reading."""
        if self._pending_since is None:
            return False
        if self._must_commit:
            return True
        if now - self._pending_since >= self.commit_wait_ms:     # unless it goes from memory (live.py)
            return now >= self.plan.due_at(self._pending_since) or not self._live_open(now)
        if not self.plan.latency_due(now) or now < self._retry_at or len(self.ledger) or self.plan.prepared:
            return False
        if self.settings["confirm"] == "spooled":
            ready = True
        else:
            # online, or the first message since start (sent like a batch: _prepare)
            ready = self.ledger.link in (ONLINE, UNKNOWN) and self.confirm_topic() in self._subscribed \
                and self.ledger.wants(now) is not None
        return ready and self.rate.publishes.wait_ms(now, 1) == 0

    # -- forwarding from memory (live.py) ------------------------------------------------------
    def _live_open(self, now: int) -> bool:
        """The steady online state in which what waits in memory goes without being written:
        a confirmation that comes back, the link answering, nothing stored to send first (a
        backlog, a dead letter), nothing stored in flight, no readings held, and the
        confirmation window and the retry time letting a batch go."""
        store = self.store
        return (self.settings["forward_from_memory"] and self.plan.due_at(0) <= LIVE_WAIT_MS
                and not self._must_commit and store.count == 0
                and store.dead_count == 0 and not self._dead
                and self.settings["confirm"] != "spooled" and self.ledger.link == ONLINE
                and self.confirm_topic() in self._subscribed and not store.stale and store.closed is None
                and not self.disk_full and not self._undeleted and self._dead_flight is None
                and self._dead_gone is None and self.plan.prepared is None and now >= self._retry_at
                and all(entry.memory is not None for entry in self.ledger.entries())
                and self.ledger.wants(now) == "batch" and not self._hold_active(now)
                and live.refusal(self._pending, store.resolved, store.retimer) is None)

    def _send_live(self, now: int) -> bool:
        """What waits in memory, packed and published as one batch, kept in the ledger with its
        readings (nothing written). False: it could not go (too large for one batch, the rate
        plan, a refused publish): it is committed as usual."""
        capacity = min(self.capacity, packer.capacity(self.ledger.room(), self.topic,
                                                      self.settings["billing_unit_bytes"]))
        batch = live.pack(self._pending, capacity)
        if batch is None or batch.id in self.ledger:
            return False
        nbytes = len(batch.payload) + len(self.topic)
        if self.rate.wait_ms(now, nbytes) or not self._publish(batch.payload, now):
            return False
        self.rate.take(now, nbytes)
        units = batch.units(self.topic, self.settings["billing_unit_bytes"])
        self.store.add_counts(sent=len(batch), batches=1, units=units)
        readings = tuple(self._pending)
        runs = frozenset((batch.device, run) for run, _, _ in batch.keys)
        self.ledger.record(InFlight(batch.id, (), runs, batch.payload, units, now, memory=readings), now)
        for reading in readings:
            self._live_keys[(reading["device"], reading["run"], reading["seq"])] = batch.id
        self._pending, self._pending_since = [], None
        return True

    def _confirmed_live(self, entry: InFlight, now: int) -> None:
        """IoT Core has a batch sent from memory: its runs' watermarks are saved, then its
        readings are acknowledged. If they cannot be saved, the readings are committed."""
        readings = self._below_memory(list(entry.memory))
        save = now >= self._counters_at
        before = self.store.db.conn.total_changes
        try:
            acks = self.store.confirmed_live(readings, save_counters=save)
        except Exception as error:
            self._spill(now, "could not save the watermarks", lambda e: False, commit=False, also=[entry])
            if isinstance(error, sqlite3.DatabaseError) and is_corruption(error):
                raise
            self.problems.add("storage", f"could not save a confirmed batch's watermarks ({error}); "
                              "committing its readings")
            self.commit(now)
            return
        self._live_changes += self.store.db.conn.total_changes - before
        if save:            # the counters at most every checkpoint_interval_s (a commit saves them too)
            self._counters_at = now + int(self.settings["checkpoint_interval_s"] * 1000)
        for reading in readings:
            self._live_keys.pop((reading["device"], reading["run"], reading["seq"]), None)
        self._publish_acks(acks)

    def _spill(self, now: int, why: str, predicate=lambda entry: True, commit: bool = True,
               also: Optional[list] = None) -> None:
        """Batches sent from memory (those `predicate` picks, and `also`) are taken back: their
        readings are committed by the normal path (now, or at the next tick), acknowledged,
        and forwarded from the store (a copy may reach the cloud twice: it dedupes)."""
        if self.ledger is None:
            return
        entries = self.ledger.forget(lambda e: e.memory is not None and predicate(e)) + (also or [])
        if not entries:
            return
        readings = [reading for entry in sorted(entries, key=lambda e: e.first_order) for reading in entry.memory]
        for reading in readings:
            self._live_keys.pop((reading["device"], reading["run"], reading["seq"]), None)
        log.info("%s: committing %d reading(s) sent from memory", why, len(readings))
        self._pending[:0] = readings
        since = now - self.settings["max_latency_ms"]          # they have waited: they go at once
        self._pending_since = since if self._pending_since is None else min(self._pending_since, since)
        self._must_commit = True
        if commit and (not self.disk_full or now >= self._disk_retry_at):
            self.commit(now)

    def _below_memory(self, readings: list) -> list:
        """held_from never above a seq still in flight from memory (the store has it)."""
        floor: dict = {}
        for e in self.ledger.memory_entries():
            for r in e.memory:
                key = (r["device"], r["run"])
                floor[key] = min(floor.get(key, r["seq"]), r["seq"])
        if not floor:
            return readings
        return [dict(r, held_from=min(r["held_from"], floor[(r["device"], r["run"])]))
                if "held_from" in r and (r["device"], r["run"]) in floor else r for r in readings]

    def _only_watermarks(self) -> bool:
        """Since the last checkpoint only live confirmations wrote (a runs row each, the counters),
        the WAL is small, and a commit survives a power cut without a checkpoint (FULL, EXTRA):
        the periodic checkpoint is left out, each one wrote about 30 KB (the database's pages
        and header, the WAL begun again) for a few bytes of watermark. SQLite's own at 1,000
        WAL pages still comes; with NORMAL, checkpoint_interval_s bounds what a power cut rolls back."""
        store = self.store
        return (store.config.synchronous != "NORMAL" and store.wal_bytes() < store.wal_limit // 2
                and store.db.conn.total_changes - self._changes_at == self._live_changes)

    def _live_watch(self, now: int) -> None:
        """No confirmation can come for what went from memory (the link lost, the subscription
        ended): commit it."""
        if self.ledger.memory_entries() and (self.ledger.link != ONLINE or
                                             self.confirm_topic() not in self._subscribed):
            self._spill(now, f"link {self.ledger.link}")

    def _due(self, now: int) -> list[InFlight]:
        """The ledger's batches to send again; one sent from memory is committed instead (the
        ledger may just have found the link down: then all of them)."""
        due = self.ledger.due(now)
        late = {e.batch_id for e in due if e.memory is not None}
        if late or self.ledger.link != ONLINE:
            self._spill(now, "no confirmation in time",
                        lambda e: e.batch_id in late or self.ledger.link != ONLINE)
        return [e for e in due if e.memory is None]

    def _unsendable(self) -> None:
        """Readings too large for any batch (the planner set them apart): moved to the dead
        letters, counted, so they never block what follows."""
        ids = self.plan.too_large
        if ids:
            try:
                moved = self.store.to_dead_letters(ids, f"too large for a batch of {self.capacity} bytes")
            except (DiskFull, sqlite3.Error) as error:      # stays apart; tried again next tick
                self.problems.add("storage", f"could not move unsendable readings to the dead letters: {error}")
                return
            self.plan.too_large = []
            self.problems.add("too large for a batch", f"{moved} stored reading(s) cannot fit in a batch of "
                              f"{self.capacity} bytes (max_payload_bytes): moved to the dead letters")

    def _forward(self, now: int) -> None:
        mode = self.settings["confirm"]
        if mode != "spooled" and self.confirm_topic() not in self._subscribed:
            return
        if mode != "spooled":
            for entry in self._due(now):
                nbytes = len(entry.payload) + len(self.topic)
                if self.rate.wait_ms(now, nbytes):
                    return
                if not self._publish(entry.payload, now):
                    return
                self.rate.take(now, nbytes)
                self.ledger.sent_again(entry, now)
                self.store.add_counts(resent=len(entry.tags), batches=1, units=entry.units)
        self._more = False
        for _ in range(self.settings["max_in_flight"] + 2):
            if now < self._retry_at:
                return
            kind = "batch" if mode == "spooled" else self.ledger.wants(now)
            if kind is None:
                return
            prepared = self.plan.take(kind)
            if prepared is None:
                prepared = self._prepare(kind, now)
            if prepared is None:
                return
            nbytes = len(prepared.batch.payload) + len(self.topic)
            if self.rate.wait_ms(now, nbytes):
                self.plan.keep(prepared)
                return
            if not self._send(prepared, now):
                return
        self._more = True

    def _prepare(self, kind: str, now: int) -> Optional[Prepared]:
        """The next batch to send (the planner's choice), or None."""
        in_flight = self.ledger.row_ids()
        capacity = self.capacity
        if kind == "batch" and self.ledger.link == ONLINE:       # within the window
            capacity = min(capacity, packer.capacity(self.ledger.room(), self.topic,
                                                     self.settings["billing_unit_bytes"]))
        if kind == "probe" and self.ledger.link == UNKNOWN and not in_flight and not self._hold_active(now):
            # The first message since start: nothing says the link is down, so it waits for
            # the latency deadline like a batch and carries what one billing unit holds (a
            # reading alone first would cost a message and its echo more, online at 1 Hz).
            capacity = min(self.capacity, packer.capacity(self.settings["billing_unit_bytes"], self.topic,
                                                          self.settings["billing_unit_bytes"]))
        elif kind == "probe":
            return self._probe(in_flight, now)
        holding = self._hold_active(now)
        if not self.plan.worth_packing(now, self.store.count - len(in_flight), capacity):
            return None
        return self.plan.pack(kind, self.store.newest(), self._rows_from(self.plan.cursor), capacity,
                              in_flight, self._held if holding else None, now, limit=self.capacity)

    def _rows_from(self, from_id: int) -> Iterator:
        """Stored rows from `from_id`, oldest first, a page at a time."""
        while True:
            rows = self.store.scan(from_id, SCAN_PAGE)
            yield from rows
            if len(rows) < SCAN_PAGE:
                return
            from_id = rows[-1].id + 1

    def _probe(self, in_flight: set, now: int) -> Optional[Prepared]:
        """The planner's probe; if every recent reading is in flight, the smallest batch again."""
        prepared = self.plan.probe(self.store.latest(SCAN_PAGE), self.capacity, in_flight, self.store.count)
        if prepared is not None:
            return prepared
        entries = sorted(self.ledger.entries(), key=lambda e: len(e.payload))
        if entries and self._publish(entries[0].payload, now):
            self.ledger.probed(now)
            self.ledger.sent_again(entries[0], now, timed_out=False)
            self.store.add_counts(resent=len(entries[0].tags), batches=1, units=entries[0].units)
        return None

    def _send(self, prepared: Prepared, now: int) -> bool:
        batch = prepared.batch
        if not self._publish(batch.payload, now):
            self._rewind()
            return False
        nbytes = len(batch.payload) + len(self.topic)
        self.rate.take(now, nbytes)
        units = batch.units(self.topic, self.settings["billing_unit_bytes"])
        self.store.add_counts(sent=len(batch), batches=1, units=units)
        self.plan.sent(prepared)
        if self.settings["confirm"] == "spooled":
            self._delete(batch.tags, now)
        else:
            runs = frozenset((batch.device, run) for run in set(map(itemgetter(0), batch.keys)))
            entry = InFlight(batch.id, batch.tags, runs, batch.payload, units, now, probe=prepared.kind == "probe",
                             keep=prepared.keep)
            if self.ledger.record(entry, now):      # probes forgotten: their rows are unsent
                self._rewind()
        return True

    def _forward_dead(self, now: int) -> None:
        """The oldest dead letter to IoT Core on dead_letter_topic, one a second at most, one
        in flight; it is deleted when its echo comes back (or, confirm spooled, once sent)."""
        spooled = self.settings["confirm"] == "spooled"
        if now < self._dead_at or now < self._retry_at:
            return
        if self._dead_gone is not None and not self._forget_dead(now):
            return                         # not sent again: IoT Core has it
        if not spooled and (self.dead_topic not in self._subscribed or self.ledger.link != ONLINE):
            return
        flight = self._dead_flight
        if flight is not None:
            if now - flight[3] < self.ledger.timeout_ms:
                return
            letter_id, key, payload = flight[0], flight[1], flight[2]
        else:
            letter = self.store.next_dead_letter() if self.store.dead_count > 0 else None
            if letter is None:
                return
            letter_id, key = letter["id"], f"{letter['at']}-{letter['id']}"
            payload = dead_letter_message(letter, key, self.thing)
        nbytes = len(payload) + len(self.dead_topic)
        if self.rate.wait_ms(now, nbytes):
            return
        if not self._publish(payload, now, self.dead_topic):
            return
        self.rate.take(now, nbytes)
        self._dead_at = now + DEAD_EVERY_MS
        if spooled:
            self._dead_gone = letter_id
            self._forget_dead(now)
        else:
            self._dead_flight = (letter_id, key, payload, now)

    def _forget_dead(self, now: int) -> bool:
        """Delete the dead letter IoT Core has (`_dead_gone`); if the disk refuses, it is
        tried again in DISK_RETRY_MS and nothing else is sent meanwhile (not a copy of it)."""
        try:
            self.store.forwarded_dead_letter(self._dead_gone)
        except (DiskFull, sqlite3.OperationalError) as error:
            self.problems.add("storage", f"could not delete a forwarded dead letter ({error}); retrying")
            self._dead_at = now + DISK_RETRY_MS
            return False
        self._dead_gone = None
        return True

    def _publish(self, payload: bytes, now: int, topic: Optional[str] = None) -> bool:
        try:
            self.port.publish_iot(topic or self.topic, payload)
        except Exception as error:
            self.store.add_counts(publish_errors=1)
            self.problems.add(f"publish {type(error).__name__}", f"PublishToIoTCore refused a batch: {error}")
            self.ledger.failed(now)
            self._retry_at = now + min(int(self.settings["probe_max_s"] * 1000),
                                       int(self.settings["confirm_timeout_s"] * 1000))
            return False
        return True

    def _rewind(self) -> None:
        """Rows may have become unsent below the cursor: the planner scans from the start."""
        self.plan.rewind(self.clock.mono_ms(), stored=self.store.count > 0)

    def _hold_active(self, now: int) -> bool:
        hold_ms = self.settings["unsynced_hold_s"] * 1000
        active = bool(hold_ms) and not self.clock.synced() and now - self._hold_anchor < hold_ms
        if self._holding and not active:
            self._rewind()
        self._holding = active
        return active

    def _held(self, row) -> bool:
        return not self._synced_runs.get(row.key, False)

    # -- upkeep and report --------------------------------------------------------------------
    def _retime(self, now: int) -> None:
        """One chunk of a run's re-timing per tick (the loop stays responsive)."""
        if not self.store.stale:
            return
        try:
            self.store.retime_step()
        except DiskFull as error:
            self.problems.add("storage", f"could not re-time stored readings (retrying): {error}")
            return
        if not self.store.stale:
            self.store.checkpoint()            # TRUNCATE when the re-timing grew the WAL

    def overloaded(self, dropped: int) -> None:
        """Readings the runner's bounded inbox let go under a flood (the sensor resends them)."""
        self.store.add_counts(overloaded=dropped)
        self.problems.add("overloaded", f"dropped {dropped} incoming message(s): more arrived than the store can "
                          "take (the sender resends what is not acknowledged)")

    def _delete(self, ids, now: int) -> None:
        """Delete confirmed rows; a full disk keeps them in _undeleted, deleted again at the
        next upkeep after DISK_RETRY_MS (they are behind the cursor: nothing else would)."""
        try:
            self.store.delete(ids)
        except DiskFull as error:
            self._undeleted.update(ids)
            self._undeleted_at = now + DISK_RETRY_MS
            self.problems.add("storage", f"could not delete confirmed readings (retrying): {error}")

    def _forget_runs(self) -> None:
        """Keep the clock flags only of runs the store still knows or that wait to be committed."""
        waiting = {(r["device"], r["run"]) for r in self._pending}
        waiting |= {(r[0], r[1]) for r in self._live_keys}
        self._synced_runs = {key: synced for key, synced in self._synced_runs.items()
                             if key in waiting or self.store.knows(key)}

    def _upkeep(self, now: int) -> None:
        if self._undeleted and now >= self._undeleted_at:
            ids, self._undeleted = sorted(self._undeleted), set()
            self._delete(ids, now)
            self.plan.changed()
        if self.store.salvaging and now >= self._salvage_at:
            copied = self.store.salvage_step()   # a few chunks a tick; after a failure, a pause
            if self.store.salvage_error is not None:
                self._salvage_at = now + DISK_RETRY_MS
            if copied:                          # below the cursor: scanned again
                self.plan.changed()
                self._rewind()
        try:
            if now >= self._maintenance_at:
                self._maintenance_at = now + MAINTENANCE_MS
                if self.store.enforce_age():
                    self.plan.changed()
                    self._rewind()
                    self.evicting = True
                self.store.prune_runs(max_runs=store_module.MAX_RUNS // 2)   # room for new runs at the door
                self._forget_runs()
                self.store.vacuum()
            if now - self._checkpoint_at >= self.settings["checkpoint_interval_s"] * 1000:
                self._checkpoint_at = now
                if not self._only_watermarks():
                    self.store.checkpoint()
                self._changes_at, self._live_changes = self.store.db.conn.total_changes, 0
        except Exception as error:   # a full disk must not stop the loop
            if isinstance(error, sqlite3.DatabaseError) and is_damaged_read(error):
                raise
            self.problems.add(f"upkeep {type(error).__name__}", f"store upkeep failed: {error}")

    def status(self) -> dict:
        """reported.store of the shadow."""
        try:
            backlog = self.store.stats()
        except Exception:
            backlog = {"count": self.store.count}
        latest = {k: self._latest[k] for k in LATEST_KEYS if self._latest and k in self._latest}
        section = {"link": self.ledger.link if self.settings["confirm"] != "spooled" else "spooled",
                   "in_flight": len(self.ledger), "disk_full": self.disk_full, "evicting": self.evicting,
                   "backlog": backlog, "counters": dict(self.store.counters),
                   "latest": latest or None, "settings": dict(self.settings)}
        for drop in ("settings", "latest"):
            if len(json.dumps({"state": {"reported": {"store": section}}})) <= SHADOW_LIMIT:
                break
            section.pop(drop)
        return section

    def _report(self, now: int, force: bool = False) -> None:
        state = (self.ledger.link, self.disk_full, self.evicting, json.dumps(self.settings, sort_keys=True))
        changed_state = state != self._state
        if not force:
            if changed_state:
                if now < self._state_report_at:
                    return
            elif now < self._report_at:
                return
        section = self.status()
        if not force and not changed_state and section == self._last_report:
            self._report_at = now + int(self.settings["shadow_interval_s"] * 1000)
            return
        sent = dict(section)
        if self._last_report is not None and sent.get("settings") == self._last_report.get("settings"):
            sent.pop("settings", None)     # the shadow keeps what was reported: only a change goes again
        try:
            self.port.report(sent)
        except Exception as error:
            self.problems.add(f"shadow {type(error).__name__}", f"could not update the shadow: {error}")
            self._report_at = now + int(self.settings["shadow_interval_s"] * 1000)
            return
        self._state, self._last_report = state, section
        self._report_at = now + int(self.settings["shadow_interval_s"] * 1000)
        self._state_report_at = now + STATE_REPORT_MIN_MS

    def _next_delay(self, now: int) -> int:
        """Milliseconds until the next deadline in the future (what was due ran in this tick;
        a deadline already past is waiting on something else, which has its own)."""
        if self._more or self.store.stale:
            return 0
        times = [self._report_at, self._state_report_at, self._maintenance_at]
        if self._undeleted:
            times.append(self._undeleted_at)
        if self._pending_since is not None:
            times.append(self._disk_retry_at if self.disk_full else self._pending_since + self.commit_wait_ms)
            times.append(self.plan.due_at(self._pending_since))
        deadline = self.ledger.next_deadline(now)
        if deadline is not None:
            times.append(deadline)
        if self.plan.deadline() is not None:
            times.append(self.plan.deadline())
        if self.plan.prepared is not None:
            times.append(now + max(1, self.rate.wait_ms(now, len(self.plan.prepared.batch.payload) + len(self.topic))))
        times.append(self._retry_at)
        if self._dead_flight is not None:              # its time-out; nothing else goes before
            times.append(self._dead_flight[3] + self.ledger.timeout_ms)
        elif self.store.dead_count > 0:
            times.append(self._dead_at)
        if self._holding:
            times.append(self._hold_anchor + int(self.settings["unsynced_hold_s"] * 1000))
        future = [t for t in times if t > now]
        return max(1, min(1000, min(future) - now)) if future else 1000

    def close(self) -> None:
        """Commit what is held (what is in flight from memory too), acknowledge it, report,
        close the store."""
        try:
            self._spill(self.clock.mono_ms(), "closing", commit=False)
            self.commit()
        finally:
            try:
                self._report(self.clock.mono_ms(), force=True)
            finally:
                self.store.close()
