"""The SQLite store on real files in temporary directories: duplicates, watermarks with gaps
and held_from, dead letters, bounds, re-timing, disk full, restarts."""

import json
import os
import sqlite3
import stat

import pytest

from backfill_common.clock import FakeClock
from store_and_forward.store import DeadLetter, DiskFull, Store, StoreConfig, id_ranges

DEVICE = "pi-garage-01"
RUN = "1a2b3c4d"
T0 = 1_764_338_400_000


def reading(seq, run=RUN, t=None, mono=None, **extra):
    doc = {"device": DEVICE, "run": run, "seq": seq, "t": T0 + seq * 1000 if t is None else t,
           "mono": seq * 1000 if mono is None else mono, "clock_synced": True, "status": "ok",
           "temperature": 21.5, "temperature_raw": 24.0, "humidity": 45.0, "pressure": 1013.25,
           "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": 48.3, "correction": "cpu_factor"}
    doc.update(extra)
    return doc


@pytest.fixture
def clock():
    return FakeClock(wall_ms=T0 + 10_000_000)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "work" / "store.db"


def open_store(path, clock, **config):
    return Store(StoreConfig(path, **config), clock)


def acked(result, run=RUN):
    return {a["run"]: a["seq"] for a in result.acks}.get(run)


def test_the_database_is_owner_only_wal_and_incremental(path, clock):
    store = open_store(path, clock)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    store.commit([reading(0)])
    assert stat.S_IMODE(os.stat(str(path) + "-wal").st_mode) == 0o600
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1          # NORMAL
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2          # INCREMENTAL
    store.set_synchronous("FULL")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.close()


def test_commit_stores_and_acknowledges_and_a_duplicate_is_a_no_op(path, clock):
    store = open_store(path, clock)
    result = store.commit([reading(i) for i in range(5)] + [reading(2)])
    assert result.inserted == 5 and result.duplicates == 1 and acked(result) == 4
    again = store.commit([reading(3), reading(4)])
    assert again.inserted == 0 and again.duplicates == 2
    assert acked(again) == 4                       # a resend gets the acknowledgement again
    assert store.count == 5
    assert store.counters["stored"] == 5 and store.counters["duplicates"] == 3
    store.close()


def test_the_ack_waits_for_a_gap_and_held_from_closes_it_counted(path, clock):
    store = open_store(path, clock)
    result = store.commit([reading(0), reading(1), reading(4), reading(5)])
    assert acked(result) == 1
    result = store.commit([reading(6, held_from=3)])       # the sensor gave up 2; 3 is still coming?
    assert acked(result) == 2 and result.given_up == 1 and store.counters["given_up"] == 1
    result = store.commit([reading(7, held_from=4)])       # ... no: 3 given up too
    assert acked(result) == 7 and store.counters["given_up"] == 2
    assert store.runs()[(DEVICE, RUN)] == {"acked": 7, "given_up": 2}
    store.close()


def test_a_new_run_is_acknowledged_separately(path, clock):
    store = open_store(path, clock)
    result = store.commit([reading(0), reading(0, run="ffffffff"), reading(1, run="ffffffff")])
    assert sorted((a["run"], a["seq"]) for a in result.acks) == [(RUN, 0), ("ffffffff", 1)]
    assert all(a["device"] == DEVICE for a in result.acks)
    store.close()


def test_dead_letters_count_as_stored_and_are_bounded(path, clock):
    store = open_store(path, clock, max_dead_letters=3, dead_letter_max_bytes=10)
    letters = [DeadLetter("backfill/readings/corrected", b"x" * 100, "contract: temperature: 500 > 200",
                          (DEVICE, RUN, 1))]
    letters += [DeadLetter("backfill/readings/corrected", b"not json %d" % i, "not JSON") for i in range(4)]
    result = store.commit([reading(0), reading(2)], letters)
    assert acked(result) == 2                       # 1 was dead-lettered: resolved
    rows = store.dead_letters()
    assert len(rows) == 3 and store.counters["dead_lettered"] == 5
    assert [r["raw"] for r in rows] == [b"not json 3", b"not json 2", b"not json 1"]
    assert rows[0]["reason"] == "not JSON" and rows[0]["topic"] == "backfill/readings/corrected"
    store.close()
    raw = sqlite3.connect(path).execute("SELECT size, length(raw) FROM dead_letters ORDER BY id").fetchall()
    assert raw == [(10, 10)] * 3


def test_restart_keeps_readings_watermarks_counters_and_offsets(path, clock):
    store = open_store(path, clock)
    store.commit([reading(i) for i in range(10)] + [reading(12)])
    store.delete([row.id for row in store.scan(0, 5)])            # forwarded and confirmed
    store.add_counts(sent=5)
    store.close()
    store = open_store(path, clock)
    assert store.count == 6 and store.watermark(DEVICE, RUN) == 9
    assert store.counters["confirmed"] == 5 and store.counters["sent"] == 5 and store.counters["stored"] == 11
    result = store.commit([reading(2), reading(10), reading(11)])  # 2 was forwarded and deleted
    assert result.inserted == 2 and result.duplicates == 1 and acked(result) == 12
    assert store.retimer.state((DEVICE, RUN)) == (T0, 12)
    store.close()


