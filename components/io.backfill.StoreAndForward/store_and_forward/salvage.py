"""A damaged database set aside, and reading what it still holds (the store copies it into
the new database: Store._settle, Store.salvage_step).

    aside = Aside(aside_target(path, wall_ms), reason, held=count)   # store.db.corrupt-<UTC time>
    move_aside(path, aside)        # the marker first, then the files (the file itself last)
    pending(path)                  # the set-asides a restart left unfinished, from their markers
    old = OldFile(aside.target)    # read-only, whatever can still be read
    rows, after = old.walk("readings", READING_COLUMNS, low)   # ~500 rows from rowid low; None: the end
    old.top("readings"); old.counters(); old.runs(); old.stale(); old.highest_seq(device, run)

The marker, `<target>.salvage`, is a zero-byte file: creating it needs no data block (a full
disk does not stop it). It is created before the move and deleted only once every reading
the old file still holds is in the new database, so a restart at any point in between (a
SIGTERM while the store is closed, a crash, a power cut) finds the old file again and goes
on (review of 5dc89ea #1: the salvage lived only in memory, and a restart opened an empty
database with every salvageable reading stranded in the old file, uncounted).
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MARKER = ".salvage"
_RANGE = 500
_GAP = 200          # ids asked for one by one inside a gap of at most this many (or next to damage)


@dataclass
class Aside:
    """A damaged file set aside whose readings are not all in the new database yet."""
    target: Path
    reason: str
    held: Optional[int] = None          # readings the store held in it (None: its meta row says)
    dead_held: Optional[int] = None     # dead letters (None: as many as can be read)
    min_id: int = 0                     # row ids in flight: the new database's ids go above
    moved: bool = False
    known: bool = False                 # set aside by this process: its memory knows the watermarks


def done(entry: dict) -> bool:
    """A salvage's progress (meta 'salvage'): every table walked to its end."""
    return entry.get("readings", 0) is None and entry.get("dead", 0) is None


def marker_of(target: Path) -> Path:
    return Path(str(target) + MARKER)


