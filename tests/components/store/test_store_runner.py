"""The runner's wiring over a fake of the project's IPC adapter (backfill_common.ipc.Ipc's
methods, not the awsiot SDK): subscriptions, the loop thread, echo confirmation, shadow
overrides, configuration defaults, shutdown."""

import json
import threading

from backfill_common.clock import SystemClock
from backfill_common.settings import Settings
from conftest import wait_for
from store_and_forward import packer
from store_and_forward.runner import Runner
from store_and_forward.store import Store, StoreConfig

from store_harness import RUN, THING, corrected


class FakeIpc:
    """In-memory stand-in for backfill_common.ipc.Ipc; IoT Core echoes every publish."""

    def __init__(self, config=None, shadow=None):
        self.thing_name = THING
        self.config = config or {}
        self.shadow = shadow
        self.local = {}
        self.iot = {}
        self.acks, self.published, self.reports = [], [], []     # reports: reported.store
        self.other_reports = []                                      # reported.refused
        self.lock = threading.Lock()
        self.on_config = None
        self.on_shadow = None
        self.iot_closed = {}

    def get_configuration(self):
        return dict(self.config)

    def on_configuration_change(self, callback):
        self.on_config = callback

    def get_shadow(self, name):
        return self.shadow

    def on_shadow_document(self, name, callback):
        self.on_shadow = callback

    def update_shadow(self, name, document):
        with self.lock:
            doc = json.loads(json.dumps(document))
            (self.reports if "store" in doc["state"]["reported"] else self.other_reports).append(doc)
        return document

    def subscribe(self, topic, callback):
        self.local[topic] = callback

    def publish_json(self, topic, doc):
        with self.lock:
            self.acks.append((topic, doc))

    def subscribe_iot(self, topic, callback, qos=1, on_closed=None):
        self.iot[topic] = callback
        self.iot_closed[topic] = on_closed

    def publish_iot(self, topic, payload, qos=1):
        with self.lock:
            self.published.append((topic, payload))
        if topic in self.iot:
            self.iot[topic](topic, payload)


# what a deployment allows here: everything (an empty accessControl would allow nothing)
ALLOW_ALL = {service: {"any": {"operations": ["*"], "resources": ["*"]}}
             for service in ("aws.greengrass.ipc.pubsub", "aws.greengrass.ipc.mqttproxy", "aws.greengrass.ShadowManager")}


def start(tmp_path, ipc):
    runner = Runner(ipc, SystemClock(), tmp_path)
    runner.start()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    return runner, stop, thread


def test_readings_flow_to_iot_core_and_are_deleted_when_echoed(tmp_path):
    ipc = FakeIpc(config={"commit_interval_ms": 20, "max_latency_ms": 100, "accessControl": ALLOW_ALL})
    runner, stop, thread = start(tmp_path, ipc)
    try:
        deliver = ipc.local["backfill/readings/corrected"]
        for seq in range(20):
            deliver("backfill/readings/corrected", corrected(seq))
        wait_for(lambda: any(doc["seq"] == 19 for _, doc in ipc.acks), message="the ack of seq 19")
        assert all(topic == "backfill/acks" and doc["run"] == RUN for topic, doc in ipc.acks)
        assert f"dt/backfill/{THING}/readings" in ipc.iot
        wait_for(lambda: ipc.reports and ipc.reports[-1]["state"]["reported"]["store"]["backlog"]["count"] == 0
                 and ipc.reports[-1]["state"]["reported"]["store"]["counters"]["confirmed"] == 20,
                 message="a report of an empty backlog")
        rows = [r for _, p in ipc.published for r in packer.decode(p)]
        assert sorted({r["seq"] for r in rows}) == list(range(20))
    finally:
        stop.set()
        thread.join(10)
        runner.close()


