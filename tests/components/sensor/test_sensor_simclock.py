"""Simulation only: sim_clock_offset_s sets the sensor's wall clock off the system clock (a boot
without network) and, set back to 0 live, steps it within the same run as NTP would."""

from backfill_common.clock import FakeClock
from bme680_sensor.runner import Runner
from bme680_sensor.simclock import OffsetClock

from test_sensor_runner import CONFIG, MemoryIpc, run_for

BEHIND_S = -3 * 3600


def test_offset_clock_moves_the_wall_clock_only_and_says_unsynchronised():
    base = FakeClock(synced=True)
    clock = OffsetClock(base)
    assert (clock.wall_ms(), clock.mono_ms(), clock.synced()) == (base.wall_ms(), base.mono_ms(), True)
    clock.set_offset_s(BEHIND_S)
    assert clock.wall_ms() == base.wall_ms() + BEHIND_S * 1000
    assert clock.mono_ms() == base.mono_ms() and clock.synced() is False
    clock.set_offset_s(0)
    assert clock.wall_ms() == base.wall_ms() and clock.synced() is True


def test_a_run_that_booted_behind_steps_when_the_offset_goes_back_to_zero():
    ipc, clock = MemoryIpc(dict(CONFIG, sim_clock_offset_s=BEHIND_S)), FakeClock(synced=True)
    runner = Runner(ipc, clock, run="0badcafe")
    runner.start()
    run_for(runner, clock, 2_000)
    ipc.config["sim_clock_offset_s"] = 0
    for callback in ipc.config_callbacks:
        callback()
    run_for(runner, clock, 2_000)
    readings = ipc.raw()
    offsets = [r["t"] - r["mono"] for r in readings]
    assert {r["run"] for r in readings} == {"0badcafe"}
    assert [r["seq"] for r in readings] == list(range(len(readings)))
    assert offsets[0] - offsets[-1] == BEHIND_S * 1000          # one step, forward, of 3 h
    assert readings[0]["clock_synced"] is False and readings[-1]["clock_synced"] is True
    assert ipc.reports[-1]["state"]["reported"]["sampling"]["sim_clock_offset_s"] == 0
