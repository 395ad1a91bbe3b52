"""One message the database cannot take must not block the others (found by the end-to-end
poison test in a clean-clone CI run: a malformed reading whose seq was 1e300 gave a dead
letter whose identity SQLite refused with OverflowError; the group commit failed at every
tick, so every reading behind it stayed unstored and unacknowledged). And the one-by-one
commit that fixes it must not mistake the disk for a bad message (the review's findings)."""

import json
import sqlite3

import pytest

from store_harness import RUN, THING, Harness, corrected
from store_and_forward import store as store_module
from store_and_forward.forwarder import identity_of
from store_and_forward.store import DeadLetter


@pytest.mark.parametrize("seq", [1e300, float("inf"), -1, 2**53, 2**70, 1.5, True, "7"])
def test_an_identity_is_read_only_within_the_contracts_bounds(seq):
    assert identity_of({"device": THING, "run": RUN, "seq": seq}) is None


@pytest.mark.parametrize("device", ["\ud800", "pi 1", "pi/1", "", "x" * 129])
def test_an_identity_needs_the_contracts_device_pattern(device):
    assert identity_of({"device": device, "run": RUN, "seq": 1}) is None


def test_an_identity_within_bounds_is_read():
    assert identity_of({"device": THING, "run": RUN, "seq": 7.0}) == (THING, RUN, 7)
    assert identity_of({"device": THING, "run": RUN, "seq": 2**53 - 1}) == (THING, RUN, 2**53 - 1)


@pytest.mark.parametrize("seq", [1e300, 2**70])
def test_a_malformed_reading_with_a_huge_seq_is_dead_lettered_and_the_rest_goes_on(tmp_path, seq):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed([corrected(0), json.dumps(dict(corrected(1), seq=seq, status=42)).encode(), corrected(1), corrected(2)])
    h.step(1000, n=3)
    assert h.store.count == 3 and h.port.acked() == 2
    letters = h.store.dead_letters()
    assert len(letters) == 1 and letters[0]["seq"] is None and letters[0]["reason"].startswith("contract")


