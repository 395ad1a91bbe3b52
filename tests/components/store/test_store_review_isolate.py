"""The second review of the one-by-one commit (f19eb09), each finding a test: what the
isolation committed before the disk filled up is forwarded without waiting for another
reading; a retime is not half-applied when the disk fails between its steps; a pattern's
`$` does not let a trailing newline through the contract; only errors of the message
itself make a reading a dead letter; a spooled dead letter the disk cannot delete does not
stop the loop."""

import base64
import json
import sqlite3

import pytest

from store_harness import RUN, THING, Harness, corrected
from store_and_forward import packer
from store_and_forward import store as store_module
from store_and_forward.store import DeadLetter

MINUTE = 60_000


def inject(h, readings=(), dead=()) -> None:
    """Messages past the contract check, waiting to be committed (as on_reading leaves them)."""
    h.fwd._pending += list(readings)
    h.fwd._dead += list(dead)
    if h.fwd._pending_since is None:
        h.fwd._pending_since = h.clock.mono_ms()


def fail_call(monkeypatch, n: int, error: BaseException) -> dict:
    """Store.commit raises `error` at its n-th call (then works)."""
    original, calls = store_module.Store.commit, {"n": 0}

    def commit(self, readings, dead=()):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return original(self, readings, dead)
    monkeypatch.setattr(store_module.Store, "commit", commit)
    return calls


# -- 1. the disk full part-way through the isolation ------------------------------------------------

