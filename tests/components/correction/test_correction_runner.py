"""runner.py over an in-memory stand-in for backfill_common.ipc.Ipc: readings in and out,
settings from configuration and shadow applied live, problems counted and logged once."""

import logging
import threading

import pytest

from conftest import wait_for
from temperature_correction.correction import Corrector
from backfill_common.settings import desired_of
from temperature_correction.runner import RETRY_S, Runner

RAW, CORRECTED = "backfill/readings/raw", "backfill/readings/corrected"


def reading(seq=0, temperature=30.0, cpu=50.0, **extra):
    doc = {"device": "dev-1", "run": "0badcafe", "seq": seq, "t": 1764338400000 + seq, "mono": seq,
           "clock_synced": False, "status": "ok", "temperature": temperature, "humidity": 45.0,
           "pressure": 1013.25, "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": cpu}
    doc.update(extra)
    return doc


class MemoryIpc:
    """The methods of backfill_common.ipc.Ipc the runner uses, kept in memory. Callbacks run
    at once on the caller's thread; a shadow update is merged and announced like ShadowManager."""

    def __init__(self, config=None, shadow=None):
        self.config = dict(config or {})
        self.shadow = shadow                 # {"state": {"desired": ..., "reported": ...}} or None
        self.published, self.reports = [], []
        self.subscriptions, self.config_callbacks, self.shadow_callbacks = {}, [], []
        self.fail_publish = self.fail_report = 0
        self.lock = threading.Lock()

    # Ipc's methods
    def get_configuration(self):
        return dict(self.config)

    def on_configuration_change(self, callback):
        self.config_callbacks.append(callback)

    def publish_json(self, topic, doc):
        if self.fail_publish:
            self.fail_publish -= 1
            raise ConnectionError("core gone")
        with self.lock:
            self.published.append((topic, doc))

    def subscribe(self, topic, callback):
        self.subscriptions.setdefault(topic, []).append(callback)

    def get_shadow(self, name):
        assert name == "backfill"
        return self.shadow

    def update_shadow(self, name, document):
        assert name == "backfill"
        if self.fail_report:
            self.fail_report -= 1
            raise TimeoutError("ShadowManager busy")
        self.reports.append(document["state"]["reported"]["correction"])
        self._merge(document["state"])
        return {}

    def on_shadow_document(self, name, callback):
        assert name == "backfill"
        self.shadow_callbacks.append(callback)

    # what a test does to it
    def deliver(self, payload, topic=RAW):
        for callback in self.subscriptions.get(topic, []):
            callback(topic, payload)

    def change_config(self, **changes):
        self.config.update(changes)
        for callback in self.config_callbacks:
            callback()

    def set_desired(self, correction):
        self._merge({"desired": {"correction": correction}}, replace=True)

    def _merge(self, state, replace=False):
        self.shadow = self.shadow or {"state": {}}
        for section, value in state.items():
            target = self.shadow["state"].setdefault(section, {})
            for key, part in value.items():
                target[key] = part if replace or not isinstance(part, dict) else {**target.get(key, {}), **part}
        for callback in self.shadow_callbacks:
            callback(self.shadow)

    def corrected(self, topic=CORRECTED):
        with self.lock:
            return [doc for t, doc in self.published if t == topic]


def drain(runner):
    while (message := runner.inbox.get(timeout=0)) is not None:
        runner.step(message)


@pytest.fixture
def ipc():
    return MemoryIpc()


def started(ipc):
    runner = Runner(ipc, Corrector())
    runner.start()
    drain(runner)
    return runner


def test_readings_in_corrected_out_and_the_settings_reported(ipc):
    runner = started(ipc)
    assert list(ipc.subscriptions) == [RAW]
    assert ipc.reports[-1] == {"method": "cpu_factor", "factor": 2.25, "window": 5, "a": 1.0, "b": 0.0, "c": 0.0,
                               "raw_topic": RAW, "corrected_topic": CORRECTED}
    ipc.deliver(reading(0, 30.0, 50.0))
    ipc.deliver(reading(1, 30.0, 52.0))
    drain(runner)
    assert [d["temperature"] for d in ipc.corrected()] == [21.11, 20.67]
    assert [d["temperature_raw"] for d in ipc.corrected()] == [30.0, 30.0]
    assert runner.corrected == 2 and not runner.problems.counts


