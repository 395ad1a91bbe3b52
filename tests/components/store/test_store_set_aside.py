"""A set-aside (a damaged database moved aside, a new one opened, what it still holds copied
in) loses and strands nothing when the new database cannot be opened yet, is nearly full,
the old file cannot be moved, the store restarts in the middle, or settings and echoes
arrive meanwhile (the review of 5dc89ea: each test failed before its fix)."""

import errno
import os
import sqlite3

import pytest

from store_and_forward import store as store_module

from store_harness import THING, Harness, corrected, settings

N = 3000


def refuse_new_files(monkeypatch, path):
    """sqlite3.connect refuses an empty database file at `path` while state["refuse"] (the new
    file of a set-aside: the disk full, a permission); with state["pages"], a file it opens
    may grow to that many pages only (a disk nearly full). state["old_sql"] is every statement
    run on a set-aside file."""
    real, state = sqlite3.connect, {"refuse": True, "pages": None, "old_sql": []}

    def connect(target, *args, **kwargs):
        if str(target).startswith(f"file:{path}.corrupt-"):
            conn = real(target, *args, **kwargs)
            conn.set_trace_callback(state["old_sql"].append)
            return conn
        if target == str(path) and state["refuse"] and (not os.path.exists(path) or os.path.getsize(path) == 0):
            raise sqlite3.OperationalError("unable to open database file")
        conn = real(target, *args, **kwargs)
        if target == str(path) and state["pages"]:
            conn.execute(f"PRAGMA max_page_count={state['pages']}")
        return conn

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    return state


def steps(h, n, ms=100):
    """Ticks as the runner's loop runs them: what one raises is kept, the loop goes on."""
    errors = []
    for _ in range(n):
        try:
            h.step(ms)
        except Exception as error:
            errors.append(error)
    return errors


def closed_mid_run(tmp_path, monkeypatch, runs=0, **overrides):
    """N acknowledged readings stored (and one of each of `runs` other runs), the file damaged
    mid-run, the new one refused: closed."""
    path = tmp_path / "store.db"
    h = Harness(path, subscribe=False, **overrides)
    h.feed(corrected(i) for i in range(N))
    h.step(1000)
    h.feed(corrected(0, run=f"{i:08x}") for i in range(runs))
    h.step(1000)                                         # their pages last: the damage meets readings
    assert h.port.acked() == N - 1
    state = refuse_new_files(monkeypatch, path)
    h.damage_mid_file()
    h.fwd.iot_subscribed(h.fwd.confirm_topic())
    for _ in range(600):
        h.step(100)
        if h.store.closed is not None:
            break
    assert h.store.closed is not None
    return h, state


def stored_or_sent(*harnesses):
    seqs = set()
    for h in harnesses:
        seqs |= {seq for (_, _, seq) in h.cloud}
        if h.store.closed is None:
            seqs |= {r.reading()["seq"] for r in h.store.scan(0, 100_000)}
    return seqs


def readable(path):
    """The seqs of the readings still readable in full in a damaged file, a row at a time (a
    damaged page may still give a row's first columns, not its body)."""
    conn, seqs = sqlite3.connect(f"file:{path}?mode=ro", uri=True), set()
    for rid in range(1, N + 1):
        try:
            seqs |= {row[3] for row in conn.execute("SELECT * FROM readings WHERE id = ?", [rid])}
        except sqlite3.Error:
            continue
    conn.close()
    return seqs


def markers(tmp_path):
    return [p for p in tmp_path.iterdir() if p.name.endswith(".salvage")]


