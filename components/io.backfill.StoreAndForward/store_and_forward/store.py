"""The SQLite store (through sqlite-utils): readings, per-run acknowledgement watermarks,
dead letters, counters. One thread uses it (the forwarder's loop).

    store = Store(StoreConfig(path=work / "store.db"), clock)       # opens or creates (0600, WAL)
    result = store.commit(readings, dead_letters)   # ONE transaction; raises DiskFull
    result.acks                                     # [{"device", "run", "seq"}]: publish them now
    rows = store.scan(from_id=0, limit=500)         # oldest first; store.newest() for live-first
    store.delete(row_ids)                           # confirmed by IoT Core
    store.enforce_age(); store.vacuum(); store.checkpoint()
    store.stats()                                   # {"count", "bytes", "oldest_t"}
    store.close()

Tables: readings (id = arrival order; (device, run, seq) unique: a duplicate is a no-op),
runs (watermark, offset for re-timing, readings given up by the sensor), dead_letters
(raw bytes bounded), meta (counters and the row count, so start-up never scans).
A commit inserts the readings, re-times runs whose clock stepped, records dead letters,
advances the watermarks (the sensor's `held_from` closes gaps it gave up, counted), applies
the storage bounds and saves the counters, all or nothing. Its acks may be published as
soon as it returns: with synchronous=FULL they survive a power cut; with NORMAL (default)
the database stays consistent but the transactions since the last checkpoint may roll back
on a power cut (never on a crash or SIGKILL).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

from sqlite_utils import Database

from .retime import Retimer, retimed
from .salvage import Aside, OldFile, aside_target, done, forget, move_aside, pending
from .watermark import Watermark

log = logging.getLogger(__name__)

COUNTERS = ("received", "stored", "duplicates", "sent", "resent", "confirmed", "evicted", "rejected",
            "dead_lettered", "given_up", "retimed", "batches", "units", "publish_errors", "storage_errors",
            "set_aside", "set_aside_readings", "dead_evicted", "dead_dropped",
            "dead_forwarded", "conflicts", "overloaded", "live")
PLAUSIBLE_T = 1_577_836_800_000      # 2020-01-01: an older t has no known age (a clock not set yet)
BODY_SKIP = ("device", "run", "seq", "t", "mono", "t_orig", "held_from")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_CHUNK = 500
SALVAGE_CHUNKS = 8                # transactions of a salvage per call (the loop is not held longer)
RETIME_CHUNK = 5_000
DEAD_ROW_BYTES = 600              # a dead letter's row beyond its raw bytes (reason, topic, index)
WAL_LIMIT = 16 * 1024 * 1024      # journal_size_limit, and a TRUNCATE checkpoint above it
RUN_KEEP_MS = 30 * 86_400_000     # a run with nothing stored is forgotten this long after it was last seen
MAX_RUNS = 10_000                 # and beyond this many runs, those unseen longest first


class DiskFull(Exception):
    """The database could not be written (disk or quota full, I/O error); nothing of the
    failed transaction was kept. Retry later."""


@dataclass
class StoreConfig:
    path: Path
    synchronous: str = "NORMAL"
    max_rows: int = 1_000_000
    max_bytes: int = 512 * 1024 * 1024
    max_age_ms: int = 30 * 86_400_000          # 0: no age limit
    full_policy: str = "drop_oldest"           # or "reject_new"
    max_dead_letters: int = 1000
    dead_letter_max_bytes: int = 4096
    retime_threshold_ms: int = 1000


@dataclass
class DeadLetter:
    topic: str
    raw: bytes
    reason: str
    identity: Optional[tuple] = None           # (device, run, seq) when it could be read


class Row(NamedTuple):
    """A stored reading as it is forwarded (a tuple: scanning makes one per row, cheaply)."""
    id: int
    device: str
    run: str
    seq: int
    t: int
    mono: int
    t_orig: Optional[int]
    body: str

    def reading(self) -> dict:
        """The reading as forwarded (without device)."""
        doc = {"run": self.run, "seq": self.seq, "t": self.t, "mono": self.mono}
        doc.update(json.loads(self.body))
        if self.t_orig is not None:
            doc["t_orig"] = self.t_orig
        return doc

    @property
    def key(self) -> tuple:
        return (self.device, self.run)


_new_row = functools.partial(tuple.__new__, Row)     # Row from a SELECT of READING_COLUMNS, in C


@dataclass
class CommitResult:
    acks: list = field(default_factory=list)
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    evicted: int = 0
    given_up: int = 0
    retimed: int = 0
    dead_lettered: int = 0
    retimed_runs: set = field(default_factory=set)
    changed: bool = False          # rows were inserted, deleted or re-timed


# SQLITE_PERM, _BUSY, _LOCKED, _NOMEM, _READONLY, _INTERRUPT, _IOERR, _FULL, _CANTOPEN,
# _PROTOCOL (names from Python 3.11, which also sets sqlite_errorcode; 3.10 gives the text only)
STORAGE_CODES = (3, 5, 6, 7, 8, 9, 10, 13, 14, 15)
STORAGE_TEXTS = ("disk is full", "disk i/o", "unable to open", "readonly", "locked", "interrupted",
                 "out of memory", "permission", "locking protocol", "closed database")


def is_storage_error(error: BaseException) -> bool:
    """The disk, the file or the database's state (full, I/O, busy, locked, interrupted, a
    permission, a closed database), not the message being written: what waits is kept in
    memory and tried again. Any other error but corruption is the message's own (a value
    SQLite cannot take: too big, a type it cannot bind, a constraint): only that message
    becomes a dead letter (Forwarder._isolate)."""
    if not isinstance(error, sqlite3.Error):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in STORAGE_CODES
    text = str(error).lower()
    return any(s in text for s in STORAGE_TEXTS)


def is_corruption(error: BaseException) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file is damaged, not full and not our SQL."""
    if isinstance(error, DamagedRead):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(error).lower()
    return "malformed" in text or "not a database" in text