def test_json_as_binary_is_accepted(ipc):
    runner = started(ipc)
    ipc.deliver(b'{"device": "d", "run": "0badcafe", "seq": 0, "t": 1, "mono": 0, "clock_synced": false, '
                b'"status": "ok", "temperature": 20.0, "humidity": null, "pressure": null, '
                b'"gas_resistance": null, "heat_stable": null, "cpu_temperature": 42.5}')
    drain(runner)
    assert ipc.corrected()[0]["temperature"] == round(20 - 22.5 / 2.25, 2)


def test_configuration_and_shadow_desired_at_start():
    ipc = MemoryIpc(config={"factor": 1.0, "window": 1, "corrected_topic": "mine/corrected",
                            "accessControl": {"aws.greengrass.ipc.pubsub": {"any": {"operations": ["*"], "resources": ["*"]}},
                              "aws.greengrass.ShadowManager": {"any": {"operations": ["*"], "resources": ["*"]}}}},
                    shadow={"state": {"desired": {"correction": {"window": 3}, "sampling": {"interval_s": 5}}}})
    runner = started(ipc)
    assert ipc.reports[-1]["factor"] == 1.0 and ipc.reports[-1]["window"] == 3
    assert runner.corrector.params.window == 3
    ipc.deliver(reading(0, 30.0, 40.0))
    drain(runner)
    assert ipc.corrected("mine/corrected")[0]["temperature"] == 20.0


def test_shadow_desired_applies_live_and_is_reported(ipc):
    runner = started(ipc)
    ipc.set_desired({"method": "linear", "a": 1.0, "b": -0.5, "c": 2.0})
    drain(runner)
    assert ipc.reports[-1]["method"] == "linear" and ipc.reports[-1]["b"] == -0.5
    ipc.deliver(reading(0, 30.0, 40.0))
    drain(runner)
    assert ipc.corrected()[-1]["temperature"] == 12.0 and ipc.corrected()[-1]["correction"] == "linear"
    # our own report comes back as a shadow document: no further report, no loop
    reports = len(ipc.reports)
    drain(runner)
    assert len(ipc.reports) == reports
    # the override removed: the deployment configuration applies again
    ipc.set_desired(None)
    drain(runner)
    assert ipc.reports[-1]["method"] == "cpu_factor"


def test_a_bad_desired_value_is_refused_with_key_and_range_and_the_last_good_one_stays(ipc, caplog):
    runner = started(ipc)
    ipc.set_desired({"factor": 1.5})
    drain(runner)
    with caplog.at_level(logging.WARNING):
        ipc.set_desired({"factor": 0, "window": 2})
        drain(runner)
    refusals = [r.getMessage() for r in caplog.records if "factor" in r.getMessage()]
    assert len(refusals) == 1
    assert "factor: 0 is not allowed" in refusals[0] and "0.1 to 100" in refusals[0] and "1.5" in refusals[0]
    assert runner.corrector.params.factor == 1.5 and runner.corrector.params.window == 2
    assert ipc.reports[-1]["factor"] == 1.5 and ipc.reports[-1]["window"] == 2


def test_configuration_changes_apply_live_including_topics(ipc):
    runner = started(ipc)
    ipc.change_config(corrected_topic="other/corrected", window=1)
    drain(runner)
    ipc.deliver(reading(0, 30.0, 52.5))
    drain(runner)
    assert ipc.corrected("other/corrected")[0]["temperature"] == 20.0
    ipc.change_config(raw_topic="other/raw")
    drain(runner)
    assert "other/raw" in ipc.subscriptions
    ipc.deliver(reading(1), topic=RAW)          # the old subscription stays open: ignored
    ipc.deliver(reading(2), topic="other/raw")
    drain(runner)
    assert [d["seq"] for d in ipc.corrected("other/corrected")] == [0, 2]
    assert ipc.reports[-1]["raw_topic"] == "other/raw"


