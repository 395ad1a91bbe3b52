"""runner.py with an in-memory stand-in for the IPC adapter, a fake clock and the real driver
on the simulated chip: readings published in contract, acks, resends, live settings."""

import json
import logging

import pytest

from backfill_common import contracts
from backfill_common.clock import FakeClock
from bme680_sensor.runner import Runner

RAW, ACKS = "backfill/readings/raw", "backfill/acks"
CONFIG = {"bus": "simulated", "scenario": "steady", "cpu_source": "sysfs", "cpu_path": "/nonexistent/temp",
          "interval_s": 1.0, "resend_after_s": 3600, "accessControl": {"aws.greengrass.ipc.pubsub": {"any": {"operations": ["*"], "resources": ["*"]}},
                              "aws.greengrass.ShadowManager": {"any": {"operations": ["*"], "resources": ["*"]}}}}


class MemoryIpc:
    """The backfill_common.ipc.Ipc methods the runner uses, in memory; JSON round trips like the core's."""

    thing_name = "gw-1"

    def __init__(self, config, shadow=None):
        self.config, self.shadow = dict(config), shadow
        self.published, self.reports, self.subscribers = [], [], {}
        self.config_callbacks, self.shadow_callbacks = [], []

    def get_configuration(self):
        return json.loads(json.dumps(self.config))

    def on_configuration_change(self, callback):
        self.config_callbacks.append(callback)

    def get_shadow(self, name):
        return self.shadow

    def update_shadow(self, name, document):
        self.reports.append(json.loads(json.dumps(document)))
        return {}

    def on_shadow_document(self, name, callback):
        self.shadow_callbacks.append(callback)

    def publish_json(self, topic, doc):
        self.published.append((topic, json.loads(json.dumps(doc))))

    def subscribe(self, topic, callback):
        self.subscribers.setdefault(topic, []).append(callback)

    # test side
    def deliver(self, topic, payload):
        for callback in self.subscribers.get(topic, []):
            callback(topic, payload)

    def set_desired(self, sampling):
        for callback in self.shadow_callbacks:
            callback({"state": {"desired": {"sampling": sampling}, "reported": {}}})

    def change_config(self, **changes):
        self.config.update(changes)
        for callback in self.config_callbacks:
            callback()

    def raw(self):
        return [doc for topic, doc in self.published if topic == RAW]


@pytest.fixture
def setup():
    def make(config=CONFIG, shadow=None):
        ipc, clock = MemoryIpc(config, shadow), FakeClock()
        runner = Runner(ipc, clock, run="0badcafe")
        runner.start()
        return ipc, clock, runner
    return make


def settle(runner):
    """Handle every queued message, then whatever is due now."""
    while runner.inbox.qsize():
        runner.step(block=False)
    runner.step(block=False)


