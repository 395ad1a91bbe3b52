"""Ways to strand or divert a reading that a review of the frugal change (measured time-out,
oldest-only resends, a window of bytes in flight, QoS 0 confirmations) found, each
reproduced here (fake clock, real SQLite) and fixed; the first was there before it too."""

from __future__ import annotations

import json
import random

import pytest

from store_and_forward import packer
from store_and_forward.ledger import InFlight, Ledger

from store_harness import RUN, THING, Harness, corrected


class Lossy(Harness):
    """Echoes lost at random (a QoS 0 confirmation, a reconnect) with probability `loss`."""

    loss = 0.0

    def drain(self) -> None:
        spool, self.spool = self.spool, []
        for topic, payload in spool:
            doc = json.loads(payload)
            if "dead_letter" in doc:
                self.dead_letters[doc["dead_letter"]] = doc
            else:
                self.deliveries.append(doc)
                for reading in packer.decode(doc):
                    self.cloud[(reading["device"], reading["run"], reading["seq"])] = reading
            if self.rng.random() >= self.loss:
                self.fwd.on_iot(topic, payload)


def missing(h, upto):
    return [s for s in range(upto) if (THING, RUN, s) not in h.cloud]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_latency_ms", [1000, 10000])
def test_lost_echoes_outages_and_nucleus_restarts_strand_nothing(tmp_path, seed, max_latency_ms):
    """An hour of random trouble, a minute at a time (echoes lost 0-100 %, the link down,
    the nucleus restarted and its spool gone), then a clean link: every reading reaches the
    cloud and the store ends empty. Before, the batches in flight across an outage whose
    copies died with the nucleus were called "silent" after the link came back, the link
    declared down again, a probe confirmed, and round again: 1,089 to 3,280 of 3,600
    readings never left (seeds 1-3)."""
    h = Lossy(tmp_path / "store.db", max_latency_ms=max_latency_ms)
    h.rng = random.Random(seed)
    seq = 0
    for _minute in range(60):
        h.loss = h.rng.choice([0, 0, 0.3, 0.8, 1.0])
        h.link_up = h.rng.random() > 0.3
        if h.rng.random() < 0.1:
            h.restart_nucleus()
        for _ in range(60):
            h.feed([corrected(seq)])
            seq += 1
            h.step(100, 10)
    h.loss, h.link_up = 0.0, True
    for _ in range(1200):
        h.step(1000)
        if not missing(h, seq) and h.store.count == 0:
            break
    assert missing(h, seq) == [] and h.store.count == 0 and len(h.fwd.ledger) == 0


def test_echoes_lost_right_after_an_outage_do_not_stop_the_forwarding(tmp_path):
    """After an outage the window is one unit: the first batches fill it. Their echoes lost,
    nothing else could go and nothing be heard; the batches were never sent again."""
    h = Harness(tmp_path / "store.db", max_latency_ms=10000)
    seq = 0

    def run(seconds):
        nonlocal seq
        for tick in range(int(seconds * 10)):
            if tick % 10 == 0:
                h.feed([corrected(seq)])
                seq += 1
            h.step(100)

    run(60)
    h.link_up = False
    run(600)
    h.restart_nucleus()
    h.link_up = True
    for _ in range(600):
        if h.fwd.ledger.link == "online":
            break
        run(0.1)
    h.echo = False
    run(2)
    h.echo = True
    run(600)
    assert missing(h, seq - 20) == []            # all but the newest, within max_latency_ms
    assert h.store.counters["resent"] > 0


def test_a_reading_larger_than_the_window_goes_as_a_reading(tmp_path):
    """A reading over one billing unit (a 7 KB field, within max_message_bytes) found a
    one-unit window too small and was moved to the dead letters."""
    h = Harness(tmp_path / "store.db")
    h.feed([corrected(s) for s in range(3)])
    h.step(100, 50)
    assert h.fwd.ledger.link == "online" and h.fwd.ledger.window_bytes < 7000
    h.feed([corrected(10 + s, note="x" * 7000) for s in range(3)])
    h.step(100, 200)
    assert sorted(k[2] for k in h.cloud) == [0, 1, 2, 10, 11, 12]
    assert h.store.dead_count == 0 and h.dead_letters == {} and h.store.count == 0


