"""The FUSE side of cutfs: path operations over a backing directory, the data of each file
through its Overlay until fsync. One lock around every operation (and the cut)."""

from __future__ import annotations

import errno
import os
import random
import threading
from typing import Optional

import mfusepy

from .overlay import Overlay


class CutFS(mfusepy.Operations):
    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self._mutex = threading.RLock()
        self.overlays: dict[str, Overlay] = {}
        self.fds: dict[str, int] = {}          # a backing fd per file in use
        self.synced = 0                        # fsyncs that reached the disk

    # -- helpers --------------------------------------------------------------------------
    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _fd(self, path: str) -> int:
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(self._real(path), os.O_RDWR)
        return fd

    def _forget(self, path: str) -> None:
        self.overlays.pop(path, None)
        fd = self.fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def _overlay(self, path: str) -> Overlay:
        overlay = self.overlays.get(path)
        if overlay is None:
            overlay = self.overlays[path] = Overlay(os.fstat(self._fd(path)).st_size)
        return overlay

    def _reader(self, path: str):
        fd = self._fd(path)
        return lambda offset, n: os.pread(fd, n, offset)

    def _disk(self, path: str):
        fd = self._fd(path)
        return (lambda offset, data: os.pwrite(fd, data, offset)), (lambda size: os.ftruncate(fd, size))

    # -- metadata: at once, as a journaling filesystem commits it -------------------------
    def getattr(self, path: str, fh: Optional[int] = None) -> dict:
        with self._mutex:
            try:
                st = os.lstat(self._real(path))
            except OSError as error:
                raise mfusepy.FuseOSError(error.errno) from None
            attrs = {key: getattr(st, key) for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            overlay = self.overlays.get(path)
            if overlay is not None:
                attrs["st_size"] = overlay.size
            return attrs

    def readdir(self, path: str, fh: int):
        with self._mutex:
            return [".", "..", *os.listdir(self._real(path))]

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._real(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times=None) -> int:
        os.utime(self._real(path), ns=times) if times else os.utime(self._real(path))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            self._forget(path)
            os.unlink(self._real(path))
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            self._forget(new)
            os.rename(self._real(old), self._real(new))
            if old in self.overlays:
                self.overlays[new] = self.overlays.pop(old)
            if old in self.fds:
                self.fds[new] = self.fds.pop(old)
            return 0

    def statfs(self, path: str) -> dict:
        st = os.statvfs(self._real(path))
        return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                  "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    # -- data: in memory until fsync --------------------------------------------------------
    def create(self, path: str, mode: int, fi=None) -> int:
        with self._mutex:
            os.close(os.open(self._real(path), os.O_CREAT | os.O_WRONLY, mode))
            return 0

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            if flags & os.O_TRUNC:
                self._overlay(path).truncate(0, self._reader(path))
            return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            overlay = self.overlays.get(path)
            if overlay is None:
                return os.pread(self._fd(path), size, offset)
            return overlay.read(offset, size, self._reader(path))

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            return self._overlay(path).write(offset, bytes(data), self._reader(path))

    def truncate(self, path: str, length: int, fh: Optional[int] = None) -> int:
        with self._mutex:
            self._overlay(path).truncate(length, self._reader(path))
            return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            overlay = self.overlays.pop(path, None)
            if overlay is not None and overlay.dirty:
                overlay.sync(*self._disk(path))
            if path in self.fds:
                os.fsync(self.fds[path])
            self.synced += 1
            return 0

    def flush(self, path: str, fh: int) -> int:
        return 0                               # close() is not fsync()

    def release(self, path: str, fh: int) -> int:
        return 0

    # -- the power cut --------------------------------------------------------------------------
    def cut(self, rng: random.Random, keep: float) -> dict:
        """Unsynced pages reach the disk with probability `keep` (one torn); the rest are
        lost. The caller exits right after (nothing may be written through us any more)."""
        with self._mutex:
            written = {}
            for path, overlay in sorted(self.overlays.items()):
                if overlay.dirty and keep > 0:
                    written[path] = len(overlay.cut(rng, keep, *self._disk(path)))
            for fd in self.fds.values():
                os.fsync(fd)
            self.overlays.clear()
            return written
