"""The inside of `python3 scripts/dev.py device-check`: runs in the emulated userland (its
Python, localgg's venv), with no package index reachable. Starts the cloud side (mosquitto
with TLS, the recorder) and a core, deploys io.backfill.SensorPipeline from the built bundle
(the core picks io.backfill.Runtime's artifact for this machine; its install.py makes the
components' venv from the wheels), follows the corrected readings for --seconds, waits until
the recorder has every one of them, stops everything it started and writes --result (JSON,
read by devicecheck.parse_result on the host).

    /opt/localgg/bin/python /backfill/scripts/devicerun.py --version 1.0.0 --machine aarch64 \\
        --seconds 60 --drain-timeout 600 --deploy-timeout 1800 --result /backfill/result.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import devicecheck
import devrun

HERE = Path(__file__).resolve().parent
BASE = HERE.parent                       # /backfill: scripts/, components/, recipes/, greengrass-build/
STATE = BASE / "state"
DEPLOYMENT = HERE / "deployment" / "local.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", required=True)
    parser.add_argument("--machine", required=True, help="what platform.machine() must say here")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--deploy-timeout", type=float, default=1800.0)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    times: dict = {}
    started = os.environ.get("DEVICE_CHECK_STARTED")
    if started:
        times["localgg_venv"] = round(time.time() - float(started), 1)
    result = {"machine": platform.machine(), "python": platform.python_version(), "times": times,
              "network": devicecheck.interfaces(Path("/proc/net/dev").read_text()),
              "routes": devicecheck.routes(Path("/proc/net/route").read_text())}
    try:
        seen, delivered = run(args, times, result)
        produced = devicecheck.produced_keys(seen)
        result["produced"], result["delivered"], result["missing"] = devicecheck.count(produced, delivered)
        result["seen"] = len(seen)
    except Exception as error:             # the host reports it; the details are in the logs
        result["error"] = f"{type(error).__name__}: {error}"
    except KeyboardInterrupt:
        result["error"] = "interrupted"
    finally:
        args.result.write_text(json.dumps(result))
    return 0 if "error" not in result else 1


def run(args, times: dict, result: dict) -> tuple[set, set]:
    """(the (run, seq) seen on local pub/sub, those the recorder has of every run seen)."""
    if platform.machine() != args.machine:
        raise RuntimeError(f"platform.machine() is {platform.machine()}, not {args.machine}")
    python = sys.executable
    env = dict(os.environ, PYTHONPATH=str(HERE))
    cloud, root, db = STATE / "cloud", STATE / "root", STATE / "iot-core-received.db"
    STATE.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []

    def spawn(log: str, *localgg: str) -> subprocess.Popen:
        proc = subprocess.Popen([python, "-m", "localgg", *localgg], env=env,
                                stdout=open(STATE / log, "a"), stderr=subprocess.STDOUT)
        processes.append(proc)
        return proc

    def wait_for(path: Path, proc: subprocess.Popen, what: str, timeout: float) -> float:
        begin = time.monotonic()
        while not path.exists():
            if proc.poll() is not None or time.monotonic() - begin > timeout:
                raise RuntimeError(f"{what} did not start (see {proc.args})")
            time.sleep(0.2)
        return round(time.monotonic() - begin, 1)

    try:
        devrun.say("starting the cloud side (mosquitto with TLS, the shadow service) and the recorder")
        proc = spawn("cloud.out", "cloud", "start", "--dir", str(cloud), "--broker", "auto")
        times["cloud"] = wait_for(cloud / "control.sock", proc, "the cloud", 600)
        spawn("recorder.out", "cloud", "record", "--cloud", str(cloud), "--topic", "dt/#", "--db", str(db))
        devrun.say("starting the core")
        proc = spawn("core.out", "start", "--root", str(root), "--thing", "backfill-dev", "--cloud", str(cloud))
        times["core"] = wait_for(root / "localgg.pid", proc, "the core", 600)
        build = BASE / "greengrass-build"
        devrun.say(f"deploying io.backfill.SensorPipeline {args.version} (io.backfill.Runtime's "
                   f"{args.machine} artifact: install.py makes the components' venv, offline)")
        begin = time.monotonic()
        deployed = subprocess.run(
            [python, "-m", "localgg", "deployment", "create", "--root", str(root),
             "--recipeDir", str(build / "recipes"), "--artifactDir", str(build / "artifacts"),
             "--merge", f"io.backfill.SensorPipeline={args.version}", "--merge", f"io.backfill.Bme680Sensor={args.version}",
             "--merge", "aws.greengrass.Nucleus=2.18.2", "--merge", "aws.greengrass.ShadowManager=2.3.12",
             "--update-config", str(DEPLOYMENT), "--wait", f"{args.deploy_timeout:g}"],
            env=env, capture_output=True, text=True)
        times["deploy"] = round(time.monotonic() - begin, 1)
        print(deployed.stdout + deployed.stderr, flush=True)
        if deployed.returncode != 0:
            raise RuntimeError(f"the deployment failed: {(deployed.stdout + deployed.stderr).strip()[-400:]}")
        log = root / "logs" / "io.backfill.Runtime.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        seconds = devicecheck.runtime_install_seconds(text)
        if seconds is not None:
            times["runtime_install"] = seconds
        result["runtime_target"] = devicecheck.runtime_target(text)
        result["runtime_imports"] = devicecheck.runtime_imports(text)
        devrun.say(f"following the corrected readings for {args.seconds:g} s")
        begin = time.monotonic()
        follower = devrun.Follower(python, env, root, begin + args.seconds, out=lambda text: None)
        follower.run()
        times["run"] = round(time.monotonic() - begin, 1)
        seen = {(str(run_id), int(seq)) for run_id, seq in follower.keys}
        produced = devicecheck.produced_keys(seen)
        devrun.say(f"{len(seen)} readings seen, {len(produced)} produced since seq 0; waiting for the "
                   f"recorder to have every one (the store batches for up to 10 s)")
        begin = time.monotonic()
        while True:
            delivered = {(str(run_id), int(seq)) for run_id, seq in devrun.cloud_readings(db)[0]}
            if produced <= delivered or time.monotonic() - begin > args.drain_timeout:
                break
            time.sleep(1)
        times["drain"] = round(time.monotonic() - begin, 1)
        return seen, {key for key in delivered if key[0] in {run_id for run_id, _ in seen}}
    finally:
        devrun.say("stopping the core and the cloud")
        devrun.stop_all(root, processes, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
