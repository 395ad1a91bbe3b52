"""planner.py: what to send next and when, with no SQLite (rows are plain objects)."""

import json
from dataclasses import dataclass

from store_and_forward import packer
from store_and_forward.planner import Planner

RUN = "1a2b3c4d"


@dataclass
class FakeRow:
    """A stored row as the store gives it: its columns and its JSON body."""
    id: int
    device: str = "pi-1"
    t_orig = None
    body = '{"temperature":21.5,"clock_synced":true,"status":"ok"}'

    @property
    def key(self):
        return (self.device, RUN)

    @property
    def run(self):
        return RUN

    @property
    def seq(self):
        return self.id

    @property
    def t(self):
        return 1_764_338_400_000 + self.id * 1000

    @property
    def mono(self):
        return self.id * 1000

    def reading(self):
        return {"run": RUN, "seq": self.seq, "t": self.t, "mono": self.mono, **json.loads(self.body)}


CAPACITY = packer.capacity(131_072, "dt/backfill/pi-1/readings")


def rows(ids):
    return [FakeRow(i) for i in ids]


def planner(now=0, **kw):
    return Planner(max_latency_ms=kw.get("latency", 10_000), commit_wait_ms=kw.get("commit_wait", 1_000), now=now)


def test_a_partial_batch_that_may_wait_leaves_the_cursor_where_it_was():
    plan = planner()
    plan.committed(arrived_ms=0)
    stored = rows(range(1, 501))
    assert plan.pack("batch", stored[-1], stored, CAPACITY, set(), None, now=100) is None   # partial, not due
    assert plan.cursor == 0 and plan.waiting_since == 0
    prepared = plan.pack("batch", stored[-1], stored, CAPACITY, set(), None, now=9_000)    # its deadline
    assert prepared is not None and sorted(prepared.batch.tags) == list(range(1, 501))
    plan.sent(prepared)
    assert plan.cursor == 501 and plan.waiting_since is None


def test_the_row_size_is_measured_from_what_was_packed_and_no_scan_repeats_before_a_commit():
    plan = planner()
    plan.committed(arrived_ms=0)
    assert plan.worth_packing(100, unsent_rows=2000, capacity=CAPACITY)     # 100 B a row guessed: maybe full
    stored = rows(range(1, 2001))
    assert plan.pack("batch", stored[-1], stored, CAPACITY, set(), None, now=100) is None
    assert plan.row_bytes < 60                                               # measured
    assert not plan.worth_packing(200, unsent_rows=2000, capacity=CAPACITY)
    plan.committed(arrived_ms=300)
    assert plan.worth_packing(400, unsent_rows=2000 * 4, capacity=CAPACITY)
    assert plan.worth_packing(9_000, unsent_rows=1, capacity=CAPACITY)       # the deadline, whatever the size


def test_a_full_batch_goes_at_once_and_the_rest_waits_its_turn():
    plan = planner()
    plan.committed(arrived_ms=0)
    stored = rows(range(1, 30_001))
    first = plan.pack("batch", stored[-1], stored, CAPACITY, set(), None, now=10)
    assert first is not None and not first.drained
    assert max(first.batch.tags) == 30_000                                   # live first
    plan.sent(first)
    rest = [r for r in stored if r.id >= plan.cursor]
    assert plan.cursor == max(t for t in first.batch.tags if t != 30_000) + 1
    second = plan.pack("batch", stored[-1], rest, CAPACITY, set(first.batch.tags), None, now=20)
    assert second is not None and not set(second.batch.tags) & set(first.batch.tags)


def test_rows_in_flight_are_stepped_over_and_a_rewind_makes_the_backlog_due():
    plan = planner()
    stored = rows(range(1, 11))
    assert plan.pack("batch", stored[-1], stored, CAPACITY, {r.id for r in stored}, None, now=10) is None
    assert plan.cursor == 11 and plan.waiting_since is None                  # nothing unsent
    plan.rewind(now=50, stored=True)                                          # that batch was forgotten
    assert plan.cursor == 0 and plan.latency_due(50)


def test_a_prepared_batch_of_an_older_generation_is_packed_again():
    plan = planner()
    plan.committed(arrived_ms=0)
    stored = rows(range(1, 5001))
    prepared = plan.pack("batch", stored[-1], stored, CAPACITY, set(), None, now=10)
    plan.keep(prepared)
    plan.changed()
    assert plan.take("batch") is None and plan.cursor == 0


def test_held_rows_stop_the_cursor_and_other_devices_keep_the_backlog_waiting():
    plan = planner()
    plan.committed(arrived_ms=0)
    stored = [FakeRow(1), FakeRow(2, "other"), FakeRow(3)]
    prepared = plan.pack("batch", None, stored, CAPACITY, set(), None, now=9_500)
    assert prepared.batch.tags == (1, 3) and not prepared.drained and prepared.cursor == 2
    plan.sent(prepared)
    assert plan.waiting_since == 0                                            # row 2 still waits
    held = plan.pack("batch", None, [FakeRow(2, "other")], CAPACITY, set(), lambda row: True, now=9_600)
    assert held is None and plan.cursor == 2
