"""SIMULATION ONLY (setting `sim_clock_offset_s`): the sensor's wall clock set off the
system clock, as on a device that booted without network and has no real-time clock.

    clock = OffsetClock(SystemClock())
    clock.set_offset_s(-3 * 3600)   # the wall clock 3 h behind; synced() says False
    clock.set_offset_s(0)           # the clock steps to the system time, as when NTP syncs

The monotonic clock is never touched. With offset 0 (the default) every call is the
system clock's own: nothing changes for a real device."""

from __future__ import annotations


class OffsetClock:
    def __init__(self, base) -> None:
        self.base = base
        self.offset_ms = 0

    def set_offset_s(self, seconds: float) -> None:
        self.offset_ms = round(float(seconds) * 1000)

    def wall_ms(self) -> int:
        return self.base.wall_ms() + self.offset_ms

    def mono_ms(self) -> int:
        return self.base.mono_ms()

    def synced(self) -> bool:
        return False if self.offset_ms else self.base.synced()
