"""Correcting the BME680's temperature for the Raspberry Pi's CPU heat. Pure: no I/O, no clock.

    corrector = Corrector({"method": "cpu_factor", "factor": 2.25, "window": 5})
    out = corrector.correct(reading)        # reading dict in, corrected reading dict out
    refused = corrector.update({"factor": 0.0})
    # -> ["factor: 0.0 refused, allowed 0.1..100 (kept 2.25)"]

Methods (`method`):
- ``cpu_factor`` (Pimoroni's enviroplus example): ``raw - (avg_cpu - raw) / factor``, avg_cpu
  the mean of the last `window` CPU temperatures, the current one included.
- ``linear``: ``a*raw + b*cpu + c`` with cpu the reading's own CPU temperature
  (fit a, b, c with scripts/calibrate).

The output is the reading with ``temperature`` corrected (rounded to 2 decimals),
``temperature_raw`` (the sensor's value) and ``correction`` (the method's name). A reading
whose status is not ok, or without a temperature or a CPU temperature, passes through with
correction ``none``. Every other field is copied untouched.

The CPU window is the only state, and it is kept per (device, run): the window of a reading
is the CPU temperatures of its own run's readings at seq-window+1 .. seq (those seen), so
the correction of a reading depends only on that reading and its run's readings around its
own time. A reading sent again an hour later is corrected as the first send was; one
Lambda serving several devices never mixes their CPUs. The last HISTORY seqs of the last
RUNS_REMEMBERED runs are kept; after a restart it refills (resends come oldest first).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Mapping

METHODS = ("cpu_factor", "linear")
NUMBER_RANGES = {"factor": (0.1, 100.0), "a": (-1000.0, 1000.0), "b": (-1000.0, 1000.0), "c": (-1000.0, 1000.0)}
WINDOW_RANGE = (1, 600)
PARAMETER_KEYS = ("method", "factor", "window", "a", "b", "c")
RUNS_REMEMBERED = 64
HISTORY = 4096                  # CPU temperatures kept per run, by seq (the window is at most 600)


@dataclass(frozen=True)
class Params:
    """The correction parameters in effect. Defaults: Pimoroni's factor 2.25 over 5 readings."""

    method: str = "cpu_factor"
    factor: float = 2.25
    window: int = 5
    a: float = 1.0
    b: float = 0.0
    c: float = 0.0

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in PARAMETER_KEYS}


def check_value(key: str, value: object) -> tuple[object, str | None]:
    """(normalised value, None) when `value` is allowed for parameter `key`, else (None, reason).

    Numbers may arrive as floats (42 -> 42.0 over local pub/sub); window takes whole numbers only.
    Booleans and strings are never numbers here."""
    if key == "method":
        if value in METHODS:
            return value, None
        return None, f"allowed {' | '.join(METHODS)}"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "window":
        low, high = WINDOW_RANGE
        if is_number and math.isfinite(value) and float(value).is_integer() and low <= value <= high:
            return int(value), None
        return None, f"allowed a whole number {low}..{high}"
    if key in NUMBER_RANGES:
        low, high = NUMBER_RANGES[key]
        if is_number and math.isfinite(value) and low <= value <= high:
            return float(value), None
        return None, f"allowed {_num(low)}..{_num(high)}"
    raise KeyError(key)


def merge(params: Params, changes: Mapping) -> tuple[Params, list[str]]:
    """`params` with every allowed value of `changes` applied, and a message per refused one.

    Keys other than the parameters (topics, ...) are ignored. A refused value leaves the
    previous one in place: "window: 0 refused, allowed a whole number 1..600 (kept 5)"."""
    accepted, refused = {}, []
    for key in PARAMETER_KEYS:
        if key not in changes:
            continue
        value, reason = check_value(key, changes[key])
        if reason is None:
            accepted[key] = value
        else:
            refused.append(f"{key}: {changes[key]!r} refused, {reason} (kept {getattr(params, key)!r})")
    return replace(params, **accepted), refused