def test_invalid_messages_are_logged_once_per_kind_and_counted(ipc, caplog):
    runner = started(ipc)
    with caplog.at_level(logging.WARNING):
        for seq in range(3):
            ipc.deliver(reading(seq, run=f"BAD{seq}"))
        ipc.deliver(b"\x00garbage")
        ipc.deliver(b"{")
        ipc.deliver({"hello": "world"})
        ipc.deliver(reading(5))
        drain(runner)
    assert dict(runner.problems.counts) == {"reading-raw: run pattern": 3, "not JSON": 2,
                                            "reading-raw: (document) required (device, mono, run, seq, t)": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert any("run" in w and "BAD0" in w for w in warnings)
    assert [d["seq"] for d in ipc.corrected()] == [5]


def test_a_correction_out_of_contract_is_published_uncorrected(ipc, caplog):
    runner = started(ipc)
    ipc.set_desired({"method": "linear", "a": 10.0})
    with caplog.at_level(logging.WARNING):
        ipc.deliver(reading(0, 30.0))
        ipc.deliver(reading(1, 31.0))
        drain(runner)
    out = ipc.corrected()
    assert [(d["temperature"], d["correction"]) for d in out] == [(30.0, "none"), (31.0, "none")]
    assert runner.problems.counts["reading-corrected: temperature maximum"] == 2
    assert sum("published uncorrected" in r.getMessage() for r in caplog.records) == 1


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_publish_and_report_failures_are_counted_and_survived(ipc):
    ipc.fail_report = 1
    clock = Clock()
    runner = Runner(ipc, Corrector(), clock=clock)
    runner.start()
    assert ipc.reports == []
    ipc.fail_publish = 1
    ipc.deliver(reading(0))
    ipc.deliver(reading(1))
    drain(runner)
    assert [d["seq"] for d in ipc.corrected()] == [1]
    assert runner.problems.counts == {"shadow report TimeoutError": 1, "publish ConnectionError": 1}
    assert ipc.reports == []                                      # not before RETRY_S
    clock.now += RETRY_S
    runner.maintain()
    assert ipc.reports and ipc.reports[-1]["method"] == "cpu_factor"


def test_a_shadow_that_cannot_be_read_at_start_is_read_again_later():
    ipc = MemoryIpc(config={"factor": 1.0}, shadow={"state": {"desired": {"correction": {"factor": 3.0}}}})
    failing = ipc.get_shadow

    def get_shadow(name):
        if clock.now < 110:
            raise TimeoutError("Too Many Requests")
        return failing(name)
    ipc.get_shadow = get_shadow
    clock = Clock()
    runner = Runner(ipc, Corrector(), clock=clock)
    runner.start()
    assert runner.corrector.params.factor == 1.0 and ipc.reports == []
    clock.now += RETRY_S
    runner.maintain()                                             # fails again
    assert runner.problems.counts["shadow read TimeoutError"] == 2
    clock.now += RETRY_S
    ipc.deliver(reading(0))
    drain(runner)
    assert runner.corrector.params.factor == 3.0
    assert ipc.reports[-1]["factor"] == 3.0


def test_run_handles_messages_from_other_threads_until_stopped(ipc):
    runner = Runner(ipc, Corrector())
    runner.start()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        feeder = threading.Thread(target=lambda: [ipc.deliver(reading(i)) for i in range(20)])
        feeder.start()
        feeder.join()
        wait_for(lambda: len(ipc.corrected()) == 20, message="20 corrected readings")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert [d["seq"] for d in ipc.corrected()] == list(range(20))


@pytest.mark.parametrize("document, section, word", [
    (None, {}, False),
    ({}, {}, False),
    ({"state": {"reported": {"correction": {"factor": 1}}}}, {}, False),
    ({"state": {"desired": None}}, {}, False),
    ({"state": {"desired": {"correction": None}}}, {}, False),
    ({"state": {"desired": {"correction": "linear"}}}, {}, True),
    ({"state": {"desired": ["correction"]}}, {}, True),
    ({"state": 7}, {}, True),
    ({"state": {"desired": {"correction": {"factor": 1}}}}, {"factor": 1}, False),
])
def test_desired_of(document, section, word):
    """A section that is there but not an object is ignored with a word, never silently."""
    found, why = desired_of(document, "correction")
    assert found == section
    assert (why is not None) == word
    if word:
        assert "not an object" in why and "desired.correction" in why


def test_an_ipc_error_reading_the_configuration_is_survived_counted_reported_and_read_again():
    """The heart issue, item 3: GetConfiguration failing at start (or on a change) ended the
    process; three restarts later Greengrass marked it BROKEN."""
    clock = Clock()
    ipc = MemoryIpc(config={"factor": 3.0})
    real = ipc.get_configuration
    failing = [True]

    def get_configuration():
        if failing[0]:
            raise ConnectionError("GetConfiguration: the core is restarting")
        return real()
    ipc.get_configuration = get_configuration
    runner = Runner(ipc, Corrector(), clock=clock)
    runner.start()                                                # does not raise
    ipc.deliver(reading(0))
    drain(runner)
    assert [d["seq"] for d in ipc.corrected()] == [0]             # correcting with the defaults
    assert runner.problems.counts["configuration read ConnectionError"] >= 1
    failing[0] = False
    clock.now += RETRY_S
    runner.maintain()                                             # read again with the next upkeep
    assert runner.corrector.params.factor == 3.0


def test_a_flood_on_the_raw_topic_is_bounded_and_counted(ipc):
    """Like the store's inbox: a flood must not grow the process without limit. Beyond
    INBOX_READINGS waiting, raw readings are dropped and counted (the sensor sends again what
    the store has not acknowledged); the rest are corrected."""
    from temperature_correction.runner import INBOX_READINGS
    runner = Runner(ipc, Corrector())
    runner.start()
    drain(runner)
    for seq in range(2 * INBOX_READINGS):                # the loop is not running: a stalled correction
        ipc.deliver(reading(seq))
    assert runner.inbox.qsize() == INBOX_READINGS and runner.inbox.dropped == INBOX_READINGS
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(ipc.corrected()) == INBOX_READINGS and runner.problems.counts["overloaded"]
                 == INBOX_READINGS, timeout=60, message="the queued readings corrected, the dropped ones counted")
    finally:
        stop.set()
        thread.join(10)
    assert [d["seq"] for d in ipc.corrected()] == list(range(INBOX_READINGS))


