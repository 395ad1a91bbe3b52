"""Forwarding from memory (live.py): online at 1 Hz the readings are not written, only the
runs' watermarks; every anomaly commits them by the normal path, and nothing is lost,
acknowledged unconfirmed and unstored, or stranded. Fake port and clock, real SQLite."""

import json

import pytest

from backfill_common import contracts
from store_and_forward import packer
from store_and_forward.store import Store, StoreConfig

from store_harness import RUN, THING, Harness, corrected, settings
from test_store_liveness import online_at_1hz as at_1hz, seqs_of as in_cloud

LATENCY = 10_000            # the default max_latency_ms: a batch every 9 s at 1 Hz


def online(h, seq=0, seconds=15):
    """At 1 Hz until the link is online and nothing is stored; returns the next seq."""
    seq = at_1hz(h, seq, seconds)
    assert h.fwd.ledger.link == "online" and h.store.count == 0
    return seq




def in_flight(path, cut="echo"):
    """Online at 1 Hz, then a batch sent from memory whose echo does not come back (`cut`:
    "echo" lost, or the "link" down, the batch in the core's spooler): (harness, next seq,
    the seqs in flight)."""
    h = Harness(path, max_latency_ms=LATENCY)
    seq = online(h)
    h.echo, h.link_up = cut != "echo", cut != "link"
    seq = at_1hz(h, seq, 3)
    return h, seq, sent_from_memory(h)


def all_delivered(h, seq, seconds):
    """Echoes and the link back, `seconds` more at 1 Hz: every reading in the cloud,
    acknowledged, and nothing left stored."""
    h.echo = h.link_up = True
    seq = at_1hz(h, seq, seconds)
    h.step(100, n=100)
    assert in_cloud(h) == list(range(seq)) and h.port.acked() == seq - 1
    assert h.store.count == 0


def sent_from_memory(h):
    """Step until a batch has gone from memory with no echo back; returns its readings."""
    for _ in range(200):
        entries = h.fwd.ledger.memory_entries()
        if entries:
            return [r["seq"] for e in entries for r in e.memory]
        h.step(100)
    raise AssertionError("no batch went from memory")


def writes(h):
    """The tables every data-changing statement of the store's connection names, recorded."""
    seen = []

    def trace(sql):
        words = sql.split()
        if words and words[0].upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            seen.append(next(w for w in words[1:] if w.upper() not in ("OR", "REPLACE", "IGNORE", "INTO", "FROM")))
    h.store.db.conn.set_trace_callback(trace)
    return seen


