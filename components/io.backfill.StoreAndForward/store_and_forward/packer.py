"""Batch format v1: readings packed into one JSON message for IoT Core. Pure.

    builder = BatchBuilder("pi-1", capacity(131072, topic))
    for row_id, reading in rows:
        if not builder.add(reading, tag=row_id):
            break                       # full: the rest goes into the next batch
    batch = builder.build()             # Batch(id, device, payload, keys, tags)
    readings = decode(batch.payload)    # back to reading dicts (what a consumer does)

The message (keys in this order; `common`, `t_base` and `mono_offset` only when they make
it smaller, which the packer decides per batch):

    {"v": 1, "device": "pi-1", "batch": "1a2b3c4d-0-2144-5e6f7a8b",
     "fields": ["seq", "t", "mono_lag", "temperature", "temperature_raw", "humidity", "pressure",
                "gas_resistance", "cpu_temperature"],
     "common": {"run": "1a2b3c4d", "status": "ok", "heat_stable": true, "clock_synced": true,
                "correction": "cpu_factor"},
     "t_base": 1764338400000,
     "mono_offset": 1764338399850,
     "rows": [[0, 0, 0, 21.37, 24.91, 45.123, 1013.25, 50123.4, 48.312],
              [1, 1000, 3, 21.38, 24.93, 45.119, 1013.26, 50087.9, 48.799], ...]}

Decoding, in any language (Python shown):

    for row in doc["rows"]:
        reading = {"device": doc["device"], **doc.get("common", {}), **dict(zip(doc["fields"], row))}
        reading["t"] += doc.get("t_base", 0)
        if "mono_offset" in doc:
            reading["mono"] = reading["t"] - doc["mono_offset"] - reading.pop("mono_lag", 0)

- `fields` always holds `seq` and `t`; `run` is a column, or in `common` when every row of
  the batch has the same run (the usual case). `common` holds the fields whose value (and
  JSON type) is the same in every row.
- `t_base` (when present): t cells are milliseconds from it (SenML's base time): the
  sample time is t_base + t. Without it, t is the sample time itself (epoch ms, UTC).
- `mono_offset` (when present): `mono` is not a column; every row's mono is
  `t - mono_offset - mono_lag` (t the absolute sample time), with `mono_lag` a column when
  the rows' `t - mono` differ (a sensor reads its two clocks at slightly different moments)
  and absent when they are all equal. mono_lag is a reserved name: readings that carry a
  field of that name keep mono as a column.
- `t_orig` (a column only when a reading was re-timed) is the sample time the device first
  gave before its clock stepped (absolute, never relative to t_base); null for a reading
  not re-timed.
- A column missing from a reading is null in its row. An integral number may be written
  without its ".0" (50000.0 -> 50000): equal in value, as any JSON consumer sees it.
decode() gives back exactly what was packed (up to that ".0"). Values are written as the
pipeline stored them; their resolution is the producer's (the BME680 through Pimoroni's
driver: 0.01 °C, 0.001 %RH, 0.01 hPa; gas resistance 0.1 ohm as the sensor rounds it today).

A day at 1 Hz of readings whose every value changes (the simulator's daily curve with
noise; mono read 150-170 ms before t; scripts/storebench/readings.py): 59.2 bytes per
reading on the wire (82.9 in the first form of v1, with run and mono in every row), 25-unit
batches of ~2,160 readings: 11.6 billed units per 1,000 readings, 23.2 with the echo
(confirm: echo) and 12.0 with an IoT rule's acknowledgement (confirm: rule).

The batch id is derived from its content (first run, lowest and highest seq of that run,
and a hash of every (run, seq, t)): a batch sent again keeps its id; a re-timed reading
changes it. Consumers dedupe by (device, run, seq), never by batch.

Sizes: a batch never exceeds `capacity` bytes of payload; `capacity()` makes payload +
topic fit in whole billing units (5 KB) under the 128 KB payload limit. The builder keeps
the exact size of the compact encoding as readings are added (`size`), so batches fill
their billing units; build() asserts the payload is not larger.

Stored rows (the drain): `builder.add_stored(row, tag)` takes the store's Row (run, seq, t,
mono, t_orig and the JSON `body` of the other fields) and gives the batch add() would give
from row.reading(), byte for byte, without decoding the body when it has the batch's shape:
a _Template matches it, and the row's size and text come from the matched cells.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from itertools import starmap
from typing import Any, Iterable, Optional

VERSION = 1
MAX_PAYLOAD = 131072          # IoT Core: 128 KB per MQTT payload, not adjustable
BILLING_UNIT = 5120           # IoT Core meters messages in 5 KB steps of payload + topic
IDENTITY = ("run", "seq", "t")
ALWAYS_COLUMNS = ("seq", "t")     # never hoisted into common
MONO, LAG, OFFSET, T_BASE = "mono", "mono_lag", "mono_offset", "t_base"
FIELD_ORDER = IDENTITY + ("mono", "status", "temperature", "temperature_raw", "humidity", "pressure",
                          "gas_resistance", "heat_stable", "cpu_temperature", "clock_synced", "correction",
                          "t_orig")
_RANK = {name: i for i, name in enumerate(FIELD_ORDER)}
_RANK[LAG] = _RANK[MONO]
_SEP = (",", ":")
_NULL = 4                     # len("null")
_COMMON_WRAPPER = len(',"common":{}')
_OFFSET_KEY = len(',"mono_offset":')
_T_BASE_KEY = len(',"t_base":')
_T_NAME, _MONO_NAME, _LAG_NAME = len('"t"'), len('"mono"'), len('"mono_lag"')
_MISSING = object()
_EXACT = float(2 ** 53)
REPLAN_EVERY = 32             # rows between two choices of the layout (and always near capacity)
_HASH_HEX = 8


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


_ENCODER = json.JSONEncoder(separators=_SEP, allow_nan=False)   # strict JSON out: no NaN, no Infinity


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _cell_len(value: Any) -> int:
    """len(_dumps(value)), fast for the common scalar types."""
    cls = value.__class__
    if cls is int or (cls is float and math.isfinite(value)):
        return len(repr(value))            # what json writes for these numbers
    if value is None:
        return _NULL
    if cls is bool:
        return 4 if value else 5
    return len(_dumps(value))              # ASCII: json escapes the rest


def _is_int(value: Any) -> bool:
    return value.__class__ is int


def _field_key(name: str) -> tuple:
    return (_RANK.get(name, len(FIELD_ORDER)), name)


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
    digest = hashlib.blake2s(digest_size=_HASH_HEX // 2)
    digest.update(device.encode() + b"\n")
    digest.update("".join([f"{r}:{seq}:{t};" for r, seq, t in keys]).encode())     # one update: the same hash
    return f"{run[:16]}-{min(seqs)}-{max(seqs)}-{digest.hexdigest()}"


@dataclass(frozen=True)
class _Layout:
    size: int
    common: tuple = ()     # names hoisted into common
    offset: bool = False   # mono as mono_offset (+ mono_lag column when the lags differ)
    t_base: bool = False   # t cells relative to t_base


class _Const:
    """A field whose value (and JSON type) is so far the same in every row."""
    __slots__ = ("value", "cls", "name_len", "cell")

    def __init__(self, name: str, value: Any) -> None:
        self.value, self.cls = value, value.__class__
        self.name_len, self.cell = len(_dumps(name)), _cell_len(value)


# A stored body (json.dumps of a dict: ASCII, Python's repr for numbers) as JSON text: a
# key, any scalar, and a cell whose group holds what a batch writes for its value: a
# number without exponent (an integral float's ".0" left out of the group when it has at
# most 15 digits, below 2**53, as compact() writes it: 50000.0 as 50000), true, false,
# null, a string without escapes. A row with any other value takes add() (decoded), as
# does a body with a nested value or an odd key.
_KEY = r'"[ !#-\[\]-~]*"'
_SCALAR = r'(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null|"(?:[^"\\\x00-\x1f]|\\.)*")'
_CELL = r'(-?(?:[1-9][0-9]*(?:\.[0-9]*[1-9])?|0\.[0-9]*[1-9])|0|true|false|null|"[ !#-\[\]-~]*")' \
    r'(?:(?<=[0-9])(?<![0-9]{16})\.0)?'
_PAIR = re.compile(f"({_KEY}):({_SCALAR})")
_OBJECT = re.compile(f"\\{{(?:{_KEY}:{_SCALAR}(?:,{_KEY}:{_SCALAR})*)?\\}}")
_STORED = ("run", "seq", "t", MONO)    # a stored row's own columns; the other fields are in its body
_NEVER_IN_BODY = frozenset(_STORED + ("device", "t_orig", "held_from", LAG))


class _Template:
    """The shape of a batch's stored rows, as a pattern their JSON body must match: its keys
    in their order, each constant field's text as it is, a group for each varying field.
    A body that matches has the batch's fields and no others, its constants unchanged, and
    its varying cells' texts, as a batch writes them, in its groups."""
    __slots__ = ("pattern", "groups", "consts", "run", "run_cls")

    def __init__(self, pattern: str, groups: dict, consts: dict, run: Any) -> None:
        self.pattern, self.groups, self.consts = re.compile(pattern), groups, consts
        self.run, self.run_cls = run, run.__class__

    @classmethod
    def of(cls, builder: "BatchBuilder", body: Any) -> "Optional[_Template]":
        """The template of `builder`'s rows so far, from one stored body; None when rows of
        this shape have to take add() (t or mono not integers, run varying, other fields)."""
        run = builder._const.get("run")
        if not (builder._t_ok and builder._mono.ok and builder._mono.seen) or run is None or \
                body.__class__ is not str or _OBJECT.fullmatch(body) is None:
            return None
        pairs = _PAIR.findall(body)
        names = [key[1:-1] for key, _ in pairs]
        if not _NEVER_IN_BODY.isdisjoint(names) or len(set(names)) != len(names) or len(names) + len(_STORED) != len(builder._names) or \
                not builder._names.issuperset(names) or not builder._names.issuperset(_STORED):
            return None
        parts, groups, consts = ["\\{"], {}, {}
        for i, ((key, text), name) in enumerate(zip(pairs, names)):
            parts.append(("," if i else "") + re.escape(key + ":"))
            const = builder._const.get(name)
            if const is None:                  # varying (seq, t and mono are not in a body)
                parts.append(_CELL)
                groups[name] = len(groups)
                continue
            value = compact(json.loads(text))
            if value.__class__ is not const.cls or value != const.value:
                return None
            parts.append(re.escape(text))
            consts[name] = value
        parts.append("\\}")
        return cls("".join(parts), groups, consts, run.value)

    def row_format(self, names: list, t_base: bool, lagging: bool = True) -> str:
        """str.format() pattern of a row with these columns, from what add_stored() keeps of
        a row: (seq, t - t_base, t, mono, mono_lag, the matched cells, the template)."""
        cells = []
        for name in names:
            if name == "t":
                cells.append("{1}" if t_base else "{2}")
            elif name == LAG and not lagging:  # a field of that name (not these rows'): null
                cells.append("null")
            elif name in _FORMAT_ARGS:
                cells.append(_FORMAT_ARGS[name])
            elif name in self.groups:
                cells.append(f"{{5[{self.groups[name]}]}}")
            else:                              # a constant of these rows, or a field they do not have
                value = self.consts.get(name, self.run if name == "run" else None)
                cells.append(_dumps(value).replace("{", "{{").replace("}", "}}"))
        return "[" + ",".join(cells) + "]"


