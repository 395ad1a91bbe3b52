"""A simulated BME680 behind an smbus2-like bus, so the real driver runs without the chip.

    bus = SimBus(lambda: Targets(23.5, 45.0, 1013.25, 50_000.0))
    sensor = bme680.BME680(0x76, i2c_device=bus)     # Pimoroni's driver, unchanged
    sensor.get_sensor_data()                         # sensor.data.temperature == 23.5

The bus emulates the chip's registers: chip id 0x61 at 0xD0, variant 0 (BME680) at 0xF0,
soft reset (0xB6 written to 0xE0), the calibration blocks at 0x89.. and 0xE1.. plus 0x00,
0x02, 0x04, the control registers 0x5A..0x75, and a forced-mode measurement (mode bits of
0x74 set to 01): the chip asks `source()` for the physical values, writes the ADC values
that the Bosch compensation turns back into them (found by bisection through the forward
formulas below), sets new_data and returns to sleep mode. Gas is valid when run_gas is
set; the heater is stable when it is on and the selected profile has a target and a
duration. Transfers follow smbus2 (blocks of at most 32 bytes: ValueError beyond); an
address with no chip gives OSError 121 like a real bus.

Faults (`fault`, may be changed at any time): "chip_absent" (every transfer: OSError 121),
"io_errors" (after `io_errors_after` measurements every transfer: OSError EIO),
"wrong_chip_id" (reads 0x60, a BME280's id), "no_new_data" (new_data never set),
"heater_unstable" (heat_stab never set).
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass
from typing import Callable, Optional

CHIP_ID = 0x61
WRONG_CHIP_ID = 0x60
BLOCK_MAX = 32
FAULTS = ("chip_absent", "io_errors", "wrong_chip_id", "no_new_data", "heater_unstable")

REG_FIELD0, REG_CHIP_ID, REG_VARIANT, REG_RESET = 0x1D, 0xD0, 0xF0, 0xE0
REG_RES_HEAT0, REG_GAS_WAIT0 = 0x5A, 0x64
REG_CTRL_GAS0, REG_CTRL_GAS1, REG_CTRL_MEAS = 0x70, 0x71, 0x74
WRITABLE = range(0x50, 0x76)        # heater profiles and control registers
RESET_CMD = 0xB6


@dataclass(frozen=True)
class Targets:
    """What the simulated chip measures: °C, %RH, hPa, ohm."""
    temperature: float
    humidity: float
    pressure: float
    gas: float


@dataclass(frozen=True)
class Calibration:
    """Trimming constants, as the Bosch datasheet names them (this simulated part's own)."""
    t1: int = 26120
    t2: int = 26250
    t3: int = 3
    p1: int = 36480
    p2: int = -10380
    p3: int = 88
    p4: int = 6650
    p5: int = -140
    p6: int = 30
    p7: int = 42
    p8: int = -2900
    p9: int = -2500
    p10: int = 30
    h1: int = 740
    h2: int = 1013
    h3: int = 0
    h4: int = 45
    h5: int = 20
    h6: int = 120
    h7: int = -100
    gh1: int = -31
    gh2: int = -12180
    gh3: int = 18
    res_heat_range: int = 1
    res_heat_val: int = 42
    range_sw_err: int = 1

    def registers(self) -> dict[int, int]:
        """Register address -> byte, as the chip holds them."""
        regs: dict[int, int] = {}

        def word(address: int, value: int) -> None:       # 16 bits, LSB first
            regs[address], regs[address + 1] = value & 0xFF, (value >> 8) & 0xFF

        for address, value in ((0x8A, self.t2), (0x8E, self.p1), (0x90, self.p2), (0x94, self.p4),
                               (0x96, self.p5), (0x9C, self.p8), (0x9E, self.p9), (0xE9, self.t1),
                               (0xEB, self.gh2)):
            word(address, value)
        for address, value in ((0x8C, self.t3), (0x92, self.p3), (0x98, self.p7), (0x99, self.p6),
                               (0xA0, self.p10), (0xE4, self.h3), (0xE5, self.h4), (0xE6, self.h5),
                               (0xE7, self.h6), (0xE8, self.h7), (0xED, self.gh1), (0xEE, self.gh3),
                               (0x00, self.res_heat_val)):
            regs[address] = value & 0xFF
        regs[0xE1] = (self.h2 >> 4) & 0xFF                       # h2 bits 11:4
        regs[0xE2] = ((self.h2 & 0x0F) << 4) | (self.h1 & 0x0F)  # h2 bits 3:0 | h1 bits 3:0
        regs[0xE3] = (self.h1 >> 4) & 0xFF                       # h1 bits 11:4
        regs[0x02] = (self.res_heat_range & 0x03) << 4
        regs[0x04] = (self.range_sw_err & 0x0F) << 4
        return regs


CALIBRATION = Calibration()


# -- forward compensation: Bosch's integer formulas (BME680 datasheet 3.3, Bosch API) -----
# Python's integers neither overflow nor truncate toward zero: divisions floor, and pressure
# always takes the exact branch (Bosch's C code divides first above 2**30 to stay in 32 bits,
# which costs up to 2 Pa); this is the arithmetic a Python driver does.


def t_fine(temp_adc: int, cal: Calibration = CALIBRATION) -> int:
    var1 = (temp_adc >> 3) - (cal.t1 << 1)
    var2 = (var1 * cal.t2) >> 11
    var3 = ((((var1 >> 1) * (var1 >> 1)) >> 12) * (cal.t3 << 4)) >> 14
    return var2 + var3


def temperature_centi(temp_adc: int, cal: Calibration = CALIBRATION) -> int:
    """Temperature in 0.01 °C."""
    return (t_fine(temp_adc, cal) * 5 + 128) >> 8


def pressure_pa(pres_adc: int, fine: int, cal: Calibration = CALIBRATION) -> int:
    """Pressure in Pa, given t_fine."""
    var1 = (fine >> 1) - 64000
    var2 = ((((var1 >> 2) * (var1 >> 2)) >> 11) * cal.p6) >> 2
    var2 += (var1 * cal.p5) << 1
    var2 = (var2 >> 2) + (cal.p4 << 16)
    var1 = (((((var1 >> 2) * (var1 >> 2)) >> 13) * (cal.p3 << 5)) >> 3) + ((cal.p2 * var1) >> 1)
    var1 = ((32768 + (var1 >> 18)) * cal.p1) >> 15
    comp = (1048576 - pres_adc - (var2 >> 12)) * 3125
    comp = (comp << 1) // var1
    var1 = (cal.p9 * (((comp >> 3) * (comp >> 3)) >> 13)) >> 12
    var2 = ((comp >> 2) * cal.p8) >> 13
    var3 = ((comp >> 8) * (comp >> 8) * (comp >> 8) * cal.p10) >> 17
    return comp + ((var1 + var2 + var3 + (cal.p7 << 7)) >> 4)


def humidity_milli(hum_adc: int, fine: int, cal: Calibration = CALIBRATION) -> int:
    """Relative humidity in 0.001 %RH (clamped to 0..100 %), given t_fine."""
    scaled = (fine * 5 + 128) >> 8
    var1 = hum_adc - cal.h1 * 16 - (((scaled * cal.h3) // 100) >> 1)
    var2 = (cal.h2 * ((scaled * cal.h4) // 100
                      + ((scaled * ((scaled * cal.h5) // 100)) >> 6) // 100 + (1 << 14))) >> 10
    var3 = var1 * var2
    var4 = ((cal.h6 << 7) + (scaled * cal.h7) // 100) >> 4
    var5 = ((var3 >> 14) * (var3 >> 14)) >> 10
    var6 = (var4 * var5) >> 1
    return min(max((((var3 + var6) >> 10) * 1000) >> 12, 0), 100_000)


# the datasheet's gas range constants (BME680, floating-point formula)
GAS_K1 = (1.0, 1.0, 1.0, 1.0, 1.0, 0.99, 1.0, 0.992, 1.0, 1.0, 0.998, 0.995, 1.0, 0.99, 1.0, 1.0)
GAS_K2 = (8e6, 4e6, 2e6, 1e6, 499500.4995, 248262.1648, 125000.0, 63004.03226, 31281.28128,
          15625.0, 7812.5, 3906.25, 1953.125, 976.5625, 488.28125, 244.140625)


def gas_ohm(gas_adc: int, gas_range: int, cal: Calibration = CALIBRATION) -> float:
    var1 = (1340.0 + 5.0 * cal.range_sw_err) * GAS_K1[gas_range]
    return var1 * GAS_K2[gas_range] / (gas_adc - 512.0 + var1)


# -- inversion -----------------------------------------------------------------------------
def _closest(f: Callable[[int], float], target: float, lo: int, hi: int) -> int:
    """The n in lo..hi whose f(n) is closest to target; f must not decrease on lo..hi."""
    a, b = lo, hi
    while a < b:
        mid = (a + b) // 2
        if f(mid) < target:
            a = mid + 1
        else:
            b = mid
    if a > lo and abs(f(a - 1) - target) <= abs(f(a) - target):
        return a - 1
    return a


@dataclass(frozen=True)
class Adc:
    temperature: int
    pressure: int
    humidity: int
    gas: int
    gas_range: int


def adc_for(targets: Targets, cal: Calibration = CALIBRATION) -> Adc:
    """The ADC values whose compensation gives `targets` (as closely as the chip resolves)."""
    temp = _closest(lambda n: temperature_centi(n, cal), targets.temperature * 100, 0, (1 << 20) - 1)
    fine = t_fine(temp, cal)
    pres = _closest(lambda n: -pressure_pa(n, fine, cal), -targets.pressure * 100, 0, (1 << 20) - 1)
    # below var1 == 0 the quadratic term turns the curve back up: search where it rises
    scaled = (fine * 5 + 128) >> 8
    floor = min(max(cal.h1 * 16 + (((scaled * cal.h3) // 100) >> 1), 0), 0xFFFF)
    hum = _closest(lambda n: humidity_milli(n, fine, cal), targets.humidity * 1000, floor, 0xFFFF)
    best = None
    for gas_range in range(16):
        adc = _closest(lambda n: -gas_ohm(n, gas_range, cal), -targets.gas, 0, 1023)
        error = abs(gas_ohm(adc, gas_range, cal) - targets.gas)
        if best is None or error < best[0]:
            best = (error, adc, gas_range)
    return Adc(temp, pres, hum, best[1], best[2])


# -- the chip on its bus ---------------------------------------------------------------------
class SimBus:
    """An smbus2.SMBus look-alike with one simulated BME680 at `address` (0x76 or 0x77).

    `source()` returns the Targets of each measurement. Thread-safe."""

    def __init__(self, source: Callable[[], Targets], address: int = 0x76, fault: Optional[str] = None,
                 io_errors_after: int = 10, calibration: Calibration = CALIBRATION) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (one of {', '.join(FAULTS)})")
        self.source, self.address, self.fault = source, address, fault
        self.io_errors_after = io_errors_after
        self.calibration = calibration
        self.measurements = 0
        self._lock = threading.Lock()
        self._regs = bytearray(256)
        for register, value in calibration.registers().items():
            self._regs[register] = value
        self._regs[REG_CHIP_ID] = CHIP_ID
        self._regs[REG_VARIANT] = 0x00
        self._reset()

    # smbus2's methods (the ones the bme680 driver calls)
    def read_byte_data(self, i2c_addr: int, register: int, force=None) -> int:
        with self._lock:
            self._transfer(i2c_addr)
            return self._read(register)

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force=None) -> None:
        with self._lock:
            self._transfer(i2c_addr)
            self._write(register, value & 0xFF)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force=None) -> list[int]:
        if length > BLOCK_MAX:
            raise ValueError(f"Desired block length over {BLOCK_MAX} bytes")
        with self._lock:
            self._transfer(i2c_addr)
            return [self._read((register + i) & 0xFF) for i in range(length)]

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int], force=None) -> None:
        if len(data) > BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {BLOCK_MAX} bytes")
        with self._lock:
            self._transfer(i2c_addr)
            for i, value in enumerate(data):
                self._write((register + i) & 0xFF, value & 0xFF)

    def close(self) -> None:
        pass

    # the chip
    def _transfer(self, i2c_addr: int) -> None:
        if i2c_addr != self.address or self.fault == "chip_absent":
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        if self.fault == "io_errors" and self.measurements > self.io_errors_after:
            raise OSError(errno.EIO, "Input/output error")

    def _read(self, register: int) -> int:
        if register == REG_CHIP_ID and self.fault == "wrong_chip_id":
            return WRONG_CHIP_ID
        return self._regs[register]

    def _write(self, register: int, value: int) -> None:
        if register == REG_RESET:
            if value == RESET_CMD:
                self._reset()
        elif register in WRITABLE:
            self._regs[register] = value
            if register == REG_CTRL_MEAS and value & 0x03 == 0x01:
                self._measure()
        # other registers are read-only: writes are ignored, as on the chip

    def _reset(self) -> None:
        for register in WRITABLE:
            self._regs[register] = 0
        for register in range(REG_FIELD0, REG_FIELD0 + 17):
            self._regs[register] = 0

    def _measure(self) -> None:
        regs = self._regs
        run_gas = bool(regs[REG_CTRL_GAS1] & 0x10)
        profile = regs[REG_CTRL_GAS1] & 0x0F
        heater_on = not regs[REG_CTRL_GAS0] & 0x08
        stable = (run_gas and heater_on and profile <= 9 and regs[REG_RES_HEAT0 + profile] != 0
                  and regs[REG_GAS_WAIT0 + profile] != 0 and self.fault != "heater_unstable")
        adc = adc_for(self.source(), self.calibration)
        field = REG_FIELD0
        regs[field + 1] = (regs[field + 1] + 1) & 0xFF                      # meas_index
        regs[field + 2: field + 5] = _adc20(adc.pressure)
        regs[field + 5: field + 8] = _adc20(adc.temperature)
        regs[field + 8: field + 10] = bytes((adc.humidity >> 8, adc.humidity & 0xFF))
        gas_adc = adc.gas if run_gas else 0
        regs[0x2A] = gas_adc >> 2
        regs[0x2B] = ((gas_adc & 0x03) << 6) | (0x20 if run_gas else 0) | (0x10 if stable else 0) | adc.gas_range
        new_data = 0x00 if self.fault == "no_new_data" else 0x80
        regs[field] = new_data | (profile & 0x0F)
        regs[REG_CTRL_MEAS] &= ~0x03 & 0xFF                                   # back to sleep
        self.measurements += 1


def _adc20(value: int) -> bytes:
    """A 20-bit ADC value as the chip stores it: msb, lsb, xlsb (bits 7:4)."""
    return bytes(((value >> 12) & 0xFF, (value >> 4) & 0xFF, (value & 0x0F) << 4))