def test_readings_isolated_before_the_disk_filled_are_forwarded_with_no_new_reading(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db")
    first = DeadLetter("backfill/readings/corrected", b"{}", "contract: x", (THING, RUN, 2**70))
    second = DeadLetter("backfill/readings/corrected", b"[]", "contract: y")
    inject(h, [corrected(0), corrected(1)], [first, second])
    # group, 0, 1, first (refused), first without identity, then second: the disk is full
    fail_call(monkeypatch, 6, store_module.DiskFull("disk full"))
    assert h.fwd.commit() is False
    assert h.store.count == 2 and h.port.acked() == 1
    for _ in range(30):                              # 30 minutes, not one new reading
        h.step(MINUTE // 10, n=10)
    assert {seq for (_, _, seq) in h.cloud} == {0, 1}, "what the isolation stored is forwarded"
    assert h.store.count == 0


def test_a_retime_found_part_way_through_the_isolation_is_applied_when_the_disk_fills(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db")
    h.link_up = False
    h.feed([corrected(i, clock_synced=False, t=1000 + i * 1000) for i in range(3)])
    h.step(1000, n=3)
    assert h.store.count == 3
    # the clock is stepped: the first synced reading re-times the run; its commit is isolated
    poison = DeadLetter("backfill/readings/corrected", b"{}", "contract: x", (THING, RUN, 2**70))
    inject(h, [corrected(3)], [poison, DeadLetter("backfill/readings/corrected", b"[]", "contract: y")])
    fail_call(monkeypatch, 5, store_module.DiskFull("disk full"))   # group, 3, poison, poison bare, y
    assert h.fwd.commit() is False
    h.link_up = True
    for _ in range(30):
        h.step(MINUTE // 10, n=10)
    assert {seq for (_, _, seq) in h.cloud} == {0, 1, 2, 3}
    offsets = {r["t"] - r["mono"] for r in h.cloud.values()}
    assert len(offsets) == 1, f"every reading of the run on one time line: {sorted(h.cloud.values(), key=str)}"


# -- 2. a storage error between the retime's observation and its commit ----------------------------

def test_a_clock_step_seen_by_a_commit_the_disk_failed_re_times_the_run_at_the_retry(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db")
    h.link_up = False                                    # the rows stay on the device to be looked at
    h.feed([corrected(0), corrected(1), corrected(2)])
    h.step(1000, n=3)
    assert h.store.count == 3
    original, calls = store_module.Store._conflicts, {"n": 0}

    def conflicts(self, copies):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return original(self, copies)
    monkeypatch.setattr(store_module.Store, "_conflicts", conflicts)
    # a resend of 2, and seq 3 with the wall clock stepped an hour ahead (NTP after a boot)
    h.feed([corrected(2), corrected(3, t=corrected(3)["t"] + 3_600_000)])
    assert h.fwd.commit() is False and h.fwd.disk_full
    for _ in range(20):                                  # the disk retry, then the re-timing
        h.step(1000)
    assert calls["n"] >= 2 and h.store.count == 4
    rows = h.store.db.execute("SELECT seq, t, mono FROM readings ORDER BY seq").fetchall()
    assert len({t - mono for _, t, mono in rows}) == 1, f"one time line for the run: {rows}"


# -- 3. a trailing newline in the device name -------------------------------------------------------

def test_a_device_name_with_a_trailing_newline_is_a_contract_dead_letter_and_other_runs_go_on(tmp_path):
    h = Harness(tmp_path / "store.db")
    bad = "pi-1\n"
    h.feed([corrected(0, device=bad), corrected(1, device=bad, held_from=5), corrected(0), corrected(1)])
    h.step(1000, n=10)
    letters = list(h.dead_letters.values())                  # forwarded to IoT Core
    assert len(letters) == 2 and all(d["reason"].startswith("contract: device") for d in letters), letters
    assert all(d["identity"] is None for d in letters), "no identity the store could not match again"
    assert {(d, s) for (d, _, s) in h.cloud} == {(THING, 0), (THING, 1)} and h.port.acked() == 1


# -- 4. only a message's own error makes it a dead letter -------------------------------------------

def _sqlite_error(kind, text: str, code):
    error = kind(text)
    if code is not None:
        error.sqlite_errorcode = code          # as Python 3.11+ sets it (3.10: the text only)
    return error


@pytest.mark.parametrize("kind, text, code", [
    (sqlite3.OperationalError, "database table is locked", 6),       # SQLITE_LOCKED
    (sqlite3.OperationalError, "database table is locked", None),
    (sqlite3.OperationalError, "interrupted", 9),                    # SQLITE_INTERRUPT
    (sqlite3.OperationalError, "access permission denied", 3),       # SQLITE_PERM
    (sqlite3.OperationalError, "locking protocol", 15),              # SQLITE_PROTOCOL
    (sqlite3.ProgrammingError, "Cannot operate on a closed database.", None),
])
def test_a_database_error_that_is_not_the_messages_keeps_the_reading_for_a_retry(tmp_path, monkeypatch,
                                                                               kind, text, code):
    h = Harness(tmp_path / "store.db")
    original, calls = store_module.Store.commit, {"n": 0}

    def commit(self, readings, dead=()):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise _sqlite_error(kind, text, code)
        return original(self, readings, dead)
    monkeypatch.setattr(store_module.Store, "commit", commit)
    h.feed([corrected(0)])
    for _ in range(20):
        h.step(1000)
    assert calls["n"] >= 3
    assert set(h.cloud) == {(THING, RUN, 0)} and h.dead_letters == {} and h.store.dead_letters() == []
    assert h.port.acked() == 0


@pytest.mark.parametrize("error", [
    OverflowError("Python int too large to convert to SQLite INTEGER"),
    _sqlite_error(sqlite3.DataError, "string or blob too big", 18),
    _sqlite_error(sqlite3.DataError, "string or blob too big", None),
    _sqlite_error(sqlite3.InterfaceError, "Error binding parameter 3 - probably unsupported type.", None),  # 3.10
    _sqlite_error(sqlite3.ProgrammingError, "Error binding parameter 3: type 'object' is not supported", None),
    _sqlite_error(sqlite3.IntegrityError, "NOT NULL constraint failed: readings.body", 1299),
])
def test_a_messages_own_error_is_not_taken_for_the_disk(error):
    assert not store_module.is_storage_error(error)


def test_a_reading_sqlite_cannot_bind_is_a_dead_letter_and_the_others_go_on(tmp_path, monkeypatch):
    """Python 3.11+ raises ProgrammingError (no error code) for a value it cannot bind; taken
    for the disk, one such message would hold every reading behind it (the review)."""
    h = Harness(tmp_path / "store.db")
    original = store_module.body_of

    def body_of(reading):
        return object() if reading["seq"] == 1 else original(reading)
    monkeypatch.setattr(store_module, "body_of", body_of)
    h.feed([corrected(i) for i in range(5)])
    for _ in range(30):
        h.step(1000)
    assert {seq for (_, _, seq) in h.cloud} == {0, 2, 3, 4} and not h.fwd.disk_full
    assert h.port.acked() == 4
    assert [d["reason"].split(":")[0] for d in h.dead_letters.values()] == ["the store could not keep it"]


# -- 5. spooled: a dead letter sent that the disk will not let go -----------------------------------

@pytest.mark.parametrize("confirm", ["spooled", "echo"])
def test_a_forwarded_dead_letter_the_disk_cannot_delete_is_not_sent_again_and_the_loop_goes_on(
        tmp_path, monkeypatch, confirm):
    h = Harness(tmp_path / "store.db", confirm=confirm)
    h.feed([b"{not json", corrected(0)])
    h.step(100)                                           # committed, not yet forwarded
    original = store_module.Store.forwarded_dead_letter
    fails = {"n": 0}

    def refused(self, letter_id):
        fails["n"] += 1
        raise store_module.DiskFull("disk full")
    monkeypatch.setattr(store_module.Store, "forwarded_dead_letter", refused)
    for _ in range(200):                                  # 20 s: tick() raises nothing
        h.step(100)
    sent = [p for topic, p in h.port.published if topic == h.fwd.dead_topic]
    assert fails["n"] >= 2 and len(sent) == 1, f"{len(sent)} copies, {fails['n']} deletes tried"
    assert set(h.cloud) == {(THING, RUN, 0)}, "the readings went on"
    monkeypatch.setattr(store_module.Store, "forwarded_dead_letter", original)
    for _ in range(100):
        h.step(100)
    assert h.store.dead_count == 0 and h.store.counters["dead_forwarded"] == 1
    assert len([p for topic, p in h.port.published if topic == h.fwd.dead_topic]) == 1


def test_a_dead_letter_in_flight_when_confirm_turns_spooled_is_sent_once_more_and_the_next_follows(tmp_path):
    """It waited for an echo that spooled never waits for: republished every second forever
    and every later dead letter stranded (the review)."""
    from store_harness import settings
    h = Harness(tmp_path / "store.db", confirm="echo")
    dead_topic = h.fwd.dead_topic
    on_iot = h.fwd.on_iot
    h.fwd.on_iot = lambda topic, payload: None if topic == dead_topic else on_iot(topic, payload)
    h.feed([corrected(0)])
    h.step(1000, n=3)
    h.feed([b"{first"])
    for _ in range(30):
        h.step(100)
        if h.fwd._dead_flight is not None:
            break
    assert h.fwd._dead_flight is not None
    h.fwd.configure(settings(confirm="spooled"))
    h.feed([b"{second"])
    for _ in range(600):
        h.step(100)
    sent = [json.loads(p)["raw"] for topic, p in h.port.published if topic == dead_topic]
    assert len(sent) <= 3 and h.store.dead_count == 0, f"{len(sent)} copies"
    assert {base64.b64decode(r) for r in sent} == {b"{first", b"{second"}


def test_dead_letters_in_a_damaged_file_are_carried_over_with_the_readings(tmp_path):
    """A dead letter may be a reading the sensor no longer holds (acknowledged): left in the
    set-aside file it was recoverable only by hand, and uncounted (the review)."""
    h = Harness(tmp_path / "store.db")
    h.link_up = False
    h.feed([corrected(0), b"{not json", corrected(1)])
    h.step(1000, n=3)
    assert h.store.dead_count == 1 and h.store.count == 2
    error = sqlite3.DatabaseError("database disk image is malformed")
    error.sqlite_errorcode = 11
    h.fwd._corrupt(error)
    assert h.store.count == 2 and h.store.dead_count == 1
    h.link_up = True
    for _ in range(30):
        h.step(1000)
    assert [base64.b64decode(d["raw"]) for d in h.dead_letters.values()] == [b"{not json"]
    assert {seq for (_, _, seq) in h.cloud} == {0, 1}


def test_an_unforeseen_error_part_way_through_the_isolation_still_acknowledges_what_landed(tmp_path, monkeypatch):
    h = Harness(tmp_path / "store.db")
    poison = DeadLetter("backfill/readings/corrected", b"{}", "contract: x", (THING, RUN, 2**70))
    inject(h, [corrected(0), corrected(1)], [poison])
    fail_call(monkeypatch, 3, KeyError("unforeseen"))      # group, 0, then 1
    with pytest.raises(KeyError):
        h.fwd.commit()
    assert h.port.acked() == 0 and h.store.count == 1
    for _ in range(30):
        h.step(1000)
    assert {seq for (_, _, seq) in h.cloud} == {0, 1} and h.port.acked() == 1


# -- the early commit (frugal online) commits early only when a batch really goes ---------------------

def _commits_at_1_hz(h, seconds: int = 120) -> int:
    original, calls = h.store.commit, {"n": 0}

    def counted(readings, dead=()):
        calls["n"] += 1
        return original(readings, dead)
    h.store.commit = counted
    for i in range(seconds):
        h.feed([corrected(i)])
        h.step(100, n=10)
    return calls["n"]


def test_a_boot_without_network_commits_every_commit_interval_not_every_tick(tmp_path):
    """SubscribeToIoTCore never answers: the link stays unknown, nothing is sent (the review)."""
    h = Harness(tmp_path / "store.db", subscribe=False, max_latency_ms=10000, commit_interval_ms=5000)
    assert _commits_at_1_hz(h) <= 26


def test_a_closed_confirmation_stream_online_commits_every_commit_interval(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=10000, commit_interval_ms=5000)
    h.feed([corrected(0)])
    h.step(100, n=150)
    assert h.fwd.ledger.link == "online"
    for topic in h.fwd.iot_topics():
        h.fwd.iot_unsubscribed(topic)
    assert _commits_at_1_hz(h) <= 26


def test_a_drain_at_a_low_publish_rate_commits_every_commit_interval(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=10000, commit_interval_ms=5000, max_publishes_per_s=0.2,
                max_payload_bytes=4096, billing_unit_bytes=4096)
    h.link_up = False
    h.feed([corrected(i, mono=i * 1000) for i in range(2000, 2400)])
    h.step(1000, n=10)
    h.link_up = True
    assert _commits_at_1_hz(h) <= 30


def test_a_drain_at_a_low_byte_rate_commits_every_commit_interval(tmp_path):
    """The bytes bucket held the packed batch back while the publishes bucket was open: one
    commit per reading for the whole drain (the review)."""
    h = Harness(tmp_path / "store.db", max_latency_ms=10000, commit_interval_ms=5000,
                max_bytes_per_s=1024, max_payload_bytes=16384, billing_unit_bytes=4096)
    h.link_up = False
    h.feed([corrected(i, mono=i * 1000) for i in range(2000, 22000)])
    h.step(1000, n=10)
    h.link_up = True
    assert _commits_at_1_hz(h) <= 30


def test_online_at_1_hz_the_readings_in_memory_go_with_the_batch(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=10000, commit_interval_ms=5000)
    commits = _commits_at_1_hz(h)
    sizes = [len(list(packer.decode(doc))) for doc in h.deliveries]
    assert commits <= 30 and len(h.deliveries) <= 14, (commits, sizes)     # 24 on the interval, one per batch
    assert sorted(sizes)[len(sizes) // 2] >= 9, sizes           # batches of ~10, not 5 + 5
