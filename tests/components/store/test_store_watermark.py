"""The acknowledgement watermark (gaps, duplicates, held_from) and re-timing decisions."""

import random

from store_and_forward.retime import Retimer
from store_and_forward.watermark import Watermark

HOUR = 3_600_000


def test_watermark_waits_for_the_gap():
    mark = Watermark()
    assert mark.acked == -1
    assert mark.add(0) and mark.add(2) and mark.add(3)
    assert mark.acked == 0 and mark.above == [[2, 3]]
    assert mark.add(1)
    assert mark.acked == 3 and mark.above == []


def test_duplicates_are_not_new():
    mark = Watermark()
    for seq in (0, 1, 5):
        mark.add(seq)
    assert not mark.add(0) and not mark.add(5) and mark.has(5) and not mark.has(4)


def test_held_from_gives_up_the_gap_and_counts_it():
    mark = Watermark()
    for seq in (0, 1, 2, 6, 7, 12):
        mark.add(seq)
    assert mark.give_up_below(10) == 5        # 3, 4, 5, 8, 9 never arrived
    assert mark.acked == 9 and mark.above == [[12, 12]]
    assert mark.give_up_below(5) == 0         # an older held_from changes nothing
    mark.add(10), mark.add(11)
    assert mark.acked == 12


def test_held_from_inside_a_stored_range():
    mark = Watermark()
    for seq in (0, 4, 5, 6):
        mark.add(seq)
    assert mark.give_up_below(5) == 3         # 1, 2, 3
    assert mark.acked == 6


def test_state_round_trips():
    mark = Watermark()
    for seq in (0, 1, 3, 9, 10):
        mark.add(seq)
    again = Watermark.from_state(mark.state())
    assert again.acked == 1 and again.above == [[3, 3], [9, 10]]
    assert again.copy().state() == mark.state()


def test_any_arrival_order_ends_at_the_top():
    rng = random.Random(3)
    seqs = list(range(500)) * 2
    rng.shuffle(seqs)
    mark = Watermark()
    new = sum(mark.add(s) for s in seqs)
    assert new == 500 and mark.acked == 499 and mark.above == []


# -- re-timing -----------------------------------------------------------------------------
KEY = ("pi", "1a2b3c4d")
T0 = 1_000_000_000_000          # a clock hours behind


def test_no_step_no_change_and_slow_drift_is_followed():
    retimer = Retimer(threshold_ms=1000)
    for seq in range(100):
        decision = retimer.observe(KEY, seq, T0 + seq * 1000 + seq * 5, seq * 1000)   # drifting 5 ms/s
        assert decision.step is None and decision.t_orig is None


def test_a_forward_step_is_reported_once_with_the_new_offset():
    retimer = Retimer(threshold_ms=1000)
    retimer.observe(KEY, 0, T0, 0)
    retimer.observe(KEY, 1, T0 + 1000, 1000)
    step = retimer.observe(KEY, 2, T0 + 2000 + 5 * HOUR, 2000)
    assert step.step == T0 + 5 * HOUR and step.t == T0 + 2000 + 5 * HOUR
    assert retimer.observe(KEY, 3, T0 + 3000 + 5 * HOUR, 3000).step is None
    assert retimer.state(KEY) == (T0 + 5 * HOUR, 3)


def test_a_late_resend_with_the_old_offset_is_retimed_on_arrival():
    retimer = Retimer(threshold_ms=1000)
    retimer.observe(KEY, 5, T0 + 5000 + 5 * HOUR, 5000)
    late = retimer.observe(KEY, 1, T0 + 1000, 1000)
    assert late.t == T0 + 1000 + 5 * HOUR and late.t_orig == T0 + 1000 and late.step is None


def test_a_backwards_step_is_a_step_too():
    retimer = Retimer(threshold_ms=1000)
    retimer.observe(KEY, 0, T0, 0)
    back = retimer.observe(KEY, 1, T0 + 1000 - 2 * HOUR, 1000)
    assert back.step == T0 - 2 * HOUR
    assert retimer.observe(KEY, 0, T0, 0).t == T0 - 2 * HOUR        # the resend follows


def test_runs_are_independent_and_state_loads():
    retimer = Retimer()
    retimer.load(KEY, T0, 10)
    other = ("pi", "ffffffff")
    assert retimer.observe(other, 0, T0 + HOUR, 0).step is None
    assert retimer.observe(KEY, 11, T0 + 11 + HOUR, 11).step == T0 + HOUR