def test_shadow_desired_forward_overrides_live_and_bad_values_are_refused(tmp_path, caplog):
    ipc = FakeIpc(config={"commit_interval_ms": 20, "max_latency_ms": 100},
                  shadow={"state": {"desired": {"forward": {"max_rows": "lots", "shadow_interval_s": 2}}}})
    runner, stop, thread = start(tmp_path, ipc)
    try:
        assert runner.forwarder.settings["shadow_interval_s"] == 2
        assert runner.forwarder.settings["max_rows"] == Settings("config-store", "forward").defaults["max_rows"]
        assert "max_rows" in caplog.text
        # the cloud learns it too: which key, why, and what is kept (issue 13: a delta that explains itself)
        wait_for(lambda: any("max_rows" in " ".join(r["state"]["reported"]["refused"]["forward"] or [])
                             for r in ipc.other_reports), message="reported.refused.forward")
        ipc.on_shadow({"state": {"desired": {"forward": {"confirm": "spooled", "max_latency_ms": 0}}}})
        wait_for(lambda: ipc.reports and
                 ipc.reports[-1]["state"]["reported"]["store"]["settings"]["confirm"] == "spooled",
                 message="the new setting reported")
    finally:
        stop.set()
        thread.join(10)
        runner.close()


def test_close_commits_what_is_held(tmp_path):
    ipc = FakeIpc(config={"commit_interval_ms": 60_000, "max_latency_ms": 120_000})
    runner, stop, thread = start(tmp_path, ipc)
    ipc.local["backfill/readings/corrected"]("backfill/readings/corrected", corrected(0))
    wait_for(lambda: runner.inbox.qsize() == 0, message="the reading taken")
    stop.set()
    thread.join(10)
    runner.close()
    assert ("backfill/acks", {"device": THING, "run": RUN, "seq": 0}) in ipc.acks
    store = Store(StoreConfig(tmp_path / "store.db"), SystemClock())
    assert store.watermark(THING, RUN) == 0
    store.close()


def test_a_closed_iot_core_subscription_is_made_again_and_forwarding_goes_on(tmp_path):
    """The heart issue, item 10: when the SubscribeToIoTCore stream closed, the link looked
    offline forever."""
    ipc = FakeIpc(config={"commit_interval_ms": 20, "max_latency_ms": 100, "accessControl": ALLOW_ALL})
    runner, stop, thread = start(tmp_path, ipc)
    try:
        topic = f"dt/backfill/{THING}/readings"
        wait_for(lambda: topic in ipc.iot, message="the first subscription")
        first = ipc.iot.pop(topic)
        ipc.iot_closed[topic]()                             # the core ended the stream
        wait_for(lambda: topic in ipc.iot, message="a new subscription")
        assert ipc.iot[topic] is not first
        deliver = ipc.local["backfill/readings/corrected"]
        for seq in range(5):
            deliver("backfill/readings/corrected", corrected(seq))
        wait_for(lambda: ipc.reports and ipc.reports[-1]["state"]["reported"]["store"]["counters"]["confirmed"] == 5,
                 message="the readings confirmed over the new subscription")
    finally:
        stop.set()
        thread.join(10)
        runner.close()


