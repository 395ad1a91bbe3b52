"""Batch format v1: sizes against IoT Core's limits and billing units, nothing lost or
duplicated by packing, decodable, ids stable."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from backfill_common import contracts
from store_and_forward import packer

TOPIC = "dt/backfill/pi-garage-01/readings"


def reading(seq, run="1a2b3c4d", t0=1_764_338_400_000, **extra):
    doc = {"run": run, "seq": seq, "t": t0 + seq * 1000, "mono": seq * 1000, "clock_synced": True,
           "status": "ok", "temperature": 21.37 + (seq % 7) / 100, "temperature_raw": 24.91,
           "humidity": 45.123 + (seq % 5), "pressure": 1013.25 - (seq % 3) / 100, "gas_resistance": 51234.0,
           "heat_stable": True, "cpu_temperature": 48.3, "correction": "cpu_factor"}
    doc.update(extra)
    return doc


def test_capacity_fills_whole_billing_units_under_the_payload_limit():
    cap = packer.capacity(131072, TOPIC)
    assert cap <= 131072
    assert (cap + len(TOPIC)) % 5120 == 0
    assert packer.units(cap, len(TOPIC)) == 25
    assert packer.units(cap + 1, len(TOPIC)) == 26
    assert packer.capacity(8192, TOPIC) + len(TOPIC) == 5120


def test_a_batch_is_a_valid_readable_v1_document():
    batch = packer.pack("pi-1", [reading(i) for i in range(3)])[0]
    doc = json.loads(batch.payload)
    assert contracts.check("batch-v1", doc) == []
    assert list(doc)[:4] == ["v", "device", "batch", "fields"]
    assert doc["fields"][:3] == ["run", "seq", "t"]
    assert doc["common"]["correction"] == "cpu_factor"     # the same in every row: said once
    assert doc["rows"][0][:3] == ["1a2b3c4d", 0, 1_764_338_400_000]


def test_decode_gives_back_every_reading_exactly():
    readings = [reading(i) for i in range(50)]
    readings[7]["status"] = "io_error"
    readings[7]["temperature"] = None
    batch = packer.pack("pi-1", readings)[0]
    decoded = packer.decode(batch.payload)
    for original, back in zip(readings, decoded):
        assert back.pop("device") == "pi-1"
        assert back == original                          # 51234.0 comes back as 51234: equal


def test_a_single_reading_is_not_bloated_by_common():
    batch = packer.pack("pi-1", [reading(0)])[0]
    assert "common" not in json.loads(batch.payload)


def test_typical_readings_stay_under_90_bytes_and_25_units_per_thousand():
    readings = [reading(i, mono=86_000_000 + i * 1000) for i in range(1000)]
    batches = packer.pack("pi-garage-01", readings, packer.capacity(131072, TOPIC))
    wire = sum(len(b.payload) + len(TOPIC) for b in batches)
    assert wire / 1000 < 90
    assert sum(b.units(TOPIC) for b in batches) <= 25


def test_the_id_depends_on_content_only():
    a = packer.pack("pi-1", [reading(i) for i in range(10)])[0]
    b = packer.pack("pi-1", [reading(i) for i in range(10)])[0]
    assert a.id == b.id and a.payload == b.payload
    assert a.id.startswith("1a2b3c4d-0-9-")
    retimed = [reading(i) for i in range(10)]
    retimed[3] = dict(retimed[3], t=retimed[3]["t"] + 3_600_000, t_orig=retimed[3]["t"])
    assert packer.pack("pi-1", retimed)[0].id != a.id


def test_t_orig_is_a_column_null_for_readings_not_retimed():
    readings = [reading(0), dict(reading(1), t_orig=5)]
    doc = json.loads(packer.pack("pi-1", readings)[0].payload)
    column = doc["fields"].index("t_orig")
    assert [row[column] for row in doc["rows"]] == [None, 5]


def test_full_builder_refuses_and_keeps_its_rows():
    builder = packer.BatchBuilder("pi-1", 6000)
    added = 0
    while builder.add(reading(added), tag=added):
        added += 1
    assert builder.full and 40 < added < 100
    batch = builder.build()
    assert len(batch.payload) <= 6000 and batch.tags == tuple(range(added))


def test_one_reading_larger_than_the_capacity_is_refused_loudly():
    with pytest.raises(packer.TooLarge):
        packer.BatchBuilder("pi-1", 200).add(reading(0))


def test_a_reading_of_another_device_does_not_join():
    with pytest.raises(ValueError):
        packer.BatchBuilder("pi-1").add(dict(reading(0), device="pi-2"))


def test_decode_refuses_what_is_not_a_batch():
    for bad in (b'{"v":2}', b"[1,2]", b'{"v":1,"rows":[]}'):
        with pytest.raises(ValueError):
            packer.decode(bad)
    assert packer.batch_of(b"\xff") is None


values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=False, allow_infinity=False, width=64),
                   st.text(max_size=40))
extra_fields = st.dictionaries(st.sampled_from(["status", "temperature", "humidity", "pressure", "note", "x_1",
                                                "heat_stable", "correction"]), values, max_size=6)
runs = st.sampled_from(["1a2b3c4d", "00000000", "ffffffff"])


@st.composite
def reading_lists(draw):
    n = draw(st.integers(1, 150))
    out, seen = [], set()
    for _ in range(n):
        run = draw(runs)
        seq = draw(st.integers(0, 10**15))
        if (run, seq) in seen:
            continue
        seen.add((run, seq))
        doc = {"run": run, "seq": seq, "t": draw(st.integers(0, 2**53)), "mono": draw(st.integers(0, 2**40))}
        doc.update(draw(extra_fields))
        out.append(doc)
    return out


@settings(max_examples=40, deadline=None)
@given(reading_lists(), st.integers(1500, 131072))
def test_packing_never_exceeds_and_never_loses_or_duplicates(readings, cap):
    batches = packer.pack("pi-garage-01", readings, cap)
    assert all(len(b.payload) <= cap for b in batches)
    tags = [tag for b in batches for tag in b.tags]
    assert tags == list(range(len(readings)))          # each reading once, in order
    decoded = [r for b in batches for r in packer.decode(b.payload)]
    assert [(r["run"], r["seq"]) for r in decoded] == [(r["run"], r["seq"]) for r in readings]
    for original, back in zip(readings, decoded):
        assert all(back[k] == original[k] for k in original)      # 2.0 may come back as 2
    ids = [b.id for b in batches]
    assert len(set(ids)) == len(ids)
    for b in batches:
        assert contracts.check("batch-v1", json.loads(b.payload)) == []


@settings(max_examples=10, deadline=None)
@given(st.integers(500, 5000), st.floats(0.0, 1.0))
def test_typical_readings_bill_at_most_25_units_per_thousand(n, jitter):
    readings = [reading(i, temperature=round(15 + jitter * 10 + (i % 97) / 10, 2)) for i in range(n)]
    batches = packer.pack("pi-garage-01", readings, packer.capacity(131072, TOPIC))
    assert all(len(b.payload) <= 131072 for b in batches)
    assert sum(b.units(TOPIC) for b in batches) * 1000 / n <= 25 + 1000 / n   # the last batch is partial
