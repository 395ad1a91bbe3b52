"""Backfill loses nothing, end to end: the whole bundle io.backfill.SensorPipeline from the
build, deployed with the CLI on a localgg core running as its own process, provisioned
against a real MQTT broker with mutual TLS (mosquitto), under the real faults
(`localgg fault link|core|component|broker`). The sensor is simulated at 10 Hz.

"Nothing lost": every (run, seq) the sensor produced (a run numbers its readings from 0
without gaps; every run is in the sensor's log) is in a batch the cloud received (decoded
with store_and_forward.packer.decode), but counted evictions. One deployment serves the
module; each test changes what it needs with a deployment and puts it back.

- (a) the link down for a minute: every reading arrives with its original t
- (g) the cloud's shadow: the backlog as it was offline, then 0
- (b) the core restarted twice while offline
- (c) the store and the correction SIGKILLed mid-drain (twice each), then the core SIGKILLed
- (d) the broker restarted mid-drain
- (e) poison and malformed messages (hypothesis) land in dead_letters, the pipeline goes on
- (f) the storage bound reached: evictions counted, nothing else lost
- (h) a boot with the clock 3 h behind, offline, stepped as the link returns
- the naive way (confirm: spooled = delete when PublishToIoTCore returns) loses readings
  in the same outage where ours loses none

When the core stops, the sensor may hold a reading or two not yet acknowledged: its journal
(unacked.jsonl in its work folder) brings them back at the next start, so (b), (c) and the
naive comparison demand that nothing at all is lost.

Run with BACKFILL_E2E_SEED=N to replay the random fault moments, BACKFILL_E2E_KEEP=DIR to keep
the core's and the cloud's folders (logs) after the run.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import random
import shutil
import time
from typing import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill_common import contracts
from conftest import component_user, device_tmp, process_user, wait_for
from pipeline_harness import CORRECTION, REPO, SENSOR, STORE
from store_harness_e2e import CORRECTED, FAST_MQTT, SHADOW_DOCUMENTS, THING, World, effective, summarize

SENSOR_FAST = {"interval_s": 0.1, "resend_after_s": 1.0}                       # 10 Hz
STORE_FAST = {"confirm_timeout_s": 2, "probe_max_s": 2, "shadow_interval_s": 1, "commit_interval_ms": 200,
              "max_latency_ms": 500}


def fast_deployment() -> dict:
    """scripts/deployment/local.json, made fast (and the Nucleus reconnecting at once)."""
    config = json.loads((REPO / "scripts" / "deployment" / "local.json").read_text())
    config["aws.greengrass.Nucleus"]["MERGE"]["mqtt"] = FAST_MQTT
    config[SENSOR]["MERGE"].update(SENSOR_FAST)
    config.setdefault(STORE, {"MERGE": {}})["MERGE"].update(STORE_FAST)
    return config


HOURS_3_MS = 3 * 3600 * 1000
# a backlog that takes seconds to drain: ~60 readings a batch, one batch every 2 s (the store's
# own rate plan; a slow link would also starve the core's keep-alives and the shadow's sync)
# (a billing unit may not exceed a batch, so it shrinks with it: the store refuses the pair otherwise)
DRAIN_SLOWLY = {"max_payload_bytes": 4096, "billing_unit_bytes": 4096, "max_publishes_per_s": 0.5}
DRAIN_FAST = {"max_payload_bytes": 131072, "billing_unit_bytes": 5120, "max_publishes_per_s": 20}
SEED = int(os.environ.get("BACKFILL_E2E_SEED", random.randrange(1 << 30)))
# The sensor journals what it holds unacknowledged and publishes it again when it starts, so
# a core stop loses none of it. Set to True to see the unacknowledged tails as an xfail (how
# this test showed the gap before the journal existed).
STOP_TAIL_GAP_KNOWN = False


@pytest.fixture(scope="module")
def world():
    base = device_tmp("bfs-")
    w = World(base, as_device=True)              # as ggc_user, with the system's python3 (issue 17)
    try:
        w.deploy(fast_deployment())
        w.wait_flowing()
        yield w
    finally:
        w.close()
        keep = os.environ.get("BACKFILL_E2E_KEEP")      # a folder to keep the logs in, to debug
        if keep:
            shutil.copytree(base, keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("venv", "packages", "*.sock"))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def window(world):
    """What the test must account for: (highest seq of each run, runs) now. Afterwards the
    link is cleared and every component must be back and online, whatever the test did."""
    mark, runs = world.highest(), world.logged_runs()
    yield mark, runs
    world.fault("link", "clear")
    wait_for(lambda: world.running() and world.online(), 60, message="the core online with every component")


def delivered_but_the_stop_tail(world: World, mark: dict, end: dict, stopped: Iterable[str]) -> tuple[set, str]:
    """Wait until everything produced between mark and end is in the cloud, the unacknowledged
    tails of the `stopped` runs aside (strict). Returns (the keys, what of the tails was lost:
    "" if nothing), for `judge_the_stop_tail` at the end of the test."""
    tail = world.unacked_tail(stopped, end)
    assert len(tail) <= 50 * len(set(stopped)), f"the store lagged: {summarize(sorted(tail))} unacknowledged"
    keys = world.wait_delivered(mark, end, exempt=tail)
    if not STOP_TAIL_GAP_KNOWN:      # the restarted sensor publishes its journal again: wait for it
        try:
            wait_for(lambda: not world.missing(tail), 60, interval=0.2, message="the journaled tail")
        except AssertionError:
            pass
    lost = world.missing(tail)
    verdict = "" if not lost else (f"lost {len(lost)} readings the sensor held unacknowledged when the core stopped "
                                   f"it: {summarize(sorted(lost))} (of its tails {summarize(sorted(tail))})")
    return keys | tail, verdict


def judge_the_stop_tail(verdict: str) -> None:
    if verdict and STOP_TAIL_GAP_KNOWN:
        pytest.xfail("known gap: " + verdict)
    assert not verdict, verdict


def go_offline(world: World) -> None:
    world.fault("link", "down")
    wait_for(lambda: not world.online(), 15, message="the core to see the link down")


def go_online(world: World) -> None:
    world.fault("link", "up")
    wait_for(world.online, 30, message="the core to reconnect")


def shadow_backlogs(docs: list) -> list[tuple[int, int]]:
    """(version, reported.store.backlog.count) of shadow update/documents messages."""
    out = []
    for doc in docs:
        current = doc.get("current") or {}
        store = ((current.get("state") or {}).get("reported") or {}).get("store") or {}
        count = (store.get("backlog") or {}).get("count")
        if count is not None:
            out.append((int(current.get("version", 0)), int(count)))
    return out


# -- as the component user -----------------------------------------------------------------------

def test_0_the_components_run_as_the_component_user_and_own_their_files(world, window):
    """As a nucleus installed as root runs them: ggc_user, the system's python3, the store's
    database and the sensor's journal in work folders that user owns and nobody else can read."""
    user = component_user()
    for name in (SENSOR, CORRECTION, STORE):
        pids = world.pids(name)
        assert pids and {process_user(pid) for pid in pids} == {user}, (name, pids)
    runtime = world.root / "work" / "io.backfill.Runtime"
    venv_python = os.path.realpath(next(runtime.glob("venv-*")) / "bin" / "python")
    assert venv_python.startswith("/usr/bin/python3"), venv_python
    for folder in (SENSOR, STORE):
        work = world.root / "work" / folder
        files = [work, *work.iterdir()]
        assert len(files) > 1 and (folder != STORE or work / "store.db" in files), files   # the journal, the database
        assert not work.stat().st_mode & 0o077, oct(work.stat().st_mode)    # private, as on the nucleus
        for path in files:
            assert pwd.getpwuid(path.stat().st_uid).pw_name == user, path


