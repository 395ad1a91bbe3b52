"""A damaged database set aside, and reading what it still holds (the store copies it into
the new database: Store._settle, Store.salvage_step).

    aside = Aside(aside_target(path, wall_ms), reason, held=count)   # store.db.corrupt-<UTC time>
    move_aside(path, aside)        # the marker first, then the files (the file itself last)
    pending(path)                  # the set-asides a restart left unfinished, from their markers
    old = OldFile(aside.target)    # read-only, whatever can still be read
    old.rows("readings", READING_COLUMNS, low, high); old.top("readings"); old.counters(); old.runs()

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


@dataclass
class Aside:
    """A damaged file set aside whose readings are not all in the new database yet."""
    target: Path
    reason: str
    held: Optional[int] = None          # readings the store held in it (None: its meta row says)
    dead_held: Optional[int] = None     # dead letters (None: as many as can be read)
    min_id: int = 0                     # row ids in flight: the new database's ids go above
    moved: bool = False


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
        """The highest rowid `table` holds or held (sqlite_sequence: ids already given out)."""
        return max(self.value(f"SELECT MAX(rowid) FROM {table}", 0),
                   self.value(f"SELECT seq FROM sqlite_sequence WHERE name = '{table}'", 0))

    def bottom(self, table: str) -> int:
        return self.value(f"SELECT MIN(rowid) FROM {table}", 0)

    def rows(self, table: str, columns: str, low: int, high: int) -> list[tuple]:
        """The rows of `table` with low <= rowid < high that can still be read in full: the
        range at once, then each rowid it did not give, one by one. A range over a damaged
        page may fail, or give fewer rows without an error: 8 KB of random bytes over the
        middle of a 3,000-reading file (Harness.damage_mid_file), 12 times out of 20 a range
        of 500 gave 425 rows while 27 to 34 more could still be read by their rowid."""
        if self.conn is None:
            return []
        try:
            found = self.conn.execute(f"SELECT rowid, {columns} FROM {table} WHERE rowid >= ? AND rowid < ?",
                                      [low, high]).fetchall()
        except sqlite3.Error:
            found = []
        seen = {row[0] for row in found}
        for rowid in range(low, high):
            if rowid not in seen:
                try:
                    found += self.conn.execute(f"SELECT rowid, {columns} FROM {table} WHERE rowid = ?",
                                               [rowid]).fetchall()
                except sqlite3.Error:
                    continue
        return [row[1:] for row in sorted(found)]

    def all_rows(self, table: str, columns: str) -> list[tuple]:
        found = []
        for low in range(self.bottom(table), self.top(table) + 1, _RANGE):
            found += self.rows(table, columns, low, low + _RANGE)
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
        """{(device, run): (acked, given_up)} of every run still readable."""
        return {(device, run): (acked, given_up or 0)
                for device, run, acked, given_up in self.all_rows("runs", "device, run, acked, given_up")
                if acked is not None}
