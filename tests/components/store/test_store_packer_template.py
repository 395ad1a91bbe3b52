"""The packer's stored-row template (add_stored) where a body could fool it: a field named like
the derived lag, a stored column inside a body, a body stored as bytes, braces and quotes in a constant
(each found by the review of the drain's fast path, and failing before its fix)."""
from store_and_forward import packer
from store_and_forward.store import Row

DEVICE, T0 = "pi-1", 1_764_338_400_000


def both(rows, capacity=131072):
    out = []
    for stored in (True, False):
        b = packer.BatchBuilder(DEVICE, capacity)
        for r in rows:
            assert (b.add_stored(r, tag=r.id) if stored else b.add(r.reading(), tag=r.id))
        out.append(b.build().payload)
    return out


def test_a_later_field_named_mono_lag_is_not_invented_for_matched_rows():
    rows = [Row(i, DEVICE, "1a2b3c4d", i, T0 + i * 1000 + (i == 3) * 7, i * 1000, None,
                '{"temperature":%s}' % (20.5 + i)) for i in range(5)]
    rows.append(Row(5, DEVICE, "1a2b3c4d", 5, T0 + 5000, 5000, None, '{"temperature":1.5,"mono_lag":1}'))
    matched, decoded = both(rows)
    print(matched.decode()); print(decoded.decode())
    assert [r.get("mono_lag") for r in packer.decode(matched)] == [None] * 5 + [1]
    assert matched == decoded


def test_a_body_holding_a_stored_column_is_not_matched():
    # a body must never carry run/seq/t/mono (BODY_SKIP); if one did (an old file, a salvage):
    rows = [Row(i, DEVICE, "1a2b3c4d", i, T0 + i * 1000, i * 1000, None, '{"a":%d,"b":1}' % i) for i in range(3)]
    rows.append(Row(3, DEVICE, "1a2b3c4d", 3, T0 + 3000, 3000, None, '{"a":3,"seq":99}'))
    rows.append(Row(4, DEVICE, "1a2b3c4d", 4, T0 + 4000, 4000, None, '{"a":4,"seq":98}'))
    matched, decoded = both(rows)
    print(matched.decode()); print(decoded.decode())
    assert matched == decoded


def test_a_blob_body_after_a_text_body_is_decoded_not_a_type_error():
    rows = [Row(i, DEVICE, "1a2b3c4d", i, T0 + i * 1000, i * 1000, None, '{"a":%d}' % i) for i in range(3)]
    rows.append(Row(3, DEVICE, "1a2b3c4d", 3, T0 + 3000, 3000, None, b'{"a":3}'))
    matched, decoded = both(rows)
    assert matched == decoded


def test_a_broken_constant_with_braces_and_quotes_is_written_as_it_was():
    rows = [Row(i, DEVICE, "1a2b3c4d", i, T0 + i * 1000, i * 1000, None,
                '{"s":"{0}\\"}","u":"\\u00e9","a":%d}' % i) for i in range(5)]
    rows.append(Row(5, DEVICE, "1a2b3c4d", 5, T0 + 5000, 5000, None, '{"s":"x","u":"y","a":5}'))
    matched, decoded = both(rows)
    print(matched)
    assert matched == decoded
    assert [r["s"] for r in packer.decode(matched)] == ['{0}"}'] * 5 + ["x"]


def test_delete_of_many_lone_ids_in_chunks(tmp_path):
    import sys, time
    sys.path.insert(0, "tests/components/store")
    from test_store_sqlite import open_store, reading, T0 as S0
    from backfill_common.clock import FakeClock
    store = open_store(tmp_path / "s.db", FakeClock(wall_ms=S0 + 10_000_000), max_rows=10_000_000)
    store.commit([reading(i) for i in range(3000)])
    ids = [row.id for row in store.scan(0, 5000)]
    gone = ids[::2]                               # 1,500 ranges of one id
    start = time.perf_counter()
    assert store.delete(gone) == 1500
    print("delete 1500 lone ids:", time.perf_counter() - start)
    assert [row.id for row in store.scan(0, 5000)] == ids[1::2]
    store.close()
