"""Corrected readings like the pipeline's, for the benchmark. Pure and deterministic.

    for doc in daily(86_400, device="pi-1", run="1a2b3c4d", t0_ms=now - 86_400_000):
        ...                 # a reading-corrected document

The simulator's daily scenario (bme680_sensor.scenarios.Daily: temperature +-4 C over the
day, humidity -+10 %RH, a twice-daily pressure tide of +-1 hPa, gas +-20 %) with noise, so
every value changes at every reading, at the resolution the pipeline gives today: 0.01 C
(Pimoroni's driver, and the correction rounds to 2 decimals), 0.001 %RH, 0.01 hPa, gas
0.1 ohm (the sensor rounds to 1 decimal), CPU 0.001 C (sysfs millidegrees). The CPU factor
correction (factor 2.25 over the last 5 CPU temperatures) gives `temperature`. As on a
device, `mono` is the sample's slot on the monotonic clock and `t` is read after the
measurement (heater 150 ms, plus up to `lag_ms` of jitter), so `t - mono` is not constant.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Iterator

DAY_MS = 86_400_000
HEATER_MS = 150


def daily(n: int, device: str, run: str, t0_ms: int, interval_ms: int = 1000, seed: int = 1,
          lag_ms: int = 20, first_seq: int = 0) -> Iterator[dict]:
    rnd = random.Random(seed)
    window: deque = deque(maxlen=5)
    for i in range(n):
        seq = first_seq + i
        mono = seq * interval_ms
        t = t0_ms + mono + HEATER_MS + rnd.randint(0, lag_ms)
        hour = (t % DAY_MS) / 3_600_000
        day = math.sin(2 * math.pi * (hour - 9) / 24)
        tide = math.cos(2 * math.pi * (hour - 10) / 12)
        cpu = round(48.0 + 3.0 * day + rnd.gauss(0, 0.4), 3)
        raw = round(23.5 + 4.0 * day + 0.3 * (cpu - 48.0) + rnd.gauss(0, 0.03), 2)
        window.append(cpu)
        corrected = round(raw - (sum(window) / len(window) - raw) / 2.25, 2)
        yield {"device": device, "run": run, "seq": seq, "t": t, "mono": mono, "clock_synced": True,
               "status": "ok", "temperature": corrected, "temperature_raw": raw,
               "humidity": round(45.0 - 10.0 * day + rnd.gauss(0, 0.05), 3),
               "pressure": round(1013.25 + tide + rnd.gauss(0, 0.02), 2),
               "gas_resistance": round(50_000.0 * (1 + 0.2 * day) * (1 + rnd.gauss(0, 0.005)), 1),
               "heat_stable": True, "cpu_temperature": cpu, "correction": "cpu_factor"}
