"""Counting what goes wrong without flooding the log.

    problems = Problems(log)
    problems.add("reading-raw: seq minimum", "dropped a message: seq: -1 is less than 0")
    problems.counts        # Counter of every kind seen

A kind is logged the first time it appears, then only counted: one bad message a second
for a week must not fill an SD card, and must never stop a component."""

from __future__ import annotations

import logging
from collections import Counter


class Problems:
    def __init__(self, logger: logging.Logger) -> None:
        self.counts: Counter = Counter()
        self._log = logger

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            self._log.warning("%s [kind: %s; further ones are only counted]", detail, kind)
