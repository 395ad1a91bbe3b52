"""One message the database cannot take must not block the others (found by the end-to-end
poison test in a clean-clone CI run: a malformed reading whose seq was 1e300 gave a dead
letter whose identity SQLite refused with OverflowError; the group commit failed at every
tick, so every reading behind it stayed unstored and unacknowledged)."""

import json

import pytest

from store_harness import RUN, THING, Harness, corrected
from store_and_forward.forwarder import identity_of
from store_and_forward.store import DeadLetter


@pytest.mark.parametrize("seq", [1e300, float("inf"), -1, 2**53, 2**70, 1.5, True, "7"])
def test_an_identity_is_read_only_within_the_contracts_bounds(seq):
    assert identity_of({"device": THING, "run": RUN, "seq": seq}) is None


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
    assert all(d["seq"] is None for d in letters)
    assert h.fwd._pending == [] and h.fwd._dead == []
    assert any(key.startswith("commit ") for key in h.fwd.problems.counts), h.fwd.problems.counts
    h.feed([corrected(3)])                                      # and the next commit is an ordinary one
    h.step(1000, n=2)
    assert h.store.count == 3