def test_online_at_1hz_only_the_runs_watermarks_are_written(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    stored = h.store.counters["stored"]
    tables = writes(h)
    for _ in range(600):
        h.feed([corrected(seq)])
        seq += 1
        h.step(100, n=10)
        assert h.store.count == 0
    h.step(100, n=100)
    assert h.store.counters["stored"] == stored, "readings were written"
    assert set(tables) <= {"runs", "meta"}, set(tables)
    assert tables.count("meta") <= 11, "the counters go at most once a checkpoint_interval_s"
    assert in_cloud(h) == list(range(seq))
    assert h.port.acked() == seq - 1
    assert h.store.counters["live"] >= 600
    # every reading acknowledged is in the cloud, and its run's watermark is on the disk
    assert Store(StoreConfig(tmp_path / "store.db"), h.clock).watermark(THING, RUN) == seq - 1


def test_a_batch_from_memory_is_byte_for_byte_the_batch_the_store_would_pack(tmp_path):
    h = Harness(tmp_path / "live.db", max_latency_ms=LATENCY)
    seq = online(h)
    stored, published = h.store.counters["stored"], len(h.port.published)
    docs = {s: corrected(s) for s in range(seq)}
    docs.update({s: corrected(s, held_from=max(0, s - 3), pressure=1013.25 + s / 100) for s in range(seq, seq + 60)})
    for s in range(seq, seq + 60):
        h.feed([docs[s]])
        h.step(100, n=10)
    h.step(100, n=100)
    assert h.store.counters["stored"] == stored and h.store.counters["live"] >= 55
    payloads = [p for _, p in h.port.published[published:]]
    assert len(payloads) >= 6
    other = Store(StoreConfig(tmp_path / "other.db"), h.clock)
    for payload in payloads:
        seqs = [r["seq"] for r in packer.decode(payload)]
        other.commit([contracts.integers(docs[s]) for s in seqs])
        builder = packer.BatchBuilder(THING, h.fwd.capacity)
        for row in other.scan(0):
            builder.add(row.reading(), tag=row.id)
        assert builder.build().payload == payload
        other.delete([row.id for row in other.scan(0)])
    assert in_cloud(h) == list(range(seq + 60))


def test_no_acknowledgement_before_the_confirmation(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    acked = h.port.acked()
    h.echo = False
    seq = at_1hz(h, seq, 3)
    flying = sent_from_memory(h)
    assert h.port.acked() == acked < min(flying), "acknowledged neither stored nor confirmed"
    topic, payload = h.port.published[-1]
    h.fwd.on_iot(topic, payload)                      # the echo, late but in time
    assert h.port.acked() == max(flying)
    assert h.store.count == 0


def test_a_lost_echo_commits_the_batch_and_it_is_forwarded_from_the_store(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    stored = h.store.counters["stored"]
    h.echo = False
    seq = at_1hz(h, seq, 3)
    flying = sent_from_memory(h)
    h.step(1000, n=40)                                # the confirmation time-out passes
    assert not h.fwd.ledger.memory_entries()
    assert h.store.counters["stored"] >= stored + len(flying), "not committed"
    assert h.port.acked() >= max(flying), "committed, so acknowledged"
    all_delivered(h, seq, 90)                         # a probe sent unanswered times out and goes again


def test_the_link_lost_mid_batch(tmp_path):
    h, seq, flying = in_flight(tmp_path / "store.db", cut="link")
    seq = at_1hz(h, seq, 60)
    assert not h.fwd.ledger.memory_entries() and h.fwd.ledger.link == "offline"
    assert h.port.acked() == seq - 1 >= max(flying), "stored while offline: acknowledged"
    assert h.store.count >= len(flying)
    all_delivered(h, seq, 120)


def test_a_nucleus_restart_mid_batch(tmp_path):
    h, seq, _ = in_flight(tmp_path / "store.db", cut="link")
    h.restart_nucleus()                               # the spooled batch is gone
    all_delivered(h, seq, 120)


@pytest.mark.parametrize("kill", [False, True])
def test_a_store_restart_mid_batch(tmp_path, kill):
    h, seq, flying = in_flight(tmp_path / "store.db")
    acked = h.port.acked()
    h.reopen(kill=kill)
    if kill:       # nothing of it was acknowledged: the sensor still holds it and resends it
        assert h.port.acked() == acked < min(flying)
        h.feed(corrected(s) for s in range(acked + 1, seq))
    else:          # SIGTERM: committed and acknowledged before the store closed
        assert h.port.acked() >= max(flying)
        assert h.store.count >= len(flying)
    all_delivered(h, seq, 60)


def test_a_resend_of_a_reading_in_flight_from_memory_is_not_taken_twice(tmp_path):
    h, seq, flying = in_flight(tmp_path / "store.db")
    duplicates, stored = h.store.counters["duplicates"], h.store.counters["stored"]
    h.feed(corrected(s) for s in flying)              # the sensor's resend
    h.step(100, n=60)
    assert h.store.counters["duplicates"] == duplicates + len(flying)
    assert h.store.counters["stored"] == stored and h.store.count == 0
    topic, payload = next(p for p in reversed(h.port.published) if json.loads(p[1])["rows"][0][0] == flying[0])
    h.fwd.on_iot(topic, payload)
    assert h.port.acked() >= max(flying)
    all_delivered(h, seq, 20)


def test_a_resend_after_a_confirmation_is_a_duplicate_after_a_restart_too(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = at_1hz(h, online(h), 30)
    h.step(100, n=100)
    acked = h.port.acked()
    assert acked == seq - 1 and h.store.counters["live"] >= 20
    h.reopen(kill=True)
    h.port.acks.clear()
    duplicates = h.store.counters["duplicates"]
    h.feed(corrected(s) for s in range(seq - 10, seq))
    h.step(100, n=100)
    assert h.store.counters["duplicates"] == duplicates + 10 and h.store.count == 0
    assert h.port.acked() == acked, "acknowledged again from the watermark on the disk"


def test_new_settings_mid_batch_commit_it(tmp_path):
    h, seq, flying = in_flight(tmp_path / "store.db")
    stored = h.store.counters["stored"]
    h.fwd.configure(settings(max_latency_ms=LATENCY, shadow_interval_s=120))
    assert not h.fwd.ledger.memory_entries()
    assert h.store.counters["stored"] == stored + len(flying) and h.port.acked() >= max(flying)
    all_delivered(h, seq, 30)


def test_readings_without_a_synced_clock_take_the_stored_path(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    live, stored = h.store.counters["live"], h.store.counters["stored"]
    for _ in range(30):
        h.feed([corrected(seq, clock_synced=False)])
        seq += 1
        h.step(100, n=10)
    h.step(100, n=100)
    assert h.store.counters["live"] == live
    assert h.store.counters["stored"] >= stored + 30
    assert in_cloud(h) == list(range(seq)) and h.store.count == 0


def test_a_clock_step_takes_the_stored_path(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    stored, step = h.store.counters["stored"], seq
    for _ in range(30):            # NTP stepped the wall clock an hour: the run is re-timed
        h.feed([corrected(seq, t=corrected(seq)["t"] + 3_600_000)])
        seq += 1
        h.step(100, n=10)
    h.step(100, n=100)
    assert h.store.counters["retimed"] > 0 and h.store.counters["stored"] > stored, "the step went stored"
    assert h.store.counters["stored"] < stored + 30, "then from memory again, with the new offset"
    assert in_cloud(h) == list(range(seq))
    assert all(h.cloud[(THING, RUN, s)]["t"] == corrected(s)["t"] + 3_600_000 for s in range(step, seq))


def test_a_backlog_goes_first_and_readings_meanwhile_are_stored(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    h.link_up = False
    seq = at_1hz(h, seq, 120)                        # stored while the link is down
    assert h.store.count > 100
    live = h.store.counters["live"]
    h.link_up = True
    lives = []
    for _ in range(200):
        backlog = h.store.count
        seq = at_1hz(h, seq, 1)
        if h.store.counters["live"] > live:
            lives.append(backlog)
            live = h.store.counters["live"]
    assert lives and lives[0] == 0, "a batch went from memory while a backlog was stored"
    h.step(100, n=100)
    assert in_cloud(h) == list(range(seq)) and h.store.count == 0


def test_a_disk_error_saving_the_watermarks_commits_the_readings(tmp_path):
    h, seq, flying = in_flight(tmp_path / "store.db")
    h.store.db.execute("PRAGMA query_only=1")       # the database refuses every write (SQLITE_READONLY)
    topic, payload = h.port.published[-1]
    h.fwd.on_iot(topic, payload)
    assert h.port.acked() < min(flying), "acknowledged without its watermark on the disk"
    assert h.fwd.disk_full
    h.store.db.execute("PRAGMA query_only=0")
    all_delivered(h, seq, 30)


def test_spooled_never_sends_from_memory(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY, confirm="spooled")
    seq = at_1hz(h, 0, 60)
    h.step(100, n=100)
    assert h.store.counters["live"] == 0 and h.store.counters["stored"] == seq


def test_forward_from_memory_false_commits_every_reading_first(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY, forward_from_memory=False)
    seq = at_1hz(h, 0, 60)
    h.step(100, n=100)
    assert h.store.counters["live"] == 0 and h.store.counters["stored"] == seq
    assert in_cloud(h) == list(range(seq)) and h.store.count == 0


def test_a_latency_beyond_the_sensors_resend_takes_the_stored_path(tmp_path):
    """At max_latency_ms 60000 a reading would wait unacknowledged past the sensor's
    resend_after_s (15 s): it is committed and acknowledged within commit_interval_ms."""
    h = Harness(tmp_path / "store.db", max_latency_ms=60_000)
    seq = at_1hz(h, 0, 200)
    assert h.store.counters["live"] == 0 and h.store.counters["stored"] >= seq - 6
    assert h.port.acked() >= seq - 6
