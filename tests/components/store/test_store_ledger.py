"""Confirmation bookkeeping (time-outs, resends with the same id, link state, probes) and
the rate plan, all on injected millisecond times."""

from store_and_forward.ledger import OFFLINE, ONLINE, UNKNOWN, InFlight, Ledger
from store_and_forward.rate import RatePlan, TokenBucket


def entry(batch_id, now, tags=(1, 2), probe=False, keep=False):
    return InFlight(batch_id, tuple(tags), frozenset({("pi", "1a2b3c4d")}), b"x" * 100, 1, now,
                    probe=probe, keep=keep)


def online_ledger(now=0, **kw):
    ledger = Ledger(confirm_timeout_ms=1000, max_in_flight=3, probe_max_ms=8000, **kw)
    ledger.heard(now)
    return ledger


def test_starts_unknown_and_asks_for_one_probe():
    ledger = Ledger(confirm_timeout_ms=1000, max_in_flight=3)
    assert ledger.link == UNKNOWN and ledger.wants(0) == "probe"
    ledger.record(entry("p1", 0, probe=True), 0)
    assert ledger.wants(10) is None
    assert ledger.confirm("p1", 50).tags == (1, 2)
    assert ledger.link == ONLINE and ledger.wants(60) == "batch"


def test_confirm_returns_the_entry_once():
    ledger = online_ledger()
    ledger.record(entry("b1", 0, tags=(7, 8, 9)), 0)
    assert ledger.row_ids() == {7, 8, 9} and "b1" in ledger
    assert ledger.confirm("b1", 10).tags == (7, 8, 9)
    assert ledger.confirm("b1", 11) is None
    assert len(ledger) == 0 and ledger.row_ids() == set()


def test_an_echo_is_known_by_its_bytes():
    ledger = online_ledger()
    ledger.record(InFlight("b1", (1,), frozenset(), b'{"batch":"b1"}', 1, 0), 0)
    ledger.record(InFlight("b2", (2,), frozenset(), b'{"batch":"b2"}', 1, 0), 0)
    assert ledger.echoed(b'{"batch":"b2"}') == "b2" and ledger.echoed(bytearray(b'{"batch":"b1"}')) == "b1"
    assert ledger.echoed(b'{"batch": "b2"}') is None          # not our bytes: the forwarder parses it


def test_max_in_flight_is_respected():
    ledger = online_ledger()
    for i in range(3):
        assert ledger.wants(0) == "batch"
        ledger.record(entry(f"b{i}", 0, tags=(i,)), 0)
    assert ledger.wants(0) is None
    ledger.confirm("b0", 5)
    assert ledger.wants(5) == "batch"


def test_a_timeout_while_others_confirm_resends_the_same_batch():
    ledger = online_ledger()
    ledger.record(entry("lost", 0), 0)
    ledger.record(entry("fine", 10), 10)
    assert ledger.due(999) == []
    ledger.confirm("fine", 20)                       # the link works (10 ms): "lost" was lost
    due = ledger.due(1000)
    assert [e.batch_id for e in due] == ["lost"]
    ledger.sent_again(due[0], 1000)
    assert due[0].attempts == 2 and due[0].payload == b"x" * 100
    assert ledger.timeout_ms == 2000                 # backed off
    assert ledger.due(2999) == [] and [e.batch_id for e in ledger.due(3000)] == []   # silent since: offline
    assert ledger.link == OFFLINE


def test_a_timeout_with_nothing_heard_means_offline_then_probes_back_off():
    ledger = online_ledger(now=0)
    ledger.record(entry("b1", 100), 100)
    assert ledger.due(1100) == []
    assert ledger.link == OFFLINE
    assert ledger.wants(1100) == "probe"
    ledger.record(entry("p1", 1100, tags=(50,), probe=True), 1100)
    assert ledger.wants(2099) is None and ledger.wants(2100) == "probe"
    ledger.record(entry("p2", 2100, tags=(51,), probe=True), 2100)
    assert ledger.wants(4099) is None and ledger.wants(4100) == "probe"       # doubled
    for i, now in enumerate((4100, 8100, 16100, 24100)):
        ledger.record(entry(f"p{i + 3}", now, tags=(60 + i,), probe=True), now)
    assert ledger.next_deadline(24100) == 32100                                 # capped at probe_max


def test_coming_back_online_gives_every_batch_a_fresh_timeout():
    ledger = online_ledger()
    ledger.record(entry("b1", 0), 0)
    ledger.due(1000)
    assert ledger.link == OFFLINE
    ledger.record(entry("p1", 1000, tags=(9,), probe=True), 1000)
    ledger.confirm("p1", 30_000)
    assert ledger.link == ONLINE and ledger.link_since_ms == 30_000
    assert ledger.due(30_999) == []                     # its spooled copy may still arrive
    ledger.heard(30_500)
    assert [e.batch_id for e in ledger.due(31_000)] == ["b1"]


def test_probes_are_bounded():
    ledger = Ledger(confirm_timeout_ms=10, max_in_flight=2, max_probes=2)
    forgotten = []
    for i in range(4):
        forgotten += ledger.record(entry(f"p{i}", i * 100, tags=(i,), probe=True), i * 100)
    assert [e.batch_id for e in forgotten] == ["p0", "p1"]
    assert ledger.row_ids() == {2, 3}


def test_a_refused_publish_backs_off():
    ledger = online_ledger()
    ledger.failed(100)
    assert ledger.link == OFFLINE and ledger.wants(100) is None and ledger.wants(1100) == "probe"