def test_startup_reads_the_row_count_instead_of_scanning(path, clock):
    store = open_store(path, clock)
    store.commit([reading(i) for i in range(3000)])
    store.close()
    sqlite3.connect(path).execute("DELETE FROM readings WHERE seq < 1000").connection.commit()   # behind its back
    store = open_store(path, clock)
    assert store.count == 3000                      # the saved count, not a COUNT(*) over the table
    store.close()


def test_scan_is_oldest_first_and_newest_is_the_last_arrival(path, clock):
    store = open_store(path, clock)
    store.commit([reading(5), reading(1), reading(3)])
    assert [r.seq for r in store.scan(0, 10)] == [5, 1, 3]
    assert store.newest().seq == 3
    first = store.scan(0, 1)[0]
    assert [r.seq for r in store.scan(first.id + 1, 10)] == [1, 3]
    row = store.newest().reading()
    assert row["seq"] == 3 and row["t"] == T0 + 3000 and "device" not in row and "t_orig" not in row
    assert row["temperature"] == 21.5 and "held_from" not in row
    store.close()


def test_match_and_delete_only_what_is_equal(path, clock):
    store = open_store(path, clock)
    store.commit([reading(i) for i in range(3)])
    ids = store.match(DEVICE, [(RUN, 0, T0), (RUN, 1, T0 + 999), (RUN, 9, T0)])
    assert len(ids) == 1
    assert store.delete(ids) == 1 and store.delete(ids) == 0
    assert store.count == 2 and store.counters["confirmed"] == 1
    store.close()


def test_delete_takes_exactly_the_ids_given_whatever_their_gaps(path, clock):
    store = open_store(path, clock)
    store.commit([reading(i) for i in range(40)])
    ids = [row.id for row in store.scan(0, 100)]
    gone = ids[3:10] + ids[12:13] + ids[20:30] + ids[29:31] + [ids[35], ids[33]]     # runs, a lone one, repeats
    assert id_ranges(gone) == [(ids[3], ids[9]), (ids[12], ids[12]), (ids[20], ids[30]), (ids[33], ids[33]),
                               (ids[35], ids[35])]
    assert store.delete(gone) == 21 and store.delete(gone) == 0
    left = {row.seq for row in store.scan(0, 100)}
    assert left == set(range(40)) - set(range(3, 10)) - {12} - set(range(20, 31)) - {33, 35}
    assert store.count == 19 == len(left) and store.counters["confirmed"] == 21
    store.close()


def test_drop_oldest_evicts_and_counts(path, clock):
    store = open_store(path, clock, max_rows=100)
    store.commit([reading(i) for i in range(80)])
    result = store.commit([reading(i) for i in range(80, 130)])
    assert result.evicted == 30 and store.count == 100
    assert store.counters["evicted"] == 30 and acked(result) == 129
    assert [r.seq for r in store.scan(0, 1)] == [30]
    store.close()


def test_reject_new_refuses_acknowledges_and_counts(path, clock):
    store = open_store(path, clock, max_rows=100, full_policy="reject_new")
    result = store.commit([reading(i) for i in range(130)])
    assert result.inserted == 100 and result.rejected == 30 and acked(result) == 129
    assert store.counters["evicted"] == 30 and store.counters["rejected"] == 30
    assert [r.seq for r in store.scan(0, 1)] == [0]
    store.close()


def test_bytes_bound_evicts_oldest(path, clock):
    store = open_store(path, clock, max_bytes=2 * 1024 * 1024)
    for start in range(0, 20_000, 2000):
        store.commit([reading(i, note="x" * 200) for i in range(start, start + 2000)])
    assert store.used_bytes() <= 2 * 1024 * 1024
    assert store.counters["evicted"] > 0 and store.count + store.counters["evicted"] == 20_000
    assert store.scan(0, 1)[0].seq == store.counters["evicted"]
    store.close()


def test_age_evicts_only_readings_with_a_known_age(path, clock):
    store = open_store(path, clock, max_age_ms=3_600_000)
    old = T0 + 10_000_000 - 2 * 3_600_000
    store.commit([reading(0, t=old), reading(1, t=old + 1000), reading(0, run="0000aaaa", t=86_400_000),
                  reading(0, run="0000bbbb", t=T0 + 9_999_000)])
    assert store.enforce_age() == 2
    assert [r.run for r in store.scan(0, 10)] == ["0000aaaa", "0000bbbb"]     # 1970 has no known age
    assert store.counters["evicted"] == 2
    store.close()


def test_age_walks_a_large_expired_backlog_without_a_full_scan(path, clock):
    store = open_store(path, clock, max_age_ms=3_600_000)
    old = T0 + 10_000_000 - 9 * 3_600_000
    store.commit([reading(i, t=old + i * 1000) for i in range(5000)] +
                 [reading(0, run="0000cccc", t=T0 + 9_999_000)])
    assert store.enforce_age(scan=1000) == 5000
    assert [r.run for r in store.scan(0, 10)] == ["0000cccc"]
    store.close()