def is_damaged_read(error: BaseException) -> bool:
    """is_corruption, or SQLITE_TOOBIG met reading stored rows: a damaged record header
    claiming a column over SQLite's 1 GB limit (1 time in 75 after 8 KB of random bytes over
    the middle of a 3,000-reading file: the forwarder then failed every tick and never set
    the file aside). For reads only: a value too big to write is the message's own error."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_TOOBIG:
        return True
    return is_corruption(error) or "string or blob too big" in str(error).lower()


class DamagedRead(sqlite3.DatabaseError):
    """is_damaged_read met reading stored rows inside a commit (an SQLITE_TOOBIG there is the
    file's, not the message's): is_corruption, so the forwarder sets the file aside (review of
    8e0dde9 #6)."""


DERIVED = ("temperature", "correction")     # computed by the correction: may differ between copies


def same_reading(reading: dict, stored_t: int, stored_t_orig: Optional[int], stored_body: str) -> bool:
    """Whether `reading` is a copy of the stored one: the same time and the same measured
    values (the correction's own output may differ, if it restarted in between)."""
    if reading["t"] not in (stored_t, stored_t_orig):
        return False
    body = json.loads(stored_body)
    ours = {k: v for k, v in reading.items() if k not in BODY_SKIP and k not in DERIVED}
    return ours == {k: v for k, v in body.items() if k not in DERIVED}


def body_of(reading: dict) -> str:
    return json.dumps({k: v for k, v in reading.items() if k not in BODY_SKIP}, separators=(",", ":"))


def id_ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """The ids as ranges of consecutive integers, (low, high) each, ascending."""
    ordered = sorted(set(ids))
    if ordered and ordered[-1] - ordered[0] == len(ordered) - 1:
        return [(ordered[0], ordered[-1])]
    ranges: list[tuple[int, int]] = []
    for rid in ordered:
        if ranges and ranges[-1][1] == rid - 1:
            ranges[-1] = (ranges[-1][0], rid)
        else:
            ranges.append((rid, rid))
    return ranges


READING_COLUMNS = "id, device, run, seq, t, mono, t_orig, body"
DEAD_FIELDS = "at, topic, reason, size, raw, device, run, seq"
DEAD_COLUMNS = f"id, {DEAD_FIELDS}"


def insert_ignoring(table: str, columns: str) -> str:
    """INSERT OR IGNORE of one row of `columns` (a salvaged row keeps its id)."""
    return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({', '.join('?' * len(columns.split(',')))})"


@dataclass
class _Memory:
    """What the store knows in memory and _open overwrites with what the file says."""
    counters: dict
    marks: dict
    given_up: dict
    count: int
    dead_count: int
    stale: dict            # runs being re-timed: their offset
    progress: dict         # the salvage of each set-aside file


def synchronous_mode(mode: str) -> str:
    mode = mode.upper()
    if mode not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
    return mode


def _larger(*counters: dict) -> dict:
    """Each counter at its largest value among `counters` (the same history, saved at
    different times: the larger is the later)."""
    return {name: max(int(c.get(name, 0) or 0) for c in counters) for name in COUNTERS}


class Store:
    def __init__(self, config: StoreConfig, clock) -> None:
        self.config = config
        self.clock = clock
        self.counters: dict[str, int] = {name: 0 for name in COUNTERS}
        self.count = 0
        self.dead_count = 0
        self.retimer = Retimer(config.retime_threshold_ms)
        self._marks: dict[tuple, Watermark] = {}
        self._given_up: dict[tuple, int] = {}
        self._stale: dict[tuple, int] = {}      # runs re-timed in chunks: their new offset
        self.set_aside_files: list[Path] = []
        self.closed: Optional[str] = None       # why the database is not open (a set-aside could not reopen)
        self._asides: list[Aside] = pending(Path(config.path))   # set-asides whose salvage is not done
        self._progress: dict[str, dict] = {}    # each one's salvage, as the database records it
        self.salvage_error: Optional[str] = None    # why the last salvage_step stopped short
        if self._asides:                        # a restart in the middle of one: go on with it
            self._take_over()
            return
        try:
            self._open()
            self._check_ends()
        except sqlite3.DatabaseError as error:
            if not is_damaged_read(error):
                raise
            self._marks, self._given_up, self._stale = {}, {}, {}   # read from the damaged file: its runs,
            self.set_aside(str(error), known=False)                 # capped, at _settle

    # -- opening -------------------------------------------------------------------------
    def _check_ends(self) -> None:
        """Raise SQLITE_CORRUPT/NOTADB if the file is damaged where open can tell. Cheap, so that start-up
        stays immediate with any backlog (PRAGMA quick_check reads every page): the header
        and schema were read by _open, and here both ends of every table's b-tree (a
        truncated file loses its last pages). Damage in between is met, and handled, later."""
        for table in ("readings", "dead_letters", "runs", "meta"):
            for order in ("ASC", "DESC"):
                self.db.execute(f"SELECT * FROM {table} ORDER BY rowid {order} LIMIT 1").fetchall()

    def set_aside(self, reason: str, min_id: int = 0, known: bool = True) -> Path:
        """The file is damaged: move it (and its WAL) aside with a timestamp, never delete it,
        and go on in a new database. Every reading and dead letter that can still be read from
        it is copied over (readings with their ids); the other readings stay in the old file,
        counted in set_aside_readings, the other dead letters in dead_dropped.
        What this store knew in memory carries over: the counters and each run's watermark
        (its `acked` only: readings it held above a gap are gone with the file, and the sensor
        still holds them). Row ids go on above the old ones and `min_id`. `known`: the
        watermarks in memory are the store's (not read from the damaged file)."""
        self._close_db()
        target = aside_target(Path(self.config.path), self.clock.wall_ms())
        self._asides.append(Aside(target, reason, self.count, self.dead_count, min_id, known=known))
        self._marks = {key: Watermark(mark.acked) for key, mark in self._marks.items()}
        self._take_over()
        return target

    def reopen(self) -> bool:
        """After a set-aside whose new database could not be opened (`closed` says why): try
        again, carrying over what the old file still holds. True once the store is open."""
        if self.closed is not None:
            self._take_over()
        return self.closed is None

    @property
    def salvaging(self) -> bool:
        """Readings of a set-aside file still wait to be copied in (salvage_step)."""
        return self.closed is None and bool(self._asides)

    def _take_over(self) -> None:
        """Move the damaged file aside, open the new database and write into it, in one small
        transaction, what must be there before anything else: ids above every old one, the
        watermarks and the counters (set_aside counted). Then copy in what the old file
        still holds (salvage_step). If the move (a read-only file system), the open (the disk
        full, a permission) or that transaction (a disk nearly full) fails, the store stays
        closed with what it knows in memory, and `reopen` tries again: nothing else may write
        (review of 5dc89ea #2, #3, #5, #7: the old file is read only once the new one is open)."""
        memory = self._memory()
        try:
            for aside in self._asides:
                if not aside.moved:
                    move_aside(Path(self.config.path), aside)
                    self.set_aside_files.append(aside.target)
            self._open()
            self._check_ends()
            self._settle(memory)
        except (sqlite3.Error, OSError) as error:
            self._stay_closed(error, memory)
            return
        self.closed = None
        for aside in self._asides:
            log.error("the database %s was damaged (%s): moved aside to %s (kept, not deleted); what it "
                      "still holds is copied into a new database", self.config.path, aside.reason, aside.target.name)
        self.salvage_step()

    def _memory(self) -> _Memory:
        return _Memory(dict(self.counters), {key: mark.copy() for key, mark in self._marks.items()},
                       dict(self._given_up), self.count, self.dead_count, dict(self._stale), dict(self._progress))

    def _stay_closed(self, error: BaseException, memory: _Memory) -> None:
        """The new database is not usable yet: closed, and the memory as it was. A new file
        found damaged too is set aside at the next attempt."""
        self._close_db()
        if is_damaged_read(error):
            self._asides.append(Aside(aside_target(Path(self.config.path), self.clock.wall_ms()), str(error),
                                      known=True))
        self.closed = str(error) or type(error).__name__
        self.counters, self._given_up = memory.counters, memory.given_up
        self._marks, self.count, self.dead_count = memory.marks, memory.count, memory.dead_count
        self._stale, self._progress = memory.stale, memory.progress
        log.error("the database %s was set aside (%s) but a new one could not be opened (%s): nothing is "
                  "stored or acknowledged until it can", self.config.path, self._asides[-1].reason, error)

    def _close_db(self) -> None:
        try:
            self.db.close()
        except (AttributeError, sqlite3.Error):
            pass

    def _settle(self, memory: _Memory) -> None:
        """The first transaction in the new database: row ids above every old one (and those
        in flight), each run's watermark and re-timing, the counters and the salvage of each
        set-aside file still pending (a restart goes on from there; review of 8e0dde9 #2, #5:
        the re-timing and a pending salvage's progress were the new file's empty ones).
        Watermarks: memory's when the file was set aside by this process (a damaged runs row
        may read as a larger `acked`: review of 8e0dde9 #3); at a restart the old file's,
        capped (OldFile.runs). set_aside counted once per file."""
        counters = _larger(memory.counters, self.counters)
        for key, mark in memory.marks.items():
            self._merge_run(key, mark, memory.given_up.get(key, 0))
        stale = {**self._stale, **memory.stale}
        top = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        top = top[0] if top else 0
        names = {aside.target.name for aside in self._asides}
        progress = {name: entry for name, entry in {**self._progress, **memory.progress}.items() if name in names}
        for aside in self._asides:          # set aside while an earlier one's salvage was pending
            if aside.target.name not in progress:
                for name, entry in OldFile.progress_in(aside.target).items():
                    if name in names:
                        progress.setdefault(name, entry)
        for aside in self._asides:
            if aside.target.name in progress:
                continue                          # settled before (a restart, an earlier set-aside)
            old = OldFile(aside.target)
            try:
                counters = _larger(counters, old.counters())
                if not aside.known:
                    self._take_runs(old, stale)
                top = max(top, old.top("readings"), aside.min_id)
                held = aside.held if aside.held is not None else old.held()
                dead_held = aside.dead_held if aside.dead_held is not None else old.dead_count()
            finally:
                old.close()
            counters["set_aside"] += 1
            progress[aside.target.name] = {"readings": 0, "dead": 0, "copied": 0, "dead_copied": 0,
                                           "held": held, "dead_held": dead_held}
        self._stale = stale
        with self.db.atomic():
            self.db.execute("DELETE FROM sqlite_sequence WHERE name = 'readings'")
            self.db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('readings', ?)", [top])
            for key, mark in self._marks.items():
                self._save_run(key, mark, self._given_up.get(key, 0))
            self._save_meta(counters, self.count)
            self._save_progress(progress)
        self.counters, self._progress = counters, progress

    def _take_runs(self, old: OldFile, stale: dict) -> None:
        """An old file found at a restart (or damaged at start): its watermarks (capped:
        OldFile.runs), re-timing and the runs it was re-timing."""
        for key, (acked, given_up, offset, max_seq) in old.runs().items():
            self._merge_run(key, Watermark(acked), given_up)
            if offset is not None and self.retimer.state(key) is None:
                self.retimer.load(key, offset, max_seq)
        for key, offset in old.stale().items():
            stale.setdefault(key, offset)

    def _merge_run(self, key: tuple, mark: Watermark, given_up: int) -> None:
        """The larger watermark (the same run, known at different times: the larger is the later)."""
        if mark.acked > self.watermark(*key):
            self._marks[key] = mark
        self._given_up[key] = max(self._given_up.get(key, 0), given_up)

    def salvage_step(self, chunks: int = SALVAGE_CHUNKS) -> int:
        """Copy into the database what the set-aside files still hold, a transaction a chunk,
        at most `chunks` transactions a call (review of 8e0dde9 #1: a whole file in one call
        held the loop, or the start), until all is in (then the marker goes and what could
        not be read is counted) or one fails (the disk full: it waits for the next call, the
        marker stays, nothing is dropped; review of 5dc89ea #2; `salvage_error` says why).
        Readings keep their ids, below every new one: the oldest, first to go under
        drop_oldest (counted in evicted). Returns how many readings were copied (the
        forwarder scans again from the start)."""
        copied, self.salvage_error = 0, None
        for aside in list(self._asides):
            name = aside.target.name
            old = OldFile(aside.target)
            try:
                for table, key in (("readings", "readings"), ("dead_letters", "dead")):
                    while chunks > 0 and self._progress[name][key] is not None:
                        copied += self._copy(old, name, table, key)
                        chunks -= 1
                if not done(self._progress[name]):
                    return copied
                if not self._progress[name].get("done"):
                    self._finish(aside)
            except (DiskFull, sqlite3.Error) as error:
                log.warning("the new database could not take all of %s yet (%s): the rest is copied later",
                            name, error)
                self.salvage_error = str(error)
                return copied
            finally:
                old.close()
            try:
                forget(aside)
            except OSError as error:          # EACCES, EROFS: the salvage is done (meta says), deleted later
                log.warning("the salvage of %s is done but its marker could not be deleted (%s): tried again "
                            "later", name, error)
                self.salvage_error = str(error)
                continue
            self._asides.remove(aside)
        return copied

    def _copy(self, old: OldFile, name: str, table: str, key: str) -> int:
        """One chunk of one table of an old file, from where its salvage is (walking the ids
        that exist: salvage.OldFile.walk)."""
        rows, after = old.walk(table, READING_COLUMNS if key == "readings" else DEAD_COLUMNS, self._progress[name][key])
        if key == "readings":
            return self._copy_readings(name, rows, after)
        self._copy_dead(name, rows, after)
        return 0

    def _copy_readings(self, name: str, rows: list, after: Optional[int]) -> int:
        """Copied: the rows inserted (INSERT OR IGNORE skipped some, yet counted them copied:
        review of 8e0dde9 #5). One whose id is taken by another reading gets a new id; one
        whose (device, run, seq) is stored already is not counted (it may be this file's own
        row read twice through a damaged page: counted in set_aside_readings at worst)."""
        counters = dict(self.counters)
        with self._transaction():
            before = self.db.conn.total_changes
            self.db.conn.executemany(insert_ignoring("readings", READING_COLUMNS), rows)
            inserted = self.db.conn.total_changes - before
            if inserted < len(rows):
                self._place_skipped(rows)
                inserted = self.db.conn.total_changes - before
            count = self.count + inserted
            evicted = self._evict_over_limits(count) if self.config.full_policy == "drop_oldest" else 0
            counters["evicted"] += evicted
            entry = self._progress[name]
            progress = dict(self._progress, **{name: dict(entry, readings=after, copied=entry["copied"] + inserted)})
            self._save_meta(counters, count - evicted)
            self._save_progress(progress)
        self.counters, self.count, self._progress = counters, count - evicted, progress
        return inserted

    def _place_skipped(self, rows: list) -> None:
        """After an INSERT OR IGNORE that skipped some of `rows`: those whose reading is not
        stored get a new id."""
        for row in rows:
            found = self.db.execute("SELECT 1 FROM readings WHERE device = ? AND run = ? AND seq = ?",
                                    list(row[1:4])).fetchone()
            if not found:
                self.db.conn.execute(insert_ignoring("readings", READING_COLUMNS[4:]), row[1:])
                log.warning("a salvaged reading's id %d was taken: stored with a new id", row[0])

    def _copy_dead(self, name: str, rows: list, after: Optional[int]) -> None:
        """Dead letters get new ids (new ones may have taken the old ids since)."""
        entry = self._progress[name]
        progress = dict(self._progress, **{name: dict(entry, dead=after, dead_copied=entry["dead_copied"] + len(rows))})
        counters = dict(self.counters)
        with self._transaction():
            self.db.conn.executemany(insert_ignoring("dead_letters", DEAD_FIELDS), [row[1:] for row in rows])
            gone = self._trim_dead(len(rows))
            counters["dead_evicted"] += gone
            self._save_meta(counters, self.count)
            self._save_progress(progress)
        self.counters, self._progress = counters, progress
        self.dead_count += len(rows) - gone

    def _finish(self, aside: Aside) -> None:
        """All that could be read is in: what could not is counted, and the salvage is done."""
        entry = self._progress[aside.target.name]
        counters = dict(self.counters)
        counters["set_aside_readings"] += max(0, (entry["held"] or 0) - entry["copied"])
        counters["dead_dropped"] += max(0, (entry["dead_held"] or 0) - entry["dead_copied"])
        progress = dict(self._progress, **{aside.target.name: dict(entry, done=True)})
        with self._transaction():
            self._save_meta(counters, self.count)
            self._save_progress(progress)
        self.counters, self._progress = counters, progress
        log.warning("%d of the %s readings %s held are in the new database (the rest is counted in "
                    "set_aside_readings)", entry["copied"], entry["held"], aside.target.name)

    def _save_progress(self, progress: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('salvage', ?)",
                        [json.dumps(progress, separators=(",", ":"))])

    def _open(self) -> None:
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        if new:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        # one thread at a time (the loop); opened before it starts, closed after it stops
        self.db = Database(sqlite3.connect(str(path), check_same_thread=False))
        if new:
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.db.enable_wal()
        self.db.execute(f"PRAGMA journal_size_limit={self.wal_limit}")
        self.db.execute(f"PRAGMA synchronous={synchronous_mode(self.config.synchronous)}")
        self._schema()
        self._load()

    def set_synchronous(self, mode: str) -> None:
        """Now; while the store is closed, when the database is opened (review of 5dc89ea #4)."""
        mode = self.config.synchronous = synchronous_mode(mode)
        if self.closed is None:
            self.db.execute(f"PRAGMA synchronous={mode}")

    def _schema(self) -> None:
        db = self.db
        with db.atomic():
            # AUTOINCREMENT: ids only grow, never reused after the table empties (arrival order,
            # and the forwarder's scan cursor, depend on it)
            db.execute("CREATE TABLE IF NOT EXISTS readings (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                       "device TEXT NOT NULL, run TEXT NOT NULL, seq INTEGER NOT NULL, t INTEGER NOT NULL, "
                       "mono INTEGER NOT NULL, t_orig INTEGER, body TEXT NOT NULL)")
            db["readings"].create_index(["device", "run", "seq"], index_name="readings_key", unique=True,
                                        if_not_exists=True)
            db["runs"].create({"device": str, "run": str, "acked": int, "above": str, "offset": int,
                               "max_seq": int, "given_up": int, "seen": int}, pk=("device", "run"),
                              if_not_exists=True)
            db["dead_letters"].create({"id": int, "at": int, "topic": str, "reason": str, "size": int,
                                       "raw": bytes, "device": str, "run": str, "seq": int}, pk="id",
                                      if_not_exists=True)
            db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)

    def _load(self) -> None:
        meta = {row["key"]: row["value"] for row in self.db.query("SELECT key, value FROM meta")}
        saved = json.loads(meta.get("counters", "{}"))
        for name in COUNTERS:
            self.counters[name] = int(saved.get(name, 0))
        if "rows" in meta:
            self.count = int(meta["rows"])
        else:                                    # a database from before the meta row: once
            self.count = self.db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        self.dead_count = self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        self._stale = {(device, run): int(offset) for device, run, offset in json.loads(meta.get("stale", "[]"))}
        self._progress = json.loads(meta.get("salvage", "{}"))
        self._marks, self._given_up = {}, {}
        for row in self.db.query("SELECT * FROM runs"):
            key = (row["device"], row["run"])
            self._marks[key] = Watermark(row["acked"], json.loads(row["above"] or "[]"))
            self._given_up[key] = row["given_up"] or 0
            if row["offset"] is not None:
                self.retimer.load(key, row["offset"], row["max_seq"])

    # -- ingest ----------------------------------------------------------------------------
    def knows(self, key: tuple) -> bool:
        """The store keeps a watermark for this (device, run)."""
        return key in self._marks

    def run_count(self) -> int:
        return len(self._marks)

    def watermark(self, device: str, run: str) -> int:
        mark = self._marks.get((device, run))
        return mark.acked if mark else -1

    def resolved(self, key: tuple, seq: int) -> bool:
        """This reading of run `key` is resolved already (stored, acknowledged, given up)."""
        mark = self._marks.get(key)
        return mark is not None and mark.has(seq)

    def confirmed_live(self, readings: list[dict], save_counters: bool = False) -> list[dict]:
        """Readings IoT Core confirmed that were never stored (sent from memory: live.py):
        their runs' watermarks (and clocks) advance in one small transaction on the runs
        table only, so that a copy arriving later, after a restart too, is a duplicate, and
        acknowledgements stay a contiguous prefix. Returns the acknowledgements to publish
        (the run's watermark, as commit's). They count as `confirmed` and `live`; the counters
        are saved with them when `save_counters` (or readings were given up), else with the
        next write. Raises DiskFull (nothing kept; state unchanged)."""
        marks: dict[tuple, Watermark] = {}
        clocks: dict[tuple, object] = {}
        held: dict[tuple, int] = {}
        for reading in readings:
            key = (reading["device"], reading["run"])
            if key not in marks:
                marks[key] = self._marks[key].copy() if key in self._marks else Watermark()
                clocks[key] = self.retimer.state(key)
            marks[key].add(reading["seq"])
            self.retimer.observe(key, reading["seq"], reading["t"], reading["mono"])
            if "held_from" in reading:
                held[key] = max(held.get(key, -1), reading["held_from"])
        given_up = {key: marks[key].give_up_below(held_from) for key, held_from in held.items()}
        counters = dict(self.counters)
        counters["confirmed"] += len(readings)
        counters["live"] += len(readings)
        counters["given_up"] += sum(given_up.values())
        try:
            with self._transaction():
                for key, mark in marks.items():
                    # UPDATE in place: the row keeps its rowid, so its primary-key index page is
                    # not rewritten (INSERT OR REPLACE writes both pages: 8 KB more per batch)
                    state = self.retimer.state(key) or (None, None)
                    values = [mark.acked, json.dumps(mark.above), state[0], state[1],
                              self._given_up.get(key, 0) + given_up.get(key, 0), self.clock.wall_ms()]
                    if not self.db.execute("UPDATE runs SET acked = ?, above = ?, offset = ?, max_seq = ?, "
                                           "given_up = ?, seen = ? WHERE device = ? AND run = ?",
                                           values + list(key)).rowcount:
                        self._save_run(key, mark, values[4])
                if save_counters or given_up and any(given_up.values()):
                    self._save_meta(counters, self.count)
        except Exception:
            for key, state in clocks.items():
                if state is None:
                    self.retimer.forget(key)
                else:
                    self.retimer.load(key, *state)
            raise
        acks = []
        self.counters = counters
        for key, mark in marks.items():
            self._marks[key] = mark
            self._given_up[key] = self._given_up.get(key, 0) + given_up.get(key, 0)
            if mark.acked >= 0:
                acks.append({"device": key[0], "run": key[1], "seq": mark.acked})
        return acks

    def commit(self, readings: list[dict], dead: Iterable[DeadLetter] = ()) -> CommitResult:
        """Store valid readings (dicts after the contract check, numbers as ints) and dead
        letters in one transaction. Raises DiskFull (nothing kept; state unchanged) for a
        storage error (is_storage_error); corruption and a message's own error propagate."""
        if self.closed is not None:
            raise DiskFull(f"the database is closed: {self.closed}")
        dead = list(dead)
        result = CommitResult()
        marks: dict[tuple, Watermark] = {}
        touched: list[tuple] = []
        retimer_before = {}
        stepped: dict[tuple, int] = {}
        held: dict[tuple, int] = {}
        records = []

        def mark_of(key: tuple) -> Watermark:
            if key not in marks:
                marks[key] = self._marks[key].copy() if key in self._marks else Watermark()
                touched.append(key)
                retimer_before[key] = self.retimer.state(key)
            return marks[key]

        stale_before = dict(self._stale)
        try:             # from here, whatever fails leaves the memory as it was
            room = self._room(len(readings))
            copies: list[dict] = []
            for reading in readings:
                key = (reading["device"], reading["run"])
                seq = reading["seq"]
                mark = mark_of(key)
                if "held_from" in reading:
                    held[key] = max(held.get(key, -1), reading["held_from"])
                if mark.has(seq):
                    result.duplicates += 1
                    copies.append(reading)
                    continue
                mark.add(seq)
                if room is not None and room <= 0:
                    result.rejected += 1
                    continue
                if room is not None:
                    room -= 1
                decision = self.retimer.observe(key, seq, reading["t"], reading["mono"])
                if decision.step is not None:
                    stepped[key] = decision.step
                records.append({"device": key[0], "run": key[1], "seq": seq, "t": decision.t,
                                "mono": reading["mono"], "t_orig": decision.t_orig, "body": body_of(reading)})
                if decision.t_orig is not None:
                    result.retimed += 1
            conflicts = self._conflicts(copies)
            result.duplicates -= len(conflicts)
            dead += conflicts
            for letter in dead:
                if letter.identity is not None:
                    device, run, seq = letter.identity
                    mark_of((device, run)).add(seq)
            given_up = {}
            for key, held_from in held.items():
                gap = marks[key].give_up_below(held_from)
                if gap:
                    given_up[key] = gap
                    result.given_up += gap
            with self.db.atomic():
                before = self.db.conn.total_changes
                if records:
                    self.db["readings"].insert_all(records, ignore=True, batch_size=100)
                result.inserted = self.db.conn.total_changes - before
                result.duplicates += len(records) - result.inserted
                for key, offset in stepped.items():   # re-timed in chunks later (retime_step); read re-timed now
                    self._stale[key] = offset
                    result.retimed_runs.add(key)
                for letter in dead:
                    self._insert_dead(letter)
                dead_gone = self._trim_dead(len(dead))
                result.dead_lettered = len(dead)
                for key in touched:
                    self._save_run(key, marks[key], self._given_up.get(key, 0) + given_up.get(key, 0))
                count = self.count + result.inserted
                evicted = self._evict_over_limits(count) if self.config.full_policy == "drop_oldest" else 0
                result.evicted = evicted
                counters = dict(self.counters)
                counters["stored"] += result.inserted
                counters["duplicates"] += result.duplicates
                counters["rejected"] += result.rejected
                counters["evicted"] += evicted + result.rejected
                counters["given_up"] += result.given_up
                counters["retimed"] += result.retimed
                counters["dead_lettered"] += len(dead)
                counters["conflicts"] += len(conflicts)
                counters["dead_evicted"] += dead_gone
                self._save_meta(counters, count - evicted)
        except Exception as error:      # nothing of it kept: the memory as it was (a value SQLite
            for key, state in retimer_before.items():   # refuses raises OverflowError, not sqlite3.Error)
                if state is None:
                    self.retimer.forget(key)
                else:
                    self.retimer.load(key, *state)
            self._stale = stale_before
            if is_storage_error(error):
                raise DiskFull(str(error)) from error
            raise
        self.counters, self.count = counters, count - evicted
        self.dead_count = self.dead_count + len(dead) - dead_gone
        for key in touched:
            self._marks[key] = marks[key]
            self._given_up[key] = self._given_up.get(key, 0) + given_up.get(key, 0)
            if marks[key].acked >= 0:
                result.acks.append({"device": key[0], "run": key[1], "seq": marks[key].acked})
        result.changed = bool(result.inserted or result.retimed or evicted)
        if self.wal_bytes() > 2 * self.wal_limit:
            try:
                self.checkpoint()
            except sqlite3.Error as error:   # committed already: the next commit's checkpoint tries again
                log.warning("checkpoint after a commit failed (%s); the commit is kept", error)
        return result

    def _conflicts(self, copies: list[dict]) -> list[DeadLetter]:
        """Duplicates whose stored copy differs (first write wins): kept as dead letters for
        inspection. A copy whose original has already been sent cannot be compared."""
        out = []
        by_run: dict[tuple, dict] = {}
        for reading in copies:
            by_run.setdefault((reading["device"], reading["run"]), {})[reading["seq"]] = reading
        for (device, run), readings in by_run.items():
            seqs = list(readings)
            for start in range(0, len(seqs), _CHUNK):
                chunk = seqs[start:start + _CHUNK]
                try:
                    rows = self.db.execute(f"SELECT seq, t, t_orig, body FROM readings WHERE device = ? AND run = ? "
                                           f"AND seq IN ({','.join('?' * len(chunk))})",
                                           [device, run, *chunk]).fetchall()
                except sqlite3.DatabaseError as error:
                    if is_damaged_read(error):
                        raise DamagedRead(f"reading stored rows: {error}") from error
                    raise
                for seq, t, t_orig, body in rows:
                    reading = readings[seq]
                    if not same_reading(reading, t, t_orig, body):
                        raw = json.dumps(reading, separators=(",", ":")).encode()
                        out.append(DeadLetter("(conflicting copy)", raw, f"conflict: ({device}, {run}, {seq}) is "
                                              "stored with other values; the first one is kept", None))
        if out:
            log.warning("%d reading(s) arrived again with other values than the stored copy: kept as "
                        "dead letters (counted in conflicts)", len(out))
        return out

    def _room(self, incoming: int) -> Optional[int]:
        """How many new readings fit under reject_new (None: drop_oldest makes room)."""
        if self.config.full_policy != "reject_new":
            return None
        if self.used_bytes() >= self._page_budget():
            return 0
        return max(0, self.config.max_rows - self.count)

    def retime_step(self, limit: int = RETIME_CHUNK) -> int:
        """Re-time up to `limit` stored readings of a run whose clock stepped, in a transaction
        of their own (a run of 300,000 readings in one blocked the loop 2 s and grew the WAL
        to 89 MB). Until then every read of them applies the new offset. Returns how many."""
        if not self._stale:
            return 0
        key, offset = next(iter(self._stale.items()))
        counters = dict(self.counters)
        with self._transaction():
            done = self.db.execute(
                "UPDATE readings SET t_orig = COALESCE(t_orig, t), t = mono + ? WHERE id IN ("
                "SELECT id FROM readings WHERE device = ? AND run = ? AND ABS(t - mono - ?) > ? LIMIT ?)",
                [offset, key[0], key[1], offset, self.config.retime_threshold_ms, limit]).rowcount
            counters["retimed"] += done
            stale = {k: v for k, v in self._stale.items() if k != key or done == limit}
            self._save_meta(counters, self.count, stale)
        self.counters, self._stale = counters, stale
        return done

    @contextlib.contextmanager
    def _transaction(self):
        """One transaction; a full or failing disk raises DiskFull (nothing of it kept)."""
        if self.closed is not None:
            raise DiskFull(f"the database is closed: {self.closed}")
        try:
            with self.db.atomic():
                yield
        except sqlite3.Error as error:
            if is_storage_error(error):
                raise DiskFull(str(error)) from error
            raise

    @property
    def stale(self) -> int:
        """Runs whose stored readings are still being re-timed."""
        return len(self._stale)

    def _insert_dead(self, letter: DeadLetter) -> None:
        device, run, seq = letter.identity if letter.identity else (None, None, None)
        self.db["dead_letters"].insert({"at": self.clock.wall_ms(), "topic": letter.topic[:256],
                                        "reason": letter.reason[:500], "size": len(letter.raw),
                                        "raw": bytes(letter.raw[:self.config.dead_letter_max_bytes]),
                                        "device": device, "run": run, "seq": seq})

    def _trim_dead(self, added: int) -> int:
        """Keep at most max_dead_letters, in at most a quarter of max_bytes (dead letters
        must not crowd out the readings); the oldest go first. Returns how many went."""
        if not added:
            return 0
        gone = 0
        over = self.dead_count + added - self.config.max_dead_letters
        if over > 0:
            gone += self.db.execute("DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters "
                                    "ORDER BY id LIMIT ?)", [over]).rowcount
        share = self.config.max_bytes // 4
        count, size = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(raw)), 0) + COUNT(*) * "
                                      f"{DEAD_ROW_BYTES} FROM dead_letters").fetchone()
        if size > share and count:
            n = max(1, -(-(size - share) * count // size))
            gone += self.db.execute("DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters "
                                    "ORDER BY id LIMIT ?)", [n]).rowcount
        return gone

    def _save_run(self, key: tuple, mark: Watermark, given_up: int) -> None:
        state = self.retimer.state(key)
        offset, max_seq = state if state else (None, None)
        self.db.execute("INSERT OR REPLACE INTO runs (device, run, acked, above, offset, max_seq, given_up, seen) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [key[0], key[1], mark.acked, json.dumps(mark.above), offset, max_seq, given_up,
                         self.clock.wall_ms()])

    def _save_meta(self, counters: dict, count: int, stale: Optional[dict] = None) -> None:
        stale = [[key[0], key[1], offset] for key, offset in (self._stale if stale is None else stale).items()]
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('counters', ?), ('rows', ?), ('stale', ?)",
                        [json.dumps(counters, separators=(",", ":")), str(count), json.dumps(stale)])

    # -- bounds ----------------------------------------------------------------------------
    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (the WAL has its own share: wal_limit)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    @property
    def wal_limit(self) -> int:
        """The WAL's share of max_bytes: journal_size_limit, and a TRUNCATE checkpoint
        when it grows past twice that."""
        return min(WAL_LIMIT, self.config.max_bytes // 8)

    def _page_budget(self) -> int:
        return self.config.max_bytes - self.wal_limit

    def wal_bytes(self) -> int:
        try:
            return os.path.getsize(str(self.config.path) + "-wal")
        except OSError:
            return 0

    def _delete_oldest(self, n: int) -> int:
        if n <= 0:
            return 0
        cursor = self.db.execute("DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?)",
                                 [n])
        return cursor.rowcount

    def _evict_over_limits(self, count: int) -> int:
        """drop_oldest inside the current transaction: rows, then bytes. Returns evicted."""
        evicted = self._delete_oldest(count - self.config.max_rows)
        count -= evicted
        for _ in range(8):
            used, budget = self.used_bytes(), self._page_budget()
            if used <= budget or count <= 0:
                break
            per_row = max(1, used // max(count, 1))
            n = max(1, -(-(used - budget) // per_row), count // 100)
            gone = self._delete_oldest(n)
            evicted += gone
            count -= gone
            if not gone:
                break
        return evicted

    def enforce_age(self, scan: int = 2000, rounds: int = 50) -> int:
        """Evict readings older than max_age (by t; a t before 2020 has no known age). Walks
        from the oldest arrival while windows of `scan` rows are all expired (arrival order
        follows time), so it never reads the whole table. Returns evicted."""
        if not self.config.max_age_ms:
            return 0
        cutoff = self.clock.wall_ms() - self.config.max_age_ms
        evicted, from_id = 0, 0
        for _ in range(rounds):
            rows = self.db.execute("SELECT id, t FROM readings WHERE id >= ? ORDER BY id LIMIT ?",
                                   [from_id, scan]).fetchall()
            old = [rid for rid, t in rows if PLAUSIBLE_T <= t < cutoff]
            ageless = sum(1 for _, t in rows if t < PLAUSIBLE_T)    # kept, but they shield nothing behind them
            if old:
                evicted += self._delete_ids(old, "evicted")
            if len(old) + ageless < len(rows) * 9 // 10 or len(rows) < scan:
                break
            from_id = rows[-1][0] + 1
        return evicted

    def prune_runs(self, keep_ms: int = RUN_KEEP_MS, max_runs: int = MAX_RUNS) -> int:
        """Forget the watermarks of runs that hold no stored reading and are not being
        re-timed: those last seen more than `keep_ms` ago (by a plausible clock), and beyond
        `max_runs` those unseen longest. A reading of a forgotten run that comes again is
        stored and sent again (a duplicate the cloud dedupes by identity), never lost.
        Returns how many were forgotten."""
        now = self.clock.wall_ms()
        idle = self.db.execute("SELECT device, run, seen FROM runs AS r WHERE NOT EXISTS "
                               "(SELECT 1 FROM readings WHERE device = r.device AND run = r.run) "
                               "ORDER BY seen").fetchall()
        idle = [(device, run, seen) for device, run, seen in idle if (device, run) not in self._stale]
        over = len(self._marks) - max_runs
        gone = [(device, run) for i, (device, run, seen) in enumerate(idle)
                if i < over or (now >= PLAUSIBLE_T and PLAUSIBLE_T <= (seen or 0) < now - keep_ms)]
        if not gone:
            return 0
        with self._transaction():
            for chunk in range(0, len(gone), _CHUNK):
                part = gone[chunk:chunk + _CHUNK]
                self.db.execute(f"DELETE FROM runs WHERE {' OR '.join(['(device = ? AND run = ?)'] * len(part))}",
                                [value for key in part for value in key])
        for key in gone:
            self._marks.pop(key, None)
            self._given_up.pop(key, None)
            self.retimer.forget(key)
        return len(gone)

    # -- forwarding --------------------------------------------------------------------------
    def _row(self, values: tuple) -> Row:
        return self._rows((values,))[0]

    def _rows(self, selected: Iterable[tuple]) -> list[Row]:
        """Stored readings as they are to be sent: a run still being re-timed gets its new offset."""
        rows = list(map(_new_row, selected))
        if self._stale:
            rows = [self._retimed(row) for row in rows]
        return rows

    def _retimed(self, row: Row) -> Row:
        offset = self._stale.get(row.key)
        if offset is not None and abs(row.t - row.mono - offset) > self.config.retime_threshold_ms:
            t, t_orig = retimed(row.t, row.mono, offset, row.t_orig)
            return row._replace(t=t, t_orig=t_orig)
        return row

    def newest(self) -> Optional[Row]:
        values = self.db.execute("SELECT id, device, run, seq, t, mono, t_orig, body FROM readings "
                                 "ORDER BY id DESC LIMIT 1").fetchone()
        return self._row(values) if values else None

    def latest(self, limit: int = 1) -> list[Row]:
        """The last arrivals, newest first."""
        return self._rows(self.db.execute(
            "SELECT id, device, run, seq, t, mono, t_orig, body FROM readings ORDER BY id DESC LIMIT ?", [limit]))

    def scan(self, from_id: int = 0, limit: int = 500) -> list[Row]:
        """Readings with id >= from_id, oldest first."""
        return self._rows(self.db.execute(
            "SELECT id, device, run, seq, t, mono, t_orig, body FROM readings WHERE id >= ? ORDER BY id LIMIT ?",
            [from_id, limit]))

    def get(self, ids: Iterable[int]) -> list[Row]:
        ids = list(ids)
        rows: list[Row] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows += self._rows(self.db.execute(
                f"SELECT id, device, run, seq, t, mono, t_orig, body FROM readings WHERE id IN ({marks})", chunk))
        return sorted(rows, key=lambda r: r.id)

    def next_dead_letter(self) -> Optional[dict]:
        """The oldest dead letter, to forward (None when there is none)."""
        rows = list(self.db.query("SELECT * FROM dead_letters ORDER BY id LIMIT 1"))
        return rows[0] if rows else None

    def forwarded_dead_letter(self, letter_id: int) -> None:
        """IoT Core has this dead letter: it may go."""
        counters = dict(self.counters)
        with self._transaction():
            gone = self.db.execute("DELETE FROM dead_letters WHERE id = ?", [letter_id]).rowcount
            counters["dead_forwarded"] += gone
            self._save_meta(counters, self.count)
        self.counters = counters
        self.dead_count -= gone

    def to_dead_letters(self, ids: Iterable[int], reason: str) -> int:
        """Move stored readings to the dead letters (readings that no batch can carry)."""
        rows = self.get(ids)
        if not rows:
            return 0
        with self._transaction():
            for row in rows:
                raw = json.dumps(dict(row.reading(), device=row.device), separators=(",", ":")).encode()
                self._insert_dead(DeadLetter("(stored)", raw, reason, (row.device, row.run, row.seq)))
            self._delete_ids([row.id for row in rows], "dead_lettered")     # nested: one transaction
        self.dead_count += len(rows)
        return len(rows)

    def match(self, device: str, keys: Iterable[tuple]) -> list[int]:
        """Row ids of stored readings equal to (run, seq, t) of `device` (an echo we cannot
        map to a batch in flight)."""
        ids = []
        for run, seq, t in keys:
            found = self.db.execute("SELECT id, device, run, seq, t, mono, t_orig, body FROM readings "
                                    "WHERE device = ? AND run = ? AND seq = ?", [device, run, seq]).fetchone()
            if found and self._row(found).t == t:
                ids.append(found[0])
        return ids

    def delete(self, ids: Iterable[int], counter: str = "confirmed") -> int:
        """Delete readings (IoT Core has them); returns how many were still there."""
        return self._delete_ids(list(ids), counter)

    def _delete_ids(self, ids: list, counter: str) -> int:
        if not ids:
            return 0
        with self._transaction():
            gone = 0
            ranges = id_ranges(ids)            # a batch's ids are mostly consecutive: a range each
            for start in range(0, len(ranges), _CHUNK // 2):
                chunk = ranges[start:start + _CHUNK // 2]
                gone += self.db.execute("DELETE FROM readings WHERE " + " OR ".join(["id BETWEEN ? AND ?"] * len(chunk)),
                                        [bound for pair in chunk for bound in pair]).rowcount
            counters = dict(self.counters)
            counters[counter] += gone
            self._save_meta(counters, self.count - gone)
        self.counters, self.count = counters, self.count - gone
        return gone

    def add_counts(self, **deltas: int) -> None:
        """Counters changed outside a commit (sent, resent, ...): saved with the next write."""
        for name, delta in deltas.items():
            self.counters[name] += delta

    # -- upkeep ------------------------------------------------------------------------------
    def stats(self) -> dict:
        oldest = self.db.execute("SELECT t FROM readings ORDER BY id LIMIT 1").fetchone()
        return {"count": self.count, "bytes": self.used_bytes() + self.wal_bytes(),
                "oldest_t": oldest[0] if oldest else None}

    def vacuum(self, keep_pages: int = 256) -> int:
        """Give free pages beyond `keep_pages` back to the file system (incremental vacuum);
        returns how many were freed."""
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        auto = self.db.execute("PRAGMA auto_vacuum").fetchone()[0]
        if auto != 2 or free <= keep_pages:
            return 0
        # executescript steps the pragma to the end (execute() would free one page only)
        self.db.conn.executescript(f"PRAGMA incremental_vacuum({int(free - keep_pages)});")
        return free - keep_pages

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never blocks): with synchronous=NORMAL
        what is committed up to here survives a power cut. A WAL over WAL_LIMIT is
        truncated (TRUNCATE; this one connection is the only reader)."""
        mode = "TRUNCATE" if self.wal_bytes() > self.wal_limit else "PASSIVE"
        self.db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    def dead_letters(self, limit: int = 100) -> list[dict]:
        return list(self.db.query("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", [limit]))

    def runs(self) -> dict:
        """{(device, run): {"acked", "given_up"}} for every run seen."""
        return {key: {"acked": mark.acked, "given_up": self._given_up.get(key, 0)}
                for key, mark in self._marks.items()}

    def flush_counters(self) -> None:
        with self._transaction():
            self._save_meta(self.counters, self.count)

    def close(self) -> None:
        if self.closed is not None:         # nothing to write: what it knows is in the set-aside files
            self._close_db()
            return
        try:
            self.flush_counters()
            self.checkpoint()
        except (DiskFull, sqlite3.Error) as error:
            log.warning("closing the store: %s", error)
        finally:
            self.db.close()
