"""The config-store contract: every key has a default, a range and a description; refusals
name the key and the allowed range; topic templates expand."""

from backfill_common import contracts
from backfill_common.settings import Settings
from store_and_forward.forwarder import expand
from store_and_forward.store import StoreConfig


def test_every_key_has_a_default_and_a_description():
    schema = contracts.schema_of("config-store")
    for key, prop in schema["properties"].items():
        assert "default" in prop and prop.get("description"), key
        assert contracts.validator("config-store").is_valid({key: prop["default"]}), key


def test_the_defaults_are_the_documented_ones():
    d = Settings("config-store", "forward").defaults
    assert (d["confirm"], d["iot_topic"], d["commit_interval_ms"], d["max_latency_ms"], d["synchronous"]) == \
        ("echo", "dt/backfill/{thing}/readings", 5000, 10000, "FULL")
    assert d["max_payload_bytes"] == 131072 and d["max_publishes_per_s"] < 100 and d["max_bytes_per_s"] < 524288
    assert d["unsynced_hold_s"] == 0 and d["full_policy"] == "drop_oldest" and d["shadow_interval_s"] == 300
    store = StoreConfig("x")
    assert (store.max_rows, store.max_bytes, store.max_age_ms) == (d["max_rows"], d["max_bytes"], d["max_age_s"] * 1000)
    assert d["max_rows"] >= 7 * 86_400                      # a week at 1 Hz


def test_bad_values_are_refused_with_their_range():
    settings = Settings("config-store", "forward")
    change = settings.apply(config={"max_in_flight": 0, "confirm": "maybe", "max_payload_bytes": 200_000,
                                    "iot_topic": "dt/#"})
    text = " ".join(change.errors)
    for key in ("max_in_flight", "confirm", "max_payload_bytes", "iot_topic"):
        assert key in text
    assert change.effective["max_in_flight"] == 8 and change.effective["confirm"] == "echo"


def test_topics_expand_the_thing_name():
    assert expand("dt/backfill/{thing}/readings", "pi-1") == "dt/backfill/pi-1/readings"
    assert expand("backfill/ack/{iot:thingName}", "pi-1") == "backfill/ack/pi-1"


def test_inconsistent_combinations_are_refused_together_with_the_reason():
    """The heart issue, item 10: each key was checked on its own only."""
    from backfill_common.settings import Settings
    from store_and_forward.runner import consistent
    settings = Settings("config-store", "forward", together=consistent)
    change = settings.apply(config={"max_latency_ms": 0, "commit_interval_ms": 60000, "max_rows": 5000})
    assert change.effective["commit_interval_ms"] == 5000 and change.effective["max_latency_ms"] == 10000
    assert change.effective["max_rows"] == 5000                               # the rest applies
    assert any("commit_interval_ms 60000, max_latency_ms 0" in e and "keeping" in e for e in change.errors)
    change = settings.apply(desired={"billing_unit_bytes": 65536, "max_payload_bytes": 32768})
    assert (change.effective["billing_unit_bytes"], change.effective["max_payload_bytes"]) == (5120, 131072)
    assert any("a billing unit larger than a batch" in e for e in change.errors)
    alone = settings.apply(config={"max_rows": 5000}, desired={"max_latency_ms": 0})
    assert alone.effective["max_latency_ms"] == 0 and alone.errors == []           # alone it is fine