def test_forget_returns_what_it_dropped():
    ledger = online_ledger()
    ledger.record(entry("b1", 0, tags=(1,)), 0)
    ledger.record(entry("b2", 0, tags=(2,)), 0)
    gone = ledger.forget(lambda e: 2 in e.tags)
    assert [e.batch_id for e in gone] == ["b2"] and ledger.row_ids() == {1}
    assert [e.batch_id for e in ledger.entries()] == ["b1"]


def test_token_bucket_holds_the_rate():
    bucket = TokenBucket(rate=10, burst=10)
    now, taken = 0, 0
    while now <= 10_000:
        if bucket.wait_ms(now) == 0:
            bucket.take(now)
            taken += 1
        now += 1
    assert 100 <= taken <= 111                # 10/s over 10 s plus the initial burst


def test_rate_plan_bytes_allow_a_big_batch_then_make_it_wait():
    plan = RatePlan(publishes_per_s=20, bytes_per_s=100_000, burst_bytes=131_072)
    assert plan.wait_ms(0, 131_072) == 0
    plan.take(0, 131_072)
    wait = plan.wait_ms(0, 131_072)
    assert 1300 <= wait <= 1320               # 131,072 bytes at 100 kB/s
    assert plan.wait_ms(wait, 131_072) == 0


def test_rate_plan_stays_within_quotas_over_a_drain():
    plan = RatePlan(publishes_per_s=20, bytes_per_s=450_560, burst_bytes=131_072)
    sent_bytes, sent, now = 0, 0, 0
    while now < 20_000:
        size = 128_000 if sent % 3 else 9_000
        wait = plan.wait_ms(now, size)
        if wait == 0:
            plan.take(now, size)
            sent_bytes += size
            sent += 1
        else:
            now += wait
    assert sent_bytes <= 450_560 * (20 + 1)          # the rate, plus one second of burst
    assert sent <= 20 * 20 + 20
    assert sent_bytes >= 0.9 * 450_560 * 20     # and uses its budget


def test_a_probe_lost_after_the_link_returned_is_sent_again():
    ledger = Ledger(confirm_timeout_ms=1000, max_in_flight=3)
    ledger.record(entry("p-lost", 0, tags=(1,), probe=True), 0)
    ledger.record(entry("p-ok", 1000, tags=(2,), probe=True), 1000)
    ledger.confirm("p-ok", 1500)
    ledger.heard(1800)
    assert [e.batch_id for e in ledger.due(2500)] == ["p-lost"]


def sized(batch_id, now, nbytes):
    return InFlight(batch_id, (batch_id,), frozenset({("pi", "1a2b3c4d")}), b"x" * nbytes, 1, now)


def test_a_batch_queued_behind_moving_confirmations_is_not_sent_again():
    """A slow link: "b" left with "a" and waits behind it. While confirmations keep coming,
    the queue ahead of "b" is moving: its time-out counts from the last one (TCP's timer
    restart), not from when it left."""
    ledger = online_ledger()
    ledger.record(sized("a", 0, 100), 0)
    ledger.record(sized("b", 0, 100), 0)
    ledger.confirm("a", 900)                         # measured: timeout max(1000, 900 + 4*450)
    assert ledger.timeout_ms == 2700
    assert ledger.due(3000) == []                    # 3,000 ms after it left, 2,100 after "a"
    assert [e.batch_id for e in ledger.due(3600)] == ["b"]


def test_what_is_in_flight_is_bounded_in_bytes_and_opens_with_confirmations():
    ledger = Ledger(confirm_timeout_ms=1000, max_in_flight=8, unit_bytes=1000)
    ledger.heard(0)
    assert ledger.window_bytes == 1000 and ledger.room() == 1000
    ledger.record(sized("a", 0, 900), 0)
    assert ledger.wants(0) == "batch" and ledger.room() == 1000     # at least a unit
    ledger.record(sized("b", 0, 1000), 0)
    assert ledger.wants(0) is None                                  # 1,900 in flight of 1,000
    ledger.confirm("a", 100)
    assert ledger.window_bytes == 1900 and ledger.wants(100) == "batch"
    ledger.confirm("b", 200)
    assert ledger.window_bytes == 2900 and ledger.room() == 2900     # slow start: doubling


def test_a_resend_closes_the_window_and_going_offline_too():
    ledger = Ledger(confirm_timeout_ms=1000, max_in_flight=8, unit_bytes=1000)
    ledger.heard(0)
    ledger.window_bytes = 8000
    ledger.record(sized("lost", 0, 3000), 0)
    ledger.record(sized("fine", 10, 3000), 10)
    ledger.confirm("fine", 20)
    due = ledger.due(1000)
    assert [e.batch_id for e in due] == ["lost"]
    ledger.sent_again(due[0], 1000)
    assert ledger.window_bytes == 1000 and ledger.threshold_bytes == 2000   # half of 3,000, at least 2 units
    ledger.confirm("lost", 1100)
    ledger.confirm("x", 1200)
    assert ledger.window_bytes == 4000                               # slow start up to the threshold
    ledger.record(sized("c", 1300, 1000), 1300)
    ledger.confirm("c", 1400)
    assert ledger.window_bytes == 4250                               # then about a unit per window
    ledger.record(sized("d", 1500, 100), 1500)
    ledger.due(2500)                                                 # nothing heard since: offline
    assert ledger.link == OFFLINE and ledger.window_bytes == 1000
