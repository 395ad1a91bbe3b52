"""correction.py: the maths against hand-computed values and Pimoroni's loop, the CPU window,
live parameters and their refusal, and readings that pass through."""

import pytest

from backfill_common import contracts
from temperature_correction.correction import (NUMBER_RANGES, PARAMETER_KEYS, WINDOW_RANGE, Corrector, Params,
                                               cpu_factor, linear, merge)


def reading(seq=0, temperature=30.0, cpu=50.0, status="ok", run="0badcafe", **extra):
    doc = {"device": "dev-1", "run": run, "seq": seq, "t": 1764338400000 + seq * 1000, "mono": seq * 1000,
           "clock_synced": False, "status": status, "temperature": temperature, "humidity": 45.0,
           "pressure": 1013.25, "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": cpu}
    doc.update(extra)
    return doc


def temperatures(corrector, cpus, raw=30.0):
    return [corrector.correct(reading(i, raw, cpu))["temperature"] for i, cpu in enumerate(cpus)]


def test_formulas_by_hand():
    assert cpu_factor(30.0, 54.0, 2.25) == pytest.approx(30 - 24 / 2.25)   # 19.333...
    assert linear(30.0, 54.0, 1.1, -0.2, 0.5) == pytest.approx(33.0 - 10.8 + 0.5)
    # Pimoroni's cpu_factor is linear with a = 1 + 1/f, b = -1/f, c = 0
    assert linear(21.7, 63.2, 1 + 1 / 2.25, -1 / 2.25, 0) == pytest.approx(cpu_factor(21.7, 63.2, 2.25))


def test_cpu_factor_averages_the_window_as_it_fills():
    corrector = Corrector()                         # factor 2.25, window 5
    got = temperatures(corrector, [50, 52, 54, 56, 58, 60])
    # averages 50, 51, 52, 53, 54, then 56 (52..60): 30 - (avg - 30) / 2.25
    assert got == [21.11, 20.67, 20.22, 19.78, 19.33, 18.44]


def test_steady_state_equals_pimoronis_loop():
    """enviroplus-python examples/compensated-temperature.py, its loop written out: the list
    starts as five copies of one CPU reading, then each turn drops the oldest."""
    cpus = [48.0, 49.5, 51.2, 55.0, 60.3, 58.8, 57.1, 52.4, 50.0, 49.9, 61.7]
    raws = [24.0 + 0.3 * i for i in range(len(cpus))]
    factor = 2.25
    cpu_temps = [cpus[0]] * 5
    pimoroni = []
    for cpu, raw in zip(cpus, raws):
        cpu_temps = cpu_temps[1:] + [cpu]
        avg_cpu_temp = sum(cpu_temps) / float(len(cpu_temps))
        pimoroni.append(raw - ((avg_cpu_temp - raw) / factor))
    corrector = Corrector({"factor": factor, "window": 5})
    ours = [corrector.correct(reading(i, raw, cpu))["temperature"] for i, (cpu, raw) in enumerate(zip(cpus, raws))]
    # the first reading and every one after the window has filled agree exactly (to 2 decimals)
    for i in [0] + list(range(4, len(cpus))):
        assert ours[i] == round(pimoroni[i], 2)


def test_linear_uses_the_current_cpu_reading_and_rounds():
    corrector = Corrector({"method": "linear", "a": 1.2, "b": -0.25, "c": 1.0})
    got = temperatures(corrector, [40.0, 80.0], raw=25.0)
    assert got == [1.2 * 25 - 0.25 * 40 + 1, 1.2 * 25 - 0.25 * 80 + 1]   # 21.0, 11.0
    out = corrector.correct(reading(5, 25.123, 41.777))
    assert out["temperature"] == round(1.2 * 25.123 - 0.25 * 41.777 + 1.0, 2) == 20.7


