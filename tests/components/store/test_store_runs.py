"""Runs: 64-bit ids, so two runs of one device never share one; and the store forgets the
watermarks of runs long gone, so its runs table and memory stay bounded, without losing a
reading (fake clock, real SQLite)."""

import re

from backfill_common import contracts
from store_and_forward import store as store_module

from store_harness import THING, Harness, corrected

DAY = 86_400_000
NEW_RUN = "0123456789abcdef"


def run_rows(h):
    return {row[0] for row in h.store.db.execute("SELECT run FROM runs")}


def test_a_run_id_has_64_bits_and_a_32_bit_one_from_an_older_sensor_is_still_accepted():
    from bme680_sensor.runner import Runner

    class NoIpc:
        thing_name = THING
    assert re.fullmatch("[0-9a-f]{16}", Runner(NoIpc(), clock=None).run_id)
    assert contracts.check("reading-corrected", corrected(0, run=NEW_RUN)) == []
    assert contracts.check("reading-corrected", corrected(0, run="1a2b3c4d")) == []
    assert contracts.check("reading-corrected", corrected(0, run="1a2b3c4d00")) != []
    assert contracts.check("ack", {"device": THING, "run": NEW_RUN, "seq": 3}) == []


def test_a_64_bit_run_is_stored_forwarded_and_acknowledged(tmp_path):
    h = Harness(tmp_path / "store.db")
    h.feed(corrected(i, run=NEW_RUN) for i in range(20))
    h.step(100, n=200)
    assert h.port.acked(NEW_RUN) == 19
    assert all((THING, NEW_RUN, i) in h.cloud for i in range(20))
    assert h.store.count == 0


def test_a_run_with_nothing_stored_is_forgotten_after_30_days_unseen_and_survives_a_restart(tmp_path):
    h = Harness(tmp_path / "store.db")
    h.feed(corrected(i, run="aaaaaaaa") for i in range(5))
    h.step(100, n=200)                                  # sent and confirmed: nothing stored
    assert h.store.count == 0 and "aaaaaaaa" in run_rows(h)
    h.clock.advance(29 * DAY)
    assert h.store.prune_runs() == 0
    h.clock.advance(2 * DAY)
    assert h.store.prune_runs() == 1
    assert "aaaaaaaa" not in run_rows(h) and ("pi-garage-01", "aaaaaaaa") not in h.store.runs()
    h.reopen()
    assert ("pi-garage-01", "aaaaaaaa") not in h.store.runs()


def test_a_run_that_still_holds_readings_is_never_forgotten_however_old(tmp_path):
    h = Harness(tmp_path / "store.db", max_age_s=0)     # kept however old
    h.link_up = False
    h.feed(corrected(i, run="bbbbbbbb") for i in range(5))
    h.step(100, n=20)
    h.clock.advance(400 * DAY)
    assert h.store.prune_runs() == 0
    h.link_up = True
    h.step(100, n=300)
    assert all((THING, "bbbbbbbb", i) in h.cloud for i in range(5))


def test_a_reading_of_a_forgotten_run_that_comes_again_is_stored_and_sent_again(tmp_path):
    h = Harness(tmp_path / "store.db")
    h.feed(corrected(i, run="cccccccc") for i in range(3))
    h.step(100, n=200)
    h.clock.advance(31 * DAY)
    assert h.store.prune_runs() == 1
    del h.cloud[(THING, "cccccccc", 2)]
    h.feed([corrected(2, run="cccccccc", held_from=2)])   # a sensor that kept it in its journal
    h.step(100, n=200)
    assert (THING, "cccccccc", 2) in h.cloud
    assert h.port.acked("cccccccc") >= 2


def test_beyond_max_runs_the_runs_unseen_longest_go_first(tmp_path):
    h = Harness(tmp_path / "store.db")
    runs = [f"{i:08x}" for i in range(12)]
    for run in runs:
        h.feed([corrected(0, run=run)])
        h.step(1000, n=30)
    h.link_up = False
    h.feed([corrected(0, run="dddddddd")])             # held: never forgotten
    h.step(1000, n=40)                                 # sent from memory, unconfirmed: committed
    assert h.store.prune_runs(max_runs=5) == 8
    assert run_rows(h) == set(runs[-4:]) | {"dddddddd"}


def test_the_upkeep_prunes_runs(tmp_path):
    h = Harness(tmp_path / "store.db")
    h.feed(corrected(i, run="eeeeeeee") for i in range(3))
    h.step(100, n=200)
    h.clock.advance(31 * DAY)
    h.step(store_module.RUN_KEEP_MS // 1000, n=1)
    h.step(61_000, n=2)
    assert "eeeeeeee" not in run_rows(h)
