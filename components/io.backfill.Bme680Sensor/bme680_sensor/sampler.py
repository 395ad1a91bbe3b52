"""The sampling loop's logic, without I/O: schedule, readings, faults and re-initialisation.

    sampler = Sampler(clock, open_sensor, cpu, device="gw-1", run="1a2b3c4d", interval_s=1.0)
    while True:
        wait(sampler.due_in_ms())        # the runner waits (and handles messages meanwhile)
        reading = sampler.tick()         # a reading dict when a slot was due, else None

Schedule: slots at start + k * interval on the monotonic clock (integer ms, so no drift
accumulates). A late tick takes one sample and skips the slots it missed (no burst); a new
interval applies from the next slot: last slot taken + new interval (or at once when that
is already past).

Every slot gives exactly one reading (seq 0, 1, 2, ... with no gaps). `open_sensor()` returns
an object whose `read()` gives Values; whatever either raises becomes the reading's status
(see `error_code`), the sensor is dropped, and it is opened again at the first slot after a
backoff that doubles from 1 s to 60 s (reset by a good reading). Slots in between carry the
last error status. Nothing raises out of `tick()` but bugs in the injected clock.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable, Optional, Protocol


class NoNewData(Exception):
    """The chip never set new_data after a forced-mode measurement."""


class InitFailed(Exception):
    """The sensor could not be set up for a reason that is not the chip's (bus, settings)."""


@dataclass(frozen=True)
class Values:
    temperature: float          # °C
    humidity: float             # %RH
    pressure: float             # hPa
    gas_resistance: Optional[float]     # ohm, None unless the heater is stable and gas valid
    heat_stable: bool


class Sensor(Protocol):
    def read(self) -> Values: ...
    def close(self) -> None: ...


def error_code(error: BaseException, during_init: bool) -> str:
    """The reading status for what the driver (or the bus) raised."""
    text = str(error)
    if isinstance(error, NoNewData):
        return "no_new_data"
    if isinstance(error, InitFailed):
        return "init_failed"
    if isinstance(error, RuntimeError) and "Invalid CHIP ID" in text:
        return "wrong_chip_id"
    if isinstance(error, RuntimeError) and "Unable to identify" in text:
        return "chip_absent"
    if isinstance(error, OSError):
        return "chip_absent" if error.errno in (errno.EREMOTEIO, errno.ENXIO) else "io_error"
    return "init_failed" if during_init else "read_failed"


class Backoff:
    """Delays first_ms, 2*first_ms, ... capped at max_ms; reset() starts again."""

    def __init__(self, first_ms: int = 1000, max_ms: int = 60_000) -> None:
        self.first_ms, self.max_ms = first_ms, max_ms
        self._next = first_ms

    def next_ms(self) -> int:
        delay = self._next
        self._next = min(self._next * 2, self.max_ms)
        return delay

    def reset(self) -> None:
        self._next = self.first_ms


class Schedule:
    """Slots at anchor + k * interval_ms on a monotonic clock in ms."""

    def __init__(self, start_ms: int, interval_ms: int) -> None:
        self.anchor, self.interval_ms, self.k = start_ms, interval_ms, 0
        self.last_slot: Optional[int] = None
        self.skipped = 0

    @property
    def due_ms(self) -> int:
        return self.anchor + self.k * self.interval_ms

    def take(self, now_ms: int) -> Optional[int]:
        """The slot to sample now (the latest one due), or None when none is due; the next
        slot becomes the first one after `now_ms` and missed slots are counted in `skipped`."""
        if now_ms < self.due_ms:
            return None
        latest = (now_ms - self.anchor) // self.interval_ms
        self.skipped += latest - self.k
        self.k = latest + 1
        self.last_slot = self.anchor + latest * self.interval_ms
        return self.last_slot

    def set_interval(self, interval_ms: int, now_ms: int) -> None:
        """From the next slot on: the next one is the last slot taken + interval_ms, or now
        when that is already past (a shorter interval does not count as lateness)."""
        if interval_ms == self.interval_ms:
            return
        if self.last_slot is not None:
            self.anchor, self.k = self.last_slot, 1
            if self.anchor + interval_ms < now_ms:
                self.anchor, self.k = now_ms, 0
        self.interval_ms = interval_ms


def interval_ms(interval_s: float) -> int:
    return max(1, round(float(interval_s) * 1000))


class Sampler:
    def __init__(self, clock, open_sensor: Callable[[], Sensor], cpu: Callable[[], Optional[float]],
                 device: str, run: str, interval_s: float, backoff: Optional[Backoff] = None) -> None:
        self.clock, self.open_sensor, self.cpu = clock, open_sensor, cpu
        self.device, self.run = device, run
        self.start_ms = clock.mono_ms()
        self.schedule = Schedule(self.start_ms, interval_ms(interval_s))
        self.backoff = backoff or Backoff()
        self.seq = 0
        self.sensor: Optional[Sensor] = None
        self.status = "ok"
        self.last_error = ""            # what raised, for the log
        self.retry_at_ms = self.start_ms

    def set_interval(self, interval_s: float) -> None:
        self.schedule.set_interval(interval_ms(interval_s), self.clock.mono_ms())

    def due_in_ms(self) -> int:
        return self.schedule.due_ms - self.clock.mono_ms()

    def tick(self) -> Optional[dict]:
        """A reading when a slot is due (see the module's docstring), else None."""
        if self.schedule.take(self.clock.mono_ms()) is None:
            return None
        return self.sample()

    def reopen(self, open_sensor: Optional[Callable[[], Sensor]] = None) -> None:
        """Drop the sensor (new bus settings): open it again at the next slot."""
        self._close()
        if open_sensor is not None:
            self.open_sensor = open_sensor
        self.backoff.reset()
        self.retry_at_ms = self.clock.mono_ms()

    def sample(self) -> dict:
        """Measure now and build the next reading. `t` and `mono` are read at the same
        instant, before the measurement: an I2C transfer that hangs (1 s on the Pi's
        bcm2835 driver) between them would look like a wall-clock step to the store."""
        mono, wall, synced = self.clock.mono_ms(), self.clock.wall_ms(), bool(self.clock.synced())
        values = self._measure(mono)
        try:
            cpu = self.cpu()
        except Exception:
            cpu = None
        reading = {
            "device": self.device, "run": self.run, "seq": self.seq,
            "t": wall, "mono": mono - self.start_ms, "clock_synced": synced,
            "status": self.status,
            "temperature": values.temperature if values else None,
            "humidity": values.humidity if values else None,
            "pressure": values.pressure if values else None,
            "gas_resistance": values.gas_resistance if values else None,
            "heat_stable": values.heat_stable if values else None,
            "cpu_temperature": cpu,
        }
        self.seq += 1
        return reading

    def _measure(self, now_ms: int) -> Optional[Values]:
        if self.sensor is None:
            if now_ms < self.retry_at_ms:
                return None                      # backing off: the last error stands
            try:
                self.sensor = self.open_sensor()
            except Exception as error:
                return self._failed(error, now_ms, during_init=True)
        try:
            values = self.sensor.read()
        except Exception as error:
            return self._failed(error, now_ms, during_init=False)
        self.status, self.last_error = "ok", ""
        self.backoff.reset()
        return values

    def _failed(self, error: Exception, now_ms: int, during_init: bool) -> None:
        self._close()
        self.status = error_code(error, during_init)
        self.last_error = f"{type(error).__name__}: {error}"
        self.retry_at_ms = now_ms + self.backoff.next_ms()
        return None

    def _close(self) -> None:
        if self.sensor is not None:
            try:
                self.sensor.close()
            except Exception:
                pass
        self.sensor = None