def aside_target(path: Path, wall_ms: int) -> Path:
    """`store.db.corrupt-<UTC time>`, `-2`, `-3`... for a name already taken."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_ms / 1000))
    target, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while target.exists() or marker_of(target).exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return target


def move_aside(path: Path, aside: Aside) -> None:
    """The marker, then the WAL and shared memory, then the file itself: once the file is at
    `target` the move is complete. Raises OSError (a read-only file system, a permission):
    nothing is lost, the store tries again (review of 5dc89ea #3)."""
    os.close(os.open(marker_of(aside.target), os.O_CREAT | os.O_WRONLY, 0o600))
    for suffix in ("-wal", "-shm", ""):
        source = Path(str(path) + suffix)
        if source.exists():
            os.replace(source, Path(str(aside.target) + suffix))
    sync_dir(path.parent)
    aside.moved = True


def forget(aside: Aside) -> None:
    """Every reading the old file holds is in the new database: the marker goes (the file stays)."""
    marker_of(aside.target).unlink(missing_ok=True)
    sync_dir(aside.target.parent)


def sync_dir(folder: Path) -> None:
    """Make a creation, rename or deletion in `folder` survive a power cut (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pending(path: Path) -> list[Aside]:
    """The set-asides a restart interrupted, oldest first. Only the newest can have been
    interrupted mid-move (its file not yet at its target: `store.db` is still the damaged
    file, moved on the next attempt)."""
    markers = sorted(path.parent.glob(f"{glob.escape(path.name)}.corrupt-*{MARKER}"),
                     key=lambda p: (p.stat().st_mtime_ns, p.name))
    found = []
    for i, marker in enumerate(markers):
        target = Path(str(marker)[:-len(MARKER)])
        newest = i == len(markers) - 1
        moved = target.exists() or not newest or not path.exists()
        found.append(Aside(target, "set aside before a restart", moved=moved))
    return found


class OldFile:
    """A set-aside database, read-only: whatever can still be read. Every read is on its own
    and a damaged one gives nothing (or, for rows, a range of rowids at a time, one by one in
    a range that fails)."""

    def __init__(self, path: Path) -> None:
        try:
            self.conn: Optional[sqlite3.Connection] = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error:
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def value(self, query: str, default=None):
        if self.conn is None:
            return default
        try:
            row = self.conn.execute(query).fetchone()
        except sqlite3.Error:
            return default
        return default if row is None or row[0] is None else row[0]

    def top(self, table: str) -> int:
        """The highest rowid `table` holds (0: none), or if that cannot be read, the highest
        it was given (sqlite_sequence). A bound for the search past damage: never walked id by id."""
        if self.conn is None:
            return 0
        try:
            row = self.conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()
            return row[0] or 0
        except sqlite3.Error:
            return self.value(f"SELECT seq FROM sqlite_sequence WHERE name = '{table}'", 0)

    def walk(self, table: str, columns: str, low: int, limit: int = _RANGE) -> tuple[list[tuple], Optional[int]]:
        """Up to about `limit` rows of `table` with rowid >= low that can still be read in
        full, ascending, and the rowid to go on from (None: the end). Walks the ids that
        exist (`rowid >= ? ORDER BY rowid`): a gap of a million ids left by confirmed
        readings costs nothing (review of 8e0dde9 #1: every missing rowid was asked for, one
        query each, 3.6 s for 2 readings). One by one only inside a gap of at most _GAP ids
        (a damaged page may give fewer rows without an error: 8 KB of random bytes over the
        middle of a 3,000-reading file (Harness.damage_mid_file), 12 times out of 20 a range
        of 500 gave 425 rows while 27 to 34 more could still be read by their rowid) and
        next to where a walk failed (_past_damage)."""
        if self.conn is None:
            return [], None
        found: list[tuple] = []
        failed = False
        try:
            for row in self.conn.execute(f"SELECT rowid, {columns} FROM {table} WHERE rowid >= ? "
                                         f"ORDER BY rowid LIMIT ?", [low, limit]):
                found.append(row)
        except sqlite3.Error:
            failed = True
        rows, last, asked = [], low - 1, 0
        for row in found:
            if row[0] <= last:                  # out of order: a damaged page
                continue
            if row[0] - last - 1 <= _GAP:
                if asked + row[0] - last - 1 > limit:   # single-id lookups bounded per walk
                    return [r[1:] for r in rows], last + 1
                asked += row[0] - last - 1
                rows += self._each(table, columns, last + 1, row[0])
            rows.append(row)
            last = row[0]
        if failed:
            more, after = self._past_damage(table, columns, last + 1)
            return [r[1:] for r in rows + more], after
        if len(found) == limit:
            return [r[1:] for r in rows], last + 1
        top = self.top(table)
        if top > last + _GAP:                   # the walk stopped short of the last row: damage
            more, after = self._past_damage(table, columns, last + 1)
            return [r[1:] for r in rows + more], after
        return [r[1:] for r in rows + self._each(table, columns, last + 1, top + 1)], None

    def _past_damage(self, table: str, columns: str, low: int) -> tuple[list[tuple], Optional[int]]:
        """A walk from `low` fails (or stops short): the ids just after it one by one, then the
        first id a walk can start from again, found by probing (doubling steps, then halving;
        bounded by top), and the ids just before it one by one."""
        top = self.top(table)
        rows = self._each(table, columns, low, min(low + _GAP, top + 1))
        failed, step, works = low + _GAP - 1, _GAP, None       # below low + _GAP: asked for already
        while low + step <= top:
            if self._walks(table, columns, low + step):
                works = low + step
                break
            failed, step = low + step, step * 2
        if works is None:
            return rows + self._each(table, columns, max(low + _GAP, top + 1 - _GAP), top + 1), None
        while works - failed > 1:
            middle = (failed + works) // 2
            if self._walks(table, columns, middle):
                works = middle
            else:
                failed = middle
        return rows + self._each(table, columns, max(low + _GAP, works - _GAP), works), works

    def _walks(self, table: str, columns: str, low: int) -> bool:
        """A walk from `low` gives a row."""
        try:
            return bool(self.conn.execute(f"SELECT rowid, {columns} FROM {table} WHERE rowid >= ? "
                                          f"ORDER BY rowid LIMIT 1", [low]).fetchall())
        except sqlite3.Error:
            return False

    def _each(self, table: str, columns: str, low: int, high: int) -> list[tuple]:
        """The rows low <= rowid < high, by their rowid one by one (those that can be read)."""
        found = []
        for rowid in range(low, high):
            try:
                found += self.conn.execute(f"SELECT rowid, {columns} FROM {table} WHERE rowid = ?",
                                           [rowid]).fetchall()
            except sqlite3.Error:
                continue
        return found

    def all_rows(self, table: str, columns: str) -> list[tuple]:
        found, low = [], 0
        while low is not None:
            rows, low = self.walk(table, columns, low)
            found += rows
        return found

    def counters(self) -> dict:
        try:
            saved = json.loads(self.value("SELECT value FROM meta WHERE key = 'counters'", "{}"))
        except ValueError:
            return {}
        return saved if isinstance(saved, dict) else {}

    def held(self) -> Optional[int]:
        """The readings it held, as its meta row last said (None: unreadable)."""
        rows = self.value("SELECT value FROM meta WHERE key = 'rows'")
        try:
            return None if rows is None else int(rows)
        except ValueError:
            return None

    def runs(self) -> dict:
        """{(device, run): (acked, given_up, offset, max_seq)} of every run still readable,
        `acked` capped at the highest seq the file holds of the run: a damaged row may read
        as a larger one, and a watermark above what was stored acknowledges new readings as
        duplicates, unstored (review of 8e0dde9 #3). Lower only makes a resent reading a
        duplicate the cloud drops; a gap below the next reading is closed by its held_from."""
        return {(device, run): (min(acked, max(self.highest_seq(device, run), max_seq if max_seq is not None else -1)),
                                given_up or 0, offset, max_seq)
                for device, run, acked, given_up, offset, max_seq
                in self.all_rows("runs", "device, run, acked, given_up, offset, max_seq")
                if acked is not None}

    def highest_seq(self, device: str, run: str) -> int:
        """The highest seq of the run the file holds (-1: none, or none that can be read)."""
        if self.conn is None:
            return -1
        try:
            row = self.conn.execute("SELECT MAX(seq) FROM readings WHERE device = ? AND run = ?",
                                    [device, run]).fetchone()
        except sqlite3.Error:
            return -1
        return -1 if row is None or row[0] is None else int(row[0])

    def stale(self) -> dict:
        """{(device, run): offset} of the runs it was still re-timing (meta 'stale')."""
        try:
            saved = json.loads(self.value("SELECT value FROM meta WHERE key = 'stale'", "[]"))
            return {(device, run): int(offset) for device, run, offset in saved}
        except (ValueError, TypeError):
            return {}

    @classmethod
    def progress_in(cls, path: Path) -> dict:
        """The salvages of earlier files this one recorded (meta 'salvage'): where a restart
        goes on with them (what they had copied is in this file)."""
        old = cls(path)
        try:
            saved = json.loads(old.value("SELECT value FROM meta WHERE key = 'salvage'", "{}"))
        except ValueError:
            return {}
        finally:
            old.close()
        return saved if isinstance(saved, dict) else {}

    def dead_count(self) -> Optional[int]:
        """The dead letters it holds (None: unreadable)."""
        return self.value("SELECT COUNT(*) FROM dead_letters")
