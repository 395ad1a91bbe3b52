"""The soak's own parts (`scripts/bench soak`, i.e. `python3 scripts/dev.py run --scenario soak`),
standard library only: the store's disk as a small filesystem that can be filled, each
component's peak memory, the store's acknowledgements as the sensor got them, and the soak's
lines of the report.

    disk = SmallDisk(root / "work" / STORE, size_mb=64); disk.mount()   # before the deployment
    disk.fill(); disk.free(); disk.unmount()
    rss = PeakRss(root, COMPONENTS); rss.start(); ... rss.stop(); rss.peak_kib
    acks = AckLedger(); acks.add(ack); acks.acked(key)
    split = split_lost(lost_keys, acks)                        # pure: (acknowledged, before)
    lines = render(split, rss.peak_kib, counters, faults)      # pure

Peak memory is each process's VmHWM (its resident set's high-water mark, proc(5)), read from
/proc every second for the processes whose working directory is the component's work folder
(how a Greengrass core starts a component's lifecycle scripts: NucleusPaths.workPath); a
component's figure is the largest over all its processes and restarts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

STORE = "io.backfill.StoreAndForward"
FILLER = "soak-disk-filler"
KEEP_FREE = 4096               # "nearly full": one page left free on the store's disk
RSS_BOUND_MIB = 100            # each component's peak, asserted by the soak test (measured: 30-45 MiB)


class SmallDisk:
    """The store's work folder on a tmpfs of its own (size-limited), which `fill()` fills with
    a file (fallocate) to KEEP_FREE bytes and `free()` empties again. Mounting needs root (or
    CAP_SYS_ADMIN): without it the soak fails, saying so, rather than soak without the fault."""

    def __init__(self, path: Path, size_mb: int = 64) -> None:
        self.path, self.size_mb = path, size_mb

    def mounted(self) -> bool:
        target = str(self.path.resolve())
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == target for line in mounts if len(line.split()) > 1)

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.mounted():
            return
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0700", "tmpfs",
                                 str(self.path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"the soak puts the store's database on a {self.size_mb} MiB tmpfs to fill it "
                             f"(the disk-full fault), and mounting it at {self.path} failed: "
                             f"{result.stderr.strip() or result.returncode} (it needs root)")

    def unmount(self) -> None:
        if self.mounted():
            subprocess.run(["umount", "--lazy", str(self.path)], capture_output=True)

    def fill(self) -> int:
        """Fill the disk to KEEP_FREE bytes free; returns the filler's size in bytes."""
        stat = os.statvfs(self.path)
        size = max(0, stat.f_bavail * stat.f_frsize - KEEP_FREE)
        filler = self.path / FILLER
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            have = os.fstat(fd).st_size
            if size:
                os.posix_fallocate(fd, have, size)
            return have + size
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)


