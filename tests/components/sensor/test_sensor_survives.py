"""The heart issue, items 2 and 3 on the sensor: the journal is bounded across runs and
loads in linear time; no one failure (a full disk, an IPC error) ends the loop."""

import errno
import time

from backfill_common.clock import FakeClock
from bme680_sensor.journal import Journal
from bme680_sensor.runner import Runner

from test_sensor_runner import ACKS, CONFIG, MemoryIpc, run_for, settle


class FullDisk(Journal):
    def append(self, reading):
        raise OSError(errno.ENOSPC, "No space left on device")


class FlakyConfigIpc(MemoryIpc):
    fail = True

    def get_configuration(self):
        if self.fail:
            raise RuntimeError("ServiceError: GetConfiguration timed out")
        return super().get_configuration()


def test_a_full_disk_under_the_journal_keeps_sampling_publishing_and_says_so(tmp_path):
    ipc, clock = MemoryIpc(CONFIG), FakeClock()
    runner = Runner(ipc, clock, run="0badcafe", journal=FullDisk(tmp_path / "unacked.jsonl"))
    runner.start()
    run_for(runner, clock, 5_000)
    assert [r["seq"] for r in ipc.raw()] == [0, 1, 2, 3, 4]             # sampled and published
    assert len(runner.unacked) == 5                                      # held in memory
    assert runner.problems.counts["journal append OSError"] == 5
    problems = [r["state"]["reported"]["problems"]["sensor"] for r in ipc.reports if "problems" in r["state"]["reported"]]
    assert problems and problems[0]["journal append OSError"] >= 1


def test_an_ipc_error_reading_the_configuration_is_survived_and_read_again(tmp_path):
    ipc, clock = FlakyConfigIpc(dict(CONFIG, interval_s=0.5)), FakeClock()
    runner = Runner(ipc, clock, run="0badcafe")
    runner.start()                                                       # does not raise
    run_for(runner, clock, 2_000)
    assert runner.settings.effective["interval_s"] == 1.0                # the default meanwhile
    ipc.change_config(interval_s=0.5)                                    # still failing: kept going
    run_for(runner, clock, 2_000)
    assert len(ipc.raw()) >= 3
    ipc.fail = False                                                     # no change announced: read again anyway
    run_for(runner, clock, 6_000)
    assert runner.settings.effective["interval_s"] == 0.5
    assert runner.problems.counts["configuration read RuntimeError"] >= 2


def test_the_journal_never_holds_much_more_than_max_unacked_across_runs(tmp_path):
    path = tmp_path / "unacked.jsonl"
    config = dict(CONFIG, max_unacked=100, interval_s=0.1)
    for run in ("0000000a", "0000000b", "0000000c"):                     # the store never answers
        ipc, clock = MemoryIpc(config), FakeClock()
        runner = Runner(ipc, clock, run=run, journal=Journal(path))
        runner.start()
        run_for(runner, clock, 200_000)                                  # 2,000 readings each
        lines = len(path.read_text().splitlines())
        assert lines <= 100 + 200, f"{lines} lines in the journal"
        held = len(runner.unacked) + sum(len(h) for h in runner.earlier.values())
        assert held <= 100
    assert runner.given_up >= 1_900                                      # counted, not silent


def test_a_days_journal_loads_in_linear_time(tmp_path):
    path = tmp_path / "unacked.jsonl"
    line = ('{"device":"gw-1","run":"0badcafe","seq":%d,"t":1764338400000,"mono":%d,"clock_synced":true,'
            '"status":"ok","temperature":21.5,"humidity":45.0,"pressure":1013.25,"gas_resistance":50000,'
            '"heat_stable":true,"cpu_temperature":48.3}\n')
    path.write_text("".join(line % (i, i * 1000) for i in range(86_400)))
    started = time.perf_counter()
    Journal(path.with_name("copy.jsonl")).rewrite(Journal(path).load())   # the linear work itself, a baseline
    baseline = time.perf_counter() - started
    ipc, clock = MemoryIpc(dict(CONFIG, max_unacked=3600)), FakeClock()
    runner = Runner(ipc, clock, run="5ca1ab1e", journal=Journal(path))
    started = time.perf_counter()
    runner.start()
    elapsed = time.perf_counter() - started
    assert len(runner.earlier["0badcafe"]) == 3600 and runner.given_up == 86_400 - 3600
    assert len(path.read_text().splitlines()) == 3600
    # quadratic (a copy of the holder per line) took 14 s here, against a baseline of about 0.3 s
    assert elapsed < 10 * baseline + 0.5, f"start took {elapsed:.2f} s against a baseline of {baseline:.2f} s"


def test_a_torn_last_line_does_not_take_the_next_reading_with_it(tmp_path):
    """A crash cut the last line, and the compaction at start failed (a full disk): the
    next append was glued onto the fragment and lost with it at the next load."""
    path = tmp_path / "unacked.jsonl"
    journal = Journal(path)
    journal.append({"run": "0badcafe", "seq": 1})
    journal.close()
    with open(path, "a") as f:
        f.write('{"run": "0badcafe", "se')                       # torn by a SIGKILL
    again = Journal(path)
    again.append({"run": "0badcafe", "seq": 2})
    again.close()
    assert [r["seq"] for r in Journal(path).load()] == [1, 2]