def run_for(runner, clock, ms, step_ms=100):
    for _ in range(ms // step_ms):
        settle(runner)
        clock.advance(step_ms)


def test_publishes_readings_in_contract(setup):
    ipc, clock, runner = setup()
    run_for(runner, clock, 3_000)
    readings = ipc.raw()
    assert [r["seq"] for r in readings] == [0, 1, 2]
    for reading in readings:
        assert contracts.check("reading-raw", reading) == []
        assert reading["device"] == "gw-1" and reading["run"] == "0badcafe" and reading["status"] == "ok"
        assert reading["held_from"] == 0                      # nothing acknowledged yet
        assert reading["cpu_temperature"] is None             # no thermal zone at that path
    assert readings[0]["temperature"] == pytest.approx(23.5, abs=0.01)
    assert ipc.reports[0]["state"]["reported"]["sampling"]["interval_s"] == 1.0


def test_acks_release_readings_and_a_stalled_ack_brings_resends(setup):
    ipc, clock, runner = setup(config=dict(CONFIG, resend_after_s=5.0))
    run_for(runner, clock, 3_000)                             # seq 0, 1, 2
    ipc.deliver(ACKS, {"device": "gw-1", "run": "0badcafe", "seq": 1.0})
    ipc.deliver(ACKS, {"device": "other", "run": "0badcafe", "seq": 2})      # not ours
    ipc.deliver(ACKS, {"device": "gw-1", "run": "0badcafe"})                # not an ack
    run_for(runner, clock, 1_000)                             # seq 3
    assert ipc.raw()[-1]["seq"] == 3 and ipc.raw()[-1]["held_from"] == 2
    published = len(ipc.raw())
    run_for(runner, clock, 5_000)                             # no ack for 5 s: everything held again
    seqs = [r["seq"] for r in ipc.raw()[published:]]
    assert seqs[:4] == [4, 5, 6, 7] and [2, 3, 4, 5, 6, 7, 8] == sorted(set(seqs))
    resent = seqs[seqs.index(2):]
    assert resent == sorted(resent)                           # oldest first
    assert runner.problems.counts["invalid ack"] == 1


def test_shadow_interval_applies_live_and_is_reported(setup):
    ipc, clock, runner = setup(shadow={"state": {"desired": {"sampling": {"interval_s": 2.0}}}})
    run_for(runner, clock, 4_000)
    assert len(ipc.raw()) == 2
    ipc.set_desired({"interval_s": 0.5})
    settle(runner)
    before = len(ipc.raw())
    run_for(runner, clock, 2_000)
    monos = [r["mono"] for r in ipc.raw()[before - 1:]]
    assert monos[0] == 4_000 and [b - a for a, b in zip(monos, monos[1:])] == [500] * 3
    assert ipc.reports[-1]["state"]["reported"]["sampling"]["interval_s"] == 0.5
    assert runner.sampler.schedule.skipped == 0


def test_a_bad_value_is_refused_and_the_last_good_one_stays(setup, caplog):
    ipc, clock, runner = setup()
    ipc.set_desired({"interval_s": 0})
    with caplog.at_level(logging.WARNING):
        settle(runner)
    assert "interval_s" in caplog.text and "0.1" in caplog.text
    run_for(runner, clock, 3_000)
    monos = [r["mono"] for r in ipc.raw()]
    assert [b - a for a, b in zip(monos, monos[1:])] == [1_000, 1_000]


def test_a_fault_is_logged_once_and_readings_keep_flowing(setup, caplog):
    ipc, clock, runner = setup()
    run_for(runner, clock, 2_000)
    with caplog.at_level(logging.INFO, logger="bme680_sensor.runner"):
        ipc.change_config(scenario="chip_absent")
        run_for(runner, clock, 10_000)
    statuses = [r["status"] for r in ipc.raw()]
    assert statuses[:2] == ["ok", "ok"] and set(statuses[2:]) == {"chip_absent"} and len(statuses) == 12
    assert all(contracts.check("reading-raw", r) == [] for r in ipc.raw())
    assert caplog.text.count("sensor chip_absent") == 1
    ipc.change_config(scenario="steady")
    run_for(runner, clock, 1_000)
    assert ipc.raw()[-1]["status"] == "ok"
    assert ipc.reports[-1]["state"]["reported"]["sampling"]["scenario"] == "steady"


def test_what_a_killed_process_held_is_published_again_by_the_next_one(tmp_path):
    from bme680_sensor.journal import Journal
    ipc, clock = MemoryIpc(dict(CONFIG, resend_after_s=5.0)), FakeClock()
    first = Runner(ipc, clock, run="0badcafe", journal=Journal(tmp_path / "unacked.jsonl"))
    first.start()
    run_for(first, clock, 5_000)                              # seq 0..4 published
    ipc.deliver(ACKS, {"device": "gw-1", "run": "0badcafe", "seq": 2})
    settle(first)
    # the process dies here (SIGKILL: nothing closed); a new one starts in the same folder
    (tmp_path / "unacked.jsonl").open("a").write('{"run": "0badcafe", "se')    # a torn last line
    ipc2 = MemoryIpc(dict(CONFIG, resend_after_s=5.0))
    second = Runner(ipc2, clock, run="5ca1ab1e", journal=Journal(tmp_path / "unacked.jsonl"))
    second.start()
    last = max(r["seq"] for r in ipc.raw())
    assert [r["seq"] for r in ipc2.raw() if r["run"] == "0badcafe"] == [0]     # the oldest it held, alone
    ipc2.deliver(ACKS, {"device": "gw-1", "run": "0badcafe", "seq": 2})     # the store's watermark
    settle(second)
    again = [r["seq"] for r in ipc2.raw() if r["run"] == "0badcafe"]
    assert again[1:] == list(range(3, last + 1))                           # the unacknowledged ones, in order
    assert all(contracts.check("reading-raw", r) == [] for r in ipc2.raw())
    # once the earlier run is acknowledged it is not sent again; the new run goes on
    ipc2.deliver(ACKS, {"device": "gw-1", "run": "0badcafe", "seq": last})
    run_for(second, clock, 12_000)
    assert [r["seq"] for r in ipc2.raw() if r["run"] == "0badcafe"] == again
    assert [r["seq"] for r in ipc2.raw() if r["run"] == "5ca1ab1e"][:3] == [0, 1, 2]
    assert second.earlier == {}


def test_after_a_restart_the_sensor_learns_what_the_store_has_before_it_resends(tmp_path):
    """The trial: after restarts the sensor resent readings the store already had (203
    duplicates for 259 stored), because its journal still held lines acknowledged since its
    last compaction. Now it publishes the oldest alone, and the store's answer trims the rest."""
    from bme680_sensor.journal import Journal
    ipc, clock = MemoryIpc(dict(CONFIG, resend_after_s=5.0)), FakeClock()
    first = Runner(ipc, clock, run="0badcafe", journal=Journal(tmp_path / "unacked.jsonl"))
    first.start()
    run_for(first, clock, 1_000)
    for _ in range(150):                                     # each reading acknowledged as it is stored
        run_for(first, clock, 1_000)
        ipc.deliver(ACKS, {"device": "gw-1", "run": "0badcafe", "seq": max(r["seq"] for r in ipc.raw()) - 1})
        settle(first)
    stored = max(r["seq"] for r in ipc.raw()) - 1
    assert first.journal.lines > 100                          # lines acknowledged since the last compaction
    ipc2 = MemoryIpc(dict(CONFIG, resend_after_s=5.0))        # SIGKILL; the next process
    second = Runner(ipc2, clock, run="5ca1ab1e", journal=Journal(tmp_path / "unacked.jsonl"))
    second.start()
    probe = [r["seq"] for r in ipc2.raw() if r["run"] == "0badcafe"]
    assert len(probe) == 1 and probe[0] <= stored
    ipc2.deliver(ACKS, {"device": "gw-1", "run": "0badcafe", "seq": stored})     # the store answers
    run_for(second, clock, 3_000)
    again = [r["seq"] for r in ipc2.raw() if r["run"] == "0badcafe"]
    assert again[1:] == [stored + 1]                          # only what the store lacked
    ipc2.deliver(ACKS, {"device": "gw-1", "run": "0badcafe", "seq": stored + 1})
    settle(second)
    assert second.earlier == {}


def test_a_restart_probe_with_no_answer_falls_back_to_resending_chunk_by_chunk(tmp_path):
    from bme680_sensor.journal import Journal
    ipc, clock = MemoryIpc(dict(CONFIG, resend_after_s=5.0)), FakeClock()
    first = Runner(ipc, clock, run="0badcafe", journal=Journal(tmp_path / "unacked.jsonl"))
    first.start()
    run_for(first, clock, 10_000)
    held = sorted({r["seq"] for r in ipc.raw()})
    ipc2 = MemoryIpc(dict(CONFIG, resend_after_s=5.0))        # the store is down: nothing answers
    second = Runner(ipc2, clock, run="5ca1ab1e", journal=Journal(tmp_path / "unacked.jsonl"))
    second.start()
    assert [r["seq"] for r in ipc2.raw() if r["run"] == "0badcafe"] == held[:1]
    run_for(second, clock, 5_500)
    assert [r["seq"] for r in ipc2.raw() if r["run"] == "0badcafe"] == held[:1] + held


def test_the_sensor_runner_restarted_with_a_bad_interval_samples_at_the_last_good_one(tmp_path):
    """The heart issue's review: interval_s 0 deployed as SUCCEEDED and, after a restart, the
    default applied instead of the last good value."""
    clock = FakeClock()
    first = Runner(MemoryIpc(dict(CONFIG, interval_s=2.0)), clock, settings_path=tmp_path / "settings.json")
    first.start()
    second = Runner(MemoryIpc(dict(CONFIG, interval_s=0)), clock, settings_path=tmp_path / "settings.json")
    second.start()
    assert second.sampler.schedule.interval_ms == 2000


def test_a_reading_whose_check_fails_is_still_held_and_published(monkeypatch):
    """The heart issue's review (S5): an exception between drawing a seq and holding the
    reading lost it with a gap nothing counted."""
    from bme680_sensor import runner as runner_module
    ipc, clock = MemoryIpc(CONFIG), FakeClock()
    runner = Runner(ipc, clock)
    runner.start()
    run_for(runner, clock, 2_000)

    def broken(name, doc):
        raise RuntimeError("a bug in the check")
    monkeypatch.setattr(runner_module.contracts, "check", broken)
    monkeypatch.setattr(runner, "_log_status", lambda: 1 / 0)
    run_for(runner, clock, 3_000)
    monkeypatch.undo()
    seqs = [r["seq"] for r in ipc.raw()]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 5
    assert [r["seq"] for r in runner.unacked.held()] == seqs
    assert ipc.raw()[-1]["status"] == "out_of_range"


def recipe_access(interpolated: bool) -> dict:
    from recipe_defaults import default_config
    return default_config("io.backfill.Bme680Sensor", interpolated, "gw-1")["accessControl"]


def test_the_console_pick_without_interpolation_samples_on_and_follows_the_shadow_once_allowed(setup, caplog):
    """Deployed as the console does it (no interpolation: accessControl still reads
    {iot:thingName}), the shadow is out of reach: the runner never tries it (the nucleus
    would refuse it and that used to end the component), says so once with what to set, and
    samples on. When a later deployment interpolates, it follows the shadow and reports."""
    with caplog.at_level(logging.WARNING, logger="bme680_sensor.runner"):
        ipc, clock, runner = setup(config=dict(CONFIG, accessControl=recipe_access(False)))
        run_for(runner, clock, 3_000)
        assert [r["seq"] for r in ipc.raw()] == [0, 1, 2]
        assert ipc.shadow_callbacks == [] and ipc.reports == []
        said = [r.getMessage() for r in caplog.records if "out of reach" in r.getMessage()]
        assert len(said) == 1 and "interpolateComponentConfiguration" in said[0]
        ipc.change_config(accessControl=recipe_access(True))
        run_for(runner, clock, 1_000)
    assert len(ipc.shadow_callbacks) == 1
    assert ipc.reports and ipc.reports[-1]["state"]["reported"]["sampling"]["interval_s"] == 1.0
    ipc.set_desired({"interval_s": 0.5})
    run_for(runner, clock, 2_000)
    assert runner.settings.effective["interval_s"] == 0.5


def test_a_refused_setting_is_reported_in_the_shadow_with_its_reason_and_cleared_when_fixed(setup):
    """The cloud saw a delta that never cleared, without a reason (issue 13): now
    reported.refused.sampling says which key, why and what is kept; null once it is fixed."""
    ipc, clock, runner = setup()
    run_for(runner, clock, 1_000)
    ipc.set_desired({"interval_s": 0})
    run_for(runner, clock, 1_000)
    refused = [r["state"]["reported"]["refused"]["sampling"] for r in ipc.reports if "refused" in r["state"]["reported"]]
    assert refused and refused[-1] and "interval_s" in refused[-1][0] and "keeping 1.0" in refused[-1][0]
    ipc.set_desired({"interval_s": 2.0})
    run_for(runner, clock, 2_000)
    last = [r["state"]["reported"]["refused"] for r in ipc.reports if "refused" in r["state"]["reported"]][-1]
    assert last == {"sampling": None}
    assert runner.settings.effective["interval_s"] == 2.0


@pytest.mark.parametrize("failing", ["on_shadow_document", "get_shadow"])
def test_a_transient_shadow_failure_at_start_is_tried_again_and_the_override_applies(failing, caplog):
    """Review of the console pick (finding 2): one timeout while subscribing to or reading the
    shadow used to leave it unfollowed, or its desired override unapplied, until the next
    deployment. It is tried again every few seconds; an UnauthorizedError alone means out of reach."""
    class Flaky(MemoryIpc):
        left = 1

        def on_shadow_document(self, name, callback):
            if failing == "on_shadow_document" and Flaky.left:
                Flaky.left -= 1
                raise TimeoutError("ShadowManager did not answer")
            super().on_shadow_document(name, callback)

        def get_shadow(self, name):
            if failing == "get_shadow" and Flaky.left:
                Flaky.left -= 1
                raise TimeoutError("ShadowManager did not answer")
            return super().get_shadow(name)
    ipc, clock = Flaky(CONFIG, {"state": {"desired": {"sampling": {"interval_s": 0.5}}}}), FakeClock()
    runner = Runner(ipc, clock, run="0badcafe")
    with caplog.at_level(logging.WARNING, logger="bme680_sensor.runner"):
        runner.start()
        run_for(runner, clock, 7_000)
    assert Flaky.left == 0 and "trying again" in caplog.text and "out of reach" not in caplog.text
    assert runner.settings.effective["interval_s"] == 0.5
    assert len(ipc.shadow_callbacks) == 1 and ipc.reports