@pytest.mark.parametrize("stop", ["sigterm", "crash"])
def test_a_restart_while_closed_salvages_the_set_aside_file(tmp_path, monkeypatch, stop):
    """#1: the salvage lived in memory only; a restart opened an empty database and every
    salvageable acknowledged reading stayed in the old file, uncounted."""
    h, state = closed_mid_run(tmp_path, monkeypatch)
    aside = h.store.set_aside_files[0]
    salvageable = readable(aside) - stored_or_sent(h)
    assert salvageable
    steps(h, 30)
    if stop == "sigterm":
        h.fwd.close()                                    # closed: nothing to write, does not raise
    state["refuse"] = False                              # room on the disk; Greengrass starts it again
    h2 = Harness(h.path)
    assert h2.store.closed is None
    miss = sorted(salvageable - stored_or_sent(h2))
    assert salvageable <= stored_or_sent(h2)
    steps(h2, 300)
    assert salvageable <= stored_or_sent(h2)             # sent, or still stored
    missing = set(range(N)) - stored_or_sent(h, h2)
    assert len(missing) <= h2.store.counters["set_aside_readings"]
    assert h2.store.counters["set_aside"] == 1
    assert h.port.acked() == N - 1                              # the old file's watermark, capped at the highest
    assert h2.store.watermark(THING, "1a2b3c4d") == N - 1       # seq it holds or saw (reviews of 8e0dde9 #3, setaside2 #1)
    assert markers(tmp_path) == [] and aside.exists()


def test_a_reopen_on_a_nearly_full_disk_keeps_the_salvage_pending_and_copies_it_once_there_is_room(
        tmp_path, monkeypatch):
    """#2: the salvage's one transaction failed (SQLITE_FULL) and was swallowed: never copied,
    never retried, not counted."""
    h, state = closed_mid_run(tmp_path, monkeypatch)
    salvageable = readable(h.store.set_aside_files[0]) - stored_or_sent(h)
    state["refuse"], state["pages"] = False, 16          # room for the schema, not for the backlog
    steps(h, 60)
    assert h.store.closed is None
    assert h.store.counters["set_aside"] == 1            # the small part first
    assert len(markers(tmp_path)) == 1                   # the rest waits, recorded
    state["pages"] = None
    h.free_disk()                                        # the disk freed
    steps(h, 600)
    assert markers(tmp_path) == []
    assert salvageable <= stored_or_sent(h)
    missing = set(range(N)) - stored_or_sent(h)
    assert len(missing) <= h.store.counters["set_aside_readings"]


def test_a_restart_in_the_middle_of_a_salvage_goes_on_and_counts_the_set_aside_once(tmp_path, monkeypatch):
    h, state = closed_mid_run(tmp_path, monkeypatch)
    salvageable = readable(h.store.set_aside_files[0]) - stored_or_sent(h)
    state["refuse"], state["pages"] = False, 16
    steps(h, 60)
    assert h.store.closed is None and len(markers(tmp_path)) == 1
    h.store.db.conn.close()                              # killed
    state["pages"] = None
    h2 = Harness(h.path)
    assert markers(tmp_path) == []
    assert salvageable <= stored_or_sent(h2)
    assert h2.store.counters["set_aside"] == 1


def test_a_move_aside_that_fails_is_tried_again(tmp_path, monkeypatch):
    """#3: os.replace raising (EROFS: an SD card remounted read-only) left the store closed
    for good with `closed` None: every commit failed as a "closed database" for ever."""
    path = tmp_path / "store.db"
    h = Harness(path, subscribe=False)
    h.feed(corrected(i) for i in range(N))
    h.step(1000)
    real, read_only = os.replace, {"on": True}

    def replace(src, dst):
        if read_only["on"]:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(src, dst)

    monkeypatch.setattr(store_module.os, "replace", replace)      # the os module itself
    h.damage_mid_file()
    h.fwd.iot_subscribed(h.fwd.confirm_topic())
    h.feed(corrected(i) for i in range(N, N + 100))
    assert steps(h, 100) == []
    assert h.store.closed is not None
    read_only["on"] = False                              # remounted read-write
    h.feed(corrected(i) for i in range(N + 100, N + 110))
    steps(h, 600)
    assert h.store.closed is None
    assert h.port.acked() == N + 109


