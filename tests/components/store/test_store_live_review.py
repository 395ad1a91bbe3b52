"""Forward from memory, as its review found it: a later held_from never gives up readings still in
flight from memory (they are not lost), a batch from memory is confirmed by its own bytes only, and a
lost batch, a damaged database or a clock step mid-batch lose nothing."""

from store_harness import RUN, Harness, corrected
from test_store_live import LATENCY, online, sent_from_memory
from test_store_liveness import seqs_of as in_cloud


def feed_1hz(h, seq, seconds, **extra):
    """At 1 Hz; extra: field -> function of seq (held_from=lambda s: ...)."""
    for _ in range(seconds):
        h.feed([corrected(seq, **{k: f(seq) for k, f in extra.items()})])
        seq += 1
        h.step(100, n=10)
    return seq


def memory_batch_lost_in_the_spooler(tmp_path):
    """Online, then a batch A sent from memory into the core's spooler, which dies with the
    nucleus: A is in flight from memory and IoT Core never gets it."""
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    h.link_up = False
    seq = feed_1hz(h, seq, 3)
    a = sent_from_memory(h)
    h.restart_nucleus()
    h.link_up = True
    return h, seq, a


def test_a_later_batch_held_from_does_not_give_up_readings_in_flight_from_memory(tmp_path):
    h = Harness(tmp_path / "store.db", max_latency_ms=LATENCY)
    seq = online(h)
    h.link_up = False                          # batch A: into the core's spooler ...
    seq = feed_1hz(h, seq, 3)
    a = sent_from_memory(h)
    h.restart_nucleus()                        # ... which dies with the nucleus
    h.link_up = True
    first_b = seq
    # the sensor now holds from first_b (it gave up A's readings: max_unacked, a resize)
    seq = feed_1hz(h, seq, 12, held_from=lambda s: first_b)
    seq = feed_1hz(h, seq, 60)                 # A times out: committed and forwarded?
    h.step(100, n=100)
    missing = sorted(set(a) - set(in_cloud(h)))
    assert not missing, f"in the store's hands, never stored nor sent: {missing} (counters {h.store.counters})"


from store_harness import THING
from test_store_live import all_delivered, in_flight
from test_store_liveness import online_at_1hz as at_1hz


def test_ack_stays_below_a_lost_memory_batch_while_a_later_one_is_confirmed(tmp_path):
    h, seq, a = memory_batch_lost_in_the_spooler(tmp_path)
    seq = feed_1hz(h, seq, 12)
    assert h.fwd.ledger.memory_entries(), "A still in flight"
    assert h.port.acked() < min(a), "acknowledged over a batch neither stored nor confirmed"
    all_delivered(h, seq, 60)


def test_a_damaged_database_mid_memory_batch_loses_nothing(tmp_path):
    h, seq, flying = in_flight(tmp_path / "store.db")
    h.damage_mid_file()
    for _ in range(50):
        h.feed([corrected(seq)])
        seq += 1
        h.step(100, n=10)
        if h.store.counters["set_aside"]:
            break
    assert h.store.counters["set_aside"] == 1
    all_delivered(h, seq, 60)


def test_a_clock_step_while_a_memory_batch_is_in_flight_loses_nothing(tmp_path):
    h, seq, flying = in_flight(tmp_path / "store.db", cut="echo")
    for _ in range(30):
        h.feed([corrected(seq, t=corrected(seq)["t"] + 3_600_000)])
        seq += 1
        h.step(100, n=10)
    all_delivered(h, seq, 60)
    assert h.store.counters["retimed"] > 0


def test_a_stored_commit_with_held_from_does_not_give_up_readings_in_flight_from_memory(tmp_path):
    h, seq, a = memory_batch_lost_in_the_spooler(tmp_path)
    h.feed([corrected(seq, clock_synced=False, held_from=seq)])   # takes the stored path
    seq += 1
    seq = feed_1hz(h, seq, 70)
    h.step(100, n=100)
    missing = sorted(set(a) - set(in_cloud(h)))
    assert not missing, f"never stored nor sent: {missing}"



def test_an_echo_with_the_id_but_not_the_bytes_does_not_acknowledge_a_memory_batch(tmp_path):
    import json
    h, seq, flying = in_flight(tmp_path / "store.db")
    acked = h.port.acked()
    (entry,) = h.fwd.ledger.memory_entries()
    h.fwd.on_iot(h.fwd.topic, json.dumps({"v": 1, "batch": entry.batch_id}).encode())   # not what was sent
    assert h.port.acked() == acked, "acknowledged on a document IoT Core never had from us"