# -- (a) ------------------------------------------------------------------------------------------

def test_a_link_down_for_a_minute_every_reading_arrives_with_its_original_time(world, window):
    mark, runs = window
    go_offline(world)
    world.produce(600, timeout=120)                 # a minute at 10 Hz
    go_online(world)
    world.produce(10)
    end = world.highest()
    keys = world.wait_delivered(mark, end)
    world.new_runs_seen(runs)
    assert len(keys) >= 600
    raw, cloud = world.raw(), world.cloud.readings()
    assert set(keys) <= set(raw), "the raw topic shows every reading the sensor produced"
    moved = {k: (int(raw[k][1]["t"]), effective(cloud[k])["t"]) for k in keys
             if effective(cloud[k])["t"] != int(raw[k][1]["t"]) or effective(cloud[k]).get("t_orig") is not None}
    assert not moved, f"readings whose t changed on the way: {list(moved.items())[:5]}"
    world.wait_drained()


# -- (g) ------------------------------------------------------------------------------------------

def test_g_cloud_shadow_shows_the_backlog_grow_offline_and_reach_zero(world, window):
    cloud_before = len(world.cloud.shadow_documents())

    def cloud_history() -> list[tuple[int, int]]:
        return sorted(shadow_backlogs(world.cloud.shadow_documents()[cloud_before:]))

    def explain(error: AssertionError, grown: list) -> AssertionError:
        return AssertionError(f"{error}: on the device offline {grown}; "
                              f"in the cloud (version, count) {cloud_history()}")

    # The cloud's shadow holds the latest state, not a history: a backlog drained in a blink may
    # be gone before ShadowManager's sync at reconnection, and the cloud would only ever show 0.
    # So the store drains slowly at first, as after a long outage, then at full speed.
    world.configure(STORE, DRAIN_SLOWLY)
    try:
        go_offline(world)
        offline_from = len(world.local.got(SHADOW_DOCUMENTS))

        def local_growth():
            counts = [count for _, count in shadow_backlogs(world.local.docs(SHADOW_DOCUMENTS)[offline_from:])]
            return counts if len(set(counts)) >= 4 and counts == sorted(counts) and counts[-1] >= 40 else None
        grown = wait_for(local_growth, 30, interval=0.2, message="the device's shadow to report a growing backlog")
        world.produce(20)
        go_online(world)
        try:
            wait_for(lambda: [v for v, count in cloud_history() if count >= grown[-1]], 30, interval=0.2,
                     message="the cloud's shadow to show the backlog of the outage")
        except AssertionError as error:
            raise explain(error, grown) from None
    finally:
        world.configure(STORE, DRAIN_FAST)
    peak = min(v for v, count in cloud_history() if count >= grown[-1])
    try:
        wait_for(lambda: [v for v, count in cloud_history() if v > peak and count == 0], 30, interval=0.2,
                 message="the cloud's shadow to show the backlog at 0")
    except AssertionError as error:
        raise explain(error, grown) from None
    world.wait_drained()