def entry(batch_id, now, nbytes=100):
    return InFlight(batch_id, (batch_id,), frozenset({("pi", RUN)}), b"x" * nbytes, 1, now)


def test_only_a_resend_backs_off_and_closes_the_window():
    """due() returning an entry that the rate plan then holds back changed nothing before the
    resend, yet doubled the time-out at every call."""
    ledger = Ledger(confirm_timeout_ms=1000, max_in_flight=8, unit_bytes=1000)
    ledger.heard(0)
    ledger.window_bytes = 8000
    ledger.record(entry("lost", 0), 0)
    ledger.record(entry("fine", 10), 10)
    ledger.confirm("fine", 20)
    before = ledger.timeout_ms
    for now in (1000, 1100, 1200):
        assert [e.batch_id for e in ledger.due(now)] == ["lost"]
    assert ledger.timeout_ms == before and ledger.window_bytes == 8100
    ledger.sent_again(ledger.due(1300)[0], 1300)
    assert ledger.timeout_ms == 2 * before and ledger.window_bytes == 1000


def test_a_late_first_copy_does_not_make_the_batches_behind_it_look_lost():
    """A resent batch's first copy confirmed late took the resend's place in the order: every
    batch sent between the two looked overtaken and went again at once."""
    ledger = Ledger(confirm_timeout_ms=1000, max_in_flight=8, unit_bytes=1000)
    ledger.heard(0)
    ledger.window_bytes = 8000
    ledger.record(entry("slow", 0), 0)
    ledger.record(entry("fine", 10), 10)
    ledger.record(entry("between", 500), 500)             # on its way, behind "slow"'s first copy
    ledger.confirm("fine", 20)
    ledger.sent_again(ledger.due(1000)[0], 1000)          # "slow" was overtaken: sent again
    ledger.confirm("slow", 1200)                          # its first copy, late
    assert ledger.timeout_ms == 2000
    assert ledger.due(2600) == []                          # "between" is the oldest, not overtaken
    assert [e.batch_id for e in ledger.due(3200)] == ["between"]


def test_a_flood_of_run_ids_is_bounded_and_kept_as_dead_letters(tmp_path, monkeypatch):
    """A flood of 2,000 messages/s, each of a new run, took the store from 40 to 99 MB in 30 s
    (every run keeps a watermark, a clock and a flag in memory) and it stayed there. Beyond
    MAX_RUNS runs with readings on the device, a new run's reading is a dead letter (kept,
    forwarded, not acknowledged); once the readings are sent and the idle runs pruned, new
    runs are taken again."""
    from store_and_forward import store as store_module
    monkeypatch.setattr(store_module, "MAX_RUNS", 20)
    h = Harness(tmp_path / "store.db")
    h.link_up = False
    runs = [f"{i:08x}" for i in range(30)]
    h.feed([corrected(0, run=run) for run in runs])
    h.step(1000, 3)
    assert h.store.run_count() == 20 and len(h.fwd._synced_runs) == 20
    assert h.store.dead_count == 10 and h.store.count == 20
    reasons = [row["reason"] for row in h.store.db.query("SELECT reason FROM dead_letters")]
    assert all(reason.startswith("too many runs: 20 runs") for reason in reasons)
    assert {a["run"] for a in h.port.acks} == set(runs[:20])          # the refused are not acknowledged
    h.link_up = True
    h.step(1000, 200)                                                  # sent, confirmed, pruned
    assert h.store.count == 0 and h.store.run_count() <= 10
    h.feed([corrected(1, run=run) for run in runs[20:]])               # the sensor sends them again
    h.step(1000, 30)
    assert all((THING, run, 1) in h.cloud for run in runs[20:])
