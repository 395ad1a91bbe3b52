"""Batch format v1: sizes against IoT Core's limits and billing units, nothing lost or
duplicated by packing, decodable, ids stable."""

import json
import math
import random

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
    assert doc["fields"][:2] == ["seq", "t"]
    assert doc["common"]["correction"] == "cpu_factor"     # the same in every row: said once
    assert doc["common"]["run"] == "1a2b3c4d"              # one run in the batch: said once too
    assert doc["t_base"] == 1_764_338_400_000 and [row[:2] for row in doc["rows"]] == [[0, 0], [1, 1000], [2, 2000]]


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
    doc = json.loads(packer.pack("pi-1", [reading(0)])[0].payload)
    assert "common" not in doc and "mono_offset" not in doc and "t_base" not in doc
    assert doc["rows"][0][:4] == ["1a2b3c4d", 0, 1_764_338_400_000, 0]
    assert doc["fields"][:4] == ["run", "seq", "t", "mono"]


def test_several_runs_in_a_batch_keep_run_as_a_column():
    readings = [reading(i) for i in range(5)] + [reading(i, run="0badf00d", mono=i * 1000 + 7) for i in range(5)]
    doc = json.loads(packer.pack("pi-1", readings)[0].payload)
    assert doc["fields"][:3] == ["run", "seq", "t"] and "run" not in doc.get("common", {})
    assert contracts.check("batch-v1", doc) == []
    assert [strip(r) for r in packer.decode(doc)] == readings


def strip(decoded):
    assert decoded.pop("device") == "pi-1"
    return decoded


def test_mono_with_a_constant_offset_is_said_once():
    readings = [reading(i, mono=86_000_000 + i * 1000) for i in range(200)]
    doc = json.loads(packer.pack("pi-1", readings)[0].payload)
    assert doc["mono_offset"] == readings[0]["t"] - readings[0]["mono"]
    assert "mono" not in doc["fields"] and "mono_lag" not in doc["fields"]
    assert contracts.check("batch-v1", doc) == []
    assert [strip(r) for r in packer.decode(doc)] == readings


def test_mono_with_a_jittery_offset_keeps_only_the_small_lags():
    # a sensor reads its monotonic clock before the measurement and the wall clock after it
    lags = [0, 3, -1, 12, 2, 0, 7] * 30
    readings = [reading(i, mono=86_000_000 + i * 1000 - lag) for i, lag in enumerate(lags)]
    doc = json.loads(packer.pack("pi-1", readings)[0].payload)
    assert "mono_offset" in doc and "mono" not in doc["fields"]
    column = doc["fields"].index("mono_lag")
    assert [row[column] for row in doc["rows"]] == lags
    assert contracts.check("batch-v1", doc) == []
    assert [strip(r) for r in packer.decode(doc)] == readings


def test_the_builder_size_is_the_payload_size_so_batches_fill_their_units():
    readings = [reading(i, mono=86_000_000 + i * 1000, temperature=round(20 + (i * 37 % 1000) / 100, 2))
                for i in range(6000)]
    cap = packer.capacity(131072, TOPIC)
    builder = packer.BatchBuilder("pi-garage-01", cap)
    added = 0
    while builder.add(readings[added], tag=added):
        assert builder.size == len(builder.build().payload) if added % 500 == 0 else True
        added += 1
    batch = builder.build()
    assert len(batch.payload) == builder.size <= cap
    assert cap - len(batch.payload) < 70                # less than one more row was left unused
    assert batch.units(TOPIC) == 25


