"""Batch format v1: readings packed into one JSON message for IoT Core. Pure.

    builder = BatchBuilder("pi-1", capacity(131072, topic))
    for row_id, reading in rows:
        if not builder.add(reading, tag=row_id):
            break                       # full: the rest goes into the next batch
    batch = builder.build()             # Batch(id, device, payload, keys, tags)
    readings = decode(batch.payload)    # back to reading dicts (what a consumer does)

The message (keys in this order; `common` only when it makes the message smaller):

    {"v": 1, "device": "pi-1", "batch": "1a2b3c4d-0-1499-5e6f7a8b",
     "fields": ["run", "seq", "t", "mono", "temperature", ...],
     "common": {"status": "ok", "correction": "cpu_factor", "clock_synced": true},
     "rows": [["1a2b3c4d", 0, 1764338400000, 0, 21.37, ...], ...]}

A reading is `{"device": device, **common, **dict(zip(fields, row))}`. `fields` always
starts with run, seq, t; `common` holds the columns whose value is the same in every row
of this batch. `t_orig` (a column only when a reading was re-timed) is the sample time
the device first gave before its clock stepped; null for a reading not re-timed. An
integral number may be written without its ".0" (50000.0 -> 50000).

The batch id is derived from its content (first run, lowest and highest seq of that run,
and a hash of every (run, seq, t)): a batch sent again keeps its id; a re-timed reading
changes it. Consumers dedupe by (device, run, seq), never by batch.

Sizes: a batch never exceeds `capacity` bytes of payload; `capacity()` makes payload +
topic fit in whole billing units (5 KB) under the 128 KB payload limit. The builder's
running size is an upper bound of the final payload, so the check is exact-safe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional

VERSION = 1
MAX_PAYLOAD = 131072          # IoT Core: 128 KB per MQTT payload, not adjustable
BILLING_UNIT = 5120           # IoT Core meters messages in 5 KB steps of payload + topic
IDENTITY = ("run", "seq", "t")
FIELD_ORDER = IDENTITY + ("mono", "status", "temperature", "temperature_raw", "humidity", "pressure",
                          "gas_resistance", "heat_stable", "cpu_temperature", "clock_synced", "correction",
                          "t_orig")
_RANK = {name: i for i, name in enumerate(FIELD_ORDER)}
ID_RESERVE = 64               # bytes kept for the batch id while sizing (ids are at most 60)
_SEP = (",", ":")
_NULL_CELL = len(",null")


class TooLarge(ValueError):
    """One reading that does not fit in an empty batch of this capacity."""


def units(payload_len: int, topic_len: int, unit: int = BILLING_UNIT) -> int:
    """Billed messages for one publish: ceil((payload + topic) / unit)."""
    return max(1, -(-(payload_len + topic_len) // unit))


def capacity(max_payload: int = MAX_PAYLOAD, topic: str = "", unit: int = BILLING_UNIT) -> int:
    """The payload bytes a batch may use: the most whole billing units (payload + topic)
    that fit, never more than `max_payload`."""
    topic_len = len(topic.encode())
    whole = (max_payload + topic_len) // unit * unit - topic_len
    return min(max_payload, whole) if whole >= unit // 2 else max_payload


def compact(value: Any) -> Any:
    """The value as written in a batch: integral floats lose their '.0'."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return value


_ENCODER = json.JSONEncoder(separators=_SEP)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _field_key(name: str) -> tuple:
    return (_RANK.get(name, len(_RANK)), name)


@dataclass(frozen=True)
class Batch:
    id: str
    device: str
    payload: bytes
    keys: tuple            # ((run, seq, t), ...) in row order
    tags: tuple            # the caller's tag of each row (e.g. its row id), in row order

    def units(self, topic: str, unit: int = BILLING_UNIT) -> int:
        return units(len(self.payload), len(topic.encode()), unit)

    def __len__(self) -> int:
        return len(self.keys)


def batch_id(keys: Iterable[tuple], device: str = "") -> str:
    """`<run>-<lowest seq>-<highest seq>-<hash>` of the first row's run; the hash covers
    every (run, seq, t) in row order, so equal content gives an equal id."""
    keys = list(keys)
    if not keys:
        raise ValueError("a batch has at least one reading")
    run = str(keys[0][0])
    seqs = [seq for r, seq, _ in keys if r == keys[0][0]]
    digest = hashlib.blake2s(digest_size=4)
    digest.update(device.encode() + b"\n")
    for r, seq, t in keys:
        digest.update(f"{r}:{seq}:{t};".encode())
    return f"{run[:16]}-{min(seqs)}-{max(seqs)}-{digest.hexdigest()}"


