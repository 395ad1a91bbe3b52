"""The sensor pipeline end to end on localgg, with the real awsiot client, from the
artifacts exactly as GDK lays them out (io.backfill.Runtime's Install makes the one venv
from its vendored wheels, the lifecycle scripts run as written):

- readings flow sensor -> correction -> a subscriber, valid against the contracts;
- a new interval and a new correction factor in the shadow's desired state take effect
  within two intervals, and each component reports what is in effect;
- the correction component SIGKILLed mid-stream: with an acknowledger standing in for the
  store, every seq still arrives (the sensor republishes what was not acknowledged);
- the sensor with the absent-chip fault keeps running and reports errors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from backfill_common import contracts
from conftest import DEVICE_ENV, CoreThread, component_user, device_tmp, process_user, wait_for
from pipeline_harness import (CORRECTION, SENSOR, VERSION, Acknowledger, Observer, component_pids, deploy, log_tail,
                              nucleus_setup)

RAW, CORRECTED = "backfill/readings/raw", "backfill/readings/corrected"
SIMULATED = {"bus": "simulated", "cpu_source": "simulated", "interval_s": 0.25, "resend_after_s": 1.0,
             "sim_temperature": 24.0}


@pytest.fixture(scope="module")
def pipeline():
    with pytest.MonkeyPatch.context() as env:
        for key, value in DEVICE_ENV.items():   # as ggc_user, with the system's python3 (issue 17)
            env.setenv(key, value)
        core = CoreThread(device_tmp("bfp-") / "gg", nucleus_setup())
        try:
            observer = Observer(core).watch(RAW).watch(CORRECTED)
            acknowledger = Acknowledger(observer)      # stands in for the store
            deploy(core, {SENSOR: VERSION, CORRECTION: VERSION}, {SENSOR: {"MERGE": SIMULATED}})
            yield core, observer, acknowledger
            acknowledger.stop()
        finally:
            core.close()


def by_key(readings: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["run"], int(r["seq"])): r for r in readings}


def test_readings_flow_from_the_simulated_chip_through_the_correction(pipeline):
    core, observer, acknowledger = pipeline
    distinct = lambda: len({(r["run"], int(r["seq"])) for r in observer.got(CORRECTED)})  # noqa: E731
    wait_for(lambda: distinct() >= 8, 60, message=f"corrected readings\n{log_tail(core)}")
    raw, corrected = by_key(observer.got(RAW)), observer.got(CORRECTED)
    for reading in corrected[:8]:
        assert contracts.check("reading-corrected", reading) == []
        assert reading["device"] == "test-thing" and reading["status"] == "ok"
        assert reading["correction"] == "cpu_factor"
        source = raw[(reading["run"], int(reading["seq"]))]
        assert contracts.check("reading-raw", source) == []
        assert reading["temperature_raw"] == source["temperature"]
        assert abs(source["temperature"] - 24.0) <= 0.01          # the real driver read the emulated chip
        assert (reading["t"], reading["mono"]) == (source["t"], source["mono"])
        # the CPU is warmer than the air: the correction lowers the temperature
        assert source["cpu_temperature"] > source["temperature"] > reading["temperature"]
    seqs = sorted({int(r["seq"]) for r in corrected if r["run"] == corrected[0]["run"]})   # resends may repeat one
    assert seqs[:8] == list(range(seqs[0], seqs[0] + 8))


def expected_cpu_factor(raw_stream: list[dict], reading: dict, factor: float, window: int) -> float:
    """Pimoroni's formula over the last `window` CPU readings the correction has seen."""
    run = {int(r["seq"]): r for r in raw_stream if r["run"] == reading["run"] and int(r["seq"]) <= int(reading["seq"])}
    cpus = [run[seq]["cpu_temperature"] for seq in sorted(run)[-window:]]
    avg = sum(cpus) / len(cpus)
    raw = reading["temperature_raw"]
    return raw - (avg - raw) / factor


def test_the_components_run_as_the_component_user(pipeline):
    core, _, _ = pipeline
    for name in (SENSOR, CORRECTION):
        pids = component_pids(core, name)
        assert pids and {process_user(pid) for pid in pids} == {component_user()}, (name, pids)


