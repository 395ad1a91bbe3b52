#!/usr/bin/env python3
"""Set up and run everything on a machine that has nothing but Python 3.

    python3 scripts/dev.py run [--seconds N]   build, start the cloud side and a local core, deploy, show it working
    python3 scripts/dev.py test [PYTEST ARGS]  the test suite (what CI runs)
    python3 scripts/dev.py bench [ARGS]        the benchmarks

Each command first makes `.venv/` (a virtual environment with this project and its
dependencies) if it is missing or pyproject.toml changed since. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".backfill-installed"
RUN_ROOT = ROOT / ".localgg"
DEPLOYMENT = ROOT / "scripts" / "deployment" / "local.json"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        say(f"creating {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    say("installing the project and its dependencies into .venv (pip)")
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def ensure_mosquitto() -> str | None:
    """Debian's mosquitto, installed if missing (as root, or with passwordless sudo)."""
    found = find_mosquitto()
    if found or not shutil.which("apt-get"):
        return found
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return None
    say("installing mosquitto (Debian package) for the IoT Core stand-in")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = prefix + ["apt-get", "install", "-y", "-q", "--no-install-recommends", "mosquitto"]
    for command in (install, prefix + ["apt-get", "update", "-q"], install):
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if find_mosquitto():
            break
    return find_mosquitto()


