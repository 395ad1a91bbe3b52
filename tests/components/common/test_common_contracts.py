"""The contracts: every schema is valid JSON Schema, valid and invalid examples, and the
settings layer (defaults <- configuration <- shadow desired) refusing bad values by key and range."""

import json

import pytest

from backfill_common import contracts
from backfill_common.clock import FakeClock, SystemClock, kernel_clock_synced
from backfill_common.settings import Settings

RAW = {"device": "pi-1", "run": "0a1b2c3d", "seq": 0, "t": 1764338400000, "mono": 0, "clock_synced": False,
       "status": "ok", "temperature": 23.5, "humidity": 45.0, "pressure": 1013.25, "gas_resistance": 50000.0,
       "heat_stable": True, "cpu_temperature": 48.3}
CORRECTED = {**RAW, "temperature": 21.3, "temperature_raw": 23.5, "correction": "cpu_factor"}
ERROR = {**RAW, "status": "chip_absent", "temperature": None, "humidity": None, "pressure": None,
         "gas_resistance": None, "heat_stable": None}


def test_every_schema_file_is_a_valid_schema_with_an_id():
    ids = set()
    for path in contracts.SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        ids.add(schema["$id"])
    for name in contracts.NAMES:
        if (contracts.SCHEMAS / contracts.NAMES[name][0]).exists():
            contracts.validator(name)          # compiles (and the registry checked every schema)
    assert len(ids) == len(list(contracts.SCHEMAS.glob("*.json")))


@pytest.mark.parametrize("name, doc", [
    ("reading-raw", RAW), ("reading-raw", ERROR), ("reading-raw", {**RAW, "held_from": 3}),
    ("reading-raw", {**RAW, "seq": 7.0}),                      # Greengrass hands integers back as doubles
    ("reading-corrected", CORRECTED), ("reading-corrected", {**ERROR, "temperature_raw": None, "correction": "none"}),
    ("ack", {"device": "pi-1", "run": "0a1b2c3d", "seq": 41}),
    ("batch-v1", {"v": 1, "device": "pi-1", "batch": "0a1b2c3d-0-9", "fields": ["run", "seq", "t"],
                  "rows": [["0a1b2c3d", 0, 1]]}),
    ("shadow", {"desired": {"sampling": {"interval_s": 2}}, "reported": None}),
])
def test_valid_examples(name, doc):
    assert contracts.check(name, doc) == []


@pytest.mark.parametrize("name, doc, why", [
    ("reading-raw", {**RAW, "seq": -1}, "seq: -1 is less than the minimum of 0"),
    ("reading-raw", {**RAW, "seq": 1.5}, "seq: 1.5 is not of type 'integer'"),
    ("reading-raw", {**RAW, "run": "XYZ"}, "run: 'XYZ' does not match"),
    ("reading-raw", {k: v for k, v in RAW.items() if k != "t"}, "'t' is a required property"),
    ("reading-raw", {**RAW, "humidity": 140}, "humidity: 140 is greater than the maximum of 100"),
    ("reading-raw", {**RAW, "extra": 1}, "('extra' was unexpected)"),
    ("reading-raw", CORRECTED, "('correction', 'temperature_raw' were unexpected)"),
    ("reading-corrected", RAW, "'temperature_raw' is a required property"),
    ("reading-corrected", {**CORRECTED, "correction": "magic"}, "correction: 'magic' is not one of"),
    ("ack", {"device": "pi-1", "run": "0a1b2c3d"}, "'seq' is a required property"),
    ("batch-v1", {"v": 2, "device": "d", "batch": "b", "fields": ["run", "seq", "t"], "rows": [[1]]}, "v: 1 was expected"),
    ("batch-v1", {"v": 1, "device": "d", "batch": "b", "fields": ["run", "t", "x"], "rows": [[1]]}, "fields"),
    ("reading-raw", "not an object", "is not of type 'object'"),
])
def test_invalid_examples_say_why(name, doc, why):
    errors = contracts.check(name, doc)
    assert errors and any(why in e for e in errors), errors
    with pytest.raises(contracts.ContractError, match="not a valid"):
        contracts.require(name, doc)


