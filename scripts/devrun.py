"""The main job's mechanics (`python3 scripts/dev.py run`), standard library only: follow the
corrected readings across whatever a user does to the core meanwhile, stop every process it
started (and a core that `localgg fault core restart --kill` started in its stead), and count
what IoT Core received.

    follower = Follower(python, env, root, deadline)   # deadline: time.monotonic() value or None
    follower.run()                 # until the deadline or Ctrl-C; a core restart is followed
    follower.distinct, follower.copies
    stop_core(root)                # SIGTERM the core under root (by its pid file), SIGKILL after 60 s
    stop_all(root, processes)      # the core, then the processes started (the cloud), Ctrl-C ignored
    keys, batches = cloud_readings(db)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

CORRECTED = "backfill/readings/corrected"
ACKS = "backfill/acks"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                                      # a zombie child of ours is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def core_pid(root: Path) -> Optional[int]:
    try:
        pid = int((root / "localgg.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def stop_core(root: Path, timeout: float = 60) -> Optional[int]:
    """Stop the core running under `root`, whoever started it; returns its pid (None: none ran)."""
    pid = core_pid(root)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    return pid


def stop_all(root: Path, processes: list, timeout: float = 60) -> None:
    """Stop the core under root, then SIGTERM the processes (newest first), SIGKILL after
    `timeout`. Ctrl-C is ignored from here on: a second one must not leave processes behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_core(root)
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(processes):
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def line_of(reading: dict) -> str:
    """One reading, with its run (a sensor restart starts a new run at seq 0)."""
    where = f"    run {str(reading['run'])[:8]} seq {int(reading['seq']):>5}"
    if reading.get("status") != "ok":
        return f"{where}  status {reading.get('status')}"
    return (f"{where}  raw {reading['temperature_raw']:6.2f} C  ->  corrected "
            f"{reading['temperature']:6.2f} C   (cpu {reading['cpu_temperature']:5.1f} C, "
            f"{reading['humidity']:5.1f} %RH, {reading['pressure']:7.2f} hPa)")


class Follower:
    """`localgg pubsub sub` on the corrected topic, started again whenever it ends before the
    deadline (the core restarted, or was killed and started again)."""

    def __init__(self, python: str, env: dict, root: Path, deadline: Optional[float],
                 out: Callable[[str], None] = lambda text: print(text, flush=True),
                 on_reading: Optional[Callable[[dict], None]] = None, topic: str = CORRECTED) -> None:
        """`out` gets the lines to show; `on_reading` (a live view), if given, gets every copy of
        every reading instead of a line per distinct reading."""
        self.python, self.env, self.root, self.deadline, self.out = python, env, root, deadline, out
        self.on_reading, self.topic = on_reading, topic
        self.keys: set = set()
        self.sampled: dict = {}                  # (run, seq) -> sample time, epoch seconds
        self.observed: dict = {}                 # (run, seq) -> when this follower first saw it, epoch seconds
        self.copies = 0
        self.restarts = 0
        self._watch: Optional[subprocess.Popen] = None
        self._timer: Optional[threading.Timer] = None

    @property
    def distinct(self) -> int:
        return len(self.keys)

    def over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def finish_at(self, deadline: float) -> None:
        """End at `deadline` (a time.monotonic() value), from any thread."""
        self.deadline = deadline
        timer = threading.Timer(max(deadline - time.monotonic(), 0), self._terminate)
        timer.daemon = True
        timer.start()

    def run(self) -> None:
        if self.deadline is not None:
            self._timer = threading.Timer(max(self.deadline - time.monotonic(), 0), self._terminate)
            self._timer.daemon = True
            self._timer.start()
        try:
            while not self.over():
                self._watch = subprocess.Popen(
                    [self.python, "-m", "localgg", "pubsub", "sub", "--root", str(self.root), "--topic", self.topic],
                    env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if self.over():                  # the timer fired while it started
                    self._terminate()
                self._show(self._watch)
                if self.over():
                    break
                self.restarts += 1
                self.out("    -- the core went away (restarted or killed): following again once it is back")
                self._wait_for_core()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._terminate()

    def _terminate(self) -> None:
        watch = self._watch
        if watch is not None and watch.poll() is None:
            watch.terminate()

    def _show(self, watch: subprocess.Popen) -> None:
        try:
            for line in watch.stdout:
                start = line.find("{")
                try:
                    reading = json.loads(line[start:]) if start >= 0 else None
                except ValueError:
                    reading = None
                if not isinstance(reading, dict) or "seq" not in reading or "run" not in reading:
                    if line.strip():
                        self.out("    " + line.strip())
                    continue
                self.copies += 1
                if self.on_reading is not None:
                    self.on_reading(reading)
                key = (reading["run"], int(reading["seq"]))
                if key in self.keys:
                    continue                     # a resend: shown once
                self.keys.add(key)
                self.observed[(str(reading["run"]), int(reading["seq"]))] = time.time()
                if isinstance(reading.get("t"), (int, float)):
                    self.sampled[(str(reading["run"]), int(reading["seq"]))] = reading["t"] / 1000.0
                if self.on_reading is None:
                    self.out(line_of(reading))
        finally:
            watch.wait()

    def _wait_for_core(self) -> None:
        if wait_for_core(self.python, self.env, self.root, given_up=self.over):
            self.out("    -- the core is back")


def wait_for_core(python: str, env: dict, root: Path, given_up: Callable[[], bool]) -> bool:
    """Until the core under root answers `localgg status` (True), or given_up() says so (False)."""
    while not given_up():
        if core_pid(root) is not None and (root / "ipc.socket").exists():
            result = subprocess.run([python, "-m", "localgg", "status", "--root", str(root)],
                                    env=env, capture_output=True, timeout=60)
            if result.returncode == 0:
                return True
        time.sleep(0.5)
    return False


def cloud_readings(db: Path) -> tuple[set, int]:
    """(the distinct (run, seq) that IoT Core received on the store's topic, batches)."""
    import devreport
    if not db.exists():
        return set(), 0
    with sqlite3.connect(db) as conn:
        payloads = [row[0] for row in conn.execute("SELECT payload FROM messages WHERE topic LIKE 'dt/backfill/%'")]
    keys = {(reading["run"], reading["seq"]) for payload in payloads
            for reading in devreport.batch_readings(payload) if "run" in reading and "seq" in reading}
    return keys, len(payloads)
