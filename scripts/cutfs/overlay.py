"""What one file holds that the disk does not yet: pages written since its last fsync and
its size. Pure (the disk is a `read_disk(offset, n) -> bytes` and a `write_disk(offset,
data)` the caller gives).

    overlay = Overlay(disk_size=os.fstat(fd).st_size)
    overlay.write(offset, data, read_disk)          # a write() through the mount
    data = overlay.read(offset, n, read_disk)       # what a read() sees: the overlay over the disk
    overlay.sync(write_disk, truncate_disk)         # fsync: the pages reach the disk
    overlay.cut(rng, keep, write_disk, truncate_disk)   # the power fails: some pages did reach it
"""

from __future__ import annotations

import random
from typing import Callable

PAGE = 4096
SECTOR = 512

ReadDisk = Callable[[int, int], bytes]
WriteDisk = Callable[[int, bytes], None]
TruncateDisk = Callable[[int], None]


class Overlay:
    def __init__(self, disk_size: int) -> None:
        self.disk_size = disk_size          # the file's size on the disk
        self.size = disk_size               # the size the processes see
        self.floor = disk_size              # the disk's bytes from here on are truncated away
        self.pages: dict[int, bytearray] = {}

    @property
    def dirty(self) -> bool:
        return bool(self.pages) or self.size != self.disk_size

    def _page(self, index: int, read_disk: ReadDisk) -> bytearray:
        page = self.pages.get(index)
        if page is None:
            start = index * PAGE
            # what the disk has of it, below any truncation since the last sync
            have = max(0, min(PAGE, self.floor - start))
            page = bytearray(read_disk(start, have) if have else b"")
            page.extend(b"\0" * (PAGE - len(page)))
            self.pages[index] = page
        return page

    def read(self, offset: int, n: int, read_disk: ReadDisk) -> bytes:
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        out = bytearray()
        at = offset
        while at < end:
            index, inner = divmod(at, PAGE)
            take = min(PAGE - inner, end - at)
            page = self.pages.get(index)
            if page is not None:
                out += page[inner:inner + take]
            else:
                disk_end = min(at + take, self.floor)
                got = read_disk(at, disk_end - at) if disk_end > at else b""
                out += got + b"\0" * (take - len(got))
            at += take
        return bytes(out)

    def write(self, offset: int, data: bytes, read_disk: ReadDisk) -> int:
        at, view = offset, memoryview(data)
        while view:
            index, inner = divmod(at, PAGE)
            take = min(PAGE - inner, len(view))
            self._page(index, read_disk)[inner:inner + take] = view[:take]
            view, at = view[take:], at + take
        self.size = max(self.size, offset + len(data))
        return len(data)

    def truncate(self, size: int, read_disk: ReadDisk) -> None:
        if size < self.size:
            last = size // PAGE
            for index in [i for i in self.pages if i > last or (i == last and size % PAGE == 0)]:
                del self.pages[index]
            if size % PAGE:
                page = self._page(last, read_disk)
                page[size % PAGE:] = b"\0" * (PAGE - size % PAGE)
        self.size = size
        self.floor = min(self.floor, size)

    def sync(self, write_disk: WriteDisk, truncate_disk: TruncateDisk) -> None:
        """Every page and the size reach the disk."""
        if self.floor < self.disk_size:
            truncate_disk(self.floor)
        for index in sorted(self.pages):
            start = index * PAGE
            data = bytes(self.pages[index][:max(0, min(PAGE, self.size - start))])
            if data:
                write_disk(start, data)
        truncate_disk(self.size)
        self.pages.clear()
        self.disk_size = self.floor = self.size

    def cut(self, rng: random.Random, keep: float, write_disk: WriteDisk, truncate_disk: TruncateDisk,
            tear: bool = True) -> list[int]:
        """The power fails: each unsynced page reached the disk with probability `keep` (the
        kernel writes dirty pages back on its own, in any order), one of them torn at a
        sector boundary, and a truncation reached it with the same chance; the rest is lost.
        Returns the pages written (the torn one last)."""
        size = self.disk_size
        if self.floor < self.disk_size and rng.random() < keep:
            truncate_disk(self.floor)
            size = self.floor
        kept = [i for i in sorted(self.pages) if rng.random() < keep]
        torn = rng.choice(kept) if (tear and kept) else None
        for index in kept:
            start = index * PAGE
            data = bytes(self.pages[index][:max(0, min(PAGE, self.size - start))])
            if index == torn and len(data) > SECTOR:
                data = data[:SECTOR * rng.randrange(1, -(-len(data) // SECTOR))]
            if data:
                write_disk(start, data)
                size = max(size, start + len(data))
        self.pages.clear()
        self.disk_size = self.size = self.floor = size
        if torn is not None:
            kept.remove(torn)
            kept.append(torn)
        return kept
