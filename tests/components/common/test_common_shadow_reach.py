"""The console pick (issue 12): deployed with no configuration, the nucleus does not
interpolate accessControl, so the recipes' `{iot:thingName}` stays literal and every shadow
operation is refused. The components judge that from their own accessControl before they try
(a refused subscription used to end them), say once what to set, and run without the shadow.
Pure: the recipes' own accessControl, as GetConfiguration returns it either way."""

import logging

import pytest

from backfill_common import access
from backfill_common.shadow_reach import ShadowReach, unreachable
from recipe_defaults import default_config

THING = "pi-1"
COMPONENTS = ("io.backfill.Bme680Sensor", "io.backfill.TemperatureCorrection", "io.backfill.StoreAndForward")


@pytest.mark.parametrize("name", COMPONENTS)
def test_the_shadow_is_in_reach_when_the_nucleus_interpolates(name):
    assert unreachable(default_config(name, interpolated=True), THING, "backfill") is None


@pytest.mark.parametrize("name", COMPONENTS)
def test_without_interpolation_the_shadow_is_out_of_reach_and_the_fix_is_named(name):
    why = unreachable(default_config(name, interpolated=False), THING, "backfill")
    assert why is not None
    assert "interpolateComponentConfiguration" in why and "true" in why
    assert f"$aws/things/{THING}/shadow/name/backfill" in why
    assert "readings are not affected" in why


@pytest.mark.parametrize("name", ["io.backfill.StoreAndForward"])
def test_without_interpolation_the_store_may_still_publish_its_readings_and_hear_confirmations(name):
    """The IoT Core topics carry the thing name too; the recipe allows them with `+` at the
    thing's level (IoT Core's policy, with ${iot:Connection.Thing.ThingName}, is what pins a
    device to its own topics), so the console pick still forwards."""
    control = default_config(name, interpolated=False)["accessControl"]
    for operation, topic in ((access.PUBLISH_IOT, f"dt/backfill/{THING}/readings"),
                             (access.PUBLISH_IOT, f"dt/backfill/{THING}/dead-letters"),
                             (access.SUBSCRIBE_IOT, f"dt/backfill/{THING}/readings"),
                             (access.SUBSCRIBE_IOT, f"backfill/ack/{THING}")):
        assert access.denied(control, access.MQTT, operation, topic) is None, (operation, topic)
    assert access.denied(control, access.MQTT, access.PUBLISH_IOT, "somewhere/else") is not None


def test_an_access_control_that_simply_leaves_the_shadow_out_says_so():
    config = {"accessControl": {"aws.greengrass.ipc.pubsub": {"p": {
        "operations": ["aws.greengrass#PublishToTopic"], "resources": ["backfill/readings/raw"]}}}}
    why = unreachable(config, THING, "backfill")
    assert "does not allow it" in why and "interpolateComponentConfiguration" not in why


def test_no_access_control_to_judge_by_is_taken_as_reachable():
    assert unreachable({}, THING, "backfill") is None
    assert unreachable(None, THING, "backfill") is None


def test_said_once_when_out_of_reach_and_once_when_it_comes_into_reach(caplog):
    reach = ShadowReach(THING, "backfill", logging.getLogger("reach"))
    off, on = (default_config("io.backfill.StoreAndForward", interpolated=flag) for flag in (False, True))
    with caplog.at_level(logging.INFO, logger="reach"):
        assert reach.check(off) is False
        assert reach.check(off) is False
        assert reach.check(None) is False          # a failed read: the judgement stays
        assert reach.check(on) is True
        assert reach.check(on) is True
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "out of reach" in lines[0] and "in reach now" in lines[1]


@pytest.mark.parametrize("key, topic", [("iot_topic", "dt/backfill/pi-2/readings"),
                                        ("dead_letter_topic", "dt/backfill/pi-2/dead-letters"),
                                        ("rule_ack_topic", "backfill/ack/pi-2")])
def test_an_iot_core_topic_of_another_thing_is_refused_although_plus_allows_it(key, topic):
    """Review of the console pick (finding 1): with `+` at the thing's level, a slip naming
    another thing was accepted here and then refused by IoT Core's policy, which strands every
    reading. It is refused with the reason, and the last good value stays."""
    from backfill_common.settings import Settings
    from store_and_forward.forwarder import expand
    from store_and_forward.runner import ACCESS
    for interpolated in (False, True):
        config = default_config("io.backfill.StoreAndForward", interpolated)
        settings = Settings("config-store", "forward", access=ACCESS, thing=THING, expand=expand)
        good = settings.apply(config=config)
        assert good.errors == []
        change = settings.apply(config=dict(config, **{key: topic}))
        assert any("names pi-2 where this core's own thing (pi-1) belongs" in e for e in change.errors), change.errors
        assert settings.effective[key] != topic
        own = topic.replace("pi-2", THING)
        assert settings.apply(config=dict(config, **{key: own})).errors == []
