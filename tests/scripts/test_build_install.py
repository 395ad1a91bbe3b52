"""components/io.backfill.Runtime/install.py, as the runtime's artifact runs it (beside wheels/
and their manifest), with wheels made here: a venv that works, with no pip and no index;
nothing to do the second time; a new environment beside the old one and one rename to
switch; every file checked against its wheel's RECORD; a failure that leaves the current
environment as it was; and the reasons said plainly."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from build_testkit import REPO, make_wheel

INSTALLER = REPO / "components" / "io.backfill.Runtime" / "install.py"
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
LABEL = f"cp{sys.version_info[0]}{sys.version_info[1]}-{MACHINE}"


def write_manifest(folder, names, label=LABEL):
    (folder / "wheels" / "manifest.json").write_text(json.dumps(
        {"arch": MACHINE, "requirements": [], "targets": {label: names}}))


@pytest.fixture
def artifact(tmp_path):
    folder = tmp_path / "artifact"
    (folder / "wheels").mkdir(parents=True)
    shutil.copy(INSTALLER, folder)
    make_wheel(folder / "wheels", "tinylib", "1.0")
    make_wheel(folder / "wheels", "tinylib", "2.0")
    write_manifest(folder, ["tinylib-1.0-py3-none-any.whl"])
    return folder


def install(artifact, venv):
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PYTHONPATH": "/nonexistent"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(artifact / "install.py"), "--venv", str(venv)],
                            capture_output=True, text=True, env=env, timeout=300)
    return result, time.monotonic() - started


def venv_python(venv, code):
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    return (result.stdout + result.stderr).strip()


def folders(venv):
    return sorted(p.name for p in venv.parent.iterdir() if p.name.startswith(venv.name + "-"))


def test_creates_a_working_venv_then_does_nothing_then_switches_in_one_rename(artifact, tmp_path):
    venv = tmp_path / "work" / "venv"
    result, _ = install(artifact, venv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert venv.is_symlink() and folders(venv) == [os.readlink(venv)]
    first = os.readlink(venv)
    assert venv_python(venv, "import tinylib; print(tinylib.VERSION)") == "1.0"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    assert venv_python(venv, "import importlib.util; print(importlib.util.find_spec('pip'))") == "None"
    assert venv_python(venv, "import importlib.metadata as m; print(m.version('tinylib'), "
                             "m.distribution('tinylib').read_text('INSTALLER').strip())") == "1.0 backfill-runtime"
    stamp = venv / ".backfill-install.json"
    before = stamp.stat().st_mtime_ns

    again, seconds = install(artifact, venv)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert stamp.stat().st_mtime_ns == before and os.readlink(venv) == first

    write_manifest(artifact, ["tinylib-2.0-py3-none-any.whl"])     # a new version of the runtime
    changed, _ = install(artifact, venv)
    assert changed.returncode == 0 and "nothing to do" not in changed.stdout, changed.stdout + changed.stderr
    second = os.readlink(venv)
    assert second != first and folders(venv) == sorted([first, second])   # the previous one is kept
    assert venv_python(venv, "import tinylib; print(tinylib.VERSION)") == "2.0"

    make_wheel(artifact / "wheels", "tinylib", "3.0")
    write_manifest(artifact, ["tinylib-3.0-py3-none-any.whl"])
    third, _ = install(artifact, venv)
    assert third.returncode == 0, third.stdout + third.stderr
    assert folders(venv) == sorted([second, os.readlink(venv)])          # older ones are removed


def tampered_wheel(folder):
    """tinybad: a wheel whose module no longer matches the hash its RECORD gives."""
    path = make_wheel(folder, "tinybad", "1.0")
    data = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(data, "w") as out:
        for info in source.infolist():
            content = source.read(info)
            out.writestr(info, b"VERSION = 'changed'\n" if info.filename == "tinybad/__init__.py" else content)
    path.write_bytes(data.getvalue())
    return path.name


def test_a_failure_leaves_the_current_environment_as_it_was(artifact, tmp_path):
    venv = tmp_path / "venv"
    assert install(artifact, venv)[0].returncode == 0
    current = os.readlink(venv)
    write_manifest(artifact, ["tinylib-2.0-py3-none-any.whl", tampered_wheel(artifact / "wheels")])
    result, _ = install(artifact, venv)
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "tinybad/__init__.py does not match its RECORD hash" in result.stdout
    assert f"still {current}" in result.stdout
    assert os.readlink(venv) == current and folders(venv) == [current]     # nothing half built is left
    assert venv_python(venv, "import tinylib; print(tinylib.VERSION)") == "1.0"


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_recorded_wheel(wheel, files):
    """A wheel of exactly `files` (path -> bytes) with a RECORD that lists each, as pip writes it."""
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    record = [record_line(path, data) for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")


def test_a_path_out_of_the_environment_is_refused(artifact, tmp_path):
    evil = artifact / "wheels" / "tinyevil-1.0-py3-none-any.whl"
    body = b"print('outside')\n"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../evil.py", body)
        archive.writestr("tinyevil-1.0.dist-info/RECORD", record_line("../../evil.py", body) + "\n")
    write_manifest(artifact, [evil.name])
    result, _ = install(artifact, tmp_path / "work" / "venv")
    assert result.returncode == 1 and "unsafe path in a wheel: '../../evil.py'" in result.stdout
    assert not list(tmp_path.rglob("evil.py")) and not (tmp_path / "work" / "venv").exists()


def test_wheel_data_goes_to_its_scheme_and_scripts_get_the_venvs_python(artifact, tmp_path):
    wheel = artifact / "wheels" / "tinytool-1.0-py3-none-any.whl"
    files = {"tinytool/__init__.py": b"X = 1\n",
             "tinytool-1.0.data/purelib/tinytool_extra.py": b"Y = 2\n",
             "tinytool-1.0.data/scripts/tinytool": b"#!python\nimport tinytool_extra; print(tinytool_extra.Y)\n"}
    write_recorded_wheel(wheel, files)
    write_manifest(artifact, [wheel.name])
    venv = tmp_path / "venv"
    result, _ = install(artifact, venv)
    assert result.returncode == 0, result.stdout + result.stderr
    script = venv / "bin" / "tinytool"
    assert os.access(script, os.X_OK)
    assert subprocess.run([str(script)], capture_output=True, text=True).stdout.strip() == "2"
    assert venv_python(venv, "import tinytool, tinytool_extra; print(tinytool.X + tinytool_extra.Y)") == "3"


def test_a_python_or_machine_without_wheels_is_told_what_the_artifact_has(artifact, tmp_path):
    write_manifest(artifact, ["tinylib-1.0-py3-none-any.whl"], label="cp39-riscv64")
    result, _ = install(artifact, tmp_path / "venv")
    assert result.returncode == 1
    assert f"no wheels for {LABEL}" in result.stdout and "it has cp39-riscv64" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_without_a_manifest_it_says_what_is_wrong(artifact, tmp_path):
    (artifact / "wheels" / "manifest.json").unlink()
    result, _ = install(artifact, tmp_path / "venv")
    assert result.returncode == 1 and "manifest.json" in result.stdout and "scripts/build.py" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_a_wheel_that_cannot_load_here_fails_the_install_not_the_components(artifact, tmp_path):
    venv = tmp_path / "venv"
    assert install(artifact, venv)[0].returncode == 0
    current = os.readlink(venv)
    # stands for a wheel built for another libc, ABI or word size: its extension does not load
    make_wheel(artifact / "wheels", "tinynative", "1.0",
               modules={"tinynative/__init__.py": "raise ImportError('wrong ELF class: ELFCLASS32')\n"})
    write_manifest(artifact, ["tinylib-2.0-py3-none-any.whl", "tinynative-1.0-py3-none-any.whl"])
    result, _ = install(artifact, venv)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot import what its wheels provide: tinynative: ImportError: wrong ELF class" in result.stdout
    assert os.readlink(venv) == current and folders(venv) == [current]
    again, _ = install(artifact, venv)                                  # never marked current: tried again
    assert again.returncode == 1 and "nothing to do" not in again.stdout


def test_the_fingerprint_ignores_the_pythons_patch_level_and_build(artifact, tmp_path):
    venv = tmp_path / "venv"
    assert install(artifact, venv)[0].returncode == 0
    stamp = json.loads((venv / ".backfill-install.json").read_text())
    assert stamp["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}{sys.abiflags}"
    assert stamp["target"] == LABEL and platform.python_version() not in json.dumps(stamp)


def test_a_wheel_file_on_the_venvs_python_link_is_refused(artifact, tmp_path):
    wheel = artifact / "wheels" / "tinyshadow-1.0-py3-none-any.whl"
    files = {"tinyshadow/__init__.py": b"", "tinyshadow-1.0.data/scripts/python": b"#!/bin/sh\necho owned\n"}
    write_recorded_wheel(wheel, files)
    write_manifest(artifact, [wheel.name])
    system_python = os.path.realpath(sys.executable)
    before = hashlib.sha256(open(system_python, "rb").read()).hexdigest()
    result, _ = install(artifact, tmp_path / "venv")
    assert result.returncode == 1 and "would overwrite the link" in result.stdout, result.stdout
    assert hashlib.sha256(open(system_python, "rb").read()).hexdigest() == before
