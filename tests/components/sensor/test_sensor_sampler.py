"""sampler.py: the schedule on a fake monotonic clock, backoff, and readings from the real
driver on the simulated chip (ok and every fault), checked against the reading-raw contract."""

import errno
import random

import pytest

from backfill_common import contracts
from backfill_common.clock import FakeClock
from bme680_sensor import device
from bme680_sensor.sampler import (Backoff, InitFailed, NoNewData, Sampler, Schedule, Values,
                                   error_code)

RUN = "0badcafe"


# -- schedule ------------------------------------------------------------------------------
def test_no_drift_over_many_late_wakeups():
    rnd = random.Random(7)
    schedule = Schedule(start_ms=5_000, interval_ms=1_000)
    now = 5_000
    for k in range(20_000):
        now = schedule.due_ms + rnd.randrange(0, 400)       # every wake-up a little late
        assert schedule.take(now) == 5_000 + k * 1_000
    assert schedule.due_ms == 5_000 + 20_000 * 1_000
    assert schedule.skipped == 0


def test_nothing_is_due_before_the_slot():
    schedule = Schedule(0, 1_000)
    assert schedule.take(0) == 0
    assert schedule.take(999) is None
    assert schedule.take(1_000) == 1_000


def test_late_slots_are_skipped_not_burst():
    schedule = Schedule(0, 1_000)
    schedule.take(0)
    assert schedule.take(4_500) == 4_000                     # one sample for the latest slot
    assert schedule.skipped == 3                             # slots 1, 2 and 3 s never sampled
    assert schedule.take(4_600) is None
    assert schedule.due_ms == 5_000                          # back on the grid


def test_a_new_interval_applies_from_the_next_slot():
    schedule = Schedule(0, 1_000)
    schedule.take(0)
    schedule.take(1_000)
    schedule.set_interval(250, now_ms=1_100)
    assert schedule.due_ms == 1_250
    assert [schedule.take(t) for t in (1_250, 1_500, 1_750)] == [1_250, 1_500, 1_750]
    schedule.set_interval(5_000, now_ms=1_800)
    assert schedule.due_ms == 6_750
    schedule.set_interval(100, now_ms=2_000)           # 1_850 is past: the next slot is now
    assert schedule.due_ms == 2_000
    assert [schedule.take(t) for t in (2_000, 2_100)] == [2_000, 2_100]
    assert schedule.skipped == 0


def test_interval_set_before_the_first_slot_keeps_the_start():
    schedule = Schedule(10_000, 1_000)
    schedule.set_interval(3_000, now_ms=9_000)
    assert schedule.due_ms == 10_000
    schedule.take(10_000)
    assert schedule.due_ms == 13_000


def test_backoff_doubles_to_a_cap_and_resets():
    backoff = Backoff(first_ms=1_000, max_ms=60_000)
    assert [backoff.next_ms() for _ in range(8)] == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    backoff.reset()
    assert backoff.next_ms() == 1_000


# -- error codes ---------------------------------------------------------------------------
@pytest.mark.parametrize("error, during_init, code", [
    (RuntimeError("Unable to identify BME680 at 0x76 (IOError)"), True, "chip_absent"),
    (OSError(errno.EREMOTEIO, "Remote I/O error"), False, "chip_absent"),
    (RuntimeError("BME680 Not Found. Invalid CHIP ID: 0x60"), True, "wrong_chip_id"),
    (OSError(errno.EIO, "Input/output error"), False, "io_error"),
    (OSError(errno.EIO, "Input/output error"), True, "io_error"),
    (NoNewData("never"), False, "no_new_data"),
    (InitFailed("cannot open /dev/i2c-1"), True, "init_failed"),
    (TypeError("a driver bug"), True, "init_failed"),
    (TypeError("a driver bug"), False, "read_failed"),
])
def test_error_codes(error, during_init, code):
    assert error_code(error, during_init) == code


# -- readings from the real driver on the simulated chip ------------------------------------
def simulated(scenario="steady", **settings):
    clock = FakeClock(synced=False)
    opener = device.opener(dict({"bus": "simulated", "i2c_address": 118, "scenario": scenario}, **settings),
                           clock.wall_ms)
    sampler = Sampler(clock, opener, cpu=lambda: 47.5, device="gw-1", run=RUN, interval_s=1.0)
    return clock, opener, sampler


def run_slots(clock, sampler, count):
    readings = []
    for _ in range(count):
        reading = sampler.tick()
        assert reading is not None
        assert contracts.check("reading-raw", reading) == []
        readings.append(reading)
        assert sampler.tick() is None
        clock.advance(1_000)
    return readings


def test_ok_readings():
    clock, _, sampler = simulated(sim_temperature=21.25, sim_humidity=55.5, sim_pressure=990.5, sim_gas=80_000.0)
    start_wall = clock.wall_ms()
    readings = run_slots(clock, sampler, 3)
    first = readings[0]
    assert first["device"] == "gw-1" and first["run"] == RUN and first["status"] == "ok"
    assert [r["seq"] for r in readings] == [0, 1, 2]
    assert [r["mono"] for r in readings] == [0, 1_000, 2_000]
    assert [r["t"] for r in readings] == [start_wall, start_wall + 1_000, start_wall + 2_000]
    assert first["clock_synced"] is False
    assert first["temperature"] == pytest.approx(21.25, abs=0.01)
    assert first["humidity"] == pytest.approx(55.5, abs=0.01)
    assert first["pressure"] == pytest.approx(990.5, abs=0.045)
    assert first["gas_resistance"] == pytest.approx(80_000.0, rel=0.001)
    assert first["heat_stable"] is True and first["cpu_temperature"] == 47.5


