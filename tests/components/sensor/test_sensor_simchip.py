"""simchip.py against Pimoroni's real bme680 driver: targets come back within the sensor's
resolution, and each fault surfaces the way the driver reports it on a real bus."""

import errno
import random

import bme680
import pytest

from bme680_sensor import simchip
from bme680_sensor.simchip import SimBus, Targets

# Resolution of the values the driver returns: 0.01 °C and 0.008 %RH (datasheet); pressure
# comes in whole Pa, and the Bosch integer formula's cubic p10 term makes its output step by
# up to ~8 Pa at 256-Pa boundaries, so half a step is 0.04 hPa; gas: one ADC code is < 0.07 %.
TOLERANCE = {"temperature": 0.01, "humidity": 0.008, "pressure": 0.045}
GAS_RELATIVE = 0.001


class Source:
    def __init__(self, targets=Targets(23.5, 45.0, 1013.25, 50_000.0)):
        self.targets = targets

    def __call__(self):
        return self.targets


def open_driver(bus, address=0x76):
    sensor = bme680.BME680(address, i2c_device=bus)
    sensor.set_gas_heater_temperature(320)
    sensor.set_gas_heater_duration(150)
    sensor.select_gas_heater_profile(0)
    return sensor


def assert_close(data, targets):
    assert abs(data.temperature - targets.temperature) <= TOLERANCE["temperature"] + 1e-9
    assert abs(data.humidity - targets.humidity) <= TOLERANCE["humidity"] + 1e-9
    assert abs(data.pressure - targets.pressure) <= TOLERANCE["pressure"] + 1e-9
    assert abs(data.gas_resistance - targets.gas) <= GAS_RELATIVE * targets.gas


def test_default_targets_come_back():
    source = Source()
    sensor = open_driver(SimBus(source))
    assert sensor.chip_id == 0x61
    assert sensor.get_sensor_data() is True
    assert_close(sensor.data, source.targets)
    assert sensor.data.heat_stable is True
    assert sensor.data.status & 0x20          # gas_valid


def test_sweep_of_targets_recovered_within_resolution():
    rnd = random.Random(680)
    source = Source()
    sensor = open_driver(SimBus(source))
    corners = [Targets(t, h, p, g) for t in (-40.0, 85.0) for h in (0.0, 100.0)
               for p in (300.0, 1100.0) for g in (1_000.0, 10_000_000.0)]
    randoms = [Targets(rnd.uniform(-40, 85), rnd.uniform(0, 100), rnd.uniform(300, 1100), 10 ** rnd.uniform(3, 7))
               for _ in range(400)]
    for targets in corners + randoms:
        source.targets = targets
        assert sensor.get_sensor_data() is True
        assert_close(sensor.data, targets)


def test_calibration_is_read_as_written():
    sensor = open_driver(SimBus(Source()))
    cal, read = simchip.CALIBRATION, sensor.calibration_data
    for name in ("t1", "t2", "t3", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10",
                 "h1", "h2", "h3", "h4", "h5", "h6", "h7", "gh1", "gh2", "gh3"):
        assert getattr(read, "par_" + name) == getattr(cal, name), name
    assert (read.res_heat_range, read.res_heat_val, read.range_sw_err) == (cal.res_heat_range, cal.res_heat_val,
                                                                           cal.range_sw_err)


def test_bus_limits_and_addressing():
    bus = SimBus(Source(), address=0x77)
    with pytest.raises(ValueError):
        bus.read_i2c_block_data(0x77, 0x89, 33)
    with pytest.raises(OSError) as caught:
        bus.read_byte_data(0x76, 0xD0)              # nothing at 0x76
    assert caught.value.errno == errno.EREMOTEIO
    assert bus.read_byte_data(0x77, 0xD0) == 0x61
    assert bus.read_i2c_block_data(0x77, 0x89, 32)[1:3] == [simchip.CALIBRATION.t2 & 0xFF,
                                                          (simchip.CALIBRATION.t2 >> 8) & 0xFF]
    assert open_driver(bus, 0x77).get_sensor_data() is True


def test_soft_reset_clears_control_registers_and_keeps_calibration():
    bus = SimBus(Source())
    bus.write_byte_data(0x76, 0x72, 0x02)
    bus.write_byte_data(0x76, 0xD0, 0x00)           # read-only: ignored
    calibration = bus.read_i2c_block_data(0x76, 0x89, 25)
    bus.write_byte_data(0x76, 0xE0, 0xB6)
    assert bus.read_byte_data(0x76, 0x72) == 0
    assert bus.read_byte_data(0x76, 0xD0) == 0x61
    assert bus.read_i2c_block_data(0x76, 0x89, 25) == calibration


def test_forced_measurement_sets_new_data_and_returns_to_sleep():
    bus = SimBus(Source())
    assert bus.read_byte_data(0x76, 0x1D) & 0x80 == 0
    bus.write_byte_data(0x76, 0x74, 0x01)
    assert bus.read_byte_data(0x76, 0x1D) & 0x80
    assert bus.read_byte_data(0x76, 0x74) & 0x03 == 0
    assert bus.measurements == 1


def test_without_a_heater_profile_gas_is_not_stable():
    sensor = bme680.BME680(0x76, i2c_device=SimBus(Source()))    # the driver sets no profile itself
    assert sensor.get_sensor_data() is True
    assert sensor.data.heat_stable is False


def test_chip_absent():
    with pytest.raises(RuntimeError, match="Unable to identify"):
        bme680.BME680(0x76, i2c_device=SimBus(Source(), fault="chip_absent"))


def test_wrong_chip_id():
    with pytest.raises(RuntimeError, match="Invalid CHIP ID: 0x60"):
        bme680.BME680(0x76, i2c_device=SimBus(Source(), fault="wrong_chip_id"))


def test_io_errors_after_n_measurements():
    bus = SimBus(Source(), fault="io_errors", io_errors_after=5)
    sensor = open_driver(bus)                       # its own first measurement is the first of 5
    for _ in range(4):
        assert sensor.get_sensor_data() is True
    with pytest.raises(OSError) as caught:
        sensor.get_sensor_data()
    assert caught.value.errno == errno.EIO
    assert bus.measurements == 6


def test_no_new_data():
    sensor = bme680.BME680(0x76, i2c_device=SimBus(Source(), fault="no_new_data"))
    assert sensor.data.temperature is None
    assert sensor.get_sensor_data() is False


def test_heater_unstable():
    sensor = open_driver(SimBus(Source(), fault="heater_unstable"))
    assert sensor.get_sensor_data() is True
    assert sensor.data.heat_stable is False
    assert abs(sensor.data.temperature - 23.5) <= 0.01


def test_a_fault_can_clear():
    bus = SimBus(Source(), fault="chip_absent")
    with pytest.raises(RuntimeError):
        bme680.BME680(0x76, i2c_device=bus)
    bus.fault = None
    assert open_driver(bus).get_sensor_data() is True


def test_unknown_fault_refused():
    with pytest.raises(ValueError, match="unknown fault"):
        SimBus(Source(), fault="gremlins")
