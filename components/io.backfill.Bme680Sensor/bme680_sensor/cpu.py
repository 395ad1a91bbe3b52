"""The CPU temperature that heats the sensor (°C, or None when unknown).

    read = cpu.source(settings)          # cpu_source "sysfs" or "simulated"
    read()                               # -> 48.3 or None

SysfsCpu reads the kernel's thermal zone (millidegrees, no privilege needed); machines without
the file (build hosts, CI) or an implausible value give None. SimulatedCpu tracks the load: base + per_load * the
1-minute load average, with `loadavg` injectable.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

THERMAL_ZONE = "/sys/class/thermal/thermal_zone0/temp"
PLAUSIBLE = (-40.0, 150.0)         # what the reading contract accepts; anything else is unknown


class SysfsCpu:
    def __init__(self, path: str = THERMAL_ZONE) -> None:
        self.path = path

    def __call__(self) -> Optional[float]:
        try:
            with open(self.path) as file:
                celsius = int(file.read().strip()) / 1000.0
        except (OSError, ValueError):
            return None
        return round(celsius, 3) if PLAUSIBLE[0] <= celsius <= PLAUSIBLE[1] else None


class SimulatedCpu:
    def __init__(self, base: float = 42.0, per_load: float = 9.0, ceiling: float = 85.0,
                 loadavg: Callable[[], tuple] = os.getloadavg) -> None:
        self.base, self.per_load, self.ceiling, self.loadavg = base, per_load, ceiling, loadavg

    def __call__(self) -> Optional[float]:
        try:
            load = self.loadavg()[0]
        except OSError:
            return None
        return round(min(self.base + self.per_load * load, self.ceiling), 2)


def source(settings: dict) -> Callable[[], Optional[float]]:
    """The CPU temperature source the settings choose."""
    if settings.get("cpu_source") == "simulated":
        return SimulatedCpu()
    return SysfsCpu(settings.get("cpu_path") or THERMAL_ZONE)