def test_a_settings_change_while_closed_is_applied_in_full(tmp_path, monkeypatch):
    """#4: configure ran a PRAGMA on the closed database and raised half way."""
    h, state = closed_mid_run(tmp_path, monkeypatch)
    assert h.store.config.synchronous == "FULL"          # the recipe's default
    h.fwd.configure(settings(synchronous="NORMAL", confirm="rule"))
    assert h.fwd.confirm_topic() == h.fwd.rule_topic
    state["refuse"] = False
    steps(h, 100)
    assert h.store.db.execute("PRAGMA synchronous").fetchone()[0] == 1     # NORMAL


def test_a_synchronous_mode_asked_for_while_closed_is_the_reopened_databases(tmp_path, monkeypatch):
    """#4: the shadow reported FULL, the reopened database acknowledged readings under NORMAL."""
    h, state = closed_mid_run(tmp_path, monkeypatch, synchronous="NORMAL")
    h.fwd.configure(settings(synchronous="FULL"))
    state["refuse"] = False
    steps(h, 100)
    assert h.store.closed is None
    h.feed(corrected(i) for i in range(N, N + 10))
    steps(h, 100)
    assert h.port.acked() == N + 9
    assert h.store.db.execute("PRAGMA synchronous").fetchone()[0] == 2     # FULL


