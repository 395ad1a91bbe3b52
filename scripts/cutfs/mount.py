"""A cutfs mount from a test or a command: start it, cut the power, start it again.

    mount = CutMount(backing, mountpoint, seed=7).start()
    ...                                   # processes use mountpoint
    kill_everything_above()               # the power fails for them too
    mount.cut(keep=0.3)                   # then: mount.start() (the reboot)
    mount.stop()                          # unmount (a clean shutdown: nothing unsynced is kept)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent


def fusermount() -> Optional[str]:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def available() -> Optional[str]:
    """None if cutfs can mount here, else why not."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if fusermount() is None:
        return "fusermount3 is missing (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as error:
        return f"mfusepy cannot load libfuse ({error})"
    return None


class CutMount:
    def __init__(self, backing: Path, mountpoint: Path, seed: int = 0, log: Optional[Path] = None) -> None:
        self.backing, self.mountpoint, self.seed = Path(backing), Path(mountpoint), seed
        self.log = Path(log) if log else self.backing.parent / f"{self.mountpoint.name}.cutfs.log"
        self.process: Optional[subprocess.Popen] = None
        self._control: Optional[int] = None
        self.cuts = 0

    def start(self, timeout: float = 20) -> "CutMount":
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        read, write = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cutfs", str(self.backing), str(self.mountpoint),
                 "--seed", str(self.seed + self.cuts), "--control-fd", str(read)],
                pass_fds=(read,), stdout=log, stderr=log, env=env)
        os.close(read)
        self._control = write
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None:
                raise RuntimeError(f"cutfs exited with {self.process.returncode}: see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cutfs did not mount {self.mountpoint} in {timeout} s: see {self.log}")
            time.sleep(0.02)
        return self

    def cut(self, keep: float = 0.0, timeout: float = 20) -> None:
        """The power fails: a `keep` share of the unsynced pages reached the disk (0: none, SIGKILL)."""
        if self.process is None:
            return
        if keep > 0 and self._control is not None:
            os.write(self._control, f"cut {keep}\n".encode())
        else:
            self.process.send_signal(signal.SIGKILL)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self.cuts += 1
        self._detach()

    def stop(self, timeout: float = 20) -> None:
        """A clean unmount: whatever is unsynced is lost, as at a cut (an OS would write it back)."""
        if self.process is None:
            return
        subprocess.run([fusermount(), "-u", "-z", str(self.mountpoint)], capture_output=True)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self._detach()

    def _detach(self) -> None:
        if self._control is not None:
            os.close(self._control)
            self._control = None
        self.process = None
        # a mount whose daemon died answers ENOTCONN (os.path.ismount says False): detach it anyway
        subprocess.run([fusermount(), "-u", "-z", str(self.mountpoint)], capture_output=True)
        deadline = time.monotonic() + 10
        while not self._detached() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _detached(self) -> bool:
        try:
            return not os.path.ismount(self.mountpoint) and self.mountpoint.stat() is not None
        except OSError:
            return False