def test_settings_layers_and_refusals_keep_the_last_good_value():
    settings = Settings("config-correction", "correction")
    assert settings.effective["factor"] == 2.25 and settings.effective["window"] == 5
    change = settings.apply(config={"factor": 3.0, "window": 7.0, "accessControl": {"x": {}}})
    assert change.effective["factor"] == 3.0 and change.effective["window"] == 7
    assert isinstance(change.effective["window"], int) and change.changed == {"factor", "window"}
    assert change.errors == []
    change = settings.apply(desired={"factor": 0, "method": "linear"})
    assert change.effective["factor"] == 3.0 and change.effective["method"] == "linear"
    assert change.errors == ["shadow desired.correction: factor: 0 is not allowed "
                             "(allowed: number from 0.1 to 100); keeping 3.0"]
    # the same refusal is not reported twice; a fixed value clears it
    assert settings.apply(desired={"factor": 0, "method": "linear"}).errors == []
    change = settings.apply(desired={"factor": 5})
    assert change.effective["factor"] == 5 and change.effective["method"] == "cpu_factor" and settings.problems == []
    assert settings.apply(desired={"factor": 5, "windw": 3}).changed == set()
    assert "windw: unknown setting" in settings.problems[0]
    assert settings.problem("method", True) is not None and settings.problem("window", True) is not None


def test_clocks():
    fake = FakeClock(wall_ms=1000, mono_ms=5, synced=False)
    fake.advance(10)
    fake.step(-500)
    assert (fake.wall_ms(), fake.mono_ms(), fake.synced()) == (510, 15, False)
    system = SystemClock()
    assert abs(system.wall_ms() - SystemClock().wall_ms()) < 10_000
    assert system.synced() in (True, False) and kernel_clock_synced() == system.synced()


def _patterns(node: object):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


PATTERNS = sorted({p for path in contracts.SCHEMAS.glob("*.json") for p in _patterns(json.loads(path.read_text()))})
END = "(?![\\s\\S])"         # the end of the string, as ECMA-262's $ is; Python's $ also matches before a final \n


def test_the_schemas_have_patterns_to_check():
    assert len(PATTERNS) >= 4, PATTERNS


@pytest.mark.parametrize("pattern", PATTERNS)
def test_no_pattern_lets_a_trailing_newline_through(pattern):
    """jsonschema checks a pattern with Python's re.search, where `$` also matches before a
    final newline: "pi-1\\n" passed the contract while the store's identity check (a full
    match) refused it, so a dead letter of that run had no identity and froze its
    acknowledgements (the review of the poison-pill fix)."""
    from hypothesis import given, settings, strategies as st
    import jsonschema
    check = jsonschema.Draft202012Validator({"type": "string", "pattern": pattern})
    base = pattern[:-len(END)] if pattern.endswith(END) else pattern

    @settings(max_examples=50, deadline=None)
    @given(st.from_regex(base, fullmatch=True).filter(lambda s: "\n" not in s and s.isprintable()))
    def refused_with_a_newline(value):
        assert check.is_valid(value), value
        for tail in ("\n", "\r\n", "\x00"):
            assert not check.is_valid(value + tail), repr(value + tail)
    refused_with_a_newline()


def test_a_device_with_a_trailing_newline_fails_the_reading_contract():
    assert contracts.check("reading-corrected", {**CORRECTED, "device": "pi-1\n"})
    assert contracts.check("reading-corrected", {**CORRECTED, "run": "0a1b2c3d\n"})
    assert contracts.check("reading-corrected", {**CORRECTED, "status": "ok\n"})
    assert contracts.check("reading-corrected", CORRECTED) == []