def test_a_forwarder_over_a_store_closed_at_start_takes_its_synchronous_mode(tmp_path, monkeypatch):
    """#4 at start-up: the StoreConfig says NORMAL, the settings FULL, the store is closed."""
    path = tmp_path / "store.db"
    h = Harness(path, subscribe=False)
    h.feed(corrected(i) for i in range(405))
    h.step(1000)
    h.fwd.close()
    os.truncate(path, os.path.getsize(path) // 2)
    state = refuse_new_files(monkeypatch, path)
    h2 = Harness(path)
    assert h2.store.closed is not None and h2.store.config.synchronous == "FULL"
    state["refuse"] = False
    steps(h2, 100)
    assert h2.store.db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_the_runner_applies_a_settings_change_made_while_closed(tmp_path, monkeypatch):
    """#4 as the runner runs it: configure raised, so _subscribe was skipped; the new
    confirmation topic was never subscribed and nothing was ever sent again."""
    from backfill_common.clock import FakeClock
    from backfill_common.ipc import Message
    from conftest import wait_for
    from store_and_forward.runner import Runner
    from test_store_runner import ALLOW_ALL, FakeIpc

    path = tmp_path / "store.db"
    h = Harness(path, subscribe=False)
    h.feed(corrected(i) for i in range(405))
    h.step(1000)
    h.fwd.close()
    with open(path, "r+b") as f:
        f.write(os.urandom(100))                         # damaged: set aside at start
    state = refuse_new_files(monkeypatch, path)
    clock = FakeClock()
    ipc = FakeIpc(config={"commit_interval_ms": 20, "max_latency_ms": 100, "accessControl": ALLOW_ALL})
    runner = Runner(ipc, clock, tmp_path)
    runner.start()
    assert runner.forwarder.store.closed is not None
    errors = []

    def pump(n):
        for _ in range(n):
            clock.advance(100)
            message = runner.inbox.get(timeout=0)
            try:                                         # as Runner.run
                if message is not None:
                    runner.step(message)
                runner.forwarder.tick()
            except Exception as error:
                errors.append(error)

    wait_for(lambda: runner.inbox.qsize() > 0, message="iot-subscribed")
    pump(5)
    ipc.config = dict(ipc.config, confirm="rule", synchronous="NORMAL")
    runner.inbox.put(Message("config", "", {}))
    pump(5)
    state["refuse"] = False                              # the disk has room again
    pump(100)
    assert runner.forwarder.store.closed is None
    for seq in range(405, 415):
        ipc.local["backfill/readings/corrected"]("backfill/readings/corrected", corrected(seq, held_from=405))
    pump(100)
    runner.close()
    assert errors == []
    assert ipc.acks[-1][1]["seq"] == 414
    assert runner.forwarder.settings["confirm"] == "rule"
    assert any(topic == f"dt/backfill/{THING}/readings" for topic, _ in ipc.published)


def test_counts_made_while_closed_survive_the_reopen(tmp_path, monkeypatch):
    """#5: each attempt to reopen reset the counters to what they were at the set-aside."""
    h, state = closed_mid_run(tmp_path, monkeypatch)
    before = h.store.counters["received"]
    h.feed(corrected(i) for i in range(N, N + 10))
    assert h.store.counters["received"] == before + 10
    steps(h, 60)                                         # failed attempts to reopen
    state["refuse"] = False
    steps(h, 60)
    assert h.store.closed is None
    assert h.store.counters["received"] >= before + 10


def test_an_echo_while_closed_is_ignored(tmp_path, monkeypatch):
    """#6: a late copy of an echo made on_iot raise (store.match on the closed database)."""
    h, state = closed_mid_run(tmp_path, monkeypatch)
    h.fwd.on_iot(*h.port.published[0])
    state["refuse"] = False
    steps(h, 100)
    assert h.store.closed is None


def test_a_first_transaction_that_does_not_fit_keeps_the_store_closed_without_reading_the_old_readings(
        tmp_path, monkeypatch):
    """#2 and #7: the new file opens on a disk nearly full but its first transaction (2,000
    watermarks) does not fit: the store stays closed and tries again, and no attempt reads
    the old file's readings (each one read them all) until that transaction is in."""
    h, state = closed_mid_run(tmp_path, monkeypatch, runs=2000)
    state["refuse"], state["pages"] = False, 16
    state["old_sql"].clear()
    steps(h, 200)                                        # 20 s: four attempts
    assert h.store.closed is not None
    assert [sql for sql in state["old_sql"] if "body" in sql] == []
    state["pages"] = None
    steps(h, 60)
    assert h.store.closed is None and markers(tmp_path) == []
    assert h.store.run_count() == 2001


def test_readings_copied_in_keep_to_the_bounds_and_what_goes_is_counted(tmp_path, monkeypatch):
    """What the salvage copies in is bounded like any commit: the oldest go (drop_oldest),
    counted in evicted; none is dropped uncounted."""
    h, state = closed_mid_run(tmp_path, monkeypatch)
    held = h.store.count
    assert held > 1000
    h.fwd.configure(settings(max_rows=500))
    state["refuse"] = False
    steps(h, 60)
    assert h.store.closed is None and markers(tmp_path) == []
    assert h.store.count <= 500
    counters = h.store.counters
    missing = set(range(N)) - stored_or_sent(h)
    assert len(missing) <= counters["set_aside_readings"] + counters["evicted"]
    assert counters["evicted"] >= held - 500 - counters["set_aside_readings"]


def test_a_record_claiming_a_column_over_a_gigabyte_sets_the_file_aside(tmp_path, monkeypatch):
    """SQLITE_TOOBIG reading stored rows is damage (a record header gone wrong: met 1 time in
    75 with Harness.damage_mid_file); the forwarder failed every tick on it, for ever."""
    from store_and_forward.store import Store

    h = Harness(tmp_path / "store.db")
    h.feed(corrected(i) for i in range(100))
    h.link_up = False
    h.step(1000)
    real = Store.scan

    def scan(self, *args, **kwargs):
        if not self.set_aside_files:                     # the damaged file: SQLite's own "string or blob too big"
            self.db.execute("SELECT zeroblob(2000000000)").fetchall()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "scan", scan)
    h.link_up = True
    assert steps(h, 50) == []
    assert h.store.counters["set_aside"] == 1
    h.feed(corrected(i) for i in range(100, 110))
    steps(h, 100)
    assert h.port.acked() == 109
    assert set(range(110)) <= stored_or_sent(h)


# -- the review of 8e0dde9: each test failed before its fix ---------------------------------

RUN = "1a2b3c4d"


def new_store(tmp_path):
    from backfill_common.clock import FakeClock
    from store_and_forward.store import Store, StoreConfig

    from store_harness import T0
    return Store(StoreConfig(tmp_path / "store.db"), FakeClock(wall_ms=T0))


