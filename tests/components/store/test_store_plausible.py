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
