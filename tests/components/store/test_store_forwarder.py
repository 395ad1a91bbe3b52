"""The loop's logic over an in-memory port, a fake clock and a real SQLite file: ingest and
acknowledgement, dead letters, confirmation by echo / rule / spooled, resends, outages,
live-first, rate plan, re-timing in flight, shadow reports, shutdown."""

import json

import pytest

from backfill_common.clock import FakeClock
from store_and_forward import packer
from store_and_forward.ledger import OFFLINE, ONLINE
from store_and_forward.store import Store, StoreConfig

from store_harness import RUN, T0, THING, TOPIC, Harness, corrected

CORRECTED = "backfill/readings/corrected"


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.db"


def seqs(h, run=RUN):
    return sorted(seq for (_, r, seq) in h.cloud if r == run)


def test_readings_are_committed_as_a_group_then_acknowledged(db):
    h = Harness(db, subscribe=False)
    h.feed(corrected(i) for i in range(3))
    h.step(100)
    assert h.port.acks == []                           # waiting for the group commit
    h.step(100, n=5)
    assert h.port.acks[-1] == {"device": THING, "run": RUN, "seq": 2, "topic": "backfill/acks"}
    assert h.store.count == 3 and h.port.published == []        # no IoT Core subscription yet: nothing sent


def test_commit_every_n_commits_at_once(db):
    h = Harness(db, subscribe=False, commit_every=10)
    h.feed(corrected(i) for i in range(10))
    assert h.port.acked() == 9


def test_numbers_given_back_as_floats_are_integers_again(db):
    h = Harness(db, subscribe=False)
    h.feed([dict(corrected(4), seq=4.0, t=float(T0), mono=0.0, held_from=4.0)])
    h.step(1000)
    row = h.store.newest()
    assert (row.seq, row.t, row.mono) == (4, T0, 0) and isinstance(row.seq, int)
    assert h.port.acked() == 4                         # held_from 4: nothing below is coming


def test_poison_goes_to_dead_letters_and_never_blocks(db):
    h = Harness(db, subscribe=False, max_message_bytes=2048)
    h.feed([corrected(0), b"\xff not json", dict(corrected(1), temperature=900.0), {"device": THING},
            json.dumps(corrected(2, note="x" * 3000)).encode(), corrected(3)])
    h.step(1000)
    letters = h.store.dead_letters()
    assert [l["reason"].split(":")[0] for l in reversed(letters)] == ["not JSON", "contract", "contract",
                                                                      "too large"]
    assert letters[-1]["raw"] == b"\xff not json"
    assert h.port.acked() == 3                          # 1 and 2 dead-lettered: resolved
    assert h.store.count == 2 and h.store.counters["dead_lettered"] == 4 and h.store.counters["received"] == 6


def test_a_probe_first_then_the_backlog_and_everything_arrives_once(db):
    h = Harness(db)
    h.feed(corrected(i) for i in range(3000))
    h.step(600)
    first = h.deliveries[0]
    assert [r["seq"] for r in packer.decode(first)][0] == 2999                 # the newest first
    assert len(h.port.published[0][1]) + len(TOPIC) <= 5120                    # in one billing unit
    h.step(100, n=50)
    assert seqs(h) == list(range(3000))
    assert h.store.count == 0 and h.fwd.ledger.link == ONLINE
    c = h.store.counters
    assert c["sent"] == 3000 and c["confirmed"] == 3000 and c["resent"] == 0
    assert c["units"] <= 3000 * 25 / 1000 + 2


def test_an_echo_reencoded_on_its_way_still_confirms_its_batch(db):
    """IoT Core gives our bytes back; an echo written again (spaces, another key order) is
    parsed, and its batch id confirms the batch all the same."""
    h = Harness(db)
    h.echo = False
    h.feed(corrected(i) for i in range(50))
    h.step(600, n=3)
    sent = [payload for _, payload in h.port.published]
    assert h.store.count == 50 and len(h.fwd.ledger) == len(sent) > 0
    for payload in sent:
        doc = json.loads(payload)
        h.fwd.on_iot(TOPIC, json.dumps(dict(reversed(list(doc.items())))).encode())
    assert h.store.count == 0 and len(h.fwd.ledger) == 0 and h.store.counters["confirmed"] == 50


def test_every_batch_respects_the_payload_limit_and_the_rate_plan(db):
    h = Harness(db, max_publishes_per_s=5, max_bytes_per_s=50_000)
    h.feed(corrected(i) for i in range(8_000))
    h.step(1000)
    start = len(h.port.published)
    h.step(100, n=100)                                  # ten seconds
    sent = h.port.published[start:]
    assert all(len(p) <= 131072 for _, p in sent)
    assert len(sent) <= 5 * 10 + 5
    assert sum(len(p) + len(TOPIC) for _, p in sent) <= 50_000 * 10 + 131072     # 10 s at the rate + a burst


