#!/usr/bin/env python3
"""Set up and run everything on a machine that has nothing but Python 3.

    python3 scripts/dev.py run [--seconds N]   build, start a local core, deploy, show it working
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
    say("running the tests")
    return subprocess.run([str(PYTHON), "-m", "pytest", *args], cwd=ROOT, env=venv_env()).returncode


def cmd_bench(args: list[str]) -> int:
    ensure_venv()
    return subprocess.run([str(PYTHON), "-m", "localgg.bench", *args], cwd=ROOT, env=venv_env()).returncode


def cmd_run(args: list[str]) -> int:
    seconds = float(args[args.index("--seconds") + 1]) if "--seconds" in args else None
    ensure_venv()
    say("building the components (scripts/build.py, GDK's zip rules)")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build.py")], check=True)
    root = RUN_ROOT / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    say(f"starting a local Greengrass core under {root}")
    core_log = open(RUN_ROOT / "core.out", "w")
    core = subprocess.Popen([str(PYTHON), "-m", "localgg", "start", "--root", str(root), "--thing", "backfill-dev"],
                            env=venv_env(), stdout=core_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (root / "localgg.pid").exists():
            if core.poll() is not None or time.monotonic() > deadline:
                print((RUN_ROOT / "core.out").read_text(), file=sys.stderr)
                raise SystemExit("the core did not start")
            time.sleep(0.1)
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
        say(f"the consumer received {count} messages; logs are in {root / 'logs'}")
        return 0 if count else 1
    finally:
        say("stopping the core")
        core.send_signal(signal.SIGTERM)
        try:
            core.wait(60)
        except subprocess.TimeoutExpired:
            core.kill()


COMMANDS = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
