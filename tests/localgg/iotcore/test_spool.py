"""The spooler's rules, memory and disk."""

import sqlite3

import pytest

from localgg.iotcore.spool import (FULL, TOO_LARGE, Ledger, MemoryStore, Spool, SpoolError, SpoolMessage,
                                   SqliteStore)


def msg(size: int, qos: int = 1, topic: str = "t") -> SpoolMessage:
    return SpoolMessage(topic, b"x" * size, qos)


def test_size_counts_payload_bytes_only():
    spool = Spool(MemoryStore(), max_size=100)
    spool.add(SpoolMessage("a/very/long/topic/name" * 5, b"x" * 60, 1, properties={"user_property": [("k", "v")]}))
    assert spool.size == 60


def test_full_spool_evicts_oldest_qos0_but_never_qos1():
    spool = Spool(MemoryStore(), max_size=100)
    q0a, q1, q0b = spool.add(msg(30, 0)), spool.add(msg(40, 1)), spool.add(msg(30, 0))
    spool.add(msg(25, 1))  # needs 25: the oldest QoS 0 (30) goes
    ids = []
    while (m := spool.pop()) is not None:
        ids.append(m.id)
    assert q0a not in ids and {q1, q0b} <= set(ids)


def test_new_qos1_is_refused_when_only_qos1_fill_the_spool():
    spool = Spool(MemoryStore(), max_size=100)
    spool.add(msg(60))
    spool.add(msg(40))
    with pytest.raises(SpoolError, match=FULL):
        spool.add(msg(1))
    with pytest.raises(SpoolError, match=TOO_LARGE):
        Spool(MemoryStore(), max_size=10).add(msg(11))


def test_failed_attempt_goes_back_to_the_front():
    spool = Spool(MemoryStore())
    first, second = spool.add(msg(1)), spool.add(msg(1))
    message = spool.pop()
    assert message.id == first
    spool.requeue(message)
    assert spool.pop().id == first
    assert spool.pop().id == second


def test_popped_messages_count_until_removed():
    spool = Spool(MemoryStore(), max_size=10)
    spool.add(msg(10))
    message = spool.pop()
    with pytest.raises(SpoolError):
        spool.add(msg(1))
    spool.remove(message.id)
    spool.add(msg(1))


def test_drop_qos0():
    spool = Spool(MemoryStore())
    spool.add(msg(1, 0))
    keep = spool.add(msg(1, 1))
    assert spool.drop_qos0() == 1
    assert spool.pop().id == keep and spool.pop() is None


def test_disk_spool_survives_a_restart_with_properties(tmp_path):
    path = tmp_path / "spooler.db"
    spool = Spool(SqliteStore(path))
    spool.add(SpoolMessage("dt/a", b"one", 1, True, {"user_property": [("k", "v")], "response_topic": "r"}))
    spool.add(SpoolMessage("dt/b", b"two", 0))
    spool.close()
    again = Spool(SqliteStore(path))
    first = again.pop()
    assert (first.topic, first.payload, first.retain, first.properties) == (
        "dt/a", b"one", True, {"user_property": [("k", "v")], "response_topic": "r"})
    again.remove(first.id)
    again.close()
    assert [r[0] for r in sqlite3.connect(path).execute("SELECT topic FROM spooler")] == ["dt/b"]


def test_disk_spool_restart_queues_only_what_fits_and_keeps_the_rest_on_disk(tmp_path):
    path = tmp_path / "spooler.db"
    spool = Spool(SqliteStore(path), max_size=100)
    for _ in range(3):
        spool.add(msg(30))
    spool.close()
    smaller = Spool(SqliteStore(path), max_size=70)
    assert smaller.queued == 2
    assert len(sqlite3.connect(path).execute("SELECT * FROM spooler").fetchall()) == 3


def test_disk_retry_count_never_advances_like_the_disk_spooler(tmp_path):
    spool = Spool(SqliteStore(tmp_path / "s.db"))
    spool.add(msg(1))
    message = spool.pop()
    spool.requeue(SpoolMessage(message.topic, message.payload, 1, id=message.id, retried=5))
    assert spool.pop().retried == 0


def test_corrupt_disk_spool_is_deleted(tmp_path):
    path = tmp_path / "spooler.db"
    spool = Spool(SqliteStore(path))
    spool.add(msg(1))
    spool.close()
    path.write_bytes(b"this is not a database" * 100)
    assert Spool(SqliteStore(path)).queued == 0  # the broken file was replaced by an empty spool
    assert sqlite3.connect(path).execute("SELECT count(*) FROM spooler").fetchone() == (0,)


def test_the_ledger_of_a_memory_spool_tells_what_a_killed_core_lost(tmp_path):
    path = tmp_path / "memory-spool.ledger"
    spool = Spool(MemoryStore(Ledger(path)))
    first = spool.add(msg(10))
    spool.add(msg(20, 0))
    spool.add(msg(30))
    spool.remove(first)
    spool.requeue(spool.pop())
    # no close(): a SIGKILL gives the process no chance to write anything more
    assert Ledger.read(path) == (2, 50)
    spool.close()  # a graceful stop loses the same messages: the record stays
    assert Ledger.read(path) == (2, 50)
    Spool(MemoryStore(Ledger(path)))  # the next run starts from zero
    assert Ledger.read(path) == (0, 0)
    assert Ledger.read(tmp_path / "missing") == (0, 0)
