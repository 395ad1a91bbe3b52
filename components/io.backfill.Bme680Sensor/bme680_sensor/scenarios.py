"""What the simulated chip measures, chosen by configuration.

    source, fault = scenarios.build(settings, wall_ms=clock.wall_ms)
    bus = simchip.SimBus(source, address=0x76, fault=fault, io_errors_after=10)

Sources (callables returning simchip.Targets, asked once per measurement):
- Steady: the configured sim_temperature / sim_humidity / sim_pressure / sim_gas.
- Daily: a 24-hour curve on the wall clock (UTC) around the configured values: coldest at
  03:00, warmest at 15:00 (+-4 °C), humidity opposite (+-10 %RH), pressure with the
  twice-daily atmospheric tide (+-1 hPa), gas +-20 %.
- CsvReplay: the rows of a CSV file with the header temperature,humidity,pressure,gas, one
  row per measurement, from the top again after the last.
With sim_cpu_coupling k > 0, the chip sits next to a warm CPU (Heated): it measures
air + k * (cpu - air), which is what the CPU-heat correction undoes (k = 1 / (1 + factor)).
The fault scenarios (chip_absent, io_errors, wrong_chip_id, no_new_data, heater_unstable)
measure the steady values and set the chip's fault of the same name.
Raises ValueError for a CSV that cannot be used (the message says why).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

from .simchip import FAULTS, Targets

SOURCES = ("steady", "daily", "csv")
DAY_MS = 86_400_000
COLUMNS = ("temperature", "humidity", "pressure", "gas")


class Steady:
    def __init__(self, targets: Targets) -> None:
        self.targets = targets

    def __call__(self) -> Targets:
        return self.targets


class Daily:
    def __init__(self, base: Targets, wall_ms: Callable[[], int]) -> None:
        self.base, self.wall_ms = base, wall_ms

    def __call__(self) -> Targets:
        hour = (self.wall_ms() % DAY_MS) / 3_600_000
        day = math.sin(2 * math.pi * (hour - 9) / 24)          # -1 at 03:00, +1 at 15:00
        tide = math.cos(2 * math.pi * (hour - 10) / 12)        # highs near 10:00 and 22:00
        base = self.base
        return Targets(temperature=base.temperature + 4.0 * day,
                       humidity=min(max(base.humidity - 10.0 * day, 0.0), 100.0),
                       pressure=base.pressure + 1.0 * tide,
                       gas=base.gas * (1 + 0.2 * day))


class CsvReplay:
    def __init__(self, path: str) -> None:
        self.rows = load_csv(path)
        self.index = 0

    def __call__(self) -> Targets:
        row = self.rows[self.index]
        self.index = (self.index + 1) % len(self.rows)
        return row


def load_csv(path: str) -> list[Targets]:
    """The rows of a replay CSV; ValueError naming the file and line when one is unusable."""
    if not path:
        raise ValueError("scenario csv needs csv_path (a CSV with the header temperature,humidity,pressure,gas)")
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"cannot read csv_path {path!r}: {error.strerror or error}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: the header lacks {', '.join(missing)} (needs {','.join(COLUMNS)})")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            rows.append(Targets(*(float(row[c]) for c in COLUMNS)))
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{line}: not four numbers: {row}") from None
    if not rows:
        raise ValueError(f"{path}: no rows after the header")
    return rows


class Heated:
    """A source whose temperature the CPU warms: air + k * (cpu - air) (cpu None: no heat)."""

    def __init__(self, source: Callable[[], Targets], cpu: Callable[[], Optional[float]], k: float) -> None:
        self.source, self.cpu, self.k = source, cpu, k

    def __call__(self) -> Targets:
        air, cpu = self.source(), self.cpu()
        if cpu is None:
            return air
        return dataclasses.replace(air, temperature=air.temperature + self.k * (cpu - air.temperature))


def build(settings: dict, wall_ms: Callable[[], int],
          cpu: Optional[Callable[[], Optional[float]]] = None) -> tuple[Callable[[], Targets], Optional[str]]:
    """(source, fault) for the settings' `scenario` (see the module's docstring); `cpu` is the
    CPU temperature that warms the chip when sim_cpu_coupling > 0."""
    source, fault = _unheated(settings, wall_ms)
    k = float(settings.get("sim_cpu_coupling", 0.0))
    if k > 0 and cpu is not None:
        source = Heated(source, cpu, k)
    return source, fault


def _unheated(settings: dict, wall_ms: Callable[[], int]) -> tuple[Callable[[], Targets], Optional[str]]:
    scenario = settings.get("scenario", "steady")
    base = Targets(float(settings.get("sim_temperature", 23.5)), float(settings.get("sim_humidity", 45.0)),
                   float(settings.get("sim_pressure", 1013.25)), float(settings.get("sim_gas", 50_000.0)))
    if scenario == "daily":
        return Daily(base, wall_ms), None
    if scenario == "csv":
        return CsvReplay(settings.get("csv_path", "")), None
    if scenario == "steady":
        return Steady(base), None
    if scenario in FAULTS:
        return Steady(base), scenario
    raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SOURCES + FAULTS)})")
