"""packer.BatchBuilder.add_stored: stored rows packed from their JSON body without decoding
it (the drain's way) give the very batches add() gives from the decoded readings, byte for
byte, and keep the batch contract: never over capacity, every row in exactly one batch, in
order, decoded back to the readings."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from store_and_forward import packer
from store_and_forward.store import Row, body_of

DEVICE = "pi-1"
T0 = 1_764_338_400_000

# values as the pipeline gives them, and the awkward ones: integral floats (written without
# ".0" up to 2**53), -0.0, exponents, huge and tiny numbers, strings with escapes, null
NUMBERS = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 3)),
    st.integers(min_value=-10**6, max_value=10**6),
    st.integers(min_value=-10**6, max_value=10**6).map(float),
    st.sampled_from([0.0, -0.0, 1e16, 9007199254740993.0, 123456789012345.0, 1234567890123456.0, 5e-05, -1.5e-07,
                     2 ** 60, 0.1 + 0.2]),
    st.none())
TEXTS = st.one_of(st.sampled_from(["ok", "io_error", "cpu_factor"]), st.text(max_size=6))


@st.composite
def stored_rows(draw):
    """Rows as the store keeps them: mostly one shape (a sensor's), sometimes another run, a
    re-timed reading (t_orig), a field more or less, another value type."""
    n = draw(st.integers(min_value=1, max_value=60))
    lag = draw(st.integers(min_value=0, max_value=20))
    rows = []
    t = T0
    for i in range(n):
        t += draw(st.sampled_from([1000, 1000, 1000, 999, 1017, -5000]))
        body = {"clock_synced": True, "status": "ok", "temperature": round(21.0 + i / 100, 2),
                "humidity": draw(NUMBERS), "pressure": draw(st.sampled_from([1013.25, 1013.0, 1013.3])),
                "heat_stable": True, "correction": "cpu_factor"}
        if draw(st.integers(0, 9)) == 0:
            body["status"] = draw(TEXTS)
        if draw(st.integers(0, 14)) == 0:
            body["extra"] = draw(st.one_of(NUMBERS, TEXTS, st.booleans()))
        if draw(st.integers(0, 14)) == 0:
            del body["correction"]
        run = draw(st.sampled_from(["1a2b3c4d"] * 9 + ["5e6f7a8b"]))
        t_orig = t - 3_600_000 if draw(st.integers(0, 19)) == 0 else None
        mono = i * 1000 - draw(st.integers(0, lag))
        reading = {"run": run, "seq": i, "t": t, "mono": mono, **body}
        rows.append(Row(100 + i, DEVICE, run, i, t, mono, t_orig, body_of(reading)))
    return rows


def pack(rows, capacity, stored):
    """Every row into batches as the planner does (a refused row starts the next batch);
    a row too large for any batch is left out (the planner dead-letters it)."""
    batches, builder = [], packer.BatchBuilder(DEVICE, capacity)

    def add(b, row):
        return b.add_stored(row, tag=row.id) if stored else b.add(row.reading(), tag=row.id)

    for row in rows:
        try:
            if add(builder, row):
                continue
        except packer.TooLarge:
            continue
        batches.append(builder.build())
        builder = packer.BatchBuilder(DEVICE, capacity)
        add(builder, row)
    if len(builder):
        batches.append(builder.build())
    return batches


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored_rows(), st.sampled_from([200, 400, 700, 1500, 5120, 131072]))
def test_stored_rows_pack_into_the_same_bytes_as_their_decoded_readings(rows, capacity):
    matched = pack(rows, capacity, stored=True)
    decoded = pack(rows, capacity, stored=False)
    assert [(b.payload, b.keys, b.tags, b.id) for b in matched] == [(b.payload, b.keys, b.tags, b.id) for b in decoded]
    packed = [tag for b in matched for tag in b.tags]
    fits = {row.id for row in rows if pack([row], capacity, stored=False)}
    assert packed == [row.id for row in rows if row.id in fits]          # each once, in order
    by_id = {row.id: row for row in rows}
    for batch in matched:
        assert len(batch.payload) <= capacity
        for tag, back in zip(batch.tags, packer.decode(batch.payload)):
            assert back.pop("device") == DEVICE
            reading = by_id[tag].reading()                  # 50000.0 comes back as 50000: equal
            assert back == {**dict.fromkeys(back), **reading}       # a field it lacks is null in its row


class Undecodable(Row):
    """A stored row whose body must not be decoded (reading() fails)."""
    def reading(self):
        raise AssertionError(f"row {self.id} was decoded")


def test_rows_of_the_batch_shape_are_matched_not_decoded():
    rows = [Row(i, DEVICE, "1a2b3c4d", i, T0 + i * 1000 + i % 7, i * 1000, None,
                body_of({"clock_synced": True, "status": "ok", "temperature": 21.0 + i / 100,
                         "gas_resistance": 50_000.0 + i * 10, "heat_stable": True}))
            for i in range(500)]
    builder = packer.BatchBuilder(DEVICE, packer.capacity(131072, "dt/backfill/pi-1/readings"))
    for row in rows[:2]:                       # the first two set the shape
        assert builder.add_stored(row, tag=row.id)
    for row in rows[2:]:
        assert builder.add_stored(Undecodable(*row), tag=row.id)
    batch = builder.build()
    reference = packer.pack(DEVICE, [row.reading() for row in rows])[0]
    assert batch.payload == reference.payload and batch.tags == tuple(range(500))
    assert json.loads(batch.payload)["rows"][3][-1] == 50030          # 50030.0 written as 50030


@pytest.mark.parametrize("body, decoded", [
    ('{"clock_synced":true,"status":"ok","temperature":-0.0,"heat_stable":true}', True),        # written 0
    ('{"clock_synced":true,"status":"ok","temperature":1e+16,"heat_stable":true}', True),        # exponent
    ('{"clock_synced":true,"status":"ok","temperature":1234567890123456.0,"heat_stable":true}', True),  # >= 2**53
    ('{"clock_synced":true,"status":"o\\"k","temperature":21.5,"heat_stable":true}', True),     # a constant breaks
    ('{"clock_synced":true,"status":"ok","temperature":21.0,"heat_stable":true}', False),        # 21.0 -> 21
    ('{"status":"ok","clock_synced":true,"temperature":21.5,"heat_stable":true}', True),         # another order
])
def test_what_the_template_cannot_vouch_for_is_decoded(body, decoded):
    first = [Row(i, DEVICE, "1a2b3c4d", i, T0 + i * 1000, i * 1000, None,
                 '{"clock_synced":true,"status":"ok","temperature":%s,"heat_stable":true}' % (21.25 + i))
             for i in range(3)]
    row = Row(3, DEVICE, "1a2b3c4d", 3, T0 + 3000, 3000, None, body)
    builder = packer.BatchBuilder(DEVICE, 131072)
    for r in first:
        builder.add_stored(r, tag=r.id)
    if decoded:
        with pytest.raises(AssertionError, match="was decoded"):
            builder.add_stored(Undecodable(*row), tag=row.id)
    assert builder.add_stored(row, tag=row.id)
    assert builder.build().payload == packer.pack(DEVICE, [r.reading() for r in first + [row]])[0].payload