# -- (b) ------------------------------------------------------------------------------------------

def test_b_core_restarted_twice_while_offline_loses_nothing(world, window):
    mark, runs = window
    go_offline(world)
    stopped = []
    for _ in range(2):
        world.produce(30)
        before = world.pids(STORE)
        stopped.append(world.current_run())
        world.fault("core", "restart")
        wait_for(lambda: world.restarted(STORE, before) and world.running(), 60,
                 message="the core and its components back")
        assert not world.online(), "the outage outlives the core"
    world.produce(30)
    go_online(world)
    world.produce(10)
    end = world.highest()
    world.new_runs_seen(runs)
    keys, verdict = delivered_but_the_stop_tail(world, mark, end, stopped)
    assert len({run for run, _ in keys}) >= 3         # the run before and one per restart
    world.wait_drained()
    judge_the_stop_tail(verdict)


# -- (c) and (d): faults in the middle of a drain --------------------------------------------------

def mid_drain(world: World, rng: random.Random, backlog: int = 60) -> int:
    """Build a backlog offline (unless the store has one), bring the link back and return at a
    random moment while the store is still draining it (DRAIN_SLOWLY); returns the backlog then."""
    for _ in range(5):
        if world.backlog() < backlog:
            go_offline(world)
            world.produce(backlog)
        go_online(world)
        time.sleep(rng.uniform(0.2, 2.0))    # the fault's random moment (not a synchronisation)
        left = world.backlog()
        if left:
            return left
    raise AssertionError("the store drained before a fault could hit it: make the backlog larger")


