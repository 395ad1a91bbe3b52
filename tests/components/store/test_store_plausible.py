"""No one message can move the watermark (the heart issue, item 5)."""

from store_and_forward.watermark import implausible

from store_harness import RUN, Harness, corrected


def test_a_held_from_far_ahead_is_dead_lettered_and_the_real_readings_still_count(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed(corrected(s) for s in range(5))
    h.feed([corrected(5, held_from=10**9)])                       # the review's one message
    h.feed([corrected(10**9, held_from=10**9, mono=6000)])        # the same with a seq to match
    h.feed(corrected(s) for s in range(5, 10))
    h.step(1000)
    assert h.port.acked() == 9                                    # not 999,999,999
    assert h.store.counters["duplicates"] == 0 and h.store.count == 10
    reasons = [l["reason"] for l in h.store.dead_letters()]
    assert len(reasons) == 2 and all(r.startswith("implausible: ") for r in reasons)


def test_what_a_sensor_can_send_is_plausible():
    assert implausible(corrected(3600, held_from=1)) is None          # a full buffer resent
    assert implausible(corrected(0, mono=0)) is None
    assert implausible(corrected(10, mono=1000)) is None              # 10 Hz, the shortest interval
    assert "above seq" in implausible(corrected(3, held_from=4))
    assert "more than a sensor holds" in implausible(corrected(2_000_000, held_from=1))
    assert "since the run began" in implausible(corrected(100, mono=1000))


def test_a_conflicting_copy_is_counted_and_kept_as_a_dead_letter(tmp_path):
    """The heart issue, item 10: ten forged readings with future seqs made the real ones
    duplicates, dropped without a word."""
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed(corrected(s) for s in range(5))
    h.feed(corrected(s, temperature=99.0, temperature_raw=99.0) for s in range(5, 15))    # forged first
    h.step(1000)
    h.feed(corrected(s) for s in range(5, 15))                        # the real ones
    h.feed([corrected(3, temperature=20.0, correction="none")])         # a resend corrected again: a copy
    h.step(1000)
    assert h.store.counters["conflicts"] == 10 and h.store.counters["duplicates"] == 1
    letters = h.store.dead_letters()
    assert len(letters) == 10 and all(l["reason"].startswith("conflict: ") for l in letters)