_FORMAT_ARGS = {"seq": "{0}", MONO: "{3}", LAG: "{4}"}


class BatchBuilder:
    """Collects readings for one device until the next one would not fit in `capacity`.

    It keeps the exact size of the compact encoding as it goes, from running totals: the
    fields whose value has been the same in every row (`_const`, candidates for common),
    the others (`_varying`: their names and the sum of their cells' JSON lengths), and t
    and mono, which have encodings of their own (t_base; mono_offset and mono_lag)."""

    def __init__(self, device: str, capacity: int = MAX_PAYLOAD) -> None:
        self.device = device
        self.capacity = capacity
        self.full = False                  # an add() was refused for lack of room
        self._rows: list = []              # a dict per row added by add(); a matched stored row's tuple otherwise
        self._keys: list[tuple] = []       # (run, seq, t) of each row
        self._tags: list = []
        self._fixed = len(_dumps({"v": VERSION, "device": device, "batch": "", "fields": [], "rows": []}))
        self._names: set = set()           # every field seen (t and mono included)
        self._const: dict[str, _Const] = {}
        self._const_names = 0              # JSON bytes of their names
        self._const_cells = 0              # JSON bytes of one cell of each
        self._varying: list[str] = []      # seq and the fields that changed (or were missing) in some row
        self._varying_names = 0            # JSON bytes of their names
        self._varying_cells = 0            # JSON bytes of their cells over every row (null where missing)
        self._run_len = 0                  # JSON bytes of the first run's id prefix (no quotes)
        self._first_run: Any = None
        self._seq_range: tuple = (0, 0)
        self._t_ok = True                  # every t so far is an integer
        self._t_base = 0                   # the first row's t
        self._t_cells = 0                  # JSON bytes of t
        self._t_rel_cells = 0              # JSON bytes of t - t_base
        self._mono = _MonoStats()
        self._layout = _Layout(0)
        self._size = 0                     # the payload size with the current layout
        self._since_plan = 0               # rows added since the layout was last chosen
        self._template: Any = None         # for stored rows of the current shape (None: not made yet; False: none)
        self._fixed_delta: Optional[tuple] = None   # _row_fixed() of the layout, from the third row on

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def size(self) -> int:
        """The payload size build() will return (an upper bound, exact in practice)."""
        return self._size

    def add(self, reading: dict, tag: object = None) -> bool:
        """Add one reading (a dict with at least run, seq, t); False (and `full`) when it
        does not fit. Raises TooLarge if it would not fit even alone."""
        device = reading.get("device", self.device)
        if device != self.device:
            raise ValueError(f"reading of device {device!r} in a batch of {self.device!r}")
        row = {k: (int(v) if v.__class__ is float and v.is_integer() and -_EXACT < v < _EXACT else v)
               for k, v in reading.items()}
        row.pop("device", None)
        if "run" not in row or "seq" not in row or "t" not in row:
            raise ValueError(f"a reading needs {IDENTITY}")
        n = len(self._rows)                # rows before this one
        # fields that appear, and constants that stop being constant (undone if the row is refused)
        new = [name for name in row if name not in self._names] if n == 0 or len(row) != len(self._names) \
            or not self._names.issuperset(row) else []
        broken = []
        for name, const in self._const.items():
            value = row.get(name, _MISSING)
            if value.__class__ is not const.cls or value != const.value:
                broken.append(name)
        for name in new:
            self._names.add(name)
            if name == "t" or name == MONO:
                continue
            if n == 0 and name not in ALWAYS_COLUMNS:
                self._add_const(name, _Const(name, row[name]))
            else:
                self._vary(name, _NULL * n)
        for name in broken:
            const = self._pop_const(name)
            self._vary(name, const.cell * n)
        cells = _dumps([row.get(name) for name in self._varying])
        varying_cells = self._varying_cells + (len(cells) - 1 - len(self._varying) if self._varying else 0)
        t = row["t"]
        t_ok = self._t_ok and _is_int(t)
        t_base = t if n == 0 else self._t_base
        t_cells = self._t_cells + _cell_len(t)
        t_rel_cells = self._t_rel_cells + len(repr(t - t_base)) if t_ok else 0
        mono = self._mono
        mono_saved = mono.saved()
        mono.add(row, n, t)
        run, seq = row["run"], row["seq"]
        if n == 0:
            first_run, run_len, seq_range = run, len(_dumps(str(run)[:16])) - 2, (seq, seq)
        else:
            first_run, run_len, seq_range = self._first_run, self._run_len, self._seq_range
            if run == first_run:
                seq_range = (min(seq_range[0], seq), max(seq_range[1], seq))
        return self._place(n, new, broken, varying_cells, t_ok, t_base, t_cells, t_rel_cells, mono_saved, first_run,
                           run_len, seq_range, row, tag)

    def add_stored(self, row: Any, tag: object = None) -> bool:
        """add() for a stored reading (the store's Row: run, seq, t, mono, t_orig, its JSON
        `body` and reading()): the same batch, byte for byte, but when the row has the shape
        of the batch so far (see _Template) its body is matched, not decoded, and its size
        grows by its cells' lengths."""
        template = self._template
        if template is None and self._rows:
            template = self._template = _Template.of(self, row.body) or False
        if template:
            seq, t, mono, run = row.seq, row.t, row.mono, row.run
            if seq.__class__ is int and t.__class__ is int and mono.__class__ is int and row.t_orig is None \
                    and run.__class__ is template.run_cls and run == template.run and row.body.__class__ is str:
                match = template.pattern.fullmatch(row.body)
                if match is not None:
                    return self._add_matched(template, match.groups(), run, seq, t, mono, tag)
        return self.add(row.reading(), tag)

    def _add_matched(self, template: "_Template", cells: tuple, run: Any, seq: int, t: int, mono: int,
                     tag: object) -> bool:
        """add() of a row its template matched (`cells`: its varying cells as written): no
        field appears, no constant breaks, t and mono are integers (only totals move)."""
        seq_len, t_len, rel_len, mono_len = len(repr(seq)), len(repr(t)), len(repr(t - self._t_base)), len(repr(mono))
        cells_len = seq_len + sum(map(len, cells))
        stats = self._mono
        lag = t - mono - stats.offset
        lag_len = len(repr(lag))
        low, high = self._seq_range
        fixed = self._fixed_delta
        if fixed is not None and self._since_plan < REPLAN_EVERY and not (stats.const and mono != stats.first) \
                and (stats.lagging or not lag):
            # the layout stays: _row_delta() for this row, its fixed part kept since the layout was chosen
            t_part, mono_part = fixed[1], fixed[2]
            delta = fixed[0] + cells_len + (rel_len if t_part else t_len) + \
                (lag_len if mono_part == 1 else mono_len if mono_part == 2 else 0)
            size = self._size + delta
            if seq > high:
                size += seq_len - len(repr(high))
            elif seq < low:
                size += seq_len - len(repr(low))
            if size + 2 * delta <= self.capacity:
                stats.cells += mono_len
                stats.lag_cells += lag_len
                self._varying_cells += cells_len
                self._t_cells += t_len
                self._t_rel_cells += rel_len
                self._seq_range = (low, seq) if seq > high else (low, high) if seq >= low else (seq, high)
                self._size = size
                self._since_plan += 1
                self._rows.append((seq, t - self._t_base, t, mono, lag, cells, template))
                self._keys.append((run, seq, t))
                self._tags.append(tag)
                return True
        seq_range = (low, seq) if seq > high else (low, high) if seq >= low else (seq, high)
        mono_saved = stats.saved()
        if stats.const and mono != stats.first:
            stats.const = False
        stats.cells += mono_len
        stats.lag_cells += lag_len
        if lag:
            stats.lagging = True
        return self._place(len(self._rows), (), (), self._varying_cells + cells_len, True, self._t_base, self._t_cells + t_len,
                           self._t_rel_cells + rel_len, mono_saved, self._first_run, self._run_len, seq_range,
                           (seq, t - self._t_base, t, mono, lag, cells, template), tag, (run, seq, t))

    def _row_delta(self, layout: _Layout, varying: int, t: int, t_rel: int, mono: int, lag: int) -> int:
        """The bytes one more row adds in `layout` (the same fields; the lengths of its
        varying cells, t, t - t_base, mono and mono_lag given): cells and separators."""
        fixed, t_part, mono_part = self._row_fixed(layout)
        return fixed + varying + (t_rel if t_part else t) + (lag if mono_part == 1 else mono if mono_part == 2 else 0)

    def _row_fixed(self, layout: _Layout) -> tuple:
        """What a row costs in `layout` beyond its varying cells, t and mono: (bytes, t as
        t - t_base?, 1: mono_lag a column, 2: mono a column, 0: neither)."""
        fixed = len(self._varying) + 2 + 1
        if not layout.common:
            fixed += self._const_cells + len(self._const)
        mono_part = 0
        if self._mono.seen:
            if layout.offset:
                mono_part = 1 if self._mono.lagging else 0
            elif MONO not in layout.common:
                mono_part = 2
        return fixed + (mono_part > 0), layout.t_base, mono_part

    def _place(self, n: int, new: list, broken: list, varying_cells: int, t_ok: bool, t_base: Any, t_cells: int,
               t_rel_cells: int, mono_saved: tuple, first_run: Any, run_len: int, seq_range: tuple, row: Any,
               tag: object, key: Optional[tuple] = None) -> bool:
        """The size with one more row (its totals given; `new` and `broken` already applied):
        keep it, or undo and refuse it when the batch would exceed its capacity."""
        mono = self._mono
        layout = None
        old = self._layout
        if new or broken or n < 2 or self._since_plan >= REPLAN_EVERY or t_ok != self._t_ok or \
                (mono.seen, mono.const, mono.ok, mono.lagging) != _MonoStats.flags(mono_saved):
            pass                               # the layout may change: plan it again (below)
        else:                                  # same layout: this row's cells and separators
            delta = self._row_delta(old, varying_cells - self._varying_cells, t_cells - self._t_cells,
                                    t_rel_cells - self._t_rel_cells, mono.cells - mono_saved[1],
                                    mono.lag_cells - mono_saved[7])
            size = self._size + delta
            if seq_range != self._seq_range:
                size += self._id_len(run_len, seq_range) - self._id_len(run_len, self._seq_range)
            if size + 2 * delta <= self.capacity:
                layout = old
        if layout is None:
            layout = self._plan(n + 1, varying_cells, t_ok, t_base, t_cells, t_rel_cells, mono, run_len, seq_range)
            size = layout.size
            self._since_plan = 0
        else:
            self._since_plan += 1
        if size > self.capacity:
            for name in broken:                # put things back as they were
                self._unvary(name, _Const(name, self._rows[0][name]))   # it held in every row before
            for name in new:
                self._names.discard(name)
                if name in self._const:
                    self._pop_const(name)
                if name in self._varying:
                    self._unvary(name, None)
            mono.restore(mono_saved)
            if not self._rows:
                raise TooLarge(f"a reading of {size} bytes does not fit in a batch of {self.capacity}")
            self.full = True
            return False
        if new or broken or t_ok != self._t_ok or mono.ok != mono_saved[5] or mono.seen != mono_saved[0]:
            self._template = None              # the shape changed: a new template for the next stored row
        self._varying_cells = varying_cells
        self._t_ok, self._t_base, self._t_cells, self._t_rel_cells = t_ok, t_base, t_cells, t_rel_cells
        self._first_run, self._run_len, self._seq_range = first_run, run_len, seq_range
        self._layout, self._size = layout, size
        self._fixed_delta = self._row_fixed(layout) if len(self._rows) >= 1 else None
        self._rows.append(row)
        self._keys.append(key if key is not None else (row["run"], row["seq"], row["t"]))
        self._tags.append(tag)
        return True

    def build(self) -> Batch:
        """The batch of every reading added so far (at least one)."""
        if not self._rows:
            raise ValueError("an empty batch")
        keys = tuple(self._keys)
        ident = batch_id(keys, self.device)
        best = self._plan(len(self._rows), self._varying_cells, self._t_ok, self._t_base, self._t_cells,
                          self._t_rel_cells, self._mono, self._run_len, self._seq_range)
        if best.size < self._size:
            self._layout, self._size = best, best.size
            if self._fixed_delta is not None:
                self._fixed_delta = self._row_fixed(best)
        payload = self._encode(ident, self._layout)
        assert len(payload) <= self.size <= self.capacity, "batch size bound broken"
        return Batch(ident, self.device, payload, keys, tuple(self._tags))

    # -- bookkeeping -----------------------------------------------------------------------
    def _vary(self, name: str, cells_before: int) -> None:
        self._varying.append(name)
        self._varying_names += len(_dumps(name))
        self._varying_cells += cells_before

    def _unvary(self, name: str, const: "Optional[_Const]") -> None:
        self._varying.remove(name)
        self._varying_names -= len(_dumps(name))
        n = len(self._rows)
        self._varying_cells -= (const.cell if const is not None else _NULL) * n
        if const is not None:
            self._add_const(name, const)

    def _add_const(self, name: str, const: _Const) -> None:
        self._const[name] = const
        self._const_names += const.name_len
        self._const_cells += const.cell

    def _pop_const(self, name: str) -> _Const:
        const = self._const.pop(name)
        self._const_names -= const.name_len
        self._const_cells -= const.cell
        return const

    def _plan(self, n: int, varying_cells: int, t_ok: bool, t_base: int, t_cells: int, t_rel_cells: int,
              mono: "_MonoStats", run_len: int, seq_range: tuple) -> _Layout:
        """The smallest layout for `n` rows with these totals, and its exact payload size."""
        # every column costs its name in fields, its cells, and one separator per row
        size = self._fixed + self._id_len(run_len, seq_range)
        size += self._varying_names + varying_cells + len(self._varying) * n
        count = len(self._varying) + 1                       # + t
        use_t_base = False
        if "t" in self._names:
            size += _T_NAME + n
            if t_ok and n > 1 and t_rel_cells + _T_BASE_KEY + len(repr(t_base)) < t_cells:
                size += t_rel_cells + _T_BASE_KEY + len(repr(t_base))
                use_t_base = True
            else:
                size += t_cells
        k = len(self._const)
        as_columns = self._const_names + n * self._const_cells + n * k
        as_entries = self._const_names + k + self._const_cells
        hoistable = k if n > 1 else 0
        mono_column = mono_entry = offset = None
        if mono.seen:
            mono_column = _MONO_NAME + mono.cells + n
            if mono.const and n > 1:
                mono_entry = _MONO_NAME + 1 + mono.first_len
            if mono.ok:
                offset = _OFFSET_KEY + len(repr(mono.offset)) + ((_LAG_NAME + mono.lag_cells + n) if mono.lagging else 0)
        best = None
        for hoist in (False, True) if hoistable or mono_entry is not None else (False,):
            for use_offset in (False, True) if offset is not None else (False,):
                total, columns, entries = size, count, 0
                if hoist:
                    entries, common = as_entries, hoistable
                else:
                    total += as_columns
                    columns += len(self._const)
                    common = 0
                if mono.seen:
                    if use_offset:
                        total += offset
                        columns += 1 if mono.lagging else 0
                    elif hoist and mono_entry is not None:
                        entries += mono_entry
                        common += 1
                    else:
                        total += mono_column
                        columns += 1
                if common:
                    total += _COMMON_WRAPPER + entries + common - 1
                # separators between field names; per row "[" "]" (cells and their separators above); between rows
                total += max(0, columns - 1) + n + (n - 1)
                if best is None or total < best[0]:
                    best = (total, hoist, use_offset)
        total, hoist, use_offset = best
        common_names = tuple(self._const) if hoist else ()
        if hoist and mono.seen and not use_offset and mono_entry is not None:
            common_names += (MONO,)
        return _Layout(total, common_names, use_offset, use_t_base)

    @staticmethod
    def _id_len(run_len: int, seq_range: tuple) -> int:
        return run_len + len(str(seq_range[0])) + len(str(seq_range[1])) + 3 + _HASH_HEX

    def _encode(self, ident: str, layout: _Layout) -> bytes:
        common = set(layout.common)
        names = [name for name in self._names if name not in common and not (layout.offset and name == MONO)]
        lagging = layout.offset and self._mono.lagging
        if lagging:
            names.append(LAG)
        names.sort(key=_field_key)
        doc: dict = {"v": VERSION, "device": self.device, "batch": ident, "fields": names}
        if common:
            first = self._rows[0]
            doc["common"] = {name: first[name] for name in sorted(common, key=_field_key)}
        if layout.t_base:
            doc[T_BASE] = self._t_base
        if layout.offset:
            doc[OFFSET] = self._mono.offset
        offset, base = self._mono.offset, self._t_base
        derived: dict = {}
        if lagging:
            derived[LAG] = lambda row: row["t"] - row[MONO] - offset
        if layout.t_base:
            derived["t"] = lambda row: row["t"] - base
        if all(row.__class__ is dict for row in self._rows):
            if derived:
                rows = [[derived[name](row) if name in derived else row.get(name) for name in names]
                        for row in self._rows]
            else:
                rows = [[row.get(name) for name in names] for row in self._rows]
            doc["rows"] = rows
            return _dumps(doc).encode()
        # stored rows matched by a template: their row text from their matched cells, the same bytes
        doc["rows"] = []
        head = _dumps(doc)[:-2]            # ..."rows":[
        texts: list = []
        start = 0
        rows = self._rows
        while start < len(rows):               # runs of rows of one template, or of add()'s dicts
            kind = rows[start].__class__ is dict or rows[start][6]
            end = start + 1
            while end < len(rows) and (rows[end].__class__ is dict or rows[end][6]) is kind:
                end += 1
            if kind is True:
                texts += [_dumps([derived[name](row) if name in derived else row.get(name) for name in names])
                          for row in rows[start:end]]
            else:
                texts += starmap(kind.row_format(names, layout.t_base, lagging).format, rows[start:end])
            start = end
        return (head + ",".join(texts) + "]}").encode()


