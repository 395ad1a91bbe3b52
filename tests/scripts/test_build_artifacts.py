"""The real components built as GDK runs the custom build commands (the commands of the
gdk-config.json files, without a shell, in their folders) on a copy of the repository:
GDK's layout, the code zips, the runtime's zip per architecture (wheels for CPython
3.10-3.13, their tags inspected), the bytes one device downloads (in the README), and the
runtime installed offline with a component run on it. Uses the wheel cache (a cold cache
downloads once)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from build_testkit import BUNDLE, NAMES, REPO, RUNTIME, runs_on
from localgg.recipe import load_recipe

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
ARCHES = {"x86_64": "amd64", "aarch64": "aarch64"}          # wheel tag -> the nucleus's architecture
DOWNLOAD_LIMIT = 12_000_000                                  # bytes per device for the whole bundle
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
    for name in (*NAMES, RUNTIME):
        folder = REPO / "components" / name
        found, settings = gdk_config(folder)
        assert found == name and settings["version"] == top_settings["version"]
        assert settings["build"]["custom_build_command"] == ["python3", "../../scripts/build.py", "--out",
                                                             "greengrass-build", "."]
        assert settings["publish"] == top_settings["publish"]
        assert os.readlink(folder / "recipe.yaml") == f"../../recipes/{name}.yaml"
        assert (folder / "recipe.yaml").resolve().is_file()
        assert (folder / "requirements.txt").exists() == (name == RUNTIME)   # one set of dependencies


def artifact(root: Path, name: str, file: str = "") -> Path:
    return root / "greengrass-build" / "artifacts" / name / "1.0.0" / (file or f"{name}.zip")


def test_the_top_level_build_lays_out_every_component_as_gdk_does(top):
    root, output = top
    out = root / "greengrass-build"
    for name in (*NAMES, RUNTIME, BUNDLE):
        assert (out / "recipes" / f"{name}.yaml").read_bytes() == (root / "recipes" / f"{name}.yaml").read_bytes()
    for name in NAMES:
        assert [p.name for p in (out / "artifacts" / name / "1.0.0").iterdir()] == [f"{name}.zip"]
        size = re.search(rf"^{re.escape(name)} 1\.0\.0: \S+ ([0-9.]+) MB", output, re.M)
        assert size and float(size.group(1)) < 1, output                 # code only: no wheels
    assert sorted(p.name for p in (out / "artifacts" / RUNTIME / "1.0.0").iterdir()) == [
        f"{RUNTIME}-{arch}.zip" for arch in sorted(ARCHES)]
    assert list((out / "artifacts" / BUNDLE / "1.0.0").iterdir()) == []
    assert sorted(p.name for p in (out / "artifacts").iterdir()) == sorted((*NAMES, RUNTIME, BUNDLE))


def test_a_component_folder_builds_itself(copy):
    folder = copy / "components" / NAMES[1]
    run_custom_build(folder)
    out = folder / "greengrass-build"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        f"artifacts/{NAMES[1]}/1.0.0/{NAMES[1]}.zip", f"recipes/{NAMES[1]}.yaml"]


@pytest.mark.parametrize("name", NAMES)
def test_a_components_zip_holds_its_package_and_the_common_code(top, name):
    root, _ = top
    folder = root / "components" / name
    with zipfile.ZipFile(artifact(root, name)) as archive:
        names = archive.namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == package_dirs(folder) | {"backfill_common"}
    common = REPO / "components" / "_common" / "backfill_common"
    assert {n for n in names if n.startswith("backfill_common/")} == {
        f"backfill_common/{p.relative_to(common).as_posix()}" for p in common.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    for package in package_dirs(folder):
        assert f"{package}/__main__.py" in names
    for bad in ("gdk-config.json", "recipe.yaml", "__pycache__", "tests", ".pyc", "greengrass-build", ".whl"):
        assert not [n for n in names if bad in n.split("/") or n.endswith(bad)], bad


def requirement_names(text: str) -> list[str]:
    names = (re.split(r"[<>=!~;\[ #]", line.strip(), maxsplit=1)[0] for line in text.splitlines())
    return [re.sub(r"[-_.]+", "_", n).lower() for n in names if n]


def dist(wheel: str) -> str:
    return re.sub(r"[-_.]+", "_", wheel.split("-")[0]).lower()


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_the_runtimes_zip_per_architecture_covers_cpython_310_to_313_with_one_wheel_each(top, arch):
    root, _ = top
    with zipfile.ZipFile(artifact(root, RUNTIME, f"{RUNTIME}-{arch}.zip")) as archive:
        wheels = sorted(n[len("wheels/"):] for n in archive.namelist() if n.endswith(".whl"))
        manifest = json.loads(archive.read("wheels/manifest.json"))
        requirements = archive.read("requirements.txt").decode()
        assert archive.read("install.py") == (REPO / "components" / RUNTIME / "install.py").read_bytes()
    assert requirements == (REPO / "components" / RUNTIME / "requirements.txt").read_text()
    assert manifest["arch"] == arch
    assert sorted(manifest["targets"]) == sorted(f"cp{py.replace('.', '')}-{arch}" for py in PYTHONS)
    for py in PYTHONS:
        chosen = manifest["targets"][f"cp{py.replace('.', '')}-{arch}"]
        assert set(requirement_names(requirements)) <= {dist(w) for w in chosen}, (py, chosen)
        assert len({dist(w) for w in chosen}) == len(chosen)              # one wheel per distribution
        for wheel in chosen:
            assert runs_on(wheel, py, arch), (wheel, py, arch)
        assert not [w for w in chosen if dist(w) == "pip"]                 # no pip on the device
    assert wheels == sorted({w for names in manifest["targets"].values() for w in names})   # nothing unused
    awscrt = [w for w in wheels if dist(w) == "awscrt"]
    assert len(awscrt) == 2 and [w for w in awscrt if "-abi3-" in w], awscrt  # cp310 and one abi3 for 3.11+
    for wheel in wheels:                                                  # nothing for other systems
        assert "win" not in wheel and "macosx" not in wheel and "musllinux" not in wheel, wheel
        assert wheel.endswith("-any.whl") or wheel.endswith(f"_{arch}.whl"), wheel


def downloads(root: Path, architecture: str) -> dict[str, int]:
    """{artifact: bytes} a device of that architecture downloads for the bundle: every recipe
    reached from the bundle through its dependencies, each one's manifest for the device."""
    recipes = root / "greengrass-build" / "recipes"
    out, todo, seen = {}, [BUNDLE], set()
    while todo:
        name = todo.pop()
        if name in seen or not (recipes / f"{name}.yaml").exists():   # aws.greengrass.*: AWS's own
            continue
        seen.add(name)
        recipe = load_recipe(recipes / f"{name}.yaml")
        todo += list(recipe.dependencies)
        for item in recipe.select({"os": "linux", "architecture": architecture}).artifacts:
            path = artifact(root, name, item.file_name)
            out[f"{name}/{item.file_name}"] = path.stat().st_size
    assert seen == {*NAMES, RUNTIME, BUNDLE}
    return out