def test_c_store_and_correction_killed_mid_drain_then_the_core_killed_loses_nothing(world, window):
    mark, runs = window
    rng = random.Random(SEED)
    world.configure(STORE, DRAIN_SLOWLY)
    try:
        hits = []
        for victim in (STORE, CORRECTION, STORE, CORRECTION):
            hits.append((victim, mid_drain(world, rng)))
            before = world.pids(victim)
            assert before, f"{victim} is not running"
            world.fault("component", "kill", "-n", victim)
            wait_for(lambda: world.restarted(victim, before), 60, message=f"the core to restart {victim}")
        hits.append(("core", mid_drain(world, rng)))
        killed = world.current_run()
        before = world.pids(STORE)
        world.fault("core", "restart", "--kill")
        wait_for(lambda: world.restarted(STORE, before) and world.running(), 90,
                 message="the killed core back with its components")
        world.produce(20)
        end = world.highest()
        print(f"(c) seed {SEED}: faults at backlogs {hits}")
        world.new_runs_seen(runs)
        assert all(world.running([name]) for name in (STORE, CORRECTION, SENSOR))   # none BROKEN
        _, verdict = delivered_but_the_stop_tail(world, mark, end, [killed])
    finally:
        world.configure(STORE, DRAIN_FAST)
    world.wait_drained()
    judge_the_stop_tail(verdict)


def test_d_broker_restarted_mid_drain_loses_nothing(world, window):
    mark, runs = window
    rng = random.Random(SEED + 1)
    world.configure(STORE, DRAIN_SLOWLY)
    try:
        left = mid_drain(world, rng, backlog=80)
        connects = world.cloud.connects
        world.fault("broker", "restart")
        wait_for(world.online, 30, message="the core to reconnect to the restarted broker")
        wait_for(lambda: world.cloud.connects > connects, 30, message="the cloud log to reconnect")
        world.produce(20)
        end = world.highest()
        keys = world.wait_delivered(mark, end)
        world.new_runs_seen(runs)
        print(f"(d) seed {SEED + 1}: broker restarted with {left} readings in the backlog; {len(keys)} delivered")
    finally:
        world.fault("link", "clear")
        world.configure(STORE, DRAIN_FAST)
    world.wait_drained()


# -- (e) ------------------------------------------------------------------------------------------

POISON_RUN = "0badf00d"
VALID = {"device": "poison-device", "run": POISON_RUN, "seq": 0, "t": 1764338400000, "mono": 0,
         "clock_synced": False, "status": "ok", "temperature": 21.0, "humidity": 45.0, "pressure": 1013.25,
         "gas_resistance": 50000.0, "heat_stable": True, "cpu_temperature": 48.0, "temperature_raw": 24.0,
         "correction": "cpu_factor"}
ODD = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                st.text(max_size=20), st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _not_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return True
    return False


@st.composite
def poison(draw):
    """(how it is published, payload): never a valid corrected reading, never a real identity."""
    kind = draw(st.sampled_from(["bytes", "json-value", "mutated", "missing", "too-large"]))
    if kind == "bytes":
        return "binary", draw(st.binary(min_size=1, max_size=300).filter(_not_json))
    if kind == "json-value":
        value = draw(st.one_of(ODD, st.lists(ODD, max_size=3)).filter(lambda v: not isinstance(v, dict)))
        return "binary", json.dumps(value).encode()
    doc = dict(VALID, seq=draw(st.integers(0, 10**6)))
    if kind == "mutated":
        key = draw(st.sampled_from(sorted(VALID)))
        doc[key] = draw(ODD)
    elif kind == "missing":
        for key in draw(st.sets(st.sampled_from(sorted(VALID)), min_size=1, max_size=4)):
            doc.pop(key)
    else:
        doc["padding"] = "x" * draw(st.integers(16_400, 40_000))
    if kind != "too-large" and not contracts.check("reading-corrected", doc):
        doc["status"] = 42                   # the mutation happened to be valid: break it for sure
    as_binary = draw(st.booleans())
    return ("binary", json.dumps(doc).encode()) if as_binary else ("json", doc)


