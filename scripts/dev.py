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
    return subprocess.run([str(PYTHON), "-m", "localgg.bench", *args], cwd=ROOT, env=venv_env()).returncode


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
        say("deploying com.example.Bundle (the producer and the consumer) with the CLI")
        localgg("deployment", "create", "--root", str(root), "--recipeDir", str(build / "recipes"),
                "--artifactDir", str(build / "artifacts"), "--merge", "com.example.Bundle=1.0.0", "--wait", "120")
        localgg("component", "list", "--root", str(root))
        say("the consumer's log (Ctrl-C to stop)" if seconds is None else f"the consumer's log for {seconds:g} s")
        follow = subprocess.Popen([str(PYTHON), "-m", "localgg", "logs", "get", "--root", str(root),
                                   "--component", "com.example.Consumer", "--follow"], env=venv_env())
        try:
            if seconds is None:
                signal.pause()
            else:
                time.sleep(seconds)
        except KeyboardInterrupt:
            pass
        finally:
            follow.terminate()
            follow.wait()
        received = root / "work" / "com.example.Consumer" / "received.jsonl"
        count = len(received.read_text().splitlines()) if received.exists() else 0
        cloud_count = _count_rows(received_db)
        say(f"the consumer received {count} messages over local pub/sub; IoT Core received {cloud_count} "
            f"(recorded in {received_db}); logs are in {root / 'logs'}")
        return 0 if count and cloud_count else 1
    finally:
        say("stopping the core and the cloud")
        for proc in reversed(processes):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _count_rows(db: Path) -> int:
    import sqlite3
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM messages").fetchone()[0]


COMMANDS = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