def test_a_group_commit_that_fails_on_one_message_commits_the_others_one_by_one(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed([corrected(0)])
    h.fwd._dead.append(DeadLetter("backfill/readings/corrected", b"{}", "a test", (THING, RUN, 2**70)))
    h.fwd._pending.append(dict(corrected(1), t=2**70))        # past the contract: the database refuses it
    h.feed([corrected(2)])
    h.step(1000, n=3)
    assert h.store.count == 2
    letters = h.store.dead_letters()
    assert sorted(d["reason"].split(":")[0] for d in letters) == ["a test", "the store could not keep it"]
    assert {d["reason"].split(":")[0]: d["seq"] for d in letters} == {"a test": None, "the store could not keep it": 1}
    assert h.fwd._pending == [] and h.fwd._dead == []
    assert any(key.startswith("commit ") for key in h.fwd.problems.counts), h.fwd.problems.counts
    h.feed([corrected(3)])                                      # and the next commit is an ordinary one
    h.step(1000, n=2)
    assert h.store.count == 3


def test_a_refused_reading_keeps_its_identity_so_the_runs_acknowledgement_passes_it(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed([corrected(0)])
    h.fwd._pending.append(dict(corrected(1), t=2**70))
    h.feed([corrected(2)])
    h.step(1000, n=3)
    assert h.port.acked() == 2                                  # seq 1 is resolved as a dead letter


def test_one_acknowledgement_per_run_after_a_one_by_one_commit(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.fwd._dead.append(DeadLetter("backfill/readings/corrected", b"{}", "a test", (THING, RUN, 2**70)))
    h.fwd._pending += [corrected(0), corrected(1), corrected(2)]
    h.fwd.commit()
    assert [(a["run"], a["seq"]) for a in h.port.acks] == [(RUN, 2)]


@pytest.mark.parametrize("where", ["_room", "_conflicts"])
def test_a_storage_error_outside_the_transaction_keeps_the_group_for_a_retry(tmp_path, monkeypatch, where):
    h = Harness(tmp_path / "store.db", subscribe=False, full_policy="reject_new")
    h.feed([corrected(0)])
    h.step(1000, n=2)
    original = getattr(store_module.Store, where)

    def flaky(self, *args):
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(store_module.Store, where, flaky)
    h.feed([corrected(0), corrected(1), corrected(2)])         # a resend of 0 reaches _conflicts
    assert h.fwd.commit() is False and h.fwd.disk_full
    assert len(h.fwd._pending) == 3 and h.fwd._dead == [] and h.store.dead_letters() == []
    monkeypatch.setattr(store_module.Store, where, original)
    h.step(1000, n=8)                                           # the disk retry
    assert h.store.count == 3 and h.port.acked() == 2 and h.store.dead_letters() == []
    assert h.store.counters["dead_dropped"] == 0


def test_a_failing_checkpoint_after_the_commit_keeps_the_commit(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db", subscribe=False)
    monkeypatch.setattr(store_module.Store, "wal_bytes", lambda self: 10**12)

    def full(self):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(store_module.Store, "checkpoint", full)
    h.feed([corrected(0), corrected(1)])
    assert h.fwd.commit() is True
    assert h.store.count == 2 and h.port.acked() == 1 and h.store.dead_letters() == []


def inject(h, readings=(), dead=()) -> None:
    """Messages past the contract check, waiting to be committed (as on_reading leaves them)."""
    h.fwd._pending += list(readings)
    h.fwd._dead += list(dead)
    if h.fwd._pending_since is None:
        h.fwd._pending_since = h.clock.mono_ms()


def test_the_disk_full_in_the_middle_of_a_one_by_one_commit_keeps_only_the_rest(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db", subscribe=False)
    first = DeadLetter("backfill/readings/corrected", b"{}", "contract: x", (THING, RUN, 2**70))
    second = DeadLetter("backfill/readings/corrected", b"[]", "contract: y")
    inject(h, [corrected(0), corrected(1)], [first, second])
    original, calls = store_module.Store.commit, {"n": 0}

    def commit(self, readings, dead=()):
        calls["n"] += 1
        if calls["n"] == 6:               # group, 0, 1, first (refused), first without identity, second
            raise store_module.DiskFull("disk full")
        return original(self, readings, dead)
    monkeypatch.setattr(store_module.Store, "commit", commit)
    assert h.fwd.commit() is False
    assert h.fwd._pending == [] and h.fwd._dead == [second]    # what was committed has left the lists
    monkeypatch.setattr(store_module.Store, "commit", original)
    h.step(1000, n=8)
    assert sorted(d["reason"] for d in h.store.dead_letters()) == ["contract: x", "contract: y"]
    assert h.store.counters["dead_lettered"] == 2 and h.store.counters["duplicates"] == 0
    assert h.store.count == 2 and h.port.acked() == 1


def test_corruption_in_the_middle_of_a_one_by_one_commit_keeps_only_the_rest(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db", subscribe=False)
    inject(h, [corrected(0), corrected(1)],
           [DeadLetter("backfill/readings/corrected", b"{}", "poison", (THING, RUN, 2**70))])
    original, calls = store_module.Store.commit, {"n": 0}

    def commit(self, readings, dead=()):
        calls["n"] += 1
        if calls["n"] == 3:               # group, 0, then 1 meets a damaged file
            raise sqlite3.DatabaseError("database disk image is malformed")
        return original(self, readings, dead)
    monkeypatch.setattr(store_module.Store, "commit", commit)
    assert h.fwd.commit() is False
    assert [r["seq"] for r in h.fwd._pending] == [1]           # 0 was committed: not retried
    assert [(a["run"], a["seq"]) for a in h.port.acks] == [(RUN, 0)]   # and acknowledged, as a group would be
    monkeypatch.setattr(store_module.Store, "commit", original)
    h.step(1000, n=8)
    assert h.fwd._pending == [] and h.store.counters["duplicates"] == 0
