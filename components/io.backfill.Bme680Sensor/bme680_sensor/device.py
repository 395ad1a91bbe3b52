"""The BME680 through Pimoroni's `bme680` driver, on a real or a simulated bus.

    open_sensor = opener(settings, wall_ms=clock.wall_ms)   # from the sensor settings
    sensor = open_sensor()          # Bme680Device; raises what the driver or the bus raises
    sensor.read()                   # sampler.Values; raises NoNewData, OSError, ...
    sensor.close()

bus "i2c" opens smbus2.SMBus(i2c_bus) at every open (closed again with the sensor); bus
"simulated" builds one simchip.SimBus for the opener's lifetime (the chip keeps its state
across re-initialisations, like a real one). A bus that cannot be opened, or a simulation
that cannot be set up (a bad CSV), raises sampler.InitFailed with the reason.
"""

from __future__ import annotations

from typing import Callable, Optional

from . import cpu, scenarios, simchip
from .sampler import InitFailed, NoNewData, Values

HEATER_C = 320          # gas heater target, °C (Pimoroni's example)
HEATER_MS = 150         # heating time per measurement, ms
GAS_VALID = 0x20


class Bme680Device:
    def __init__(self, bus, address: int, owns_bus: bool = False) -> None:
        import bme680
        self.bus, self.owns_bus = bus, owns_bus
        self.chip = bme680.BME680(address, i2c_device=bus)
        if self.chip.data.temperature is None:       # the driver's own first measurement failed
            raise NoNewData("no new data after initialisation")
        self.chip.set_gas_heater_temperature(HEATER_C)
        self.chip.set_gas_heater_duration(HEATER_MS)
        self.chip.select_gas_heater_profile(0)

    def read(self) -> Values:
        if not self.chip.get_sensor_data():
            raise NoNewData("new_data never set after a forced measurement")
        data = self.chip.data
        gas_ok = data.heat_stable and bool(data.status & GAS_VALID)
        return Values(temperature=data.temperature, humidity=data.humidity, pressure=data.pressure,
                      gas_resistance=float(round(data.gas_resistance)) if gas_ok else None,
                      heat_stable=bool(data.heat_stable))

    def close(self) -> None:
        if self.owns_bus:
            self.bus.close()


class SimulatedOpener:
    def __init__(self, settings: dict, wall_ms: Callable[[], int]) -> None:
        self.settings, self.wall_ms = dict(settings), wall_ms
        self.bus: Optional[simchip.SimBus] = None

    def __call__(self) -> Bme680Device:
        address = int(self.settings.get("i2c_address", 0x76))
        if self.bus is None:
            try:
                source, fault = scenarios.build(self.settings, self.wall_ms, cpu.source(self.settings))
            except ValueError as error:
                raise InitFailed(str(error)) from None
            self.bus = simchip.SimBus(source, address=address, fault=fault,
                                      io_errors_after=int(self.settings.get("io_errors_after", 10)))
        return Bme680Device(self.bus, address)


class I2cOpener:
    def __init__(self, settings: dict) -> None:
        self.i2c_bus = int(settings.get("i2c_bus", 1))
        self.address = int(settings.get("i2c_address", 0x76))

    def __call__(self) -> Bme680Device:
        try:
            import smbus2
            bus = smbus2.SMBus(self.i2c_bus)
        except (OSError, ImportError) as error:
            raise InitFailed(f"cannot open /dev/i2c-{self.i2c_bus}: {error}"
                             " (is I2C enabled, and is the component's user in the i2c group?)") from None
        try:
            return Bme680Device(bus, self.address, owns_bus=True)
        except BaseException:
            bus.close()
            raise


BUS_KEYS = ("bus", "i2c_bus", "i2c_address", "scenario", "csv_path", "io_errors_after",
            "sim_temperature", "sim_humidity", "sim_pressure", "sim_gas", "sim_cpu_coupling", "cpu_source",
            "cpu_path")


def opener(settings: dict, wall_ms: Callable[[], int]) -> Callable[[], Bme680Device]:
    """How to open the sensor the settings describe (only BUS_KEYS matter)."""
    if settings.get("bus") == "simulated":
        return SimulatedOpener(settings, wall_ms)
    return I2cOpener(settings)
