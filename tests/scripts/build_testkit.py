"""Helpers for the build tests: scripts/build.py loaded as a module, wheels and sdists made
on the spot (an offline package index in a folder), pip's wheel from ensurepip."""

from __future__ import annotations

import base64
import ensurepip
import hashlib
import importlib.util
import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = ("io.backfill.Bme680Sensor", "io.backfill.TemperatureCorrection", "io.backfill.StoreAndForward")
RUNTIME = "io.backfill.Runtime"
BUNDLE = "io.backfill.SensorPipeline"


def load_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package), under a private module name."""
    private = f"backfill_scripts_{name}"
    if private in sys.modules:
        return sys.modules[private]
    spec = importlib.util.spec_from_file_location(private, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[private] = module
    spec.loader.exec_module(module)
    return module


def bundled_pip() -> Path:
    """The pip wheel the interpreter ships for ensurepip (offline); skips the test without one."""
    found = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not found:
        pytest.skip("this Python has no bundled pip wheel (ensurepip/_bundled)")
    return found[-1]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_bytes(name: str, version: str, tag: str = "py3-none-any", requires=(), modules=None) -> tuple[str, bytes]:
    """(file name, content) of a valid wheel: METADATA, WHEEL (tags expanded), RECORD with hashes."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = dict(modules or {f"{name.replace('-', '_')}/__init__.py": f"VERSION = {version!r}\n"})
    files[f"{dist}.dist-info/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                           + "".join(f"Requires-Dist: {r}\n" for r in requires))
    py, abi, plat = tag.split("-")
    tags = [f"{p}-{a}-{q}" for p in py.split(".") for a in abi.split(".") for q in plat.split(".")]
    files[f"{dist}.dist-info/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: build_testkit\n"
                                        f"Root-Is-Purelib: {'true' if plat == 'any' else 'false'}\n"
                                        + "".join(f"Tag: {t}\n" for t in tags))
    record = [f"{path},{_record_hash(text.encode())},{len(text.encode())}" for path, text in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return f"{dist}-{tag}.whl", out.getvalue()


def make_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any", requires=(), modules=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    filename, data = wheel_bytes(name, version, tag, requires, modules)
    (folder / filename).write_bytes(data)
    return folder / filename


# An in-tree PEP 517 backend (no build requirements, so pip builds it offline).
BACKEND = r'''
import base64, hashlib, zipfile
def _h(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
def get_requires_for_build_wheel(config_settings=None):
    return []
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist = f"{NAME}-{VERSION}"
    files = {f"{NAME}/__init__.py": "SOURCE = 'sdist'\n",
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: backend\nRoot-Is-Purelib: true\nTag: " + TAG + "\n"}
    record = [f"{p},{_h(t.encode())},{len(t.encode())}" for p, t in files.items()] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    name = f"{dist}-{TAG}.whl"
    with zipfile.ZipFile(f"{wheel_directory}/{name}", "w") as archive:
        for p, t in files.items():
            archive.writestr(p, t)
    return name
'''


def make_sdist(folder: Path, name: str = "tinysrc", tag: str = "py3-none-any") -> Path:
    """<name>-1.0.tar.gz: published as an sdist only, built by an in-tree backend into a <tag> wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    members = {"pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
               "backend.py": f"NAME, VERSION, TAG = {name!r}, '1.0', {tag!r}\n" + BACKEND,
               "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"}
    target = folder / f"{name}-1.0.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        for member, text in members.items():
            info = tarfile.TarInfo(f"{name}-1.0/{member}")
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return target


def _gdk_config(folder: Path, name: str, publish: dict) -> None:
    (folder / "gdk-config.json").write_text(json.dumps({"component": {name: {
        "author": "Tester", "version": "1.2.3", "publish": publish,
        "build": {"build_system": "custom",
                  "custom_build_command": ["python3", "../../scripts/build.py", "--out", "greengrass-build", "."]}}},
        "gdk_version": "1.6.2"}))


def make_repo(root: Path, requirements: str = "", name: str = "io.test.Widget", runtime: str = "io.test.Runtime",
              arches=("x86_64",)) -> Path:
    """A repository laid out as ours: components/<name>/ (a code component), components/<runtime>/
    (the wheels, per architecture in `arches`), components/_common/, recipes/, the bundle.
    Returns the code component's folder."""
    publish = {"bucket": "test-bucket", "region": "eu-west-1"}
    (root / "recipes").mkdir(parents=True)
    folder = root / "components" / name
    (folder / "widget").mkdir(parents=True)
    (folder / "widget" / "__init__.py").write_text("")
    (folder / "widget" / "__main__.py").write_text("print('widget')\n")
    (root / "recipes" / f"{name}.yaml").write_text(
        f'---\nRecipeFormatVersion: "2020-01-25"\nComponentName: {name}\nComponentVersion: "1.2.3"\n'
        f"ComponentPublisher: Tester\nComponentDependencies:\n  {runtime}:\n    VersionRequirement: '>=1.0.0'\n"
        f"Manifests:\n  - Platform:\n      os: linux\n    Artifacts:\n"
        f"      - URI: s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{name}.zip\n        Unarchive: ZIP\n")
    (folder / "recipe.yaml").symlink_to(f"../../recipes/{name}.yaml")
    _gdk_config(folder, name, publish)
    home = root / "components" / runtime
    home.mkdir(parents=True)
    (home / "requirements.txt").write_text(requirements)
    (home / "install.py").write_text("# installer\n")
    manifests = "".join(
        f"  - Platform:\n      os: linux\n      architecture: {'amd64' if arch == 'x86_64' else arch}\n"
        f"    Artifacts:\n      - URI: s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{runtime}-{arch}.zip\n"
        f"        Unarchive: ZIP\n" for arch in arches)
    (root / "recipes" / f"{runtime}.yaml").write_text(
        f'---\nRecipeFormatVersion: "2020-01-25"\nComponentName: {runtime}\nComponentVersion: "1.2.3"\n'
        f"ComponentPublisher: Tester\nManifests:\n{manifests}")
    (home / "recipe.yaml").symlink_to(f"../../recipes/{runtime}.yaml")
    _gdk_config(home, runtime, publish)
    common = root / "components" / "_common"
    (common / "backfill_common" / "schemas").mkdir(parents=True)
    (common / "backfill_common" / "__init__.py").write_text("")
    (common / "backfill_common" / "schemas" / "a.json").write_text("{}")
    (root / "recipes" / "io.test.Bundle.yaml").write_text(
        '---\nRecipeFormatVersion: "2020-01-25"\nComponentName: io.test.Bundle\nComponentVersion: "1.2.3"\n'
        f"ComponentPublisher: Tester\nComponentDependencies:\n  {name}:\n    VersionRequirement: '>=1.0.0'\n")
    (root / "recipe.yaml").symlink_to("recipes/io.test.Bundle.yaml")
    (root / "gdk-config.json").write_text(json.dumps({"component": {"io.test.Bundle": {
        "author": "Tester", "version": "1.2.3", "publish": publish,
        "build": {"build_system": "custom", "custom_build_command": ["python3", "scripts/build.py"]}}},
        "gdk_version": "1.6.2"}))
    return folder


def _glibc(platform: str) -> tuple[int, int] | None:
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    head = platform.split("_")[0]
    if head in legacy:
        return legacy[head]
    parts = platform.split("_")
    if head == "manylinux" and len(parts) >= 4 and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None


def runs_on(filename: str, python: str, arch: str, glibc: tuple[int, int] = (2, 35)) -> bool:
    """Whether pip on CPython `python` ("3.10") on glibc linux `arch` may install this wheel (its tags)."""
    py_tags, abi_tags, plat_tags = filename[:-len(".whl")].split("-")[-3:]
    minor = int(python.split(".")[1])
    cp = f"cp3{minor}"
    for plat in plat_tags.split("."):
        version = _glibc(plat)
        if plat != "any" and not (version and plat.endswith("_" + arch) and version <= glibc):
            continue
        for py in py_tags.split("."):
            for abi in abi_tags.split("."):
                if abi == "none" and py in ("py3", f"py3{minor}", cp):
                    return True
                if abi == cp and py == cp:
                    return True
                if abi == "abi3" and py.startswith("cp3") and int(py[3:]) <= minor:
                    return True
    return False
