"""handler.py: the Lambda entry point with the real contracts, its errors, and its
configuration from the environment."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backfill_common import contracts
from temperature_correction import handler as lam
from temperature_correction.correction import Corrector, Params

REPO = Path(__file__).resolve().parents[3]
COMPONENT = REPO / "components" / "io.backfill.TemperatureCorrection"


def reading(seq=0, temperature=30.0, cpu=50.0, **extra):
    doc = {"device": "dev-1", "run": "0badcafe", "seq": seq, "t": 1764338400000 + seq, "mono": seq,
           "clock_synced": True, "status": "ok", "temperature": temperature, "humidity": 45.0,
           "pressure": 1013.25, "gas_resistance": None, "heat_stable": False, "cpu_temperature": cpu}
    doc.update(extra)
    return doc


@pytest.fixture
def module_corrector():
    """The module's Corrector, fresh from an empty environment; reset again afterwards."""
    corrector = lam.reset({})
    yield corrector
    lam.reset({})


def test_round_trip_through_the_contracts(module_corrector):
    source = reading(4, held_from=2)
    out = lam.handler(source, None)
    assert contracts.check("reading-corrected", out) == []
    assert out["temperature"] == 21.11 and out["temperature_raw"] == 30.0 and out["correction"] == "cpu_factor"
    assert {k: out[k] for k in source if k != "temperature"} == {k: v for k, v in source.items() if k != "temperature"}


def test_configure_changes_the_module_corrector_live(module_corrector):
    lam.handler(reading(0, cpu=50.0), None)
    assert lam.configure({"method": "linear", "a": 1.0, "b": -0.1, "c": 0.5, "corrected_topic": "x"}) == []
    assert lam.handler(reading(1, cpu=60.0), None)["temperature"] == 24.5
    refused = lam.configure({"factor": 500})
    assert refused and refused[0].startswith("factor: 500 refused, allowed 0.1..100")
    assert lam.current() is module_corrector and module_corrector.params.factor == 2.25
    assert module_corrector.cpu_average() == 55.0            # the window survived the changes


@pytest.mark.parametrize("encode", [json.dumps, lambda d: json.dumps(d).encode()])
def test_json_text_and_bytes_events(encode):
    out = lam.correct_event(encode(reading()), Corrector())
    assert out["correction"] == "cpu_factor"


def test_whole_floats_from_greengrass_become_integers():
    out = lam.correct_event(reading(seq=42.0, mono=42.0, t=1764338400000.0, held_from=40.0), Corrector())
    for key in ("seq", "t", "mono", "held_from"):
        assert type(out[key]) is int
    assert (out["seq"], out["held_from"]) == (42, 40)


def test_integer_fields_are_the_schemas_integers():
    properties = contracts.load("reading.json")["$defs"]["fields"]["properties"]
    assert set(contracts.INTEGER_FIELDS) == {k for k, p in properties.items() if p.get("type") == "integer"}


def test_error_reading_passes_through_the_handler():
    source = reading(status="wrong_chip_id", temperature=None, humidity=None, pressure=None, heat_stable=None)
    out = lam.correct_event(source, Corrector())
    assert out["status"] == "wrong_chip_id" and out["correction"] == "none" and out["temperature_raw"] is None
    assert contracts.check("reading-corrected", out) == []


@pytest.mark.parametrize("event, kind, says", [
    ({k: v for k, v in reading().items() if k != "seq"}, "reading-raw: (document) required (seq)", "'seq'"),
    (reading(run="NOT-HEX!"), "reading-raw: run pattern", "run"),
    (reading(run="abc"), "reading-raw: run pattern", "run"),
    (reading(temperature="hot"), "reading-raw: temperature type", "temperature"),
    (reading(correction="linear"), "reading-raw: (document) unevaluatedProperties", "correction"),
    ([1, 2], "reading-raw: (document) type", "not of type 'object'"),
    (b"\xff\xfe", "not JSON", "not UTF-8"),
    ("{not json", "not JSON", "not JSON"),
])
def test_invalid_events_raise_a_value_error_naming_the_problem(event, kind, says):
    with pytest.raises(lam.InvalidReading) as raised:
        lam.correct_event(event, Corrector())
    assert isinstance(raised.value, ValueError)
    assert raised.value.kind == kind
    assert says in str(raised.value)