class _MonoStats:
    """Running totals of the mono field: as a column, as a constant, or as t - mono_offset - mono_lag."""
    __slots__ = ("seen", "cells", "const", "first", "first_len", "ok", "offset", "lag_cells", "lagging")

    def __init__(self) -> None:
        self.seen = False          # some row has mono
        self.cells = 0             # JSON bytes of the mono column (null where missing)
        self.const = True          # every row has the same mono (value and type)
        self.first: Any = _MISSING
        self.first_len = 0
        self.ok = True             # every row has integer t and mono, and no field named mono_lag
        self.offset = 0            # the first row's t - mono
        self.lag_cells = 0         # JSON bytes of t - mono - offset
        self.lagging = False       # some lag is not 0

    def saved(self) -> tuple:
        return (self.seen, self.cells, self.const, self.first, self.first_len, self.ok, self.offset, self.lag_cells,
                self.lagging)

    @staticmethod
    def flags(saved: tuple) -> tuple:
        return saved[0], saved[2], saved[5], saved[8]

    def restore(self, saved: tuple) -> None:
        (self.seen, self.cells, self.const, self.first, self.first_len, self.ok, self.offset, self.lag_cells,
         self.lagging) = saved

    def add(self, row: dict, n: int, t: Any) -> None:
        """Count one more row (n rows before it)."""
        mono = row.get(MONO, _MISSING)
        if mono is _MISSING:
            if self.seen:
                self.cells += _NULL
            self.const = self.ok = False
            return
        if not self.seen:
            self.seen = True
            self.cells += _NULL * n             # the rows before had no mono: null there
            self.const = n == 0
            self.first, self.first_len = mono, _cell_len(mono)
        elif self.const and (mono.__class__ is not self.first.__class__ or mono != self.first):
            self.const = False
        self.cells += _cell_len(mono)
        if self.ok:
            if not (_is_int(t) and _is_int(mono)) or LAG in row:
                self.ok = False
            else:
                if n == 0:
                    self.offset = t - mono
                lag = t - mono - self.offset
                self.lag_cells += len(repr(lag))
                self.lagging = self.lagging or lag != 0


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
        offset, base = doc.get(OFFSET), doc.get(T_BASE)
        readings = []
        for row in rows:
            reading = {"device": device, **common, **dict(zip(fields, row))}
            if base is not None:
                reading["t"] += base
            if offset is not None:
                reading[MONO] = reading["t"] - offset - reading.pop(LAG, 0)
            readings.append(reading)
        return readings
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
