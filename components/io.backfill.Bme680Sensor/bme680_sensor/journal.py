"""The held readings on disk, so that a core restart or a SIGKILL loses none of them.

    journal = Journal(Path("unacked.jsonl"))      # in the component's work folder
    earlier = journal.load()                      # what an earlier process held: publish it again
    journal.append(reading)                       # before publishing a new reading
    journal.rewrite(still_held)                   # compaction, as acknowledgements arrive

One JSON line per reading, flushed (not fsynced: the process may die, the kernel keeps
the page cache; a power cut may lose the last lines, as the store's NORMAL sync may). A
rewrite is fsynced before it replaces the file. The runner compacts it to what is held
whenever it grows past max_unacked plus a slack, so it never holds much more than that.
A torn last line is skipped. Readings keep their run and seq: the store dedupes."""

from __future__ import annotations

import json
import os
from pathlib import Path


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines = 0
        self._file = None

    def load(self) -> list[dict]:
        readings = []
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            try:
                reading = json.loads(line)
            except ValueError:
                continue
            if isinstance(reading, dict) and isinstance(reading.get("run"), str) and "seq" in reading:
                readings.append(reading)
        self.lines = len(readings)
        return readings

    def append(self, reading: dict) -> None:
        if self._file is None:
            torn = self._torn()
            self._file = open(self.path, "a", encoding="utf-8")
            if torn:                # a line cut by a crash: end it, or the next line is lost with it
                self._file.write("\n")
        self._file.write(json.dumps(reading, separators=(",", ":")) + "\n")
        self._file.flush()
        self.lines += 1

    def rewrite(self, readings: list[dict]) -> None:
        self.close()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(reading, separators=(",", ":")) + "\n" for reading in readings)
            out.flush()
            os.fsync(out.fileno())      # durable before it replaces the old one (a power cut)
        os.replace(tmp, self.path)
        self.lines = len(readings)

    def _torn(self) -> bool:
        """The file does not end with a newline (a crash cut its last line)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                return f.read(1) != b"\n"
        except OSError:             # missing or empty
            return False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