def test_wall_clock_step_does_not_move_the_schedule():
    clock, _, sampler = simulated()
    run_slots(clock, sampler, 2)
    clock.step(-3_600_000)                                   # NTP steps the wall clock back an hour
    reading = sampler.tick()
    assert reading["mono"] == 2_000 and reading["seq"] == 2


@pytest.mark.parametrize("scenario, status", [
    ("chip_absent", "chip_absent"),
    ("wrong_chip_id", "wrong_chip_id"),
    ("no_new_data", "no_new_data"),
])
def test_fault_scenarios_give_error_readings(scenario, status):
    clock, _, sampler = simulated(scenario)
    readings = run_slots(clock, sampler, 3)
    assert [r["status"] for r in readings] == [status] * 3
    assert [r["seq"] for r in readings] == [0, 1, 2]
    for reading in readings:
        assert [reading[k] for k in ("temperature", "humidity", "pressure", "gas_resistance", "heat_stable")] == [None] * 5
        assert reading["cpu_temperature"] == 47.5


def test_heater_unstable_gives_ok_readings_without_gas():
    clock, _, sampler = simulated("heater_unstable")
    reading = run_slots(clock, sampler, 1)[0]
    assert reading["status"] == "ok"
    assert reading["heat_stable"] is False and reading["gas_resistance"] is None
    assert reading["temperature"] == pytest.approx(23.5, abs=0.01)


def test_io_errors_after_n_reads():
    clock, _, sampler = simulated("io_errors", io_errors_after=3)
    readings = run_slots(clock, sampler, 4)
    # the driver's own first measurement at init is one of the three
    assert [r["status"] for r in readings] == ["ok", "ok", "io_error", "chip_absent"]


def test_bad_csv_gives_init_failed(tmp_path):
    clock, _, sampler = simulated("csv", csv_path=str(tmp_path / "missing.csv"))
    assert run_slots(clock, sampler, 1)[0]["status"] == "init_failed"
    assert "cannot read csv_path" in sampler.last_error


class CountingOpener:
    """Counts attempts to open the simulated chip (the chip and the driver stay real)."""

    def __init__(self, inner):
        self.inner, self.attempts = inner, 0

    def __call__(self):
        self.attempts += 1
        return self.inner()


def test_reinitialisation_backs_off_at_slots():
    clock, opener, sampler = simulated("chip_absent")
    counting = CountingOpener(opener)
    sampler.open_sensor = counting
    attempted_at = []
    for slot in range(130):
        before = counting.attempts
        assert sampler.tick()["status"] == "chip_absent"
        if counting.attempts > before:
            attempted_at.append(slot)
        clock.advance(1_000)
    assert attempted_at == [0, 1, 3, 7, 15, 31, 63, 123]


def test_recovers_when_the_fault_clears_and_backoff_resets():
    clock, opener, sampler = simulated("chip_absent")
    assert [r["status"] for r in run_slots(clock, sampler, 4)] == ["chip_absent"] * 4   # attempts at 0, 1, 3
    opener.bus.fault = None
    readings = run_slots(clock, sampler, 4)                  # slots 4..6 wait; the attempt at 7 succeeds
    assert [r["status"] for r in readings] == ["chip_absent"] * 3 + ["ok"]
    opener.bus.fault = "chip_absent"                         # fails again: the backoff starts at 1 s
    counting = CountingOpener(opener)
    sampler.open_sensor = counting
    statuses = [r["status"] for r in run_slots(clock, sampler, 3)]
    assert statuses == ["chip_absent"] * 3 and counting.attempts == 1   # read fails; re-open at +1 s fails


class Flaky:
    """A sensor whose read raises what it is given (a collaborator, not the thing tested)."""

    def __init__(self, error):
        self.error, self.closed = error, False

    def read(self):
        if self.error:
            raise self.error
        return Values(20.0, 50.0, 1000.0, None, False)

    def close(self):
        self.closed = True


def test_nothing_escapes_the_loop():
    clock = FakeClock()
    sensors = [Flaky(ValueError("garbage from the bus")), Flaky(None)]

    def open_sensor():
        if not sensors:
            raise KeyError("no more sensors")
        return sensors.pop(0)

    sampler = Sampler(clock, open_sensor, cpu=lambda: 1 / 0, device="gw-1", run=RUN, interval_s=0.5)
    statuses = []
    for _ in range(6):
        reading = sampler.tick()
        if reading:
            statuses.append(reading["status"])
            assert reading["cpu_temperature"] is None
        clock.advance(500)
    assert statuses == ["read_failed", "read_failed", "ok", "ok", "ok", "ok"]


def test_reopen_drops_the_sensor_and_opens_at_the_next_slot():
    clock, opener, sampler = simulated()
    run_slots(clock, sampler, 1)
    counting = CountingOpener(opener)
    sampler.reopen(counting)
    run_slots(clock, sampler, 2)
    assert counting.attempts == 1


def test_t_and_mono_are_read_at_the_same_instant_even_when_the_bus_hangs():
    """The heart issue, item 8: a 1 s I2C time-out between reading mono and t looked like a
    wall-clock step to the store, which then re-timed the whole run."""
    clock = FakeClock()

    reads = []

    class HangingSensor:
        def read(self):
            reads.append(1)
            if len(reads) == 3:
                clock.advance(1_000)            # the bcm2835 driver's time-out, once
            return Values(21.0, 45.0, 1013.0, 50000.0, True)

        def close(self):
            pass

    sampler = Sampler(clock, HangingSensor, lambda: 48.0, device="gw-1", run=RUN,
                      interval_s=1.0)
    offsets = set()
    for _ in range(5):
        reading = sampler.sample()
        offsets.add(reading["t"] - reading["mono"])
    assert len(offsets) == 1, f"the offset t - mono moved: {sorted(offsets)}"