def test_output_keeps_every_field_and_adds_raw_and_method():
    source = reading(7, 30.0, 50.0, held_from=3, clock_synced=True)
    before = dict(source)
    out = Corrector().correct(source)
    assert source == before                                  # not modified
    assert out["temperature_raw"] == 30.0 and out["correction"] == "cpu_factor"
    assert out["temperature"] == 21.11
    rest = {k: v for k, v in out.items() if k not in ("temperature", "temperature_raw", "correction")}
    assert rest == {k: v for k, v in source.items() if k != "temperature"}
    assert contracts.check("reading-corrected", out) == []


@pytest.mark.parametrize("changes", [
    {"status": "chip_absent", "temperature": None, "humidity": None, "pressure": None, "gas_resistance": None},
    {"status": "io_error"},                 # an error status with values: still not corrected
    {"temperature": None},
    {"cpu_temperature": None},
])
@pytest.mark.parametrize("method", ["cpu_factor", "linear"])
def test_error_and_incomplete_readings_pass_through(changes, method):
    source = reading(3)
    source.update(changes)
    out = Corrector({"method": method, "a": 2.0}).correct(source)
    assert out["correction"] == "none"
    assert out["temperature"] == source["temperature"] and out["temperature_raw"] == source["temperature"]
    assert {k: out[k] for k in source} == source
    assert contracts.check("reading-corrected", out) == []


def test_an_error_reading_still_feeds_the_cpu_window():
    corrector = Corrector()
    corrector.correct(reading(0, None, 60.0, status="chip_absent"))
    assert corrector.correct(reading(1, 30.0, 50.0))["temperature"] == round(30 - (55 - 30) / 2.25, 2)


def test_a_resent_reading_is_corrected_as_its_first_send_was():
    """The heart issue, item 9: a resend an hour later was corrected with the current window."""
    corrector = Corrector({"window": 5})
    first = [corrector.correct(reading(i, 30.0, 50.0 + i)) for i in range(10)]
    for i in range(10, 3610):                                   # an hour later the CPU runs hot
        corrector.correct(reading(i, 30.0, 80.0))
    again = [corrector.correct(reading(i, 30.0, 50.0 + i)) for i in range(10)]
    assert [r["temperature"] for r in again] == [r["temperature"] for r in first]
    assert first[4]["temperature"] == round(30 - (52.0 - 30) / 2.25, 2)    # the mean of 50..54


def test_one_corrector_serving_several_devices_keeps_their_windows_apart():
    corrector = Corrector({"window": 5})
    for i in range(20):
        a = corrector.correct(reading(i, 30.0, 40.0, device="pi-a"))
        b = corrector.correct(reading(i, 30.0, 70.0, device="pi-b"))
    assert a["temperature"] == round(30 - (40.0 - 30) / 2.25, 2)
    assert b["temperature"] == round(30 - (70.0 - 30) / 2.25, 2)


def test_a_new_run_starts_its_own_window():
    corrector = Corrector({"window": 2})
    temperatures(corrector, [50.0, 52.0])                       # seq 0, 1
    corrector.correct(reading(0, 30.0, 60.0, run="12345678"))
    assert corrector.cpu_average() == 60.0


def test_window_change_applies_to_the_readings_around_each_seq():
    corrector = Corrector()
    temperatures(corrector, [50, 52, 54, 56, 58])               # seq 0..4
    assert corrector.update({"window": 2}) == []
    assert corrector.cpu_average() == 57.0
    assert corrector.update({"window": 10}) == []
    corrector.correct(reading(10, 30.0, 60.0))                  # seqs 1..10: 1..4 and 10 are known
    assert corrector.cpu_average() == pytest.approx((52 + 54 + 56 + 58 + 60) / 5)


def test_live_change_applies_to_the_next_reading():
    corrector = Corrector({"window": 1})
    assert corrector.correct(reading(0, 30.0, 52.5))["temperature"] == 20.0
    assert corrector.update({"factor": 1.0}) == []
    assert corrector.correct(reading(1, 30.0, 52.5))["temperature"] == 7.5
    assert corrector.update({"method": "linear", "a": 1.0, "b": -0.1, "c": 0.0}) == []
    out = corrector.correct(reading(2, 30.0, 52.5))
    assert (out["temperature"], out["correction"]) == (24.75, "linear")


