"""Counting what goes wrong without flooding the log, and surviving it.

    problems = Problems(log)
    problems.add("reading-raw: seq minimum", "dropped a message: seq: -1 is less than 0")
    problems.counts                        # Counter of every kind seen
    problems.survive("ack", handle, msg)   # handle(msg); any exception is counted, logged once
    section = problems.to_report(now_s)    # {kind: count} when it changed (at most every
                                           # REPORT_EVERY_S for counts, at once for a new kind)

A kind is logged the first time it appears, then only counted: one bad message a second
for a week must not fill an SD card, and must never stop a component."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Optional

REPORT_EVERY_S = 60.0
MAX_REPORTED_KINDS = 20


class Problems:
    def __init__(self, logger: logging.Logger) -> None:
        self.counts: Counter = Counter()
        self._log = logger
        self._reported: dict = {}
        self._reported_at: Optional[float] = None
        self._new_kind = False

    def add(self, kind: str, detail: str, n: int = 1) -> None:
        first = self.counts[kind] == 0
        self.counts[kind] += n
        if first:
            self._new_kind = True
            self._log.warning("%s [kind: %s; further ones are only counted]", detail, kind)

    def survive(self, what: str, fn: Callable, *args) -> bool:
        """Run `fn(*args)`; an exception is counted as "<what> <ExceptionName>", logged the
        first time with its traceback, and swallowed. False when it failed."""
        try:
            fn(*args)
            return True
        except Exception as error:      # one failure must not end the loop
            kind = f"{what} {type(error).__name__}"
            if self.counts[kind] == 0:
                self._log.debug("first %s", kind, exc_info=True)
            self.add(kind, f"{what} failed, carrying on: {getattr(error, 'message', None) or error!r}")
            return False

    def to_report(self, now_s: float) -> Optional[dict]:
        """The counts to report in the shadow, or None when nothing is worth an update yet."""
        if dict(self.counts) == self._reported:
            return None
        if not self._new_kind and self._reported_at is not None and now_s - self._reported_at < REPORT_EVERY_S:
            return None
        return dict(self.counts.most_common(MAX_REPORTED_KINDS))

    def reported(self, section: dict, now_s: float) -> None:
        """`to_report`'s section reached the shadow."""
        self._reported, self._reported_at, self._new_kind = dict(self.counts), now_s, False