def test_e_poison_and_malformed_messages_land_in_dead_letters_and_the_pipeline_goes_on(world, window):
    mark, runs = window
    counted_before = world.counters().get("dead_lettered", 0)
    landed = []

    def forwarded():
        """The dead letters IoT Core received (the store deletes one once its echo is back)."""
        out = []
        for payload, _ in world.cloud.payloads(f"dt/backfill/{THING}/dead-letters"):
            doc = json.loads(payload)
            out.append(((doc["at"], int(doc["dead_letter"].split("-")[-1])), doc["topic"], doc["reason"], doc["size"],
                        base64.b64decode(doc["raw"])))
        return out

    def last_dead_letter():
        """The newest dead letter, in the table or already forwarded (ids are reused once the
        table empties: (at, id) orders them)."""
        rows = world.store_query("SELECT at, id, topic, reason, size, raw FROM dead_letters ORDER BY id DESC LIMIT 1")
        return max([((r[0], r[1]), *r[2:]) for r in rows] + forwarded(), default=((0, 0), None, None, None, None))

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(poison())
    def one(message):
        how, payload = message
        before = last_dead_letter()[0]
        if how == "binary":
            world.local.publish_binary(CORRECTED, payload)
        else:
            world.local.publish_json(CORRECTED, payload)
        row = wait_for(lambda: (lambda r: r if r[0] > before else None)(last_dead_letter()), 15, interval=0.05,
                       message=f"a dead letter for {str(payload)[:200]}")
        _, topic, reason, size, raw = row
        assert topic == CORRECTED and reason
        if how == "binary":
            assert raw == payload[:4096] and size == len(payload)
        elif size <= 4096:
            assert json.loads(raw) == payload        # numbers come back as floats: equal in value
        if size > 16384:
            assert reason.startswith("too large")
        landed.append(reason)
    one()
    world.produce(20)
    end = world.highest()
    world.wait_delivered(mark, end)
    world.new_runs_seen(runs)
    wait_for(lambda: world.counters().get("dead_lettered", 0) - counted_before == len(landed), 10,
             message="the dead-letter counter")
    assert not [k for k in world.cloud.readings() if k[0] == POISON_RUN], "poison reached the cloud"
    wait_for(lambda: len({row[0] for row in forwarded()}) >= len(landed), 90,
             message="every dead letter forwarded to IoT Core (one a second)")
    assert world.running()


# -- (f) ------------------------------------------------------------------------------------------

def test_f_storage_bound_reached_evictions_are_counted_and_nothing_else_is_lost(world, window):
    mark, runs = window
    world.configure(STORE, {"max_rows": 100})
    try:
        evicted_before = world.counters().get("evicted", 0)
        go_offline(world)
        world.produce(200)
        wait_for(lambda: world.counters().get("evicted", 0) > evicted_before, 10, message="evictions")
        at_link_up = world.highest()
        go_online(world)
        world.produce(10)
        end = world.highest()
        world.wait_drained()
        expected = world.expected(mark, end)
        run = world.current_run()
        newest = {(run, seq) for seq in range(at_link_up[run] - 80, end[run] + 1)}
        world.wait_delivered(mark, end, exempt=expected - newest)      # the newest are never evicted
        evicted = world.counters()["evicted"] - evicted_before
        lost = world.missing(expected)
        print(f"(f) {evicted} evicted (counted), {len(lost)} lost: {summarize(sorted(lost))}")
        assert evicted > 0 and lost, "the bound was reached"
        assert len(lost) <= evicted, "lost more than the evictions counted"
        assert max(seq for _, seq in lost) < at_link_up[run] - 80, "evicted readings are the oldest"
        world.new_runs_seen(runs)
    finally:
        world.configure(STORE, {"max_rows": 1000000})


# -- (h) ------------------------------------------------------------------------------------------

