"""Settings the heart issue's review found accepted or lost: a topic the component's own
accessControl does not allow (it deployed as SUCCEEDED and stalled the pipeline), a bad
value after a restart (the default applied, not the last good one), a shadow section that
is not an object (ignored without a word). Pure, plus a real file for the last good values."""

import json
import logging
from pathlib import Path

import pytest
import yaml

from backfill_common import access, last_good
from backfill_common.follow import Followed
from backfill_common.settings import Settings

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
log = logging.getLogger("test")


def recipe_access(name):
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    return recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]


def policy(service, operations, resources):
    return {service: {"p:1": {"operations": operations, "resources": resources}}}


# -- access: judged as the nucleus judges ------------------------------------------------------
@pytest.mark.parametrize("resources, topic, allowed", [
    (["backfill/readings/raw"], "backfill/readings/raw", True),
    (["backfill/readings/raw"], "backfill/readings/raw2", False),
    (["backfill/*"], "backfill/readings/raw", True),          # * is any characters, / too
    (["*"], "anything/at/all", True),
    (["backfill/+/raw"], "backfill/readings/raw", False),      # + and # are MQTT's: not for pub/sub
])
def test_pubsub_resources(resources, topic, allowed):
    rules = policy(access.PUBSUB, [access.PUBLISH], resources)
    assert (access.denied(rules, access.PUBSUB, access.PUBLISH, topic) is None) == allowed


@pytest.mark.parametrize("resources, topic, allowed", [
    (["dt/+/readings"], "dt/pi-1/readings", True),
    (["dt/+/readings"], "dt/pi-1/x/readings", False),
    (["dt/#"], "dt/pi-1/readings", True),
    (["#"], "dt/pi-1/readings", True),
    (["dt/{iot:thingName}/readings"], "dt/pi-1/readings", True),          # interpolated
    (["dt/{iot:thingName}/readings"], "dt/{iot:thingName}/readings", True),   # or literal
    (["dt/{iot:thingName}/readings"], "dt/pi-2/readings", False),
])
def test_mqttproxy_resources(resources, topic, allowed):
    rules = policy(access.MQTT, [access.PUBLISH_IOT], resources)
    assert (access.denied(rules, access.MQTT, access.PUBLISH_IOT, topic, thing="pi-1") is None) == allowed


def test_the_operation_and_the_service_must_both_match():
    rules = policy(access.PUBSUB, [access.SUBSCRIBE], ["backfill/acks"])
    assert access.denied(rules, access.PUBSUB, access.PUBLISH, "backfill/acks") is not None
    assert access.denied(rules, access.PUBSUB, access.SUBSCRIBE, "backfill/acks") is None
    assert access.denied(policy(access.PUBSUB, ["*"], ["backfill/acks"]), access.PUBSUB, access.PUBLISH,
                         "backfill/acks") is None
    assert "allows nothing" in access.denied(rules, access.MQTT, access.PUBLISH_IOT, "backfill/acks")
    assert access.denied(None, access.PUBSUB, access.PUBLISH, "x") is None      # nothing to judge by


# -- a topic outside the component's own accessControl is refused with the reason -----------------
def test_a_raw_topic_the_sensor_may_not_publish_on_is_refused_and_the_last_good_one_stays():
    from bme680_sensor.runner import ACCESS
    settings = Settings("config-sensor", "sampling", access=ACCESS, thing="pi-1")
    rules = recipe_access("io.backfill.Bme680Sensor")
    change = settings.apply(config={"raw_topic": "site-a/raw", "interval_s": 2.0, "accessControl": rules})
    assert change.effective["raw_topic"] == "backfill/readings/raw" and change.effective["interval_s"] == 2.0
    [error] = change.errors
    assert "raw_topic: 'site-a/raw' is not in this component's accessControl" in error
    assert "aws.greengrass#PublishToTopic allows backfill/readings/raw" in error
    # the same deployment with accessControl widened: accepted
    wider = json.loads(json.dumps(rules))
    wider["aws.greengrass.ipc.pubsub"]["io.backfill.Bme680Sensor:pubsub:1"]["resources"].append("site-a/raw")
    change = settings.apply(config={"raw_topic": "site-a/raw", "accessControl": wider})
    assert change.effective["raw_topic"] == "site-a/raw" and change.errors == []


def test_a_shadow_override_of_a_topic_is_judged_by_the_same_accesscontrol():
    from temperature_correction.runner import ACCESS
    settings = Settings("config-correction", "correction", access=ACCESS, thing="pi-1")
    settings.apply(config={"accessControl": recipe_access("io.backfill.TemperatureCorrection")})
    change = settings.apply(shadow={"state": {"desired": {"correction": {"corrected_topic": "elsewhere"}}}})
    assert change.effective["corrected_topic"] == "backfill/readings/corrected"
    assert "shadow desired.correction: corrected_topic: 'elsewhere' is not in" in change.errors[0]