def daily(n, lag_ms=0, seed=7):
    """Readings like the simulator's daily scenario at 1 Hz, every value changing every reading,
    at the sensor's resolution (0.01 C, 0.001 %RH, 0.01 hPa, 0.1 ohm as the sensor rounds gas today,
    sysfs CPU 0.001 C); mono read up to lag_ms before the wall clock."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t = 1_764_338_400_000 + i * 1000
        day = math.sin(2 * math.pi * ((t % 86_400_000) / 3_600_000 - 9) / 24)
        raw = round(23.5 + 4 * day + rnd.gauss(0, 0.05), 2)
        cpu = round(48 + 3 * day + rnd.gauss(0, 0.5), 3)
        out.append(reading(i, t=t, mono=i * 1000 + 120 - rnd.randint(0, lag_ms),
                           temperature=round(raw - (cpu - raw) / 2.25, 2), temperature_raw=raw,
                           humidity=round(45 - 10 * day + rnd.gauss(0, 0.1), 3),
                           pressure=round(1013.25 + math.cos(2 * math.pi * ((t % 86_400_000) / 3_600_000 - 10) / 12)
                                          + rnd.gauss(0, 0.02), 2),
                           gas_resistance=round(50000 * (1 + 0.2 * day) * (1 + rnd.gauss(0, 0.01)), 1),
                           cpu_temperature=cpu))
    return out


@pytest.mark.parametrize("lag_ms", [0, 20])
def test_realistic_readings_bill_at_most_25_units_per_thousand_with_their_echo(lag_ms):
    readings = daily(20_000, lag_ms)
    batches = packer.pack("pi-garage-01", readings, packer.capacity(131072, TOPIC))
    wire = sum(len(b.payload) + len(TOPIC) for b in batches)
    assert wire / len(readings) < 60
    units = sum(b.units(TOPIC) for b in batches)
    assert 2 * units * 1000 / len(readings) <= 25       # the batch, and its echo (confirm: echo)


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
    assert builder.full and 40 < added < 200
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
                                                "heat_stable", "correction", "mono_lag", "mono_offset", "t_base",
                                                "t_orig"]), values, max_size=6)
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
        t = draw(st.integers(0, 2**53))
        doc = {"run": run, "seq": seq, "t": t}
        mono = draw(st.one_of(st.integers(0, 2**40), st.integers(-3, 3), st.none(), st.just("absent"),
                              st.floats(allow_nan=False, allow_infinity=False)))
        if draw(st.booleans()):                        # a constant or jittery t - mono, as a store gives
            mono = t - draw(st.sampled_from([0, 1_764_338_399_000])) - draw(st.integers(-20, 20))
        if mono != "absent":
            doc["mono"] = mono
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
        assert back.pop("device") == "pi-garage-01"
        assert {k: v for k, v in back.items() if k in original or v is not None} == original   # 2.0 may be 2
        assert all(type(back[k]) is type(packer.compact(v)) for k, v in original.items())
    ids = [b.id for b in batches]
    assert len(set(ids)) == len(ids)
    for b in batches:
        assert contracts.check("batch-v1", json.loads(b.payload)) == []


@st.composite
def store_like_lists(draw):
    """Rows as a store gives them: the same fields in every row, most of them constant or
    slowly changing, t rising with jitter, mono a slot on the monotonic clock."""
    names = draw(st.lists(st.sampled_from(["status", "temperature", "humidity", "gas_resistance", "note",
                                           "clock_synced", "t_orig"]), unique=True, max_size=5))
    n = draw(st.integers(1, 400))
    run, t0, lag = draw(runs), draw(st.integers(0, 2**45)), draw(st.sampled_from([0, 0, 3, 200]))
    out, previous = [], {}
    for i in range(n):
        if draw(st.integers(0, 60)) == 0:
            run = draw(runs)
        doc = {"run": run, "seq": i, "t": t0 + i * 1000 + draw(st.integers(0, lag)), "mono": i * 1000}
        for name in names:
            doc[name] = previous[name] if name in previous and draw(st.integers(0, 3)) else draw(values)
        previous = doc
        out.append(dict(doc))
    return out


@settings(max_examples=40, deadline=None)
@given(store_like_lists(), st.integers(1500, 131072))
def test_store_like_rows_pack_exactly_and_come_back(readings, cap):
    batches = packer.pack("pi-garage-01", readings, cap)
    assert [tag for b in batches for tag in b.tags] == list(range(len(readings)))
    decoded = [r for b in batches for r in packer.decode(b.payload)]
    for original, back in zip(readings, decoded):
        assert back.pop("device") == "pi-garage-01"
        assert back == original
    builder = packer.BatchBuilder("pi-garage-01", cap)
    for index, reading in enumerate(readings):
        if not builder.add(reading, tag=index):
            break
        assert len(builder.build().payload) == builder.size <= cap


@settings(max_examples=40, deadline=None)
@given(reading_lists(), st.integers(1500, 131072))
def test_the_builder_knows_the_exact_size_of_what_it_builds(readings, cap):
    builder = packer.BatchBuilder("pi-garage-01", cap)
    for index, reading in enumerate(readings):
        if not builder.add(reading, tag=index):
            break
        assert len(builder.build().payload) == builder.size <= cap


@settings(max_examples=10, deadline=None)
@given(st.integers(500, 5000), st.floats(0.0, 1.0))
def test_typical_readings_bill_at_most_25_units_per_thousand(n, jitter):
    readings = [reading(i, temperature=round(15 + jitter * 10 + (i % 97) / 10, 2)) for i in range(n)]
    batches = packer.pack("pi-garage-01", readings, packer.capacity(131072, TOPIC))
    assert all(len(b.payload) <= 131072 for b in batches)
    assert sum(b.units(TOPIC) for b in batches) * 1000 / n <= 25 + 1000 / n   # the last batch is partial
