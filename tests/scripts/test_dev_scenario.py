"""The main job's scenarios (issue 13, item 3), pure parts: the planner says which faults
when (seeded kills replay), the runner carries a plan out and ends once drained, and the
report counts from what the cloud recorder holds (real batches in a real recorder database)
with a picture written by matplotlib."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from build_testkit import load_script
from conftest import wait_for
from store_and_forward import packer

devscenario = load_script("devscenario")
devreport = load_script("devreport")
Arrival = devreport.Arrival


def test_an_outage_is_link_down_then_up_with_a_core_restart_halfway_if_asked():
    assert [(s.at, s.action) for s in devscenario.plan("outage", offline=60, warmup=15)] == [
        (15, "link down"), (75, "link up")]
    assert [(s.at, s.action) for s in devscenario.plan("outage", offline=60, warmup=15, restart_core=True)] == [
        (15, "link down"), (45, "core restart"), (75, "link up")]


def test_chaos_is_a_seeded_fault_every_few_seconds_that_leaves_the_link_as_it_found_it():
    steps = devscenario.plan("chaos", minutes=30, seed=11, warmup=15)
    assert steps == devscenario.plan("chaos", minutes=30, seed=11, warmup=15) != devscenario.plan("chaos", minutes=30)
    times = [s.at for s in steps]
    assert times == sorted(times) and times[0] == 15 and times[-1] <= 15 + 30 * 60
    gaps = [b - a for a, b in zip(times, times[1:]) if b != a]
    assert min(gaps) >= devscenario.CHAOS_GAP_S[0] - 1e-9 and max(gaps) <= devscenario.CHAOS_GAP_S[1] + 1e-9
    actions = [s.action for s in steps]
    for fault in ("core restart", "core restart --kill", "broker restart", "link down", "link limit"):
        assert fault in actions, fault
    assert {a.split(" ", 1)[1] for a in actions if a.startswith("kill ")} == set(devscenario.COMPONENTS)
    link = "up"                                 # down/limited only from up, and back before the end
    for action in actions:
        if action in ("link down", "link limit"):
            assert link == "up", action
            link = action
        elif action in ("link up", "link clear"):
            assert link == ("link down" if action == "link up" else "link limit"), action
            link = "up"
    assert link == "up"


def test_flap_slow_link_and_seeded_kills():
    flap = devscenario.plan("flap", cycles=2, warmup=10)
    assert [(s.at, s.action) for s in flap] == [(10, "link down"), (18, "link up"), (30, "link down"), (38, "link up")]
    assert [s.action for s in devscenario.plan("slow-link", limited=30)] == ["link limit", "link clear"]
    kills = devscenario.plan("kill", kills=5, seed=7, warmup=10)
    assert kills == devscenario.plan("kill", kills=5, seed=7, warmup=10) != devscenario.plan("kill", kills=5, seed=8)
    assert [s.at for s in kills] == sorted(s.at for s in kills) and all(10 <= s.at <= 110 for s in kills)
    assert {s.action.split(" ", 1)[1] for s in kills} <= set(devscenario.COMPONENTS)
    assert devscenario.fault_end(flap) == 38
    with pytest.raises(ValueError, match="no scenario 'storm'"):
        devscenario.plan("storm")


def test_the_runner_does_each_step_in_order_then_waits_for_the_drain_then_finishes():
    done, finished = [], threading.Event()
    drained = threading.Event()
    steps = [devscenario.Step(0.0, "link down", "down"), devscenario.Step(0.05, "link up", "up")]
    runner = devscenario.Scenario(steps, do=lambda step: done.append(step.action), drained=drained.is_set,
                                  finish=finished.set, drain_timeout=30, say=lambda text: None)
    runner.start()
    wait_for(lambda: runner.fault_end_wall is not None, 10, message="the faults carried out")
    assert done == ["link down", "link up"] and not finished.is_set()      # still waiting for the drain
    drained.set()
    assert finished.wait(10) and runner.drained_in_time is True
    assert [label for _, label in runner.events] == ["down", "up", "drained"]


def test_a_drain_that_never_comes_ends_at_its_timeout_and_says_so():
    finished = threading.Event()
    runner = devscenario.Scenario([devscenario.Step(0.0, "link up", "up")], do=lambda step: None,
                                  drained=lambda: False, finish=finished.set, drain_timeout=0.3, say=lambda text: None)
    runner.start()
    assert finished.wait(10) and runner.drained_in_time is False


def test_produced_counts_the_holes_in_a_runs_sequence():
    assert devreport.produced_keys({("a", 0), ("a", 3), ("b", 5)}) == {("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 5)}


def test_the_report_counts_distinct_readings_copies_holes_drain_and_latency():
    t0 = 1_800_000_000.0
    arrivals = [Arrival(("r", s), t0 + s, t0 + s + 2) for s in range(0, 10)]        # online: 2 s each
    arrivals += [Arrival(("r", s), t0 + s, t0 + 40) for s in range(10, 30) if s != 17]  # held back, then sent
    arrivals += [Arrival(("r", 12), t0 + 12, t0 + 41)]                              # a resend
    seen = {("r", s): t0 + s for s in range(0, 31)}                                  # 30 never arrived
    report = devreport.summarize(arrivals, seen, fault_end=t0 + 35, evicted=0)
    assert (report.produced, report.delivered, report.lost, report.duplicates) == (31, 29, 2, 1)
    assert report.lost_keys == [("r", 17), ("r", 30)]
    assert report.drain_s == pytest.approx(5.0)                                     # 40 - 35
    assert report.latency_p50_s == pytest.approx(15.0) and report.latency_max_s == pytest.approx(30.0)
    windowed = devreport.summarize(arrivals, seen, fault_end=t0 + 35, window_end=t0 + 29)
    assert (windowed.produced, windowed.lost) == (30, 1)                            # seq 30 is after the window
    lines = devreport.render(report, "outage")
    assert lines[0] == "report (outage), from the cloud recorder:"
    assert any(line.split()[:2] == ["lost", "2"] for line in lines)
    assert devreport.drained(arrivals, seen, t0 + 16) is True and devreport.drained(arrivals, seen, t0 + 18) is False


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (devreport.percentile(values, 50), devreport.percentile(values, 99)) == (50.0, 99.0)
    assert devreport.percentile([], 50) is None and devreport.percentile([3.0], 99) == 3.0


def recorder_db(path: Path, batches: list[tuple[bytes, float]]) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB, qos INTEGER, "
                     "retain INTEGER, received_at REAL NOT NULL, received_ns INTEGER NOT NULL)")
        for payload, at in batches:
            conn.execute("INSERT INTO messages (topic, payload, qos, retain, received_at, received_ns) "
                         "VALUES ('dt/backfill/pi/readings', ?, 1, 0, ?, ?)", (payload, at, int(at * 1e9)))
        conn.execute("INSERT INTO messages (topic, payload, qos, retain, received_at, received_ns) "
                     "VALUES ('dt/backfill/pi/readings', 'not a batch', 1, 0, 0, 0)")
    return path


def test_arrivals_are_read_from_the_recorders_batches_and_pictured(tmp_path):
    t0 = 1_800_000_000_000
    readings = [{"run": "r1", "seq": s, "t": t0 + 1000 * s, "mono": 1000 * s, "status": "ok", "temperature": 20.0,
                 "temperature_raw": 25.0, "humidity": 40.0, "pressure": 1000.0, "cpu_temperature": 45.0}
                for s in range(6)]
    batches = packer.pack("pi", readings)
    db = recorder_db(tmp_path / "received.db", [(b.payload, t0 / 1000 + 9) for b in batches] +
                     [(batches[0].payload, t0 / 1000 + 12)])
    arrivals = devreport.read_arrivals(db, since=t0 / 1000 + 2)
    assert sorted({a.key for a in arrivals}) == [("r1", s) for s in range(2, 6)]
    assert len(arrivals) == 8 and {a.arrived for a in arrivals} == {t0 / 1000 + 9, t0 / 1000 + 12}
    picture = devreport.plot(arrivals, [(t0 / 1000 + 3, "link down")], tmp_path / "report.png", "a test")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000


def test_events_at_the_same_moment_share_one_line_in_the_picture():
    assert devreport.grouped([(10.0, "b"), (0.0, "a"), (11.0, "c"), (20.0, "d")]) == [
        (0.0, "a"), (10.0, "b; c"), (20.0, "d")]


def test_a_batch_with_a_retimed_reading_is_read_at_each_readings_original_time(tmp_path):
    t0 = 1_800_000_000_000
    readings = [{"run": "r1", "seq": s, "t": t0 + 1000 * s, "mono": 1000 * s, "status": "ok", "temperature": 20.0,
                 "temperature_raw": 25.0, "humidity": 40.0, "pressure": 1000.0, "cpu_temperature": 45.0}
                for s in range(4)]
    readings[1]["t_orig"] = readings[1]["t"] - 600_000           # re-timed: sampled 10 min behind
    db = recorder_db(tmp_path / "received.db", [(b.payload, t0 / 1000 + 9) for b in packer.pack("pi", readings)])
    sampled = {a.key: a.sampled for a in devreport.read_arrivals(db)}   # the other rows' t_orig is null
    assert sampled == {("r1", 0): t0 / 1000, ("r1", 1): t0 / 1000 + 1 - 600, ("r1", 2): t0 / 1000 + 2,
                       ("r1", 3): t0 / 1000 + 3}


def test_the_soak_adds_clock_steps_and_a_full_disk_each_undone_and_one_of_a_kind_at_a_time():
    steps = devscenario.plan("soak", minutes=30, seed=5, warmup=15)
    assert steps == devscenario.plan("soak", minutes=30, seed=5, warmup=15) != devscenario.plan("soak", minutes=30)
    actions = [s.action for s in steps]
    for fault in ("core restart", "core restart --kill", "broker restart", "link down", "link limit", "disk fill"):
        assert fault in actions, fault
    assert {a.split(" ", 1)[1] for a in actions if a.startswith("kill ")} == set(devscenario.COMPONENTS)
    behind = [-float(a.rsplit(" ", 1)[1]) for a in actions if a.startswith("clock step -")]
    assert behind and all(devscenario.CLOCK_BEHIND_S[0] <= b <= devscenario.CLOCK_BEHIND_S[1] for b in behind)
    state = {"link": None, "clock": None, "disk": None}     # each held fault is undone before the next
    for action in actions:
        kind = action.split(" ")[0]
        if action in ("link down", "link limit", "disk fill") or action.startswith("clock step -"):
            assert state[kind] is None, action
            state[kind] = action
        elif action in ("link up", "link clear", "disk free", "clock step 0"):
            assert state[kind] is not None, action
            state[kind] = None
    assert state == {"link": None, "clock": None, "disk": None}
    # the chaos scenario has none of them (it needs no tmpfs and no deployment), and its plans are
    # the ones it had before the soak's faults were added
    chaos = [s.action for s in devscenario.plan("chaos", minutes=30, seed=5)]
    assert not [a for a in chaos if a.startswith(("clock", "disk"))]
