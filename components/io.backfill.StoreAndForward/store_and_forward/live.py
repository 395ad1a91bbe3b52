"""Forwarding from memory ("live"), pure: which readings waiting for their group commit may
go to IoT Core without being written first, and the batch they go in.

    why = live.refusal(readings, resolved=store.resolved, retimer=store.retimer)
    batch = live.pack(readings, capacity) if why is None else None     # None: commit them

Online at 1 Hz nearly every reading is confirmed by IoT Core seconds after it arrives, so
writing it (insert, then delete, then the checkpoint: whole 4 KB pages each time) is the
store's whole flash cost. In the steady online state (the forwarder's `_live_open`: a
confirmation that comes back, the link answering, nothing stored waiting, no dead letter
pending) what waits in memory is packed at the latency deadline, by the same packer and
in the same form as if it had been stored, published, and kept in memory in the ledger.
Its confirmation saves the runs' watermarks (runs table only: Store.confirmed_live) and
only then acknowledges the readings to the sensor; any anomaly (no confirmation in time,
the link lost or unsubscribed, new settings, a disk error, close) commits them by the
normal path instead. Until a reading is acknowledged the sensor keeps it (its journal) and
sends it again, so a SIGKILL or power cut with a batch in memory loses nothing.

A group that would not go out unchanged from the store takes the stored path: a reading
not clock-synced (the store may hold or re-time it), one already resolved or twice in the
group (the store dedupes and acknowledges it again), one whose clock stepped (the store
re-times its run), several devices, or more than one batch holds.
"""

from __future__ import annotations

import json
from typing import Callable, Optional

from . import packer
from .retime import Retimer
from .store import body_of


def as_stored(reading: dict) -> dict:
    """The reading as the packer gets it from its stored row (Row.reading): the batch is
    byte for byte the one a commit and a scan would have made."""
    doc = {"run": reading["run"], "seq": reading["seq"], "t": reading["t"], "mono": reading["mono"]}
    doc.update(json.loads(body_of(reading)))
    return doc


def refusal(readings: list[dict], resolved: Callable[[tuple, int], bool], retimer: Retimer) -> Optional[str]:
    """Why these readings must be committed rather than sent from memory, or None."""
    if not readings:
        return "nothing"
    device = readings[0]["device"]
    seen: set = set()
    offsets: dict[tuple, int] = {}
    for reading in readings:
        key = (reading["device"], reading["run"])
        if reading["device"] != device:
            return "several devices"
        if reading.get("clock_synced") is not True:
            return "clock not synced"
        if (key, reading["seq"]) in seen or resolved(key, reading["seq"]):
            return "a copy"
        seen.add((key, reading["seq"]))
        offset = reading["t"] - reading["mono"]
        current = offsets.get(key)
        if current is None:
            state = retimer.state(key)
            current = offset if state is None else state[0]
        if abs(offset - current) > retimer.threshold_ms:
            return "clock stepped"
        offsets[key] = offset
    return None


def pack(readings: list[dict], capacity: int) -> Optional[packer.Batch]:
    """One batch of all of them (tags: their index), or None when one batch does not hold them."""
    builder = packer.BatchBuilder(readings[0]["device"], capacity)
    try:
        for index, reading in enumerate(readings):
            if not builder.add(as_stored(reading), tag=index):
                return None
    except packer.TooLarge:
        return None
    return builder.build()