def salvage_all(store, most=1000):
    for _ in range(most):
        if not store.salvaging:
            return
        store.salvage_step()
    raise AssertionError(f"still salvaging after {most} steps: {store.salvage_error}")


def test_a_salvage_over_a_million_id_gap_holds_the_loop_briefly_and_copies_every_reading(tmp_path, monkeypatch):
    """#1: every rowid between the oldest and the newest reading was asked for, one query
    each, the whole file in one call: 3.6 s for 2 readings a million ids apart."""
    statements = old_file_statements(monkeypatch)
    store = new_store(tmp_path)
    store.commit([corrected(0)])
    with store.db.atomic():
        store.db.execute("UPDATE sqlite_sequence SET seq = 1000000 WHERE name = 'readings'")
    store.commit([corrected(1)])
    store.set_aside("test")
    assert len(statements) < 1000, f"set_aside and its first salvage step ran {len(statements)} statements"
    salvage_all(store)
    assert sorted(row.seq for row in store.scan(0, 10)) == [0, 1]
    assert store.counters["set_aside_readings"] == 0


def test_readings_salvaged_from_a_run_being_retimed_are_read_retimed(tmp_path):
    """#2: the new file's empty list of runs being re-timed replaced the store's."""
    from store_harness import T0
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(5)])
    store.commit([corrected(5, t=T0 + 5000 + 3_600_000)])      # the clock stepped an hour
    assert store.stale == 1
    before = {r.seq: r.t for r in store.scan(0, 100)}
    store.set_aside("test")
    assert {r.seq: r.t for r in store.scan(0, 100)} == before
    assert store.stale == 1


def damaged_runs_row(path):
    raw = sqlite3.connect(str(path))
    raw.execute("UPDATE runs SET acked = 1000000 WHERE run = ?", [RUN])    # what damage may read as
    raw.commit()
    raw.close()


def test_a_damaged_watermark_in_the_old_file_does_not_outrank_the_stores_memory(tmp_path):
    """#3: "larger wins" took the damaged file's acked: the next reading was acknowledged as
    a duplicate and not stored."""
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(5)])
    damaged_runs_row(store.config.path)
    store.set_aside("test")
    assert store.commit([corrected(5)]).inserted == 1
    assert store.watermark(THING, RUN) == 5


def test_at_a_restart_an_old_files_watermark_is_capped_at_the_highest_seq_it_holds(tmp_path):
    """#3 at a restart: memory knows nothing, the old file's acked is the only one; it never
    claims more than the file holds (lower only makes a resent reading a duplicate)."""
    from store_and_forward.salvage import Aside, aside_target, move_aside
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(5)])
    path = store.config.path
    store.close()
    damaged_runs_row(path)
    move_aside(path, Aside(aside_target(path, store.clock.wall_ms()), "test"))   # set aside, then a restart
    store = new_store(tmp_path)
    salvage_all(store)
    assert store.watermark(THING, RUN) == 4
    assert store.commit([corrected(5)]).inserted == 1
    assert store.count == 6


def test_a_marker_that_cannot_be_deleted_leaves_the_salvage_done_and_is_deleted_later(tmp_path, monkeypatch):
    """#4: PermissionError out of set_aside (and of every upkeep after, and of Store())."""
    from pathlib import Path
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(3)])
    real = Path.unlink

    def unlink(self, *args, **kwargs):
        if self.name.endswith(".salvage"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    store.set_aside("test")
    store.salvage_step()
    assert store.count == 3 and store.salvaging and len(markers(tmp_path)) == 1
    assert store.counters["set_aside"] == 1 and store.counters["set_aside_readings"] == 0
    monkeypatch.setattr(Path, "unlink", real)
    store.salvage_step()
    assert not store.salvaging and markers(tmp_path) == []
    assert store.count == 3 and store.counters["set_aside"] == 1


def test_a_second_set_aside_while_the_first_salvage_is_pending_counts_each_file_once(tmp_path, monkeypatch):
    """#5: the first file's progress was the new file's empty one: settled (counted) again."""
    from store_and_forward.store import Store
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(10)])
    real = Store.salvage_step
    monkeypatch.setattr(Store, "salvage_step", lambda self, chunks=0: 0)   # the first salvage not done yet
    store.set_aside("first")
    store.commit([corrected(i) for i in range(10, 20)])
    monkeypatch.setattr(Store, "salvage_step", real)
    store.set_aside("second")
    salvage_all(store)
    assert store.count == 20
    assert store.counters["set_aside"] == 2 and store.counters["set_aside_readings"] == 0