def test_a_correction_out_of_contract_raises_and_carries_the_reading_uncorrected():
    corrector = Corrector({"method": "linear", "a": 10.0})
    with pytest.raises(lam.OutOfContract) as raised:
        lam.correct_event(reading(temperature=30.0), corrector)
    assert isinstance(raised.value, ValueError)
    assert raised.value.kind == "reading-corrected: temperature maximum"
    fallback = raised.value.passthrough
    assert (fallback["temperature"], fallback["temperature_raw"], fallback["correction"]) == (30.0, 30.0, "none")
    assert contracts.check("reading-corrected", fallback) == []


def test_parameters_from_the_environment():
    corrector = lam.from_environment({"CORRECTION_METHOD": "linear", "CORRECTION_A": "1.25",
                                      "CORRECTION_B": " -0.3 ", "CORRECTION_C": "2", "CORRECTION_WINDOW": "8",
                                      "CORRECTION_FACTOR": ""})
    assert corrector.params == Params(method="linear", a=1.25, b=-0.3, c=2.0, window=8)


def test_bad_environment_values_are_logged_and_refused(caplog):
    with caplog.at_level(logging.WARNING, logger=lam.__name__):
        corrector = lam.from_environment({"CORRECTION_FACTOR": "zero", "CORRECTION_WINDOW": "0"})
    assert corrector.params == Params()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("environment: factor: 'zero' refused, allowed 0.1..100") for m in messages)
    assert any(m.startswith("environment: window: 0.0 refused, allowed a whole number 1..600") for m in messages)


def test_importable_as_a_lambda_function_as_it_is(tmp_path):
    """A fresh interpreter with only the artifact's folders on the path, configured the way a
    Lambda is (environment variables), calls module.handler(event, context); no awsiot."""
    script = (
        "import importlib, json, sys\n"
        "module = importlib.import_module('temperature_correction.handler')\n"
        "out = module.handler(json.loads(sys.argv[1]), None)\n"
        "print(json.dumps({'out': out, 'awsiot': any(m.startswith('awsiot') for m in sys.modules)}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRECTION_")}
    env.update({"PYTHONPATH": f"{REPO / 'components' / '_common'}:{COMPONENT}",
                "CORRECTION_METHOD": "linear", "CORRECTION_A": "1.0", "CORRECTION_B": "-0.5", "CORRECTION_C": "1"})
    result = subprocess.run([sys.executable, "-c", script, json.dumps(reading(cpu=40.0))], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["out"]["temperature"] == 11.0 and answer["out"]["correction"] == "linear"
    assert answer["awsiot"] is False


def test_the_greengrass_lambda_publishes_what_it_corrects(module_corrector, monkeypatch):
    """greengrass_lambda.handler: the corrected reading goes out on CORRECTED_TOPIC (IPC from
    inside, injected here); a non-reading is dropped; out of contract goes out uncorrected."""
    from types import SimpleNamespace

    from temperature_correction import greengrass_lambda
    sent = []
    monkeypatch.setenv("CORRECTED_TOPIC", "x/corrected")
    context = SimpleNamespace(client_context=SimpleNamespace(custom={"subject": "backfill/readings/raw"}))
    out = greengrass_lambda.handler(json.dumps(reading(cpu=40.0)).encode(), context,
                                    publish=lambda topic, doc: sent.append((topic, doc)))
    assert sent == [("x/corrected", out)] and out["correction"] == "cpu_factor"
    assert greengrass_lambda.handler({"nope": 1}, context, publish=lambda *a: sent.append(a)) is None
    assert len(sent) == 1
    lam.configure({"method": "linear", "a": 10.0, "b": 0.0, "c": 0.0})       # 300 °C: out of contract
    greengrass_lambda.handler(reading(seq=1), context, publish=lambda topic, doc: sent.append((topic, doc)))
    assert sent[-1][1]["correction"] == "none" and sent[-1][1]["temperature"] == 30.0
