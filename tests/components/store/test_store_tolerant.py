"""A tolerant reader for additive changes (the heart issue, item 6): a correction release that
adds a field must not turn the stream into dead letters."""

from store_harness import Harness, corrected


def test_readings_with_an_added_field_are_stored_and_forwarded_with_it(tmp_path):
    h = Harness(tmp_path / "store.db")
    h.feed(corrected(i, dew_point=10.5 + i / 1000) for i in range(3000))
    h.step(100, n=200)
    assert h.store.dead_letters() == [] and h.port.acked() == 2999
    assert len(h.cloud) == 3000 and h.store.count == 0
    assert all("dew_point" in reading for reading in h.cloud.values())
    assert h.fwd.problems.counts["extra fields dew_point"] == 3000


def test_an_added_field_does_not_excuse_a_broken_one_or_a_reserved_name(tmp_path):
    h = Harness(tmp_path / "store.db", subscribe=False)
    h.feed([corrected(0, dew_point=1.0, temperature=900.0), corrected(1, t_orig=5), corrected(2, x=float("nan"))])
    h.step(1000)
    assert len(h.store.dead_letters()) == 3 and h.store.count == 0
