"""Strict JSON at every boundary (the heart issue, item 7; and item 0 on the device side):
NaN and Infinity are refused coming in and never go out; a deeply nested message is refused
without running json's recursion to the interpreter's limit."""

import json
import math

import pytest

from backfill_common import contracts, strictjson
from store_and_forward import packer
from temperature_correction import handler as lam

from store_harness import Harness, corrected


def raw_reading(**extra):
    doc = {"device": "dev-1", "run": "0badcafe", "seq": 1, "t": 1764338400000, "mono": 1,
           "clock_synced": True, "status": "ok", "temperature": 30.0, "humidity": 45.0,
           "pressure": 1013.25, "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": 50.0}
    doc.update(extra)
    return doc


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["temperature", "gas_resistance"])
def test_the_contracts_refuse_non_finite_numbers(field, value):
    errors = contracts.check("reading-raw", raw_reading(**{field: value}))
    assert errors and errors[0].startswith(f"{field}: not a finite number")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_strict_loads_refuses_the_literals(text):
    with pytest.raises(ValueError, match="not JSON"):
        strictjson.loads('{"temperature": %s}' % text)


def test_strict_loads_refuses_deep_nesting_without_recursing():
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        strictjson.loads(deep)
    assert strictjson.loads('{"s": "[[[[{{{{", "a": [[1]]}') == {"s": "[[[[{{{{", "a": [[1]]}


def test_strict_dumps_never_writes_nan():
    with pytest.raises(ValueError):
        strictjson.dumps({"t": math.nan})
    with pytest.raises(ValueError):
        packer.pack("dev", [dict(corrected(1), temperature=math.inf)])


def test_the_correction_refuses_nan_from_bytes_and_from_a_decoded_message():
    lam.reset({})
    for event in (json.dumps(raw_reading(temperature=math.nan)).encode(), raw_reading(cpu_temperature=math.inf)):
        with pytest.raises(lam.InvalidReading):
            lam.handler(event, None)


def test_the_store_dead_letters_nan_and_deep_messages_and_forwards_only_finite_json(tmp_path):
    h = Harness(tmp_path / "store.db")
    nan_bytes = json.dumps(corrected(1, temperature=math.nan)).encode()
    inf_dict = corrected(2, gas_resistance=math.inf)
    deep = b'{"a":' * 2_500 + b"1" + b"}" * 2_500    # under max_message_bytes; json.loads would recurse 2,500 deep
    h.feed([corrected(0), nan_bytes, inf_dict, deep, corrected(3)])
    h.step(100, n=120)
    reasons = sorted(l["reason"].split(":")[0] for l in h.dead_letters.values())   # forwarded
    assert reasons == ["contract", "not JSON", "not JSON"]
    assert sorted(seq for (_, _, seq) in h.cloud) == [0, 3]
    for _, payload in h.port.published:
        json.loads(payload, parse_constant=lambda name: pytest.fail(f"{name} went out"))
