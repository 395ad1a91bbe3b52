"""Dead letters are bounded without crowding out readings (the heart issue, items 6 and 10)."""

import json

from store_harness import Harness, corrected


def poison(i):
    return json.dumps(dict(corrected(i), temperature=900.0, note="p" * 3800)).encode()


def test_dead_letters_at_the_smallest_max_bytes_leave_room_for_the_readings(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False, max_bytes=1_048_576, max_message_bytes=16384)
    for i in range(0, 600, 2):                               # as many dead letters as readings, 4 KiB each
        h.feed([poison(i), corrected(i + 1)])
    h.step(1000, n=3)
    assert h.store.count >= 250, f"only {h.store.count} of 300 readings kept"
    assert h.store.counters["dead_evicted"] > 0
    assert h.store.used_bytes() <= 1_048_576


def test_dead_letters_waiting_while_the_disk_is_full_are_bounded(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False, max_message_bytes=16384)
    h.feed([corrected(0)])
    h.step(1000)
    h.fill_disk()
    h.feed(poison(i) for i in range(1, 5000))
    h.step(1000, n=2)
    assert h.fwd.disk_full and len(h.fwd._dead) <= 1000
    assert h.store.counters["dead_dropped"] >= 3999
    h.free_disk()
    h.step(1000, n=7)
    assert not h.fwd.disk_full and h.fwd._dead == []


def test_every_dead_letter_reaches_the_cloud_before_it_is_deleted(tmp_path):
    """The heart issue, item 6: what was acknowledged always reaches the cloud in some form."""
    import base64
    h = Harness(tmp_path / "store.db", max_message_bytes=16384)
    h.link_up = False
    h.feed([b"\xff not json", poison(1), corrected(2), dict(corrected(3), temperature=float("nan"))])
    h.step(1000, n=5)
    assert len(h.store.dead_letters()) == 3 and h.dead_letters == {}          # offline: kept
    h.link_up = True
    h.step(100, n=600)
    assert h.store.dead_letters() == [] and h.store.counters["dead_forwarded"] == 3
    reasons = sorted(d["reason"].split(":")[0] for d in h.dead_letters.values())
    assert reasons == ["contract", "contract", "not JSON"]
    raws = {base64.b64decode(d["raw"]) for d in h.dead_letters.values()}
    assert b"\xff not json" in raws
    assert {d["identity"]["seq"] for d in h.dead_letters.values() if d["identity"]} >= {1}


def test_a_dead_letter_whose_echo_is_lost_is_sent_again_and_kept_meanwhile(tmp_path):
    h = Harness(tmp_path / "store.db", max_message_bytes=16384)
    h.feed([corrected(0)])
    h.step(100, n=50)                                    # online
    h.echo = False
    h.feed([poison(1)])
    h.step(100, n=50)
    assert len(h.dead_letters) == 1 and len(h.store.dead_letters()) == 1      # sent, not yet confirmed
    h.echo = True
    h.step(1000, n=40)                                   # the confirmation time-out: sent again
    assert h.store.dead_letters() == [] and h.store.counters["dead_forwarded"] == 1