def vm_hwm_kib(status_text: str) -> Optional[int]:
    """VmHWM (kB) from the text of /proc/<pid>/status; None when absent (a kernel thread, a zombie)."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def component_pids(root: Path, names: Iterable[str]) -> dict:
    """{pid: component} of the processes whose working directory is a component's work folder."""
    works = {str((root / "work" / name).resolve()): name for name in names}
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = works.get(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if name is not None:
                found[int(entry.name)] = name
    return found


class PeakRss(threading.Thread):
    """Every `every` seconds, each component process's VmHWM; `peak_kib` {component: kB} keeps
    the largest seen, `processes` {component: how many distinct processes were seen}."""

    def __init__(self, root: Path, names: Iterable[str], every: float = 1.0) -> None:
        super().__init__(daemon=True, name="peak-rss")
        self.root, self.names, self.every = root, tuple(names), every
        self.peak_kib: dict = {}
        self.seen: dict = {}                    # component -> set of (pid, start time)
        self._stop = threading.Event()

    @property
    def processes(self) -> dict:
        return {name: len(pids) for name, pids in self.seen.items()}

    def sample(self) -> None:
        for pid, name in component_pids(self.root, self.names).items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            except (OSError, IndexError):
                continue
            hwm = vm_hwm_kib(status)
            if hwm is None:
                continue
            self.peak_kib[name] = max(self.peak_kib.get(name, 0), hwm)
            self.seen.setdefault(name, set()).add((pid, started))

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()


class AckLedger:
    """The store's acknowledgements on backfill/acks (ack.json: every reading of the run up to
    and including `seq` is durably stored): the highest per run."""

    def __init__(self) -> None:
        self.highest: dict = {}
        self.count = 0

    def add(self, ack: dict) -> None:
        try:
            run, seq = str(ack["run"]), int(ack["seq"])
        except (KeyError, TypeError, ValueError):
            return
        self.count += 1
        self.highest[run] = max(self.highest.get(run, -1), seq)

    def acked(self, key) -> bool:
        run, seq = key
        return seq <= self.highest.get(str(run), -1)


def split_lost(lost: Iterable, acks: AckLedger) -> tuple[list, list]:
    """(lost readings the store had acknowledged, lost readings it never acknowledged)."""
    acknowledged, before = [], []
    for key in sorted(lost):
        (acknowledged if acks.acked(key) else before).append(key)
    return acknowledged, before


def store_counters(db: Path) -> Optional[dict]:
    """The store's counters as its database keeps them (meta 'counters'); None without one."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'counters'").fetchone()
    except sqlite3.Error:
        return None
    return json.loads(row[0]) if row else None


FULL_SAID = "could not write the database"        # the store's log (forwarder.py), once a process
WRITABLE_SAID = "the database is writable again"   # each time a commit succeeds after DiskFull


def disk_full_seen(log_text: str) -> int:
    """How many times the store's log shows it could not write its database: each "writable
    again", and each "could not write" that no "writable again" followed (the process was
    SIGKILLed while the disk was full; a process says "could not write" only once)."""
    episodes, full = 0, False
    for line in log_text.splitlines():
        if FULL_SAID in line:
            episodes, full = episodes + (1 if full else 0), True
        elif WRITABLE_SAID in line:
            episodes, full = episodes + 1, False
    return episodes + (1 if full else 0)


def fault_tally(labels: Iterable[str]) -> Counter:
    """How many of each kind of fault a scenario carried out (from its steps' actions)."""
    kinds = Counter()
    for action in labels:
        if action.startswith("kill "):
            kinds["SIGKILL of a component"] += 1
        elif action.startswith("clock step -"):
            kinds["clock stepped back"] += 1
        elif action in ("link up", "link clear", "clock step 0", "disk free"):
            continue                              # the undoing of a held fault
        else:
            kinds[{"disk fill": "disk nearly full"}.get(action, action)] += 1
    return kinds


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def render(acknowledged: list, before: list, acks: AckLedger, peak_kib: dict, processes: dict,
           counters: Optional[dict], faults: Counter, full_seen: int = 0) -> list[str]:
    """The soak's lines under the scenario's report."""
    given_up = None if counters is None else counters.get("given_up")
    lines = ["  faults: " + ", ".join(f"{count} {kind}" for kind, count in sorted(faults.items()))]
    lines.append(f"  lost, acknowledged      {len(acknowledged)}" +
                 (f"  e.g. {acknowledged[:5]}" if acknowledged else
                  f"  (of readings the store acknowledged on backfill/acks: {acks.count} acks seen)"))
    explain = ("" if not before else
               f"  e.g. {before[:5]}: never acknowledged (the sensor gave up "
               f"{'?' if given_up is None else given_up} by the store's given_up counter)")
    lines.append(f"  lost, before ack        {len(before)}{explain}")
    peaks = ", ".join(f"{name.rsplit('.', 1)[-1]} {mib(kib)} ({processes.get(name, 0)} processes)"
                      for name, kib in sorted(peak_kib.items()))
    lines.append(f"  peak RSS (VmHWM)        {peaks or 'n/a'}")
    lines.append(f"  disk full, as the store saw it: {full_seen} time(s) it could not write (its log), "
                 f"of {faults.get('disk nearly full', 0)} fill(s)")
    if counters is None:
        lines.append("  store counters          n/a (no store database)")
    else:
        shown = {k: v for k, v in counters.items() if v}
        lines.append("  store counters          " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    return lines