@pytest.mark.parametrize("key, value, allowed", [
    ("factor", 0.0, "allowed 0.1..100"),
    ("factor", 101, "allowed 0.1..100"),
    ("factor", float("nan"), "allowed 0.1..100"),
    ("factor", "2.25", "allowed 0.1..100"),
    ("factor", True, "allowed 0.1..100"),
    ("window", 0, "allowed a whole number 1..600"),
    ("window", 601, "allowed a whole number 1..600"),
    ("window", 2.5, "allowed a whole number 1..600"),
    ("a", 1000.5, "allowed -1000..1000"),
    ("b", -1e6, "allowed -1000..1000"),
    ("c", None, "allowed -1000..1000"),
    ("method", "quadratic", "allowed cpu_factor | linear"),
])
def test_bad_values_are_refused_with_key_and_range_and_the_last_good_one_stays(key, value, allowed):
    corrector = Corrector({"factor": 3.0, "window": 4, "a": 1.5, "b": -0.5, "c": 2.0, "method": "linear"})
    before = corrector.params
    refused = corrector.update({key: value})
    assert len(refused) == 1
    assert refused[0].startswith(f"{key}: ") and allowed in refused[0]
    assert f"(kept {getattr(before, key)!r})" in refused[0]
    assert corrector.params == before


def test_good_values_apply_while_bad_ones_in_the_same_change_are_refused():
    corrector = Corrector()
    refused = corrector.update({"factor": 1.5, "window": -1, "raw_topic": "ignored/here"})
    assert [r.split(":")[0] for r in refused] == ["window"]
    assert corrector.params == Params(factor=1.5)


def test_whole_floats_are_windows_and_ints_are_numbers():
    corrector = Corrector({"window": 7.0, "factor": 3})      # as Greengrass hands them back
    assert corrector.params.window == 7 and isinstance(corrector.params.window, int)
    assert corrector.params.factor == 3.0


def test_construction_with_bad_values_keeps_defaults_and_says_why():
    corrector = Corrector({"factor": -2, "method": "linear"})
    assert corrector.params == Params(method="linear")
    assert [r.split(":")[0] for r in corrector.refused] == ["factor"]


def test_merge_is_pure():
    params = Params()
    new, refused = merge(params, {"a": 2.0})
    assert params == Params() and new.a == 2.0 and refused == []


def test_ranges_and_defaults_agree_with_the_configuration_schema():
    properties = contracts.schema_of("config-correction")["properties"]
    assert set(PARAMETER_KEYS) <= set(properties)
    for key, (low, high) in NUMBER_RANGES.items():
        assert (properties[key]["minimum"], properties[key]["maximum"]) == (low, high), key
    assert (properties["window"]["minimum"], properties["window"]["maximum"]) == WINDOW_RANGE
    assert properties["window"]["type"] == "integer"
    assert tuple(properties["method"]["enum"]) == ("cpu_factor", "linear")
    assert {key: properties[key]["default"] for key in PARAMETER_KEYS} == Params().as_dict()


def test_interleaved_devices_do_not_drift_each_other():
    """The issue's story: pi-a alone corrects to 18.13 °C; with pi-b's hot readings
    interleaved, one window shared across devices would have given 12.84 °C."""
    alone = Corrector({"window": 5})
    a_alone = [alone.correct(reading(i, 30.0, 56.7, device="pi-a"))["temperature"] for i in range(5)]
    assert a_alone[-1] == 18.13
    shared_window = [56.7, 86.5, 56.7, 86.5, 56.7]          # the last five CPUs, both devices mixed
    assert round(cpu_factor(30.0, sum(shared_window) / 5, 2.25), 2) == 12.84
    both = Corrector({"window": 5})
    a_mixed = []
    for i in range(5):
        a_mixed.append(both.correct(reading(i, 30.0, 56.7, device="pi-a"))["temperature"])
        both.correct(reading(i, 30.0, 86.5, device="pi-b"))
    assert a_mixed == a_alone
