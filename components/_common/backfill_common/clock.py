"""Clocks, injected everywhere: the wall clock, the monotonic clock, and whether the
kernel says the wall clock is NTP-synchronised.

    clock = SystemClock()
    clock.wall_ms(), clock.mono_ms(), clock.synced()

A Raspberry Pi has no real-time clock: after a boot without network the wall clock is
wrong until NTP syncs, then it steps. `synced()` is what adjtimex(2) reports (the flag
behind timedatectl's NTPSynchronized). Containers, CI machines and many VMs report
"unsynchronised" forever while their clock is right, so nothing may rely on it alone.
FakeClock is for tests: step the wall clock, hold it unsynchronised, advance time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time
from typing import Protocol

TIME_ERROR = 5          # adjtimex return value: the clock is not synchronised
STA_UNSYNC = 0x0040     # timex.status bit: the clock is not synchronised


class Clock(Protocol):
    def wall_ms(self) -> int: ...
    def mono_ms(self) -> int: ...
    def synced(self) -> bool: ...


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux, 64-bit: x86_64 and aarch64)
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_reserved", ctypes.c_int * 11)]


def kernel_clock_synced() -> bool:
    """adjtimex(2) with modes 0 (read only, no privilege needed): False where it cannot tell."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return False
    return state not in (-1, TIME_ERROR) and not timex.status & STA_UNSYNC


class SystemClock:
    """The machine's clocks. `synced()` asks the kernel at most every `synced_cache_s`."""

    def __init__(self, synced_cache_s: float = 10.0) -> None:
        self._cache_s = synced_cache_s
        self._synced: tuple[float, bool] | None = None

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def synced(self) -> bool:
        now = time.monotonic()
        if self._synced is None or now - self._synced[0] >= self._cache_s:
            self._synced = (now, kernel_clock_synced())
        return self._synced[1]


class FakeClock:
    """A clock for tests: `advance(ms)` moves both clocks, `step(ms)` only the wall clock."""

    def __init__(self, wall_ms: int = 1_764_338_400_000, mono_ms: int = 1_000_000, synced: bool = True) -> None:
        self._lock = threading.Lock()
        self._wall, self._mono, self.is_synced = wall_ms, mono_ms, synced

    def wall_ms(self) -> int:
        with self._lock:
            return self._wall

    def mono_ms(self) -> int:
        with self._lock:
            return self._mono

    def synced(self) -> bool:
        return self.is_synced

    def advance(self, ms: int) -> None:
        with self._lock:
            self._wall += ms
            self._mono += ms

    def step(self, ms: int) -> None:
        with self._lock:
            self._wall += ms
