"""scenarios.py and cpu.py: what the simulated chip measures, and the CPU temperature sources."""

import pytest

from bme680_sensor import cpu, scenarios
from bme680_sensor.simchip import Targets

MIDNIGHT = 1_764_288_000_000            # 2025-11-28T00:00:00Z
HOUR = 3_600_000
SETTINGS = {"sim_temperature": 20.0, "sim_humidity": 50.0, "sim_pressure": 1000.0, "sim_gas": 40_000.0}


def test_steady_gives_the_configured_values():
    source, fault = scenarios.build(dict(SETTINGS, scenario="steady"), wall_ms=lambda: 0)
    assert fault is None
    assert source() == source() == Targets(20.0, 50.0, 1000.0, 40_000.0)


@pytest.mark.parametrize("name", ["chip_absent", "io_errors", "wrong_chip_id", "no_new_data", "heater_unstable"])
def test_fault_scenarios_measure_steady_values(name):
    source, fault = scenarios.build(dict(SETTINGS, scenario=name), wall_ms=lambda: 0)
    assert fault == name
    assert source() == Targets(20.0, 50.0, 1000.0, 40_000.0)


def test_daily_curve_follows_the_wall_clock():
    now = [MIDNIGHT + 3 * HOUR]
    source, _ = scenarios.build(dict(SETTINGS, scenario="daily"), wall_ms=lambda: now[0])
    coldest = source()
    now[0] = MIDNIGHT + 15 * HOUR
    warmest = source()
    now[0] = MIDNIGHT + 86_400_000 + 15 * HOUR          # the next day, same hour
    assert source() == warmest
    assert coldest.temperature == pytest.approx(16.0) and warmest.temperature == pytest.approx(24.0)
    assert coldest.humidity == pytest.approx(60.0) and warmest.humidity == pytest.approx(40.0)
    assert 999.0 <= coldest.pressure <= 1001.0
    assert warmest.gas > coldest.gas
    for hour in range(24):
        now[0] = MIDNIGHT + hour * HOUR
        assert 16.0 - 1e-9 <= source().temperature <= 24.0 + 1e-9


def test_csv_replays_rows_and_loops(tmp_path):
    path = tmp_path / "replay.csv"
    path.write_text("temperature,humidity,pressure,gas\n21.0,40,1010,30000\n22.5,41.5,1011.5,31000\n")
    source, fault = scenarios.build({"scenario": "csv", "csv_path": str(path)}, wall_ms=lambda: 0)
    assert fault is None
    assert [source() for _ in range(3)] == [Targets(21.0, 40.0, 1010.0, 30_000.0),
                                            Targets(22.5, 41.5, 1011.5, 31_000.0),
                                            Targets(21.0, 40.0, 1010.0, 30_000.0)]


@pytest.mark.parametrize("text, message", [
    (None, "cannot read csv_path"),
    ("temperature,humidity,pressure\n1,2,3\n", "lacks gas"),
    ("temperature,humidity,pressure,gas\n", "no rows"),
    ("temperature,humidity,pressure,gas\n1,2,x,4\n", ":2: not four numbers"),
])
def test_unusable_csv_is_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "replay.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=message):
        scenarios.build({"scenario": "csv", "csv_path": str(path)}, wall_ms=lambda: 0)


def test_csv_without_a_path_is_refused():
    with pytest.raises(ValueError, match="needs csv_path"):
        scenarios.build({"scenario": "csv", "csv_path": ""}, wall_ms=lambda: 0)


def test_sysfs_cpu_reads_millidegrees(tmp_path):
    path = tmp_path / "temp"
    path.write_text("48312\n")
    read = cpu.source({"cpu_source": "sysfs", "cpu_path": str(path)})
    assert read() == pytest.approx(48.312)
    path.write_text("garbage")
    assert read() is None
    path.write_text("250000")                       # not a plausible CPU temperature
    assert read() is None
    path.unlink()
    assert read() is None


def test_simulated_cpu_tracks_the_load():
    load = [0.0]
    read = cpu.SimulatedCpu(base=40.0, per_load=10.0, ceiling=80.0, loadavg=lambda: (load[0], 0.0, 0.0))
    idle = read()
    load[0] = 2.0
    busy = read()
    load[0] = 50.0
    assert (idle, busy, read()) == (40.0, 60.0, 80.0)


def test_simulated_cpu_source_from_settings():
    read = cpu.source({"cpu_source": "simulated"})
    assert isinstance(read(), float)


def test_a_chip_warmed_by_the_cpu_reads_what_the_correction_undoes():
    from bme680_sensor import scenarios
    settings = {"scenario": "steady", "sim_temperature": 20.0, "sim_cpu_coupling": 1 / (1 + 2.25)}
    source, fault = scenarios.build(settings, lambda: 0, cpu=lambda: 52.5)
    measured = source().temperature
    assert fault is None and measured == pytest.approx(30.0)
    assert measured - (52.5 - measured) / 2.25 == pytest.approx(20.0)      # Pimoroni's formula recovers the air
    unheated, _ = scenarios.build({**settings, "sim_cpu_coupling": 0.0}, lambda: 0, cpu=lambda: 52.5)
    assert unheated().temperature == 20.0
    no_cpu, _ = scenarios.build(settings, lambda: 0, cpu=lambda: None)
    assert no_cpu().temperature == 20.0
