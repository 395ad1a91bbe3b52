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


def test_a_set_aside_whose_new_database_cannot_be_opened_yet_is_opened_again_and_loses_nothing(tmp_path, monkeypatch):
    """Review 9 #4: the damaged file moved aside, the new one could not be opened (the disk
    full, a permission): the store was left closed for good, every commit retried as a
    "closed database" for ever. Now it is opened again every few seconds, and then carries
    over what the old file holds and what waited in memory."""
    import sqlite3

    from store_and_forward import store as store_module
    path = tmp_path / "store.db"
    h = Harness(path, subscribe=False)
    h.feed(corrected(i) for i in range(3000))
    h.step(1000)
    assert h.port.acked() == 2999
    real_connect, refusing = store_module.sqlite3.connect, {"on": True}

    def connect(*args, **kwargs):
        if refusing["on"]:
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    h.damage_mid_file()
    h.fwd.iot_subscribed(h.fwd.confirm_topic())
    h.feed(corrected(i) for i in range(3000, 3100))
    for _ in range(600):                                        # the damage is met within a minute
        h.step(100)
        if h.store.closed is not None:
            break
    assert h.store.closed == "unable to open database file"
    acked = h.port.acked()
    h.feed(corrected(i) for i in range(3100, 3110))
    h.step(100, n=200)                                          # 20 s: several attempts to open
    assert h.store.closed is not None
    assert h.port.acked() == acked                              # nothing acknowledged that is not stored
    assert h.port.reports[-1]["disk_full"] is True              # the shadow says so
    assert len(h.store.set_aside_files) == 1 and h.store.set_aside_files[0].exists()
    refusing["on"] = False
    h.feed(corrected(i) for i in range(3110, 3120))
    h.step(100, n=300)
    assert h.store.closed is None
    assert h.port.acked() == 3119                               # what waited, then the new ones
    assert h.store.counters["set_aside"] == 1
    assert {seq for (_, _, seq) in h.cloud} >= set(range(3100, 3120))
    kept = {seq for (_, _, seq) in h.cloud} | {r.reading()["seq"] for r in h.store.scan(0, 10_000)}
    assert len(set(range(3120)) - kept) <= h.store.counters["set_aside_readings"]   # the rest is counted
    reopened = Store(StoreConfig(path), h.clock)                 # a restart keeps the watermark
    assert reopened.watermark(*next(iter(reopened.runs()))) == 3119