def test_h_boot_with_the_clock_hours_behind_every_reading_arrives_with_its_true_time(world, window):
    mark, runs = window
    go_offline(world)
    world.cli("component", "stop", "-n", SENSOR, "--root", str(world.root))
    wait_for(lambda: not world.pids(SENSOR), 30, message="the sensor to stop")
    try:
        # the device boots without network, its clock 3 h behind; the store holds unsynchronised
        # readings for a while after the link returns, so that NTP can step the clock first
        world.deploy({SENSOR: {"MERGE": {"sim_clock_offset_s": -HOURS_3_MS / 1000}},
                      STORE: {"MERGE": {"unsynced_hold_s": 20}}})
        if not world.pids(SENSOR):
            world.cli("component", "restart", "-n", SENSOR, "--root", str(world.root))
        booted = wait_for(lambda: [d for d in world.local.docs("backfill/readings/raw")
                                   if d["t"] < time.time() * 1000 - HOURS_3_MS / 2], 60,
                          message="readings with the clock behind")
        run = booted[0]["run"]
        world.produce(50)
        go_online(world)
        world.configure(SENSOR, {"sim_clock_offset_s": 0})           # NTP steps the clock
        stepped = wait_for(lambda: [d for d in world.local.docs("backfill/readings/raw")
                                    if d["run"] == run and abs(d["t"] - time.time() * 1000) < 60_000], 30,
                           message="readings after the step")
        world.produce(20)
        end = world.highest()
        keys = world.wait_delivered(mark, end)
        world.new_runs_seen(runs)
        raw, cloud = world.raw(), world.cloud.readings()
        ours = sorted(k for k in keys if k[0] == run)
        assert ours and all(k in raw for k in ours)
        wrong = []
        for key in ours:
            arrived, reading = raw[key]
            behind = reading["t"] < arrived * 1000 - HOURS_3_MS / 2
            true_t = reading["t"] + (HOURS_3_MS if behind else 0)
            got = effective(cloud[key])
            if abs(got["t"] - true_t) > 500 or (behind and got.get("t_orig") != reading["t"]):
                wrong.append((key, reading["t"], true_t, got["t"], got.get("t_orig")))
        behind_count = len([k for k in ours if raw[k][1]["t"] < raw[k][0] * 1000 - HOURS_3_MS / 2])
        superseded = [k for k in ours for c in cloud[k] if abs(c["t"] - raw[k][0] * 1000) > HOURS_3_MS / 2]
        print(f"(h) {behind_count} readings sampled 3 h behind, all re-timed; {len(superseded)} copies with the "
              f"wrong time reached the cloud before the step, each replaced by its re-timed copy")
        assert behind_count >= 50 and stepped
        assert not wrong, f"{len(wrong)} of {len(ours)} readings without their true time: {wrong[:5]}"
    finally:
        world.deploy({SENSOR: {"MERGE": {"sim_clock_offset_s": 0}}, STORE: {"MERGE": {"unsynced_hold_s": 0}}})
        if not world.pids(SENSOR):
            world.cli("component", "restart", "-n", SENSOR, "--root", str(world.root))


# -- the naive way ----------------------------------------------------------------------------------

def outage_with_a_core_restart(world: World) -> tuple[dict, dict]:
    """Offline, 3 s of readings, a graceful core restart, 2 s more, online: (mark, end)."""
    mark = world.highest()
    go_offline(world)
    world.produce(30)
    before = world.pids(STORE)
    world.fault("core", "restart")
    wait_for(lambda: world.restarted(STORE, before) and world.running(), 60, message="the core back")
    world.produce(20)
    go_online(world)
    world.produce(20)
    return mark, world.highest()


def test_naive_delete_when_publish_returns_loses_readings_where_ours_loses_none(world, window):
    _, runs = window
    world.configure(STORE, {"confirm": "spooled"})        # the naive way: "spooled" counts as sent
    try:
        mark, end = outage_with_a_core_restart(world)
        spool = world.status()["iotcore"]["spool"]["lostAtRestart"]
        run = world.current_run()
        expected = world.expected(mark, end)
        world.wait_delivered(mark, end, exempt={k for k in expected if k[0] != run})  # the new run arrives
        world.wait_drained()
    finally:
        world.configure(STORE, {"confirm": "echo"})
    lost = world.missing(expected)
    print(f"naive: {len(lost)} of {len(expected)} readings lost ({summarize(sorted(lost))}); "
          f"the core's memory spool lost {spool}")
    assert len(lost) >= 20 and spool["last"] > 0
    assert all(run != lost_run for lost_run, _ in lost)      # what was spooled before the restart

    run = world.current_run()
    mark, end = outage_with_a_core_restart(world)          # ours, the same outage
    world.new_runs_seen(runs)
    keys, verdict = delivered_but_the_stop_tail(world, mark, end, [run])
    assert len(keys) >= 70
    world.wait_drained()
    judge_the_stop_tail(verdict)
