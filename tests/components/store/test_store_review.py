"""Ways to lose or strand a reading that a review of the heart issue's change found, each
reproduced here (fake clock, real SQLite) and fixed."""

import sqlite3
import time

from backfill_common import strictjson
from store_and_forward import store as store_module

from store_harness import RUN, THING, Harness, corrected


def missing(h, seqs, run=RUN):
    return [s for s in seqs if (THING, run, s) not in h.cloud]


def damaged():
    return sqlite3.DatabaseError("database disk image is malformed")


def test_readings_held_above_a_gap_survive_a_set_aside(tmp_path):
    """The carried watermark kept its `above` ranges: the resent 4..8 counted as duplicates."""
    h = Harness(tmp_path / "store.db")
    h.link_up = h.echo = False
    h.feed([corrected(i, held_from=0) for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)])     # 3 not arrived yet
    h.step(1000)
    assert h.port.acked() == 2
    h.fwd._corrupt(damaged())
    h.feed([corrected(i, held_from=3) for i in range(3, 10)])                    # the sensor resends
    h.step(1000)
    h.link_up = h.echo = True
    h.step(1000, n=120)
    assert missing(h, range(10)) == []


def test_a_set_aside_that_fails_half_way_never_lets_an_old_batch_delete_new_rows(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db")
    h.feed([corrected(0)])
    h.step(100, n=200)
    h.echo = False                                    # batches in flight, their echoes late
    h.feed(corrected(i) for i in range(1, 40))
    h.step(100, n=200)
    echoes = list(h.port.published)

    def full(self, *args):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(store_module.Store, "_save_run", full)
    h.fwd._corrupt(damaged())                         # does not raise: saved again with the next commit
    monkeypatch.undo()
    h.feed(corrected(i) for i in range(40, 60))
    h.step(100, n=20)
    for topic, payload in echoes:                     # the old batches' echoes arrive now
        h.fwd.on_iot(topic, payload)
    h.echo = True
    h.step(1000, n=200)
    assert missing(h, range(40, 60)) == [] and h.store.count == 0


def test_an_unreadable_message_that_brings_the_link_back_also_rewinds(tmp_path):
    """Online through heard() (not a confirmation) skipped the rewind: 98 readings stranded."""
    h = Harness(tmp_path / "store.db", max_rows=100)
    h.feed([corrected(0)])
    h.step(100, n=100)
    h.echo = h.link_up = False
    h.feed(corrected(i) for i in range(1, 101))
    h.step(100, n=20)
    h.step(1000, n=40)                                # timed out: offline
    h.feed(corrected(i) for i in range(101, 201))     # drop_oldest evicts the rows in flight
    h.step(100, n=20)
    h.step(1000, n=120)
    h.fwd.on_iot(h.fwd.topic, b'{"hello":1}')         # some other message on our topic
    h.link_up = h.echo = True
    h.step(1000, n=600)
    assert h.store.count == 0 and missing(h, range(101, 201)) == []


def test_a_reading_too_large_for_any_batch_is_dead_lettered_and_the_rest_flows(tmp_path):
    h = Harness(tmp_path / "store.db", max_payload_bytes=4096)
    h.feed([corrected(0, big="x" * 5000)])            # the tolerant reader keeps the extra field
    h.feed(corrected(i) for i in range(1, 50))
    h.step(100, n=300)
    assert missing(h, range(1, 50)) == [] and h.store.count == 0
    [letter] = h.dead_letters.values()                # forwarded on the dead letters' topic
    assert letter["identity"]["seq"] == 0 and letter["reason"].startswith("too large for a batch")


def test_the_readable_part_of_a_damaged_file_is_copied_over_and_forwarded(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed(corrected(i) for i in range(3000))
    h.step(1000)
    h.damage_mid_file()
    h.fwd.iot_subscribed(h.fwd.confirm_topic())
    h.step(100, n=300)
    arrived = 3000 - len(missing(h, range(3000)))
    assert arrived >= 2800, f"only {arrived} of 3000 acknowledged readings reached the cloud"
    assert h.store.counters["set_aside_readings"] == 3000 - arrived


def test_the_nesting_check_is_linear_on_an_unterminated_string():
    """`"(?:[^"\\\\]|\\\\.)*"` restarted at every quote: a 128 KB message held the loop 47 s."""
    def cost(n):
        evil = b"[" * 40 + b'"' + b'\\"' * n        # enough brackets to be measured
        started = time.perf_counter()
        strictjson.nesting(evil)
        return time.perf_counter() - started
    small, large = cost(4_000), cost(32_000)
    assert large < 30 * small + 0.05, f"{large:.3f} s for 8x the input of {small:.4f} s"


def test_a_bad_held_from_on_a_plausible_seq_still_resolves_that_seq(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed(corrected(s) for s in range(3))
    h.feed([corrected(3, held_from=10**9)])
    h.feed(corrected(s) for s in range(4, 6))
    h.step(1000)
    assert h.port.acked() == 5                        # not stuck at 2 while the sensor holds seq 3


def test_confirmed_rows_whose_delete_met_a_full_disk_are_deleted_later_not_stranded(tmp_path, monkeypatch):
    """The heart issue's review (S3): a delete of confirmed rows that failed on a full disk left
    them stored behind the cursor: never sent again, never deleted, the backlog never empty."""
    h = Harness(tmp_path / "store.db", forward_from_memory=False)      # stored batches
    h.feed(corrected(i) for i in range(10))
    h.step(100, n=100)
    delete = store_module.Store.delete
    failures = [1]

    def full_once(self, ids, *args, **kwargs):
        if failures:
            failures.pop()
            raise store_module.DiskFull("database or disk is full")
        return delete(self, ids, *args, **kwargs)
    monkeypatch.setattr(store_module.Store, "delete", full_once)
    h.feed(corrected(i) for i in range(10, 20))
    h.step(100, n=10)
    assert not failures and h.store.count == 10            # confirmed, kept by the full disk
    h.step(1000, n=10)
    assert h.store.count == 0
    assert missing(h, range(20)) == []
