#!/usr/bin/env python3
"""Make the component's virtual environment from the wheels shipped beside this file.

    python3 install.py --venv DIR [--wheels DIR] [--requirements FILE]

The component's Install step (it runs at every start of the core). Standard library only,
Python 3.10+. Beside this file: requirements.txt and wheels/ (the dependency wheels for
linux x86_64/aarch64 and CPython 3.10-3.13, and pip's own wheel). It

- does nothing, and says so, when DIR holds a stamp matching the requirements, the wheel
  names and this Python (the common case: it takes milliseconds);
- otherwise removes DIR, creates a venv there without pip and without the system's site
  packages (no ensurepip needed: works on Debian without python3-venv), and installs the
  requirements with pip run from its wheel (`DIR/bin/python wheels/pip-*.whl/pip install
  --no-index --find-links wheels -r requirements.txt`), pip's configuration ignored, so
  the device never reaches a package index;
- writes the stamp last: a failure removes DIR and leaves nothing marked current
  (the next start tries again); the exit status is 1 with the reason.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = ".backfill-install.json"


def say(message: str) -> None:
    print(f"install.py: {message}", flush=True)


def fingerprint(requirements: Path, wheels: Path) -> dict:
    """What the venv is built from; a different one means the venv must be rebuilt."""
    return {"requirements_sha256": hashlib.sha256(requirements.read_bytes()).hexdigest(),
            "wheels": sorted(p.name for p in wheels.glob("*.whl")),
            "python": sys.version,
            "executable": os.path.realpath(sys.executable),
            "machine": platform.machine()}


def is_current(target: Path, wanted: dict) -> bool:
    try:
        stamp = json.loads((target / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp == wanted and (target / "bin" / "python").exists()


def pip_env() -> dict:
    """The environment for pip: no PIP_* variables, no configuration files, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def create(target: Path, requirements: Path, wheels: Path, pip_wheel: Path) -> None:
    """A fresh venv at target with the requirements installed; raises on failure."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    venv.EnvBuilder(system_site_packages=False, clear=True, symlinks=True, with_pip=False).create(target)
    python = target / "bin" / "python"
    command = [str(python), str(pip_wheel / "pip"), "install", "--no-index", "--find-links", str(wheels),
               "--only-binary=:all:", "--no-cache-dir", "--no-warn-script-location",
               "--root-user-action=ignore", "--progress-bar", "off", "-r", str(requirements)]
    say("$ " + " ".join(command))
    result = subprocess.run(command, env=pip_env())
    if result.returncode != 0:
        raise RuntimeError(f"pip exited with status {result.returncode} (its messages are above)")


def install(target: Path, requirements: Path, wheels: Path) -> int:
    if sys.version_info < (3, 10):
        say(f"needs Python 3.10 or newer; this is {platform.python_version()} ({sys.executable})")
        return 1
    if not requirements.is_file():
        say(f"no {requirements}")
        return 1
    pip_wheels = sorted(wheels.glob("pip-*.whl"))
    if not pip_wheels:
        say(f"no pip wheel in {wheels}: this artifact was not built by scripts/build.py")
        return 1
    wanted = fingerprint(requirements, wheels)
    if is_current(target, wanted):
        say(f"{target} is current (same requirements, wheels and Python {platform.python_version()}); "
            "nothing to do")
        return 0
    started = time.monotonic()
    say(f"creating {target} with Python {platform.python_version()} ({sys.executable}) "
        f"from {len(wanted['wheels'])} wheels in {wheels}")
    try:
        create(target, requirements, wheels, pip_wheels[-1])
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        say(f"FAILED: {exc}. {target} was removed; nothing is marked current (the next start retries). "
            f"The wheels cover linux x86_64/aarch64 with CPython 3.10-3.13; this is {platform.machine()} "
            f"Python {platform.python_version()}.")
        return 1
    partial = target / (STAMP + ".partial")
    partial.write_text(json.dumps(wanted, indent=1))
    os.replace(partial, target / STAMP)
    say(f"installed {target} in {time.monotonic() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, required=True, help="the virtual environment to create or keep")
    parser.add_argument("--wheels", type=Path, default=HERE / "wheels")
    parser.add_argument("--requirements", type=Path, default=HERE / "requirements.txt")
    args = parser.parse_args(argv)
    target = args.venv.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # one installer at a time per venv
        return install(target, args.requirements.absolute(), args.wheels.absolute())


if __name__ == "__main__":
    sys.exit(main())
