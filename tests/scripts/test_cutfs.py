"""cutfs itself: what a power cut keeps is exactly what was fsynced (plus, with `keep`, a
random share of the unsynced pages, one torn). The overlay's logic alone, then a real
mount."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from cutfs.mount import CutMount, available  # noqa: E402
from cutfs.overlay import PAGE, SECTOR, Overlay  # noqa: E402


class Disk:
    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.data[offset:offset + n])

    def write(self, offset: int, data: bytes) -> None:
        if len(self.data) < offset:
            self.data.extend(b"\0" * (offset - len(self.data)))
        self.data[offset:offset + len(data)] = data

    def truncate(self, size: int) -> None:
        del self.data[size:]
        self.data.extend(b"\0" * (size - len(self.data)))


ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3 * PAGE), st.binary(min_size=1, max_size=PAGE + 100)),
    st.tuples(st.just("truncate"), st.integers(0, 3 * PAGE), st.just(b"")),
    st.tuples(st.just("sync"), st.just(0), st.just(b""))), max_size=25)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2 * PAGE), ops)
def test_the_overlay_reads_as_a_file_would_and_a_sync_puts_exactly_that_on_the_disk(initial, operations):
    disk, model = Disk(initial), bytearray(initial)
    overlay = Overlay(len(initial))
    synced = bytes(initial)
    for op, at, data in operations:
        if op == "write":
            overlay.write(at, data, disk.read)
            if len(model) < at:
                model.extend(b"\0" * (at - len(model)))
            model[at:at + len(data)] = data
        elif op == "truncate":
            overlay.truncate(at, disk.read)
            del model[at:]
            model.extend(b"\0" * (at - len(model)))
        else:
            overlay.sync(disk.write, disk.truncate)
            synced = bytes(model)
            assert bytes(disk.data) == synced
        assert overlay.size == len(model)
        assert overlay.read(0, len(model) + 10, disk.read) == bytes(model)
    assert bytes(disk.data) == synced, "the disk changes only at a sync"
    overlay.cut(random.Random(0), 0.0, disk.write, disk.truncate)
    assert bytes(disk.data) == synced, "a cut that keeps nothing leaves what was synced"


def test_a_cut_keeps_whole_pages_but_one_torn_at_a_sector():
    disk = Disk(b"a" * 4 * PAGE)
    overlay = Overlay(4 * PAGE)
    overlay.write(0, b"b" * 4 * PAGE, disk.read)
    kept = overlay.cut(random.Random(3), 1.0, disk.write, disk.truncate)
    assert sorted(kept) == [0, 1, 2, 3]
    torn = kept[-1]
    for index in range(4):
        page = bytes(disk.data[index * PAGE:(index + 1) * PAGE])
        if index == torn:
            cut = page.index(b"a")
            assert cut % SECTOR == 0 and 0 < cut < PAGE and page == b"b" * cut + b"a" * (PAGE - cut)
        else:
            assert page == b"b" * PAGE


@pytest.fixture
def mount(tmp_path):
    why = available()
    assert why is None, f"cutfs cannot mount here: {why} (scripts/dev.py test installs fuse3)"
    m = CutMount(tmp_path / "disk", tmp_path / "mnt", seed=1).start()
    try:
        yield m
    finally:
        m.stop()


def test_through_a_mount_what_was_fsynced_survives_the_cut_and_the_rest_does_not(mount, tmp_path):
    mnt = tmp_path / "mnt"
    with open(mnt / "synced", "wb") as f:
        f.write(b"kept")
        f.flush()
        os.fsync(f.fileno())
        f.write(b" and lost")                      # appended, not synced
    (mnt / "unsynced").write_bytes(b"lost")
    (mnt / "dir").mkdir()
    os.rename(mnt / "unsynced", mnt / "dir" / "moved")
    assert (mnt / "synced").read_bytes() == b"kept and lost"
    assert (tmp_path / "disk" / "synced").read_bytes() == b"kept", "nothing unsynced on the disk"
    mount.cut(0.0)
    mount.start()
    assert (mnt / "synced").read_bytes() == b"kept"
    assert (mnt / "dir" / "moved").read_bytes() == b"", "metadata survives, data not synced does not"