class BatchBuilder:
    """Collects readings for one device until the next one would not fit in `capacity`."""

    def __init__(self, device: str, capacity: int = MAX_PAYLOAD) -> None:
        self.device = device
        self.capacity = capacity
        self.full = False                  # an add() was refused for lack of room
        self._rows: list[dict] = []
        self._tags: list = []
        self._fields: list[str] = list(IDENTITY)
        self._known = set(IDENTITY)
        self._rows_bytes = 0               # sum of the rows' JSON lengths with the current fields
        self._fields_len = len(_dumps(self._fields))
        self._fixed = len(_dumps({"v": VERSION, "device": device, "batch": "x" * ID_RESERVE,
                                  "fields": [], "rows": []}))

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def size(self) -> int:
        """An upper bound of the payload build() will return."""
        return self._estimate(self._fields_len, self._rows_bytes, len(self._rows))

    def add(self, reading: dict, tag: object = None) -> bool:
        """Add one reading (a dict with at least run, seq, t); False (and `full`) when it
        does not fit. Raises TooLarge if it would not fit even alone."""
        device = reading.get("device", self.device)
        if device != self.device:
            raise ValueError(f"reading of device {device!r} in a batch of {self.device!r}")
        row = {k: (compact(v) if v.__class__ is float else v) for k, v in reading.items() if k != "device"}
        if "run" not in row or "seq" not in row or "t" not in row:
            raise ValueError(f"a reading needs {IDENTITY}")
        new_names = [k for k in row if k not in self._known]
        if new_names:
            fields = sorted(self._fields + new_names, key=_field_key)
            fields_len = len(_dumps(fields))
        else:
            fields, fields_len = self._fields, self._fields_len
        rows_bytes = self._rows_bytes + len(new_names) * _NULL_CELL * len(self._rows)
        rows_bytes += len(_dumps([row.get(name) for name in fields]))
        n = len(self._rows) + 1
        if self._estimate(fields_len, rows_bytes, n) > self.capacity:
            if not self._rows:
                raise TooLarge(f"a reading of {rows_bytes} bytes does not fit in a batch of {self.capacity}")
            self.full = True
            return False
        if new_names:
            self._fields, self._fields_len, self._known = fields, fields_len, set(fields)
        self._rows_bytes = rows_bytes
        self._rows.append(row)
        self._tags.append(tag)
        return True

    def build(self) -> Batch:
        """The batch of every reading added so far (at least one)."""
        if not self._rows:
            raise ValueError("an empty batch")
        keys = tuple((row["run"], row["seq"], row["t"]) for row in self._rows)
        ident = batch_id(keys, self.device)
        plain = self._encode(ident, self._fields, {})
        common = self._common()
        if common:
            fields = [f for f in self._fields if f not in common]
            hoisted = self._encode(ident, fields, common)
            if len(hoisted) < len(plain):
                plain = hoisted
        assert len(plain) <= self.size <= self.capacity, "batch size bound broken"
        return Batch(ident, self.device, plain, keys, tuple(self._tags))

    # -- internals -----------------------------------------------------------------------
    def _estimate(self, fields_len: int, rows_bytes: int, n: int) -> int:
        return self._fixed + fields_len - 2 + rows_bytes + max(0, n - 1)

    def _common(self) -> dict:
        """Columns (not run/seq/t) with one value in every row, hoisted when that saves bytes."""
        common = {}
        n = len(self._rows)
        for name in self._fields:
            if name in IDENTITY:
                continue
            first = self._rows[0].get(name)
            if all(row.get(name) == first and type(row.get(name)) is type(first) for row in self._rows):
                cell = len(_dumps(first)) + 1
                if n * cell > len(_dumps(name)) + cell + 1:
                    common[name] = first
        return common

    def _encode(self, ident: str, fields: list[str], common: dict) -> bytes:
        doc: dict = {"v": VERSION, "device": self.device, "batch": ident, "fields": fields}
        if common:
            doc["common"] = common
        doc["rows"] = [[row.get(name) for name in fields] for row in self._rows]
        return _dumps(doc).encode()


def pack(device: str, readings: Iterable[dict], capacity_bytes: int = MAX_PAYLOAD) -> list[Batch]:
    """Every reading, in order, in as few batches as the capacity allows (tags = indexes)."""
    batches: list[Batch] = []
    builder = BatchBuilder(device, capacity_bytes)
    for index, reading in enumerate(readings):
        if not builder.add(reading, tag=index):
            batches.append(builder.build())
            builder = BatchBuilder(device, capacity_bytes)
            builder.add(reading, tag=index)
    if len(builder):
        batches.append(builder.build())
    return batches


def decode(payload: bytes | str | dict) -> list[dict]:
    """The readings of a v1 batch, each with its device (what any consumer does).
    Raises ValueError for something that is not a v1 batch."""
    doc = json.loads(payload) if isinstance(payload, (bytes, str)) else payload
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ValueError("not a batch of format version 1")
    try:
        device, fields, rows = doc["device"], doc["fields"], doc["rows"]
        common = doc.get("common") or {}
        return [{"device": device, **common, **dict(zip(fields, row))} for row in rows]
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed batch: {error}") from error


def batch_of(payload: bytes) -> Optional[dict]:
    """The parsed batch document, or None when the payload is not a v1 batch."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and doc.get("v") == VERSION and isinstance(doc.get("batch"), str):
        return doc
    return None
