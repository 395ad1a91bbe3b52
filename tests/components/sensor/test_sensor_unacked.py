"""unacked.py: the bounded buffer of published but unacknowledged readings."""

from bme680_sensor.unacked import Unacked

RUN = "1a2b3c4d"


def reading(seq):
    return {"run": RUN, "seq": seq, "status": "ok"}


def filled(count, **kwargs):
    held = Unacked(RUN, **kwargs)
    for seq in range(count):
        held.add(reading(seq), now_ms=seq * 1000)
    return held


def seqs(docs):
    return [doc["seq"] for doc in docs]


def test_ack_drops_up_to_and_including_seq():
    held = filled(10)
    assert held.ack(RUN, 3, now_ms=10_000) == 4
    assert len(held) == 6 and held.held_from == 4
    assert held.ack(RUN, 2, now_ms=10_000) == 0          # an older ack changes nothing
    assert held.ack(RUN, 9.0, now_ms=10_000) == 6        # localgg hands numbers back as floats
    assert len(held) == 0 and held.held_from is None


def test_acks_of_other_runs_are_ignored():
    held = filled(5)
    assert held.ack("ffffffff", 4, now_ms=5_000) == 0
    assert len(held) == 5


def test_resend_when_the_ack_stalls_oldest_first():
    held = filled(5, resend_after_ms=5000)               # added at 0..4 s
    assert held.due_for_resend(4_999) == []              # waiting since the first add (0 s)
    assert seqs(held.due_for_resend(5_000)) == [0, 1, 2, 3, 4]
    assert held.due_for_resend(14_999) == []             # the wait starts again after a resend, doubled
    assert seqs(held.due_for_resend(15_000)) == [0, 1, 2, 3, 4]
    held.ack(RUN, 1, now_ms=17_000)
    assert held.due_for_resend(21_999) == []             # an advancing ack restarts the wait, undoubled
    assert seqs(held.due_for_resend(22_000)) == [2, 3, 4]
    assert held.resent == 13


def test_nothing_to_resend_when_all_is_acknowledged():
    held = filled(3, resend_after_ms=1000)
    held.ack(RUN, 2, now_ms=3_000)
    assert held.due_for_resend(100_000) == []
    held.add(reading(3), now_ms=200_000)                 # the wait starts with the first held reading
    assert held.due_for_resend(200_999) == []
    assert seqs(held.due_for_resend(201_000)) == [3]


def test_overflow_drops_the_oldest_and_counts_it():
    held = filled(15, max_unacked=10)
    assert len(held) == 10 and held.given_up == 5
    assert held.held_from == 5
    assert seqs(held.due_for_resend(10**9)) == list(range(5, 15))
    held.resize(4)
    assert held.given_up == 11 and held.held_from == 11


def test_stamp_carries_the_current_held_from():
    held = filled(3)
    assert held.stamp(reading(2)) == {"run": RUN, "seq": 2, "status": "ok", "held_from": 0}
    held.ack(RUN, 1, now_ms=3_000)
    assert held.stamp(reading(2))["held_from"] == 2
    assert "held_from" not in reading(2)                 # a copy: the held reading is unchanged
    held.ack(RUN, 2, now_ms=3_000)
    assert "held_from" not in held.stamp(reading(2))


def test_a_resend_goes_out_in_chunks_paced_by_the_acknowledgements():
    from bme680_sensor.unacked import Unacked
    held = Unacked("0a1b2c3d", max_unacked=100, resend_after_ms=1000, resend_chunk=10)
    for seq in range(35):
        held.add({"run": "0a1b2c3d", "seq": seq}, 0)
    assert held.due_for_resend(999) == []
    first = held.due_for_resend(1000)                       # the stall: the oldest chunk only
    assert [r["seq"] for r in first] == list(range(10))
    assert held.due_for_resend(1001) == []                  # nothing more until that chunk is acknowledged
    held.ack("0a1b2c3d", 9, 1100)
    assert [r["seq"] for r in held.due_for_resend(1100)] == list(range(10, 20))
    held.add({"run": "0a1b2c3d", "seq": 35}, 1150)          # a live reading, published already
    held.ack("0a1b2c3d", 19, 1200)
    assert [r["seq"] for r in held.due_for_resend(1200)] == list(range(20, 30))
    held.ack("0a1b2c3d", 29, 1300)
    assert [r["seq"] for r in held.due_for_resend(1300)] == list(range(30, 35))   # not the live one
    held.ack("0a1b2c3d", 35, 1400)
    assert held.due_for_resend(1400) == [] and len(held) == 0
    assert held.resent == 35
    # a store that stays away gets one chunk per (backed-off) resend_after_ms, not the whole buffer
    for seq in range(36, 60):
        held.add({"run": "0a1b2c3d", "seq": seq}, 1500)
    assert len(held.due_for_resend(2500)) == 10
    assert held.due_for_resend(4499) == []
    assert [r["seq"] for r in held.due_for_resend(4500)] == list(range(36, 46))


def test_while_the_store_stays_stalled_resends_back_off():
    """The black-box trial: the store SIGSTOPped for 2 minutes got 24,412 messages for 3,670
    readings, because the sensor resent everything every resend_after_s. Now the wait doubles."""
    held = Unacked(RUN, max_unacked=3600, resend_after_ms=5000)
    resent_at = []
    for now in range(0, 600_000, 100):            # 10 minutes at 1 Hz with no ack at all
        if now % 1000 == 0:
            held.add(reading(now // 1000), now)
        if held.due_for_resend(now):
            resent_at.append(now)
    assert resent_at[:5] == [5_000, 15_000, 35_000, 75_000, 155_000]
    assert all(b - a <= 120_000 for a, b in zip(resent_at, resent_at[1:]))
    assert len(resent_at) <= 9 and held.resent < 600 * 6      # was 119 resends, 35,700 copies
    held.ack(RUN, 599, 600_000)
    assert held.wait_ms == 5000