def cpu_factor(raw: float, avg_cpu: float, factor: float) -> float:
    """Pimoroni's compensation: the sensor reads ambient + (cpu - ambient) / (1 + factor)."""
    return raw - (avg_cpu - raw) / factor


def linear(raw: float, cpu: float, a: float, b: float, c: float) -> float:
    """A fitted model a*raw + b*cpu + c (cpu_factor is a = 1 + 1/f, b = -1/f, c = 0)."""
    return a * raw + b * cpu + c


def passthrough(reading: Mapping) -> dict:
    """The reading unchanged, marked uncorrected: temperature_raw = temperature, correction none."""
    out = dict(reading)
    out["temperature_raw"] = reading.get("temperature")
    out["correction"] = "none"
    return out


class Corrector:
    """Corrects readings one by one with parameters that can be replaced while it runs.

        corrector = Corrector()                  # defaults (cpu_factor, 2.25, window 5)
        corrector.update({"method": "linear", "a": 1.1, "b": -0.3, "c": 0.5})  # -> [] or refusals
        corrector.correct(reading)               # -> corrected reading (a new dict)

    Constructing with bad values keeps the defaults for them; `refused` lists why."""

    def __init__(self, params: Mapping | None = None) -> None:
        self._params = Params()
        self._runs: OrderedDict[tuple, OrderedDict] = OrderedDict()     # (device, run) -> {seq: cpu}
        self._last: tuple | None = None
        self.refused: list[str] = self.update(params or {})

    @property
    def params(self) -> Params:
        return self._params

    def update(self, changes: Mapping) -> list[str]:
        """Apply the allowed values in `changes` at once; returns a message per refused value."""
        self._params, refused = merge(self._params, changes)
        return refused

    def cpu_average(self, reading: Mapping | None = None) -> float | None:
        """Mean of the CPU temperatures in the window of `reading` (default: the last one
        corrected), None when none is known."""
        if reading is None:
            if self._last is None:
                return None
            key, seq = self._last
        else:
            key, seq = (reading.get("device"), reading.get("run")), reading.get("seq")
        history = self._runs.get(key)
        if not history or not isinstance(seq, (int, float)):
            return None
        seq = int(seq)
        values = [history[s] for s in range(seq - self._params.window + 1, seq + 1) if s in history]
        return sum(values) / len(values) if values else None

    def correct(self, reading: Mapping) -> dict:
        """The corrected reading (see the module docstring). Does not modify `reading`."""
        cpu = reading.get("cpu_temperature")
        if cpu is not None:
            self._remember(reading, float(cpu))
        raw = reading.get("temperature")
        if reading.get("status") != "ok" or raw is None or cpu is None:
            return passthrough(reading)
        p = self._params
        if p.method == "linear":
            value = linear(raw, cpu, p.a, p.b, p.c)
        else:
            avg = self.cpu_average(reading)
            value = cpu_factor(raw, cpu if avg is None else avg, p.factor)
        out = dict(reading)
        out["temperature"] = round(value, 2)
        out["temperature_raw"] = raw
        out["correction"] = p.method
        return out

    def _remember(self, reading: Mapping, cpu: float) -> None:
        """The CPU temperature of this reading, by its run and seq (a resend: the same again)."""
        seq = reading.get("seq")
        if not isinstance(seq, (int, float)) or isinstance(seq, bool):
            return
        key = (reading.get("device"), reading.get("run"))
        history = self._runs.get(key)
        if history is None:
            history = self._runs[key] = OrderedDict()
        self._runs.move_to_end(key)
        history[int(seq)] = cpu
        while len(history) > HISTORY:
            history.popitem(last=False)
        while len(self._runs) > RUNS_REMEMBERED:
            self._runs.popitem(last=False)
        self._last = (key, int(seq))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