def test_shadow_desired_state_changes_interval_and_factor_live(pipeline):
    core, observer, acknowledger = pipeline
    wait_for(lambda: observer.got(CORRECTED), 60, message="readings")
    pid_before = component_pids(core, SENSOR)
    observer.desire({"sampling": {"interval_s": 0.5}, "correction": {"factor": 4.0}})
    changed_at = core.kernel.clock() * 1000

    def reported():
        state = observer.shadow()["state"].get("reported") or {}
        return (state.get("sampling", {}).get("interval_s") == 0.5
                and state.get("correction", {}).get("factor") == 4.0)
    wait_for(reported, 20, interval=0.25, message="both components to report the new settings")
    settle = changed_at + 2 * 250            # two of the old intervals
    wait_for(lambda: len([r for r in observer.got(CORRECTED) if r["t"] > settle + 1000]) >= 4, 30,
             message="readings after the change")
    after = [r for r in observer.got(CORRECTED) if r["t"] > settle]
    gaps = [b["mono"] - a["mono"] for a, b in zip(after, after[1:]) if int(b["seq"]) == int(a["seq"]) + 1]
    assert gaps and all(450 <= gap <= 550 for gap in gaps), gaps
    raw_stream = observer.got(RAW)
    for reading in after:
        assert reading["temperature"] == pytest.approx(expected_cpu_factor(raw_stream, reading, 4.0, 5), abs=0.011)
    assert component_pids(core, SENSOR) == pid_before       # applied without a restart

    # a bad value is refused and the last good one stays
    observer.desire({"sampling": {"interval_s": -3}})
    wait_for(lambda: len([r for r in observer.got(CORRECTED) if r["t"] > settle + 3000]) >= 3, 30)
    assert observer.shadow()["state"]["reported"]["sampling"]["interval_s"] == 0.5
    observer.desire({"sampling": {"interval_s": 0.25}, "correction": {"factor": 2.25}})


def test_correction_killed_mid_stream_loses_no_reading(pipeline):
    core, observer, acknowledger = pipeline
    wait_for(lambda: observer.got(CORRECTED), 60, message="readings")
    first = observer.got(CORRECTED)[-1]
    run, start = first["run"], int(first["seq"])
    victims = component_pids(core, CORRECTION)
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: component_pids(core, CORRECTION) and set(component_pids(core, CORRECTION)) != set(victims),
             60, message="the core to restart the correction")
    raw_top = lambda: max(int(r["seq"]) for r in observer.got(RAW) if r["run"] == run)  # noqa: E731
    end = wait_for(lambda: raw_top() if raw_top() > start + 20 else None, 60)

    def complete():
        seen = {int(r["seq"]) for r in observer.got(CORRECTED) if r["run"] == run}
        return set(range(start, end + 1)) <= seen
    wait_for(complete, 60, interval=0.1, message="every seq at the corrected topic")
    wait_for(lambda: acknowledger.acked.get(run, -1) >= end, 10, message="the acknowledgement")


def test_absent_chip_reports_errors_and_keeps_running(pipeline):
    core, observer, acknowledger = pipeline
    deploy(core, {SENSOR: VERSION}, {SENSOR: {"MERGE": {"scenario": "chip_absent"}}})
    errors = lambda: [r for r in observer.got(CORRECTED) if r["status"] == "chip_absent"]  # noqa: E731
    wait_for(lambda: len(errors()) >= 5, 60, message="error readings")
    pids = component_pids(core, SENSOR)
    count = len(errors())
    wait_for(lambda: len(errors()) >= count + 3, 30, message="more error readings")
    assert component_pids(core, SENSOR) == pids                 # no crash loop
    assert core.kernel.state_of(SENSOR) == "RUNNING"
    for reading in errors()[:3]:
        assert reading["correction"] == "none" and reading["temperature"] is None
        assert contracts.check("reading-corrected", reading) == []


def test_an_i2c_device_the_component_user_may_not_open_is_named_with_the_fix(pipeline):
    """/dev/i2c-N is root:i2c 0660 on Raspberry Pi OS: a ggc_user outside the i2c group gets
    EACCES, which root never does. The sensor keeps running, reports init_failed readings and
    logs the device and the remedy."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a device node only root may open (CI runs as root)")
    core, observer, _ = pipeline
    device = Path("/dev/i2c-97")
    device.write_bytes(b"")
    os.chmod(device, 0o660)                      # root:root, not the i2c group ggc_user would be in
    try:
        deploy(core, {SENSOR: VERSION}, {SENSOR: {"MERGE": {"bus": "i2c", "i2c_bus": 97}, "RESET": ["/scenario"]}})
        failed = lambda: [r for r in observer.got(CORRECTED) if r["status"] == "init_failed"]  # noqa: E731
        wait_for(lambda: len(failed()) >= 3, 60, message="init_failed readings")
        assert core.kernel.state_of(SENSOR) == "RUNNING"
        log = core.kernel.root / "logs" / f"{SENSOR}.log"
        wait_for(lambda: "cannot open /dev/i2c-97: [Errno 13] Permission denied" in log.read_text(errors="replace"),
                 30, message="the reason in the sensor's log")
        assert "is the component's user in the i2c group?" in log.read_text(errors="replace")
    finally:
        device.unlink()
