"""The real components built as GDK runs the custom build commands (the commands of the
gdk-config.json files, without a shell, in their folders) on a copy of the repository:
GDK's layout, the zip contents, wheels for linux x86_64/aarch64 and CPython 3.10-3.13 (their
tags inspected), and one artifact installed offline. Uses the wheel cache (a cold cache
downloads once)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from build_testkit import BUNDLE, NAMES, REPO, runs_on

TARGETS = [(py, arch) for arch in ("x86_64", "aarch64") for py in ("3.10", "3.11", "3.12", "3.13")]
IGNORE = shutil.ignore_patterns("greengrass-build", "zip-build", "__pycache__", "*.pyc", ".*")


def gdk_config(folder: Path) -> tuple[str, dict]:
    (name, settings), = json.loads((folder / "gdk-config.json").read_text())["component"].items()
    return name, settings


def run_custom_build(folder: Path) -> str:
    """What `gdk component build` does for a custom build: fresh greengrass-build dirs, then the command."""
    name, settings = gdk_config(folder)
    shutil.rmtree(folder / "greengrass-build", ignore_errors=True)
    (folder / "greengrass-build" / "recipes").mkdir(parents=True)
    (folder / "greengrass-build" / "artifacts" / name / settings["version"]).mkdir(parents=True)
    command = settings["build"]["custom_build_command"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command} in {folder}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "components", root / "components", symlinks=True, ignore=IGNORE)
    shutil.copytree(REPO / "recipes", root / "recipes")
    (root / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "build.py", root / "scripts")
    shutil.copy(REPO / "gdk-config.json", root)
    (root / "recipe.yaml").symlink_to(os.readlink(REPO / "recipe.yaml"))
    return root


@pytest.fixture(scope="module")
def top(copy):
    return copy, run_custom_build(copy)


def package_dirs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
            and p.name not in ("tests", "greengrass-build", "zip-build")}


def test_the_repository_folders_are_gdk_projects():
    _, top_settings = gdk_config(REPO)
    assert gdk_config(REPO)[0] == BUNDLE
    assert top_settings["build"] == {"build_system": "custom", "custom_build_command": ["python3", "scripts/build.py"]}
    assert os.readlink(REPO / "recipe.yaml") == f"recipes/{BUNDLE}.yaml"
    for name in NAMES:
        folder = REPO / "components" / name
        found, settings = gdk_config(folder)
        assert found == name and settings["version"] == top_settings["version"]
        assert settings["build"]["custom_build_command"] == ["python3", "../../scripts/build.py", "--out",
                                                             "greengrass-build", "."]
        assert settings["publish"] == top_settings["publish"]
        assert os.readlink(folder / "recipe.yaml") == f"../../recipes/{name}.yaml"
        assert (folder / "recipe.yaml").resolve().is_file()


def test_the_top_level_build_lays_out_every_component_as_gdk_does(top):
    root, output = top
    out = root / "greengrass-build"
    for name in (*NAMES, BUNDLE):
        assert (out / "recipes" / f"{name}.yaml").read_bytes() == (root / "recipes" / f"{name}.yaml").read_bytes()
    for name in NAMES:
        assert [p.name for p in (out / "artifacts" / name / "1.0.0").iterdir()] == [f"{name}.zip"]
        size = re.search(rf"^{re.escape(name)} 1\.0\.0: \S+ ([0-9.]+) MB", output, re.M)
        assert size and float(size.group(1)) > 1, output
    assert list((out / "artifacts" / BUNDLE / "1.0.0").iterdir()) == []
    assert sorted(p.name for p in (out / "artifacts").iterdir()) == sorted((*NAMES, BUNDLE))


def test_a_component_folder_builds_itself(copy):
    folder = copy / "components" / NAMES[1]
    run_custom_build(folder)
    out = folder / "greengrass-build"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        f"artifacts/{NAMES[1]}/1.0.0/{NAMES[1]}.zip", f"recipes/{NAMES[1]}.yaml"]


@pytest.mark.parametrize("name", NAMES)
def test_the_zip_holds_the_package_common_code_installer_and_wheels(top, name):
    root, _ = top
    folder = root / "components" / name
    with zipfile.ZipFile(root / "greengrass-build" / "artifacts" / name / "1.0.0" / f"{name}.zip") as archive:
        names = archive.namelist()
        requirements = archive.read("requirements.txt").decode()
        assert archive.read("install.py") == (REPO / "components" / "_common" / "install.py").read_bytes()
    tops = {n.split("/")[0] for n in names}
    assert tops == package_dirs(folder) | {"backfill_common", "install.py", "requirements.txt", "wheels"}
    assert requirements == (folder / "requirements.txt").read_text()
    common = REPO / "components" / "_common" / "backfill_common"
    assert {n for n in names if n.startswith("backfill_common/")} == {
        f"backfill_common/{p.relative_to(common).as_posix()}" for p in common.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    for package in package_dirs(folder):
        assert f"{package}/__main__.py" in names
    for bad in ("gdk-config.json", "recipe.yaml", "__pycache__", "tests", ".pyc", "greengrass-build"):
        assert not [n for n in names if bad in n.split("/") or n.endswith(bad)], bad


@pytest.mark.parametrize("name", NAMES)
def test_wheels_cover_both_arches_and_cpython_310_to_313(top, name):
    root, _ = top
    with zipfile.ZipFile(root / "greengrass-build" / "artifacts" / name / "1.0.0" / f"{name}.zip") as archive:
        wheels = [n[len("wheels/"):] for n in archive.namelist() if n.startswith("wheels/")]
        requirements = archive.read("requirements.txt").decode()
    dists = {re.sub(r"[-_.]+", "_", w.split("-")[0]).lower() for w in wheels}
    for line in requirements.splitlines():
        wanted = re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0]
        if wanted:
            assert re.sub(r"[-_.]+", "_", wanted).lower() in dists, (wanted, wheels)
    assert any(w.startswith("pip-") and w.endswith("-py3-none-any.whl") for w in wheels)
    binary = {w.split("-")[0] for w in wheels if not w.endswith("-none-any.whl")}
    assert "awscrt" in binary and "rpds_py" in binary                   # awsiotsdk's and jsonschema's
    for dist in binary:
        for py, arch in TARGETS:
            assert [w for w in wheels if w.startswith(dist + "-") and runs_on(w, py, arch)], (dist, py, arch)
    for wheel in wheels:                                                  # nothing for other systems
        assert "win" not in wheel and "macosx" not in wheel and "musllinux" not in wheel, wheel


def test_an_artifact_installs_offline_and_runs_its_package(top, tmp_path):
    root, _ = top
    name = "io.backfill.TemperatureCorrection"
    unpacked = tmp_path / name
    with zipfile.ZipFile(root / "greengrass-build" / "artifacts" / name / "1.0.0" / f"{name}.zip") as archive:
        archive.extractall(unpacked)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_INDEX_URL"] = "http://127.0.0.1:9/simple"             # an index is never used
    result = subprocess.run([sys.executable, str(unpacked / "install.py"), "--venv", str(tmp_path / "venv")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                            "import awsiot.greengrasscoreipc.clientv2, jsonschema, temperature_correction.handler, "
                            "backfill_common.contracts"],
                           cwd=tmp_path, env={**env, "PYTHONPATH": str(unpacked)}, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