def recipe_access(interpolated: bool) -> dict:
    from recipe_defaults import default_config
    return default_config("io.backfill.TemperatureCorrection", interpolated, "dev-1")["accessControl"]


def test_the_console_pick_without_interpolation_corrects_on_and_follows_the_shadow_once_allowed(caplog):
    """The issue's first failure: deployed as the console does it, the correction subscribed
    to `$aws/things/{iot:thingName}/shadow/...`, was refused and exited. Now the shadow is
    judged out of reach from its own accessControl, said once, and readings are corrected;
    a later deployment that interpolates brings the shadow in."""
    ipc = MemoryIpc(config={"accessControl": recipe_access(False)})
    ipc.thing_name = "dev-1"
    with caplog.at_level(logging.WARNING, logger="temperature_correction.runner"):
        runner = started(ipc)
        ipc.deliver(reading(0))
        drain(runner)
        runner.maintain()
    assert len(ipc.corrected()) == 1
    assert ipc.shadow_callbacks == [] and ipc.reports == []
    said = [r.getMessage() for r in caplog.records if "out of reach" in r.getMessage()]
    assert len(said) == 1 and "interpolateComponentConfiguration" in said[0], said
    ipc.change_config(accessControl=recipe_access(True))
    drain(runner)
    runner.maintain()
    assert len(ipc.shadow_callbacks) == 1 and ipc.reports and ipc.reports[-1]["factor"] == 2.25
    ipc.set_desired({"factor": 3.0})
    drain(runner)
    assert runner.settings.effective["factor"] == 3.0


def test_a_refused_setting_is_reported_in_the_shadow_with_its_reason_and_cleared_when_fixed(ipc):
    runner = started(ipc)
    ipc.set_desired({"factor": -1})
    drain(runner)
    runner.maintain()
    refused = ipc.shadow["state"]["reported"]["refused"]["correction"]
    assert refused and "factor" in refused[0] and "keeping 2.25" in refused[0]
    ipc.set_desired({"factor": 3.0})
    drain(runner)
    runner.maintain()
    assert ipc.shadow["state"]["reported"]["refused"]["correction"] is None


def test_a_transient_subscription_failure_is_tried_again_and_not_taken_for_out_of_reach(caplog):
    class Flaky(MemoryIpc):
        left = 1

        def on_shadow_document(self, name, callback):
            if Flaky.left:
                Flaky.left -= 1
                raise TimeoutError("ShadowManager did not answer")
            super().on_shadow_document(name, callback)
    ipc = Flaky(shadow={"state": {"desired": {"correction": {"factor": 3.0}}}})
    clock = [0.0]
    runner = Runner(ipc, Corrector(), clock=lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="temperature_correction.runner"):
        runner.start()                 # fails once, then maintain() tries again
        clock[0] += RETRY_S + 1
        runner.maintain()
    assert Flaky.left == 0
    assert runner.settings.effective["factor"] == 3.0 and len(ipc.shadow_callbacks) == 1
    assert "out of reach" not in caplog.text and "trying again" in caplog.text