def test_readings_from_before_2020_do_not_shield_expired_ones_behind_them(path, clock):
    """The heart issue, item 10: the walk stopped at the first window not 90 % expired."""
    store = open_store(path, clock, max_age_ms=3_600_000)
    old = T0 + 10_000_000 - 9 * 3_600_000
    store.commit([reading(i, run="0000dddd", t=86_400_000 + i) for i in range(1000)] +     # a clock not set yet
                 [reading(i, t=old + i * 1000) for i in range(3000)])
    assert store.enforce_age(scan=1000) == 3000
    assert {r.run for r in store.scan(0, 5000)} == {"0000dddd"}
    store.close()


def test_vacuum_gives_space_back(path, clock):
    store = open_store(path, clock)
    store.commit([reading(i, note="y" * 300) for i in range(5000)])
    store.delete([r.id for r in store.scan(0, 5000)])
    before = store.db.execute("PRAGMA freelist_count").fetchone()[0]
    assert store.vacuum(keep_pages=10) == before - 10
    assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 10
    store.close()


def test_a_clock_step_retimes_the_run_still_on_the_device(path, clock):
    store = open_store(path, clock)
    behind = 1_000_000_000_000
    store.commit([reading(i, t=behind + i * 1000) for i in range(3)])
    store.delete([store.scan(0, 1)[0].id])                         # seq 0 already left
    step = 5 * 3_600_000
    result = store.commit([reading(3, t=behind + 3000 + step), reading(1, t=behind + 1000)])
    assert result.retimed_runs == {(DEVICE, RUN)}
    rows = {r.seq: r for r in store.scan(0, 10)}
    assert sorted(rows) == [1, 2, 3]
    for seq in (1, 2):
        assert rows[seq].t == behind + seq * 1000 + step and rows[seq].t_orig == behind + seq * 1000
    assert rows[3].t == behind + 3000 + step and rows[3].t_orig is None
    assert rows[2].reading()["t_orig"] == behind + 2000
    late = store.commit([reading(5, t=behind + 5000 + step), reading(4, t=behind + 4000)])   # a stale resend
    assert late.retimed_runs == set()
    row4 = [r for r in store.scan(0, 10) if r.seq == 4][0]
    assert row4.t == behind + 4000 + step and row4.t_orig == behind + 4000
    while store.retime_step():                                     # the stored rows, chunk by chunk
        pass
    assert store.counters["retimed"] == 3 and store.stale == 0
    store.close()
    again = {r.seq: r for r in open_store(path, clock).scan(0, 10)}
    assert again[1].t == behind + 1000 + step and again[1].t_orig == behind + 1000    # persisted


def test_a_long_run_is_retimed_in_bounded_chunks_and_the_wal_stays_bounded(path, clock):
    """The heart issue, item 8: 300,000 rows in one UPDATE blocked the loop 2 s (WAL 89 MB)."""
    store = open_store(path, clock, max_bytes=64 * 1024 * 1024)
    behind, n = 1_000_000_000_000, 30_000
    for start in range(0, n, 5000):
        store.commit([reading(i, t=behind + i * 1000) for i in range(start, start + 5000)])
    step = 3_600_000
    result = store.commit([reading(n, t=behind + n * 1000 + step)])
    assert result.retimed_runs and store.counters["retimed"] == 0         # nothing re-timed in the commit
    assert store.scan(0, 1)[0].t == behind + step                          # but read re-timed at once
    chunks = 0
    while store.retime_step(limit=5000):
        chunks += 1
        assert store.wal_bytes() <= 2 * store.wal_limit + 8 * 1024 * 1024
    assert chunks == n // 5000 and store.counters["retimed"] == n
    store.checkpoint()
    assert store.wal_bytes() <= store.wal_limit
    store.close()


def test_a_backwards_step_keeps_every_reading_in_order(path, clock):
    store = open_store(path, clock)
    store.commit([reading(i) for i in range(5)])
    store.commit([reading(5, t=T0 + 5000 - 7_200_000)])
    rows = store.scan(0, 10)
    assert [r.seq for r in rows] == list(range(6))
    assert [r.t for r in rows] == [T0 - 7_200_000 + i * 1000 for i in range(6)]
    store.close()


def test_disk_full_keeps_nothing_and_changes_nothing_then_resumes(path, clock):
    store = open_store(path, clock)
    store.commit([reading(0)])
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages + 2}")
    big = [reading(i, note="z" * 2000) for i in range(1, 200)]
    with pytest.raises(DiskFull):
        store.commit(big)
    assert store.count == 1 and store.watermark(DEVICE, RUN) == 0 and store.counters["stored"] == 1
    assert store.retimer.state((DEVICE, RUN)) == (T0, 0)
    store.db.execute("PRAGMA max_page_count=1073741823")
    result = store.commit(big)
    assert result.inserted == 199 and acked(result) == 199
    store.close()


def test_counters_are_saved_with_writes(path, clock):
    store = open_store(path, clock)
    store.add_counts(received=3)
    store.commit([reading(0)])
    saved = json.loads(sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='counters'").fetchone()[0])
    assert saved["received"] == 3 and saved["stored"] == 1
    store.close()
