"""The compiled fast check gives jsonschema's verdict on readings, valid or not."""

from hypothesis import given, settings, strategies as st

from backfill_common import contracts
from backfill_common.fastcheck import compile_contract

from store_harness import corrected

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**16), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=12), st.sampled_from(["ok", "1a2b3c4d", "cpu_factor", "none", "pi-1", "ABC", "a\n"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5)
FIELDS = list(corrected(0)) + ["held_from", "temperature_raw", "extra", "Device"]


@st.composite
def mutated(draw):
    doc = corrected(draw(st.integers(0, 10**6)))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(FIELDS))
        action = draw(st.sampled_from(["set", "delete", "number"]))
        if action == "delete":
            doc.pop(name, None)
        elif action == "number":
            doc[name] = draw(st.one_of(st.integers(-300, 2000), st.floats(-300, 2000), st.just(4.0), st.just(True)))
        else:
            doc[name] = draw(json_values)
    return doc


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["reading-corrected", "reading-raw"]), mutated())
def test_fast_check_agrees_with_jsonschema(name, doc):
    if name == "reading-raw":
        doc.pop("temperature_raw", None)
        doc.pop("correction", None)
    fast = compile_contract(name)
    assert fast is not None
    assert fast(doc) == contracts.validator(name).is_valid(doc)


def test_known_cases():
    fast = compile_contract("reading-corrected")
    assert fast(corrected(1))
    assert fast(dict(corrected(1), seq=3.0, held_from=2))               # localgg's floats are integers
    assert not fast(dict(corrected(1), seq=3.5))
    assert not fast(dict(corrected(1), heat_stable=1))
    assert not fast(dict(corrected(1), temperature=True))
    assert not fast(dict(corrected(1), extra=1))
    assert not fast({k: v for k, v in corrected(1).items() if k != "correction"})
    assert not fast(dict(corrected(1), run="1A2B3C4D"))
    assert not fast([corrected(1)])