def venv_env() -> dict[str, str]:
    """The environment for the core: its components find this venv's python3 first."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    return env


def localgg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(PYTHON), "-m", "localgg", *args], env=venv_env(), check=check)


def cmd_test(args: list[str]) -> int:
    ensure_venv()
    if ensure_mosquitto() is None:
        print("The tests need mosquitto (Debian package mosquitto) and it could not be installed here: "
              "install it, then run this again.", file=sys.stderr)
        return 1
    say("running the tests")
    return subprocess.run([str(PYTHON), "-m", "pytest", *args], cwd=ROOT, env=venv_env()).returncode


def cmd_bench(args: list[str]) -> int:
    ensure_venv()
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), *args], cwd=ROOT).returncode


def cmd_run(args: list[str]) -> int:
    seconds = float(args[args.index("--seconds") + 1]) if "--seconds" in args else None
    ensure_venv()
    if ensure_mosquitto() is None:
        say("mosquitto could not be installed here: falling back to the embedded broker amqtt (pip)")
        subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "amqtt>=0.11"], check=True)
    say("building the components (scripts/build.py, GDK's zip rules)")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build.py")], check=True)
    if RUN_ROOT.exists():
        shutil.rmtree(RUN_ROOT)
    RUN_ROOT.mkdir(parents=True)
    cloud, root, received_db = RUN_ROOT / "cloud", RUN_ROOT / "root", RUN_ROOT / "iot-core-received.db"
    processes: list[subprocess.Popen] = []

    def spawn(log_name: str, *localgg_args: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(PYTHON), "-m", "localgg", *localgg_args], env=venv_env(),
                                stdout=open(RUN_ROOT / log_name, "w"), stderr=subprocess.STDOUT)
        processes.append(proc)
        return proc

    def wait_for_file(path: Path, proc: subprocess.Popen, log_name: str, what: str) -> None:
        deadline = time.monotonic() + 60
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print((RUN_ROOT / log_name).read_text(), file=sys.stderr)
                raise SystemExit(f"{what} did not start")
            time.sleep(0.1)

    try:
        say(f"starting the cloud side (IoT Core stand-in with mutual TLS, shadow service) in {cloud}")
        proc = spawn("cloud.out", "cloud", "start", "--dir", str(cloud), "--broker", "auto")
        wait_for_file(cloud / "control.sock", proc, "cloud.out", "the cloud")
        print("    " + (RUN_ROOT / "cloud.out").read_text().strip().replace("\n", "\n    "))
        proc = spawn("recorder.out", "cloud", "record", "--cloud", str(cloud), "--topic", "dt/#",
                     "--db", str(received_db))
        say(f"starting a local Greengrass core under {root}, connected to it")
        proc = spawn("core.out", "start", "--root", str(root), "--thing", "backfill-dev", "--cloud", str(cloud))
        wait_for_file(root / "localgg.pid", proc, "core.out", "the core")
        build = ROOT / "greengrass-build"
        say("deploying io.backfill.SensorPipeline (sensor on a simulated BME680, correction, store-and-forward) "
            "with the CLI; Install builds each component's venv from its vendored wheels")
        localgg("deployment", "create", "--root", str(root), "--recipeDir", str(build / "recipes"),
                "--artifactDir", str(build / "artifacts"), "--merge", "io.backfill.SensorPipeline=1.0.0",
                # --update-config reaches root components only (as on the nucleus): the sensor's
                # simulated bus, the Nucleus's interpolation and ShadowManager's sync are roots too
                "--merge", "io.backfill.Bme680Sensor=1.0.0", "--merge", "aws.greengrass.Nucleus=2.18.2", "--merge", "aws.greengrass.ShadowManager=2.3.12",
                "--update-config", str(DEPLOYMENT), "--wait", "600")
        localgg("component", "list", "--root", str(root))
        say("corrected readings on local pub/sub, raw beside corrected (Ctrl-C to stop)" if seconds is None
            else f"corrected readings on local pub/sub, raw beside corrected, for {seconds:g} s")
        watch = subprocess.Popen([str(PYTHON), "-m", "localgg", "pubsub", "sub", "--root", str(root),
                                  "--topic", "backfill/readings/corrected"], env=venv_env(),
                                 stdout=subprocess.PIPE, text=True)
        shown = _show_readings(watch, seconds)
        readings, batches = _cloud_readings(received_db)
        say(f"{shown} corrected readings went over local pub/sub; IoT Core received {readings} readings in "
            f"{batches} batches (recorded in {received_db}); logs are in {root / 'logs'}")
        return 0 if shown and readings else 1
    finally:
        say("stopping the core and the cloud")
        for proc in reversed(processes):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _show_readings(watch: subprocess.Popen, seconds: float | None) -> int:
    """Print each corrected reading `localgg pubsub sub` shows, one line each, until the time is up."""
    import json
    import threading
    shown = 0
    if seconds is not None:
        threading.Timer(seconds, watch.terminate).start()
    try:
        for line in watch.stdout:
            start = line.find("{")
            try:
                reading = json.loads(line[start:]) if start >= 0 else None
            except ValueError:
                reading = None
            if not isinstance(reading, dict) or "seq" not in reading:
                print(line.rstrip(), flush=True)
                continue
            shown += 1
            if reading.get("status") != "ok":
                print(f"    seq {int(reading['seq']):>5}  status {reading.get('status')}", flush=True)
                continue
            print(f"    seq {int(reading['seq']):>5}  raw {reading['temperature_raw']:6.2f} C  ->  corrected "
                  f"{reading['temperature']:6.2f} C   (cpu {reading['cpu_temperature']:5.1f} C, "
                  f"{reading['humidity']:5.1f} %RH, {reading['pressure']:7.2f} hPa)", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        watch.terminate()
        watch.wait()
    return shown


def _cloud_readings(db: Path) -> tuple[int, int]:
    """(distinct readings, batches) that IoT Core received on the store's topic."""
    import json
    import sqlite3
    if not db.exists():
        return 0, 0
    with sqlite3.connect(db) as conn:
        payloads = [row[0] for row in conn.execute("SELECT payload FROM messages WHERE topic LIKE 'dt/backfill/%'")]
    keys = set()
    for payload in payloads:
        try:
            batch = json.loads(payload)
            common = batch.get("common") or {}
            for row in batch["rows"]:
                reading = {**common, **dict(zip(batch["fields"], row))}
                keys.add((reading["run"], reading["seq"]))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return len(keys), len(payloads)


COMMANDS = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