def test_the_stores_iot_topic_is_judged_after_its_thing_is_filled_in():
    from store_and_forward.runner import ACCESS, consistent, expand
    settings = Settings("config-store", "forward", together=consistent, access=ACCESS, thing="pi-1", expand=expand)
    rules = recipe_access("io.backfill.StoreAndForward")
    assert settings.apply(config={"iot_topic": "dt/backfill/{thing}/readings", "accessControl": rules}).errors == []
    change = settings.apply(config={"iot_topic": "dt/other/{thing}/readings", "accessControl": rules})
    assert change.effective["iot_topic"] == "dt/backfill/{thing}/readings"
    assert "'dt/other/pi-1/readings' is not in this component's accessControl" in change.errors[0]


def test_every_default_topic_is_allowed_by_its_own_recipe():
    from bme680_sensor.runner import ACCESS as SENSOR
    from store_and_forward.runner import ACCESS as STORE, expand
    from temperature_correction.runner import ACCESS as CORRECTION
    for name, schema, section, rules in (("io.backfill.Bme680Sensor", "config-sensor", "sampling", SENSOR),
                                         ("io.backfill.TemperatureCorrection", "config-correction", "correction",
                                          CORRECTION),
                                         ("io.backfill.StoreAndForward", "config-store", "forward", STORE)):
        settings = Settings(schema, section, access=rules, thing="pi-1", expand=expand)
        change = settings.apply(config=dict(settings.defaults, accessControl=recipe_access(name)))
        assert change.errors == [], name


# -- shadow sections that are not objects: a word, not silence ---------------------------------------
def test_a_shadow_section_that_is_not_an_object_is_refused_with_a_word_until_it_is_fixed():
    settings = Settings("config-sensor", "sampling")
    settings.apply(config={"interval_s": 2.0})
    change = settings.apply(shadow={"state": {"desired": {"sampling": "fast"}}})
    assert change.effective["interval_s"] == 2.0
    assert change.errors == ["shadow state.desired.sampling: str 'fast', not an object: ignored "
                             "(the configuration applies)"]
    assert settings.apply(config={"interval_s": 3.0}).errors == []          # reported once ...
    assert settings.problems                                                 # ... and in force
    change = settings.apply(shadow={"state": {"desired": {"sampling": {"interval_s": 5.0}}}})
    assert change.effective["interval_s"] == 5.0 and not settings.problems


# -- the last good value survives a restart -----------------------------------------------------
def test_a_bad_value_after_a_restart_keeps_the_last_good_one_not_the_default(tmp_path):
    path = tmp_path / "settings.json"
    first = Followed(Settings("config-sensor", "sampling"), log, path=path)
    assert first.apply(config={"interval_s": 2.0}).effective["interval_s"] == 2.0
    # the process restarts; the next deployment says interval_s: 0
    second = Followed(Settings("config-sensor", "sampling"), log, path=path)
    change = second.apply(config={"interval_s": 0})
    assert change.effective["interval_s"] == 2.0
    assert "interval_s: 0 is not allowed" in change.errors[0] and "keeping 2.0" in change.errors[0]
    # a key no layer sets any more returns to its default, as without a file
    assert second.apply(config={}).effective["interval_s"] == 1.0


def test_an_unreadable_or_stale_settings_file_gives_the_defaults(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"interval_s": 2.0, "max_unac')                       # torn
    assert Followed(Settings("config-sensor", "sampling"), log, path=path).effective["interval_s"] == 1.0
    path.write_text(json.dumps({"interval_s": -5, "no_such_key": 1, "max_unacked": 100}))
    followed = Followed(Settings("config-sensor", "sampling"), log, path=path)
    assert followed.effective["interval_s"] == 1.0 and followed.effective["max_unacked"] == 100
    assert "no_such_key" not in followed.effective


def test_a_settings_file_that_cannot_be_written_is_counted_and_the_settings_apply(tmp_path):
    from backfill_common.problems import Problems
    problems = Problems(log)
    followed = Followed(Settings("config-sensor", "sampling"), log, problems, path=tmp_path / "gone" / "s.json")
    assert followed.apply(config={"interval_s": 2.0}).effective["interval_s"] == 2.0
    assert problems.counts["settings save"] == 1
    assert last_good.load(tmp_path / "gone" / "s.json") == {}