def test_one_device_downloads_at_most_12_mb_and_the_readme_says_how_much(top):
    root, _ = top
    readme = (REPO / "README.md").read_text()
    for arch, architecture in ARCHES.items():
        files = downloads(root, architecture)
        assert sorted(files) == sorted([f"{RUNTIME}/{RUNTIME}-{arch}.zip"] + [f"{n}/{n}.zip" for n in NAMES])
        total = sum(files.values())
        assert total <= DOWNLOAD_LIMIT, (arch, files)
        row = re.search(rf"^\| {architecture} \([^|]*\) \| ([0-9.]+) MB \|", readme, re.M)
        assert row, f"README: no download row for {architecture}"
        assert row.group(1) == f"{total / 1e6:.1f}", (arch, total)


def test_the_runtime_installs_offline_with_one_awscrt_and_a_component_runs_on_it(top, tmp_path):
    root, _ = top
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    runtime, code = tmp_path / "runtime", tmp_path / "component"
    with zipfile.ZipFile(artifact(root, RUNTIME, f"{RUNTIME}-{machine}.zip")) as archive:
        archive.extractall(runtime)
    name = "io.backfill.TemperatureCorrection"
    with zipfile.ZipFile(artifact(root, name)) as archive:
        archive.extractall(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_INDEX_URL"] = "http://127.0.0.1:9/simple"             # an index is never used
    venv = tmp_path / "work" / "venv"
    result = subprocess.run([sys.executable, str(runtime / "install.py"), "--venv", str(venv)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import awsiot.greengrasscoreipc.clientv2, jsonschema, sqlite_utils, bme680, smbus2, "
                            "temperature_correction.handler, backfill_common.contracts"],
                           cwd=tmp_path, env={**env, "PYTHONPATH": str(code)}, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    installed = [p for p in tmp_path.rglob("awscrt") if p.is_dir()]
    assert [p.relative_to(venv.resolve()).parts[0] for p in installed] == ["lib"], installed   # one copy