def first_salvage_unfinished(tmp_path, monkeypatch):
    """A reading and a dead letter, set aside: both copied, the salvage's last small
    transaction refused (the disk full): pending."""
    from store_and_forward.store import DeadLetter, DiskFull, Store
    store = new_store(tmp_path)
    store.commit([corrected(0)], [DeadLetter("t", b"x", "why")])

    def full(self, aside):
        raise DiskFull("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(Store, "_finish", full)
        store.set_aside("first")
    assert store.salvaging and store.dead_count == 1 and store.count == 1
    return store


def test_a_second_set_aside_while_the_first_salvage_is_pending_copies_each_dead_letter_once(tmp_path, monkeypatch):
    """#5: the first file's dead letters were in the second file already, and copied again."""
    store = first_salvage_unfinished(tmp_path, monkeypatch)
    store.set_aside("second")
    salvage_all(store)
    assert store.dead_count == 1 and len(store.dead_letters()) == 1
    assert store.counters["dead_dropped"] == 0


def test_a_salvaged_reading_whose_id_is_taken_is_stored_under_a_new_id_and_counted_once(tmp_path, monkeypatch):
    """#5: INSERT OR IGNORE skipped it and counted it copied: stranded, uncounted."""
    from store_and_forward.store import Store
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(3)])
    real = Store.salvage_step
    monkeypatch.setattr(Store, "salvage_step", lambda self, chunks=0: 0)
    store.set_aside("test")
    taken = store.db.execute("SELECT MIN(id) FROM readings").fetchone()[0]
    assert taken is None
    with store.db.atomic():                 # another reading with the id of the old file's first
        store.db.execute("INSERT INTO readings (id, device, run, seq, t, mono, body) "
                         "VALUES (1, ?, 'other', 0, 0, 0, '{}')", [THING])
    monkeypatch.setattr(Store, "salvage_step", real)
    salvage_all(store)
    assert sorted(row.seq for row in store.scan(0, 10) if row.run == RUN) == [0, 1, 2]
    assert store.counters["set_aside_readings"] == 0


def test_a_record_too_big_met_checking_a_duplicate_in_a_commit_is_damage(tmp_path):
    """#6: SQLITE_TOOBIG reading a stored row inside a commit was taken for the message's own
    error (the forwarder dead-lettered the message and never set the file aside)."""
    from store_and_forward.store import is_corruption
    store = new_store(tmp_path)
    store.commit([corrected(0)])
    store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20)    # the stored body now reads as too big
    with pytest.raises(sqlite3.DatabaseError) as raised:
        store.commit([corrected(0)])
    assert is_corruption(raised.value)


def test_a_file_found_damaged_at_start_does_not_lend_its_watermark_to_the_new_one(tmp_path, monkeypatch):
    """#3 at start: the damaged file's runs, read before the damage was found, were memory's
    (taken as the store's own, uncapped)."""
    from store_and_forward.store import Store
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(5)])
    store.close()
    damaged_runs_row(store.config.path)
    real = Store._check_ends

    def check_ends(self):                   # the damage found at start (a truncated file, say)
        if not self.set_aside_files:
            raise sqlite3.DatabaseError("database disk image is malformed")
        real(self)

    monkeypatch.setattr(Store, "_check_ends", check_ends)
    store = new_store(tmp_path)
    salvage_all(store)
    assert store.watermark(THING, RUN) == 4
    assert store.commit([corrected(5)]).inserted == 1