def test_a_flood_is_bounded_at_the_door_and_counted(tmp_path):
    """The black-box trial: 2,000 messages/s for 60 s took the store from 41 to 246 MB RSS,
    every message queued for the loop. Now at most INBOX_READINGS wait; the rest are dropped
    and counted (the sensor resends what is not acknowledged)."""
    from store_and_forward.runner import INBOX_READINGS
    ipc = FakeIpc(config={"commit_interval_ms": 20, "max_latency_ms": 100, "accessControl": ALLOW_ALL})
    runner = Runner(ipc, SystemClock(), tmp_path)
    runner.start()                                           # the loop is not running yet: a stalled store
    deliver = ipc.local["backfill/readings/corrected"]
    for seq in range(3 * INBOX_READINGS):
        deliver("backfill/readings/corrected", corrected(seq))
    assert runner.inbox.qsize() <= INBOX_READINGS
    dropped = runner.inbox.dropped
    kept = 3 * INBOX_READINGS - dropped                      # (a control message or two may hold a place)
    assert INBOX_READINGS - 10 <= kept <= INBOX_READINGS
    ipc.on_shadow({"state": {"desired": {"forward": {"max_rows": 90_000}}}})   # control still gets in
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: runner.forwarder.store.counters["overloaded"] == dropped
                 and runner.forwarder.settings["max_rows"] == 90_000
                 and any(doc["seq"] == kept - 1 for _, doc in ipc.acks), timeout=60,
                 message="the queued readings stored, the dropped ones counted")
        assert max(doc["seq"] for _, doc in ipc.acks) == kept - 1      # nothing dropped is acknowledged
    finally:
        stop.set()
        thread.join(10)
        runner.close()


def recipe_access(interpolated: bool) -> dict:
    from recipe_defaults import default_config
    return default_config("io.backfill.StoreAndForward", interpolated, THING)["accessControl"]


def test_the_console_pick_without_interpolation_forwards_and_reports_in_full_once_allowed(tmp_path, caplog):
    """Deployed as the console does it, the store's shadow is out of reach: no subscription,
    no report (the nucleus would refuse them), said once; readings are stored, acknowledged,
    sent and confirmed all the same (the IoT Core topics are allowed with `+` at the thing's
    level). A later deployment that interpolates brings the shadow in, and the first report
    carries the settings too."""
    ipc = FakeIpc(config={"commit_interval_ms": 20, "max_latency_ms": 100, "accessControl": recipe_access(False)})
    runner, stop, thread = start(tmp_path, ipc)
    try:
        deliver = ipc.local["backfill/readings/corrected"]
        for seq in range(5):
            deliver("backfill/readings/corrected", corrected(seq))
        wait_for(lambda: runner.forwarder.store.count == 0 and runner.forwarder.store.counters.get("confirmed") == 5,
                 message="5 readings confirmed and deleted")
        assert any(doc["seq"] == 4 for _, doc in ipc.acks)
        assert ipc.on_shadow is None and ipc.reports == [] and ipc.other_reports == []
        said = [r.getMessage() for r in caplog.records if "out of reach" in r.getMessage()]
        assert len(said) == 1 and "interpolateComponentConfiguration" in said[0], said
        ipc.shadow = {"state": {"desired": {"forward": {"shadow_interval_s": 42}}}}   # set while out of reach
        ipc.config["accessControl"] = recipe_access(True)
        ipc.on_config()
        wait_for(lambda: ipc.reports, message="a report once the shadow is in reach")
        assert ipc.on_shadow is not None
        assert runner.forwarder.settings["shadow_interval_s"] == 42      # the override waiting there applies
        assert "settings" in ipc.reports[0]["state"]["reported"]["store"]
    finally:
        stop.set()
        thread.join(10)
        runner.close()


def test_a_transient_shadow_read_failure_is_tried_again_and_the_override_applies(tmp_path):
    class Flaky(FakeIpc):
        left = 1

        def get_shadow(self, name):
            if Flaky.left:
                Flaky.left -= 1
                raise TimeoutError("ShadowManager did not answer")
            return super().get_shadow(name)
    ipc = Flaky(config={"commit_interval_ms": 20, "max_latency_ms": 100, "accessControl": ALLOW_ALL},
                shadow={"state": {"desired": {"forward": {"shadow_interval_s": 42}}}})
    runner, stop, thread = start(tmp_path, ipc)
    try:
        assert runner.forwarder.settings["shadow_interval_s"] == 300      # the failure: not yet
        wait_for(lambda: runner.forwarder.settings["shadow_interval_s"] == 42, 15,
                 message="the override applied after the retry")
    finally:
        stop.set()
        thread.join(10)
        runner.close()
