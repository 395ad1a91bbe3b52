"""A corrupt database is set aside, never fatal, never deleted (the heart issue, item 4)."""

import os

import pytest

from store_and_forward.store import Store, StoreConfig

from store_harness import Harness, corrected


def filled(path, n=405):
    """A store that was stopped with a backlog of `n` acknowledged readings (never sent)."""
    h = Harness(path, subscribe=False)
    h.feed(corrected(i) for i in range(n))
    h.step(1000)
    assert h.port.acked() == n - 1
    h.fwd.close()
    return h


def damage_header(path):
    with open(path, "r+b") as f:
        f.write(os.urandom(100))


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", [damage_header, truncate])
def test_a_corrupt_file_at_start_is_moved_aside_and_a_new_one_acknowledges(tmp_path, damage):
    path = tmp_path / "store.db"
    filled(path)
    damage(path)
    before = path.read_bytes()
    h = Harness(path)                                           # does not raise
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == before   # kept, byte for byte
    assert h.store.counters["set_aside"] == 1
    h.feed(corrected(i, held_from=405) for i in range(405, 410))     # what the sensor still holds
    h.step(100, n=30)
    assert h.port.acked() == 409
    assert {seq for (_, _, seq) in h.cloud} >= set(range(405, 410))
    assert h.port.reports[-1]["counters"]["set_aside"] == 1      # in the shadow


def test_corruption_found_mid_run_sets_the_file_aside_and_acknowledgements_go_on(tmp_path):
    path = tmp_path / "store.db"
    h = Harness(path, subscribe=False)
    h.feed(corrected(i) for i in range(3000))
    h.step(1000)
    h.damage_mid_file()                                         # 8 KiB of random bytes mid-file
    h.fwd.iot_subscribed(h.fwd.confirm_topic())
    h.feed(corrected(i) for i in range(3000, 3100))
    h.step(100, n=100)
    assert h.port.acked() == 3099                               # acknowledgements never stopped
    assert h.store.counters["set_aside"] == 1 and h.store.counters["set_aside_readings"] >= 1
    assert {seq for (_, _, seq) in h.cloud} >= set(range(3000, 3100))   # the new ones go to the cloud
    assert len(h.store.set_aside_files) == 1 and h.store.set_aside_files[0].exists()
    reopened = Store(StoreConfig(path), h.clock)                 # a restart keeps the watermark
    assert reopened.watermark(*next(iter(reopened.runs()))) == 3099