def test_dead_letters_that_cannot_be_read_at_a_restart_are_counted_dropped(tmp_path, monkeypatch):
    """#6: at a restart the old file's dead letters were "as many as can be read": an
    unreadable one was never counted in dead_dropped."""
    from backfill_common.clock import FakeClock
    from store_and_forward.salvage import Aside, aside_target, move_aside
    from store_and_forward.store import DeadLetter, Store, StoreConfig

    from store_harness import T0
    config = StoreConfig(tmp_path / "store.db", dead_letter_max_bytes=20_000)
    store = Store(config, FakeClock(wall_ms=T0))
    store.commit([corrected(0)], [DeadLetter("t", b"x", "small"), DeadLetter("t", b"y" * 15_000, "big")])
    store.close()
    move_aside(config.path, Aside(aside_target(config.path, T0), "test"))
    real = sqlite3.connect

    def connect(target, *args, **kwargs):
        conn = real(target, *args, **kwargs)
        if str(target).startswith("file:"):          # the old file: the big one reads as damaged
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)
        return conn

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    store = Store(config, FakeClock(wall_ms=T0))
    salvage_all(store)
    assert store.dead_count == 1 and store.count == 1
    assert store.counters["dead_dropped"] == 1


@pytest.mark.parametrize("seed", range(5))
def test_the_salvage_walk_recovers_what_reading_every_id_recovers(tmp_path, seed):
    """#1: walking the ids that exist (one by one only in small gaps and next to damage)
    loses nothing that asking for every id would find, on a file damaged in its middle."""
    import random
    from store_and_forward.salvage import OldFile
    from store_and_forward.store import READING_COLUMNS
    store = new_store(tmp_path)
    for low in range(0, 3000, 500):
        store.commit([corrected(i) for i in range(low, low + 500)])
    with store.db.atomic():               # confirmed readings leave gaps, small and large
        store.db.execute("DELETE FROM readings WHERE id BETWEEN 100 AND 130 OR id BETWEEN 700 AND 1400")
    store.close()
    path = store.config.path
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(random.Random(seed).randbytes(8192))
    old = OldFile(path)
    try:
        walked = old.all_rows("readings", READING_COLUMNS)
        every = []
        for rowid in range(3100):
            try:
                every += old.conn.execute(f"SELECT {READING_COLUMNS} FROM readings WHERE id = ?", [rowid]).fetchall()
            except sqlite3.Error:
                continue
    finally:
        old.close()
    assert walked == every
    assert 0 < len({row[3] for row in every}) < 3000 - 731


def test_a_restart_after_a_second_set_aside_goes_on_with_the_first_salvage_where_it_was(tmp_path, monkeypatch):
    """#5 across a restart: the first file's progress was in the second file only; the
    restart copied the first file's dead letters again and counted its readings stranded."""
    store = first_salvage_unfinished(tmp_path, monkeypatch)
    state = refuse_new_files(monkeypatch, store.config.path)
    store.set_aside("second")                            # moved, the new file refused: closed
    assert store.closed is not None and len(markers(tmp_path)) == 2
    state["refuse"] = False                              # a restart
    store = new_store(tmp_path)
    salvage_all(store)
    assert markers(tmp_path) == []
    assert store.count == 1 and store.dead_count == 1
    assert store.counters["set_aside"] == 2
    assert store.counters["set_aside_readings"] == 0 and store.counters["dead_dropped"] == 0


def old_file_statements(monkeypatch) -> list:
    """Every SQL statement run on a set-aside file (OldFile opens it read-only): a count of the
    work a salvage step does, which no load on the machine changes (wall time would)."""
    import sqlite3

    from store_and_forward import salvage
    run, real_connect = [], sqlite3.connect

    def connect(target, *args, **kwargs):
        conn = real_connect(target, *args, **kwargs)
        if "mode=ro" in str(target):
            conn.set_trace_callback(run.append)
        return conn

    monkeypatch.setattr(salvage.sqlite3, "connect", connect)
    return run