def test_a_partial_batch_waits_for_max_latency(db):
    h = Harness(db, max_latency_ms=10_000, commit_interval_ms=1000)
    h.feed([corrected(0)])
    h.step(1000, n=12)                                  # the first message (after max_latency); link online
    h.feed(corrected(i) for i in range(1, 6))
    h.step(1000, n=3)
    published = len(h.port.published)
    h.step(1000, n=4)
    assert len(h.port.published) == published           # 7 s after arrival: still waiting
    h.step(1000, n=2)
    assert len(h.port.published) == published + 1 and seqs(h) == list(range(6))


def test_a_lost_batch_is_sent_again_with_the_same_id(db):
    h = Harness(db, confirm_timeout_s=5, forward_from_memory=False)   # a stored batch (from memory: test_store_live.py)
    h.feed([corrected(0)])
    h.step(600, n=2)
    h.echo = False
    h.feed([corrected(1)])
    h.step(600, n=2)
    lost = h.port.published[-1][1]
    h.echo = True
    h.feed([corrected(2)])                          # proof the link works
    h.step(600, n=2)
    h.step(1000, n=5)
    again = [p for _, p in h.port.published if p == lost]
    assert len(again) == 2                          # same bytes, same batch id
    assert h.store.count == 0 and h.store.counters["resent"] == 1


def test_an_outage_probes_sparingly_then_goes_live_first(db):
    h = Harness(db, confirm_timeout_s=2, probe_max_s=8)
    h.feed([corrected(0)])
    h.step(600, n=2)
    h.link_up = False
    for second in range(1, 121):                    # two minutes offline at 1 Hz
        h.feed([corrected(second)])
        h.step(500, n=2)
    assert h.fwd.ledger.link == OFFLINE
    assert len(h.spool) < 25                        # probes, not copies of the backlog
    assert h.store.count >= 100
    h.link_up = True
    h.feed([corrected(121)])
    h.step(500, n=20)
    assert seqs(h) == list(range(122)) and h.store.count == 0
    first_121 = next(i for i, d in enumerate(h.deliveries) if any(r["seq"] == 121 for r in packer.decode(d)))
    backlog = next(i for i, d in enumerate(h.deliveries) if len(d["rows"]) > 10)
    assert first_121 < backlog                      # the newest first ...
    rows = [r["seq"] for r in packer.decode(h.deliveries[backlog])]
    assert rows == sorted(rows) and rows[0] < 10    # ... then the backlog, oldest first


def test_a_nucleus_restart_loses_its_spool_but_not_our_readings(db):
    h = Harness(db, confirm_timeout_s=2, probe_max_s=4)
    h.feed([corrected(0)])
    h.step(600, n=2)
    h.link_up = False
    h.feed(corrected(i) for i in range(1, 50))
    h.step(500, n=20)
    h.restart_nucleus()
    h.link_up = True
    h.step(500, n=40)
    assert seqs(h) == list(range(50)) and h.store.count == 0


def test_confirm_rule_uses_the_republished_batch_id(db):
    h = Harness(db, confirm="rule")
    assert h.fwd.confirm_topic() == f"backfill/ack/{THING}"
    h.echo = False
    h.feed(corrected(i) for i in range(10))
    h.step(600, n=2)
    for topic, payload in h.port.published:
        doc = json.loads(payload)
        h.fwd.on_iot(f"backfill/ack/{THING}", json.dumps({"batch": doc["batch"], "device": doc["device"]}).encode())
    h.fwd.on_iot(TOPIC, h.port.published[0][1])     # an echo means nothing under confirm: rule
    h.step(600, n=3)
    for topic, payload in h.port.published[1:]:
        doc = json.loads(payload)
        h.fwd.on_iot(f"backfill/ack/{THING}", json.dumps({"batch": doc["batch"]}).encode())
    assert h.store.count == 0 and h.store.counters["confirmed"] == 10


def test_confirm_spooled_deletes_when_the_core_takes_it(db):
    h = Harness(db, confirm="spooled")
    h.echo = False
    h.feed(corrected(i) for i in range(10))
    h.step(600, n=2)
    assert h.store.count == 0 and h.store.counters["confirmed"] == 10


def test_a_refused_publish_keeps_the_readings_and_retries(db):
    h = Harness(db, confirm_timeout_s=2, probe_max_s=4)
    h.feed(corrected(i) for i in range(5))
    h.port.refuse = "Publish to topic x failed: Message spool is full. Message could not be added."
    h.step(600, n=3)
    assert h.store.count == 5 and h.store.counters["publish_errors"] >= 1
    h.port.refuse = None
    h.step(1000, n=10)
    assert seqs(h) == list(range(5)) and h.store.count == 0


