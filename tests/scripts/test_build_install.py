"""components/_common/install.py, as an artifact runs it (beside wheels/ and requirements.txt),
with a wheel made here and pip's wheel from ensurepip: offline, pip's settings ignored, a venv
that works, nothing to do the second time, a rebuild when the requirements change, and a
failure that leaves nothing marked current."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from build_testkit import REPO, bundled_pip, make_wheel


@pytest.fixture
def artifact(tmp_path):
    folder = tmp_path / "artifact"
    (folder / "wheels").mkdir(parents=True)
    shutil.copy(REPO / "components" / "_common" / "install.py", folder)
    shutil.copy(bundled_pip(), folder / "wheels")
    make_wheel(folder / "wheels", "tinylib", "1.0")
    make_wheel(folder / "wheels", "tinylib", "2.0")
    make_wheel(folder / "wheels", "tinydep", "1.0", requires=["tinylib>=2"])
    (folder / "requirements.txt").write_text("tinylib==1.0\n")
    return folder


def install(artifact, venv, **env_extra):
    # pip settings that would break an install that honoured them: install.py must ignore them
    env = {**os.environ, "PIP_CONSTRAINT": "/nonexistent/constraints.txt", "PIP_FIND_LINKS": "/nonexistent",
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_REQUIRE_VIRTUALENV": "0", **env_extra}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(artifact / "install.py"), "--venv", str(venv)],
                            capture_output=True, text=True, env=env, timeout=300)
    return result, time.monotonic() - started


def venv_python(venv, code):
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True).stdout.strip()


def test_creates_a_working_venv_then_does_nothing(artifact, tmp_path):
    venv = tmp_path / "work" / "venv"
    result, _ = install(artifact, venv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert venv_python(venv, "import tinylib; print(tinylib.VERSION)") == "1.0"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    assert venv_python(venv, "import importlib.util; print(importlib.util.find_spec('pip'))") == "None"
    stamp = venv / ".backfill-install.json"
    assert json.loads(stamp.read_text())["wheels"] == sorted(p.name for p in (artifact / "wheels").iterdir())
    before = stamp.stat().st_mtime_ns

    again, seconds = install(artifact, venv)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert stamp.stat().st_mtime_ns == before and seconds < 5

    (artifact / "requirements.txt").write_text("tinydep==1.0\n")       # a new version of the component
    changed, _ = install(artifact, venv)
    assert changed.returncode == 0 and "nothing to do" not in changed.stdout, changed.stdout + changed.stderr
    assert venv_python(venv, "import tinylib, tinydep; print(tinylib.VERSION)") == "2.0"


def test_a_failure_leaves_no_venv_marked_current(artifact, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "stale").write_text("from an earlier version")
    (artifact / "requirements.txt").write_text("tinylib==1.0\nnot-shipped==1.0\n")
    result, _ = install(artifact, venv)
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "not-shipped" in result.stdout + result.stderr
    assert not venv.exists()


def test_without_pips_wheel_it_says_what_is_wrong(artifact, tmp_path):
    for wheel in (artifact / "wheels").glob("pip-*.whl"):
        wheel.unlink()
    result, _ = install(artifact, tmp_path / "venv")
    assert result.returncode == 1 and "no pip wheel" in result.stdout
    assert not (tmp_path / "venv").exists()
