"""CPU time and memory of a process, from /proc (Linux).

    before = cpu_seconds(pid); ...; used = cpu_seconds(pid) - before      # user + system, all threads
    rss_mb(pid), peak_rss_mb(pid)                                           # VmRSS, VmHWM
"""

from __future__ import annotations

import os

TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpu_seconds(stat_line: str) -> float:
    """utime + stime (fields 14 and 15) of a /proc/<pid>/stat line, in seconds."""
    fields = stat_line[stat_line.rindex(")") + 2:].split()     # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS


def parse_kb(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        return parse_cpu_seconds(file.read())


def _status(pid: int) -> str:
    with open(f"/proc/{pid}/status") as file:
        return file.read()


def rss_mb(pid: int) -> float:
    return parse_kb(_status(pid), "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return parse_kb(_status(pid), "VmHWM") / 1024


def parse_io(text: str) -> dict:
    """/proc/<pid>/io as {"wchar": ..., "write_bytes": ...} (all its counters)."""
    return {key: int(value) for key, _, value in (line.partition(": ") for line in text.splitlines()) if value}


def io_bytes(pid: int) -> dict:
    """wchar: bytes the process passed to write() and the like; write_bytes: bytes it caused to be
    sent to the storage layer (counted when pages are dirtied), what wears an SD card."""
    with open(f"/proc/{pid}/io") as file:
        return parse_io(file.read())
