#!/usr/bin/env python3
"""Set up and run everything on a machine that has nothing but Python 3.

    python3 scripts/dev.py run [--seconds N] [--fresh]   build, start the cloud side and a local core, deploy, show it working
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


RUN_HELP = """build the components, start the cloud side (an IoT Core stand-in with mutual TLS
and a shadow service) and a local Greengrass core, deploy io.backfill.SensorPipeline (the
sensor on a simulated BME680) and show the corrected readings until Ctrl-C.

State is kept across runs (the store's backlog, the cloud's record) unless --fresh. Faults
to try from another terminal while it runs (the run follows them):
  localgg fault link down|up|flap --root .localgg/root
  localgg fault core restart [--kill] --root .localgg/root
  localgg fault component kill -n io.backfill.StoreAndForward --root .localgg/root
  localgg fault broker restart --cloud .localgg/cloud
The device's shadow as the cloud sees it, and a setting changed from there:
  localgg cloud shadow get --cloud .localgg/cloud --thing-name backfill-dev --shadow-name backfill
  localgg cloud shadow update --cloud .localgg/cloud --thing-name backfill-dev --shadow-name backfill \\
      --payload '{"state": {"desired": {"sampling": {"interval_s": 2}}}}'"""


def run_arguments(args: list[str]):
    import argparse
    parser = argparse.ArgumentParser(prog="python3 scripts/dev.py run", description=RUN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="stop by itself after this many seconds")
    parser.add_argument("--fresh", action="store_true", help="start over: remove what an earlier run left")
    parser.add_argument("--state", type=Path, default=RUN_ROOT, help="where the run keeps its state (default .localgg)")
    parsed = parser.parse_args(args)
    if parsed.seconds is not None and parsed.seconds <= 0:
        parser.error("--seconds must be more than 0")
    return parsed


def cmd_run(args: list[str]) -> int:
    import devrun
    options = run_arguments(args)            # --help ends here, before anything starts
    state = options.state.resolve()
    ensure_venv()
    if ensure_mosquitto() is None:
        say("mosquitto could not be installed here: falling back to the embedded broker amqtt (pip)")
        subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "amqtt>=0.11"], check=True)
    say("building the components (scripts/build.py, GDK's zip rules)")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build.py")], check=True)
    cloud, root, received_db = state / "cloud", state / "root", state / "iot-core-received.db"
    left = devrun.stop_core(root) if root.exists() else None
    if left is not None:
        say(f"stopped a core an earlier run left running (pid {left})")
    if options.fresh and state.exists():
        say(f"--fresh: removing {state}")
        shutil.rmtree(state)
    elif (root / "work").exists():
        say(f"keeping what an earlier run left in {state} (the store forwards its backlog first; --fresh starts over)")
    state.mkdir(parents=True, exist_ok=True)
    before, _ = devrun.cloud_readings(received_db)
    processes: list[subprocess.Popen] = []

    def spawn(log_name: str, *localgg_args: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(PYTHON), "-m", "localgg", *localgg_args], env=venv_env(),
                                stdout=open(state / log_name, "a"), stderr=subprocess.STDOUT)
        processes.append(proc)
        return proc

    def wait_for_file(path: Path, proc: subprocess.Popen, log_name: str, what: str) -> None:
        deadline = time.monotonic() + 60
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print((state / log_name).read_text(), file=sys.stderr)
                raise SystemExit(f"{what} did not start")
            time.sleep(0.1)

    follower = None
    try:
        say(f"starting the cloud side (IoT Core stand-in with mutual TLS, shadow service) in {cloud}")
        (cloud / "control.sock").unlink(missing_ok=True)
        proc = spawn("cloud.out", "cloud", "start", "--dir", str(cloud), "--broker", "auto")
        wait_for_file(cloud / "control.sock", proc, "cloud.out", "the cloud")
        spawn("recorder.out", "cloud", "record", "--cloud", str(cloud), "--topic", "dt/#", "--db", str(received_db))
        say(f"starting a local Greengrass core under {root}, connected to it")
        proc = spawn("core.out", "start", "--root", str(root), "--thing", "backfill-dev", "--cloud", str(cloud))
        wait_for_file(root / "localgg.pid", proc, "core.out", "the core")
        build = ROOT / "greengrass-build"
        say("deploying io.backfill.SensorPipeline (sensor on a simulated BME680, correction, store-and-forward) "
            "with the CLI; io.backfill.Runtime's Install makes the components' one venv from its wheels")
        localgg("deployment", "create", "--root", str(root), "--recipeDir", str(build / "recipes"),
                "--artifactDir", str(build / "artifacts"), "--merge", "io.backfill.SensorPipeline=1.0.0",
                # --update-config reaches root components only (as on the nucleus): the sensor's
                # simulated bus, the Nucleus's interpolation and ShadowManager's sync are roots too
                "--merge", "io.backfill.Bme680Sensor=1.0.0", "--merge", "aws.greengrass.Nucleus=2.18.2", "--merge", "aws.greengrass.ShadowManager=2.3.12",
                "--update-config", str(DEPLOYMENT), "--wait", "600")
        localgg("component", "list", "--root", str(root))
        seconds = options.seconds
        say("corrected readings on local pub/sub, raw beside corrected (Ctrl-C to stop)" if seconds is None
            else f"corrected readings on local pub/sub, raw beside corrected, for {seconds:g} s")
        follower = devrun.Follower(str(PYTHON), venv_env(), root,
                                   None if seconds is None else time.monotonic() + seconds)
        try:
            follower.run()
        except KeyboardInterrupt:
            pass
        keys, batches = devrun.cloud_readings(received_db)
        new = keys - before
        restarts = f"; the core went away {follower.restarts} time(s) and was followed" if follower.restarts else ""
        say(f"{follower.distinct} distinct corrected readings went over local pub/sub ({follower.copies} "
            f"copies: a resend is a copy){restarts}; IoT Core has received {len(new)} distinct readings "
            f"in this run (recorded in {received_db}: {len(keys)} since it was made); logs are in {root / 'logs'}")
        return 0 if follower.distinct and new else 1
    except KeyboardInterrupt:
        return 130
    finally:
        say("stopping the core and the cloud")
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # a second Ctrl-C must not leave processes behind
        devrun.stop_core(root)
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(processes):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


COMMANDS = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