def test_a_clock_step_retimes_readings_in_flight_and_the_stale_echo_deletes_nothing(db):
    clock = FakeClock(wall_ms=1_000_000_000_000, synced=False)
    h = Harness(db, clock=clock, confirm_timeout_s=3, probe_max_s=3)
    behind = 1_000_000_000_000
    h.feed([corrected(0, t=behind)])
    h.step(600, n=2)
    h.link_up = False
    h.feed(corrected(i, t=behind + i * 1000) for i in range(1, 20))
    h.step(600, n=10)
    stale = list(h.spool)
    step = 6 * 3_600_000
    h.feed([corrected(20, t=behind + 20_000 + step, clock_synced=True)])
    h.step(600, n=2)
    h.link_up = True
    h.step(600, n=30)
    assert seqs(h) == list(range(21)) and h.store.count == 0
    for seq in range(1, 21):                        # still on the device when the clock stepped
        assert h.cloud[(THING, RUN, seq)]["t"] == behind + seq * 1000 + step
    assert h.cloud[(THING, RUN, 5)]["t_orig"] == behind + 5000
    assert stale                                    # old copies reached the cloud too: t_orig marks the fix


def test_an_echo_from_before_a_restart_still_confirms(db):
    h = Harness(db)
    h.feed([corrected(0)])
    h.step(600, n=2)
    h.link_up = False
    h.feed(corrected(i) for i in range(1, 10))
    h.step(600, n=3)
    h.reopen()
    h.link_up = True
    h.drain()                                       # copies spooled before the restart arrive
    h.step(600, n=5)
    assert seqs(h) == list(range(10)) and h.store.count == 0


def test_sigterm_close_commits_and_acknowledges_what_is_held(db):
    h = Harness(db, subscribe=False, commit_interval_ms=60_000, max_latency_ms=120_000)
    h.feed(corrected(i) for i in range(7))
    assert h.port.acks == []
    h.fwd.close()
    assert h.port.acked() == 7 - 1
    again = Store(StoreConfig(db), h.clock)
    assert again.count == 7
    again.close()


def test_a_full_disk_withholds_the_ack_reports_and_resumes(db):
    h = Harness(db, subscribe=False)
    h.feed([corrected(0)])
    h.step(1000)
    h.fill_disk()
    h.feed(corrected(i) for i in range(1, 40))
    h.step(1000, n=2)
    assert h.port.acked() == 0 and h.fwd.disk_full
    assert h.port.reports[-1]["disk_full"] is True
    h.free_disk()
    h.step(1000, n=7)
    assert h.port.acked() == 39 and not h.fwd.disk_full and h.store.count == 40


def test_the_shadow_report_is_small_and_says_what_matters(db):
    h = Harness(db)
    h.feed(corrected(i) for i in range(5))
    h.step(600, n=2)
    report = h.port.reports[-1]
    assert set(report) >= {"link", "backlog", "counters", "latest", "settings", "disk_full", "evicting"}
    assert report["latest"]["seq"] == 4 and report["settings"]["confirm"] == "echo"
    assert set(report["backlog"]) == {"count", "oldest_t", "bytes"}
    assert len(json.dumps({"state": {"reported": {"store": report}}})) < 8192
    reports = len(h.port.reports)
    h.step(1000, n=3)
    assert len(h.port.reports) <= reports + 1        # at most every shadow_interval_s ...
    h.step(1000, n=10)
    assert h.port.reports[-1]["backlog"]["count"] == 0 and h.port.reports[-1]["counters"]["confirmed"] == 5


def test_desired_overrides_apply_live(db):
    h = Harness(db, confirm="spooled")
    h.echo = False
    changed = dict(h.fwd.settings, max_payload_bytes=8192, max_latency_ms=0)
    h.fwd.configure(changed)
    h.feed(corrected(i) for i in range(500))
    h.step(600, n=10)
    assert all(len(p) + len(TOPIC) <= 5120 for _, p in h.port.published)
    assert h.store.count == 0


def test_unsynced_hold_waits_then_forwards(db):
    clock = FakeClock(wall_ms=T0, synced=False)
    h = Harness(db, clock=clock, unsynced_hold_s=30)
    h.feed(corrected(i, clock_synced=False) for i in range(10))
    h.step(1000, n=3)
    assert len(h.deliveries) == 1                    # the probe only
    h.step(1000, n=30)
    assert seqs(h) == list(range(10)) and h.store.count == 0


@pytest.mark.parametrize("confirm, lost", [("spooled", True), ("echo", False)])
def test_the_same_outage_with_delete_on_spooled_loses_readings_and_ours_none(db, confirm, lost):
    h = Harness(db, confirm=confirm, confirm_timeout_s=2, probe_max_s=4)
    h.feed([corrected(0)])
    h.step(600, n=2)
    h.link_up = False
    h.feed(corrected(i) for i in range(1, 100))
    h.step(500, n=10)
    h.restart_nucleus()                              # the memory spooler dies with the nucleus
    h.link_up = True
    h.step(500, n=40)
    missing = set(range(100)) - set(seqs(h))
    assert bool(missing) is lost
    if lost:
        assert h.store.count == 0                    # deleted as soon as it was spooled: gone for good
