"""The frugal issue's first finding, held by the bench's own simulation (the store's code on a
simulated clock): at the default settings, 1 Hz, online, confirmation included, at most 200
billed units per 1,000 readings (was about 2,000), the cloud at most 10 s behind, the shadow
under 10 % of that (was about as much again)."""

from storebench import online


def test_the_defaults_cost_a_fifth_of_the_naive_publisher_and_stay_within_10_s():
    from backfill_common.settings import Settings
    defaults = Settings("config-store", "forward").defaults
    for confirm in ("echo", "rule"):
        r = online.simulate(defaults["max_latency_ms"], confirm, readings=1000)
        assert r["delivered"] == 1000
        assert r["units_readings"] <= 200, (confirm, r)
        assert r["max_s"] <= 10.0, (confirm, r)
        assert r["units_shadow"] < 0.10 * r["units_readings"], (confirm, r)
    naive = online.naive(1000)
    assert naive["units_readings"] >= 5 * 200


def test_a_short_latency_still_sends_every_reading_at_once():
    r = online.simulate(1000, "echo", readings=200)
    assert r["delivered"] == 200 and r["max_s"] <= 1.5
