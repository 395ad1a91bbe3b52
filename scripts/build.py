#!/usr/bin/env python3
"""Build the Greengrass components into greengrass-build/, laid out as `gdk component build` does.

    python3 scripts/build.py                      every component and the bundle's recipe
    python3 scripts/build.py Bme680Sensor ...     some (component name, its short name, or folder)
    python3 scripts/build.py --out DIR [--jobs N] [--root REPO]

Standard library only (plain python3). It is the custom build command of every
gdk-config.json: at the top level GDK runs `python3 scripts/build.py` (everything into
./greengrass-build), in a component folder `python3 ../../scripts/build.py --out
greengrass-build .` (that component into the folder's greengrass-build). GDK v1.6.2 does
nothing after a custom build (no recipe validation, no URI rewriting), so this script writes

    <out>/artifacts/<Name>/<version>/<Name>.zip   (a runtime: <Name>-<arch>.zip per architecture;
                                                  the bundle: an empty folder, as GDK leaves it)
    <out>/recipes/<recipe file name>              the recipe as it is (`gdk component publish`
                                                  reads it there and rewrites the s3:// URIs)

and refuses a recipe whose ComponentName, ComponentVersion or ComponentPublisher differ from
gdk-config.json (GDK's zip build would overwrite them silently) or whose s3:// artifacts it
does not produce.

Two kinds of component folder:

- a code component (no requirements.txt): `<Name>.zip` holds at its root the folder's files
  (without gdk-config.json, the recipe, greengrass-build, tests, dot-files, __pycache__) and
  `backfill_common/` from components/_common/. It runs on the runtime component's venv.
- the runtime component (a requirements.txt: io.backfill.Runtime): one `<Name>-<arch>.zip`
  per architecture (x86_64, aarch64; the recipe picks one per device with a manifest per
  architecture), holding the folder's files (its install.py) and `wheels/`: the wheels
  that requirements.txt needs on that architecture with CPython 3.10-3.13 (manylinux), the
  fewest that cover every Python (an abi3 wheel serves every newer Python), and
  `wheels/manifest.json`: per target `cp<XY>-<arch>`, the exact wheels to unpack (pip
  resolved them here, so the device needs no pip and no index). A `without.txt` beside
  requirements.txt names distributions to leave out (one per line, with its reason).

The wheels are downloaded once per requirements content into
`${BACKFILL_WHEEL_CACHE:-${XDG_CACHE_HOME:-~/.cache}/backfill/wheels}`; a warm build needs no
network. Downloads run pip (a pinned version, from its wheel) with pip's configuration files
ignored and each target's marker environment (python_version, platform_machine), from pip's
default index or PIP_INDEX_URL. A dependency published only as an sdist is built once into a
wheel, which must be pure Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
PIP_VERSION = "26.3"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
ARCHES = ("x86_64", "aarch64")
# manylinux2014 (glibc 2.17) up to glibc 2.35 (Ubuntu 22.04; Bookworm has 2.36, Trixie 2.41)
GLIBC_MINORS = range(17, 36)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# pip settings kept from the environment (network access); every other PIP_* is dropped
PIP_ENV_KEPT = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT", "PIP_PROXY",
                "PIP_RETRIES", "PIP_TRUSTED_HOST", "PIP_INDEX_URL", "PIP_CACHE_DIR", "PIP_NO_CACHE_DIR"}
RESERVED = {"code": ("backfill_common",), "runtime": ("wheels",)}  # what the build adds at the zip root

# Runs the pinned pip from its wheel with the target's marker environment: pip evaluates
# dependency markers (python_version < "3.11", platform_machine == ...) against the running
# interpreter even with --python-version/--platform.
PIP_RUNNER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pip._vendor.packaging import markers
target, host = json.loads(sys.argv[2]), markers.default_environment
def target_environment():
    env = host()
    env.update(target)
    return env
if target:   # {}: this host's environment
    markers.default_environment = target_environment
    if not markers.Marker('python_version == "%s"' % target["python_version"]).evaluate():
        sys.exit("build.py: could not set pip's marker environment")
from pip._internal.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


class BuildError(Exception):
    pass


# ---------------------------------------------------------------- projects and recipes

@dataclass(frozen=True)
class Project:
    folder: Path
    name: str
    version: str
    author: str
    build: dict
    publish: dict
    recipe: Path      # the resolved recipe file (recipe.yaml is a link into recipes/)
    bundle: bool      # the top-level project: a recipe, no artifact

    @property
    def kind(self) -> str:
        """bundle (a recipe only), runtime (wheels per architecture) or code (a zip of code)."""
        if self.bundle:
            return "bundle"
        return "runtime" if (self.folder / "requirements.txt").exists() else "code"

    def zip_names(self, arches: Iterable[str] = ()) -> list[str]:
        """The artifact files the build makes (a runtime: one per architecture in `arches`)."""
        if self.kind == "bundle":
            return []
        if self.kind == "runtime":
            return [f"{self.name}-{arch}.zip" for arch in arches]
        return [f"{self.name}.zip"]


def read_project(folder: Path, bundle: bool = False) -> Project:
    """One GDK project: `folder/gdk-config.json` (one component) and exactly one recipe.yaml or recipe.json."""
    try:
        config = json.loads((folder / "gdk-config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{folder}/gdk-config.json: {exc}") from exc
    components = config.get("component") or {}
    if len(components) != 1:
        raise BuildError(f"{folder}/gdk-config.json must describe exactly one component")
    name, settings = next(iter(components.items()))
    recipes = [p for p in (folder / "recipe.yaml", folder / "recipe.json") if p.exists()]
    if len(recipes) != 1:
        raise BuildError(f"{folder}: need exactly one recipe.yaml or recipe.json next to gdk-config.json")
    return Project(folder=folder, name=name, version=settings.get("version", ""),
                   author=settings.get("author", ""), build=settings.get("build") or {},
                   publish=settings.get("publish") or {}, recipe=recipes[0].resolve(), bundle=bundle)


def find_projects(root: Path) -> list[Project]:
    """Every components/<folder>/gdk-config.json, sorted, then the top-level project (the bundle)."""
    projects = [read_project(p.parent) for p in sorted((root / "components").glob("*/gdk-config.json"))]
    if (root / "gdk-config.json").exists():
        projects.append(read_project(root, bundle=True))
    return projects


def select(projects: list[Project], wanted: Iterable[str]) -> list[Project]:
    """Projects by component name, short name (after the last dot) or folder path."""
    chosen: list[Project] = []
    for word in wanted:
        path = Path(word).resolve()
        matches = [p for p in projects
                   if p.folder.resolve() == path or word in (p.name, p.folder.name, p.name.rsplit(".", 1)[-1])]
        if not matches:
            raise BuildError(f"no component {word!r}; known: {', '.join(p.name for p in projects)}")
        chosen += [p for p in matches if p not in chosen]
    return chosen


def recipe_value(text: str, key: str) -> str | None:
    """The scalar value of a top-level `key` in a YAML or JSON recipe (no YAML parser: stdlib only)."""
    found = re.search(rf'^\s*"?{key}"?\s*:\s*"?([^",\n#]*?)"?\s*,?\s*(#.*)?$', text, re.M)
    return found.group(1).strip().strip("'") if found else None


def artifact_files(text: str) -> list[str]:
    """Basenames of the recipe's s3:// artifact URIs (GDK publish uploads and rewrites these)."""
    return [m.group(1) for m in re.finditer(r'''s3://[^\s"']*/([^/\s"']+)''', text)]


def check_recipe(project: Project, produced: set[str]) -> None:
    text = project.recipe.read_text()
    wanted = {"ComponentName": project.name, "ComponentVersion": project.version}
    if project.author:
        wanted["ComponentPublisher"] = project.author
    for key, value in wanted.items():
        found = recipe_value(text, key)
        if found != value:
            raise BuildError(f"{project.recipe}: {key} is {found or 'missing'}, "
                             f"{project.folder.name}/gdk-config.json says {value}")
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", project.version):
        raise BuildError(f"{project.folder}: version must be a fixed semantic version, not {project.version!r}")
    if len(text.encode()) > 16000:
        raise BuildError(f"{project.recipe}: {len(text.encode())} bytes, over Greengrass's 16,000-byte limit")
    missing = sorted(set(artifact_files(text)) - produced)
    if missing:
        raise BuildError(f"{project.recipe}: artifacts {missing} are not built (this build makes {sorted(produced)})")
    if produced and not set(artifact_files(text)) >= produced:
        raise BuildError(f"{project.recipe}: no s3:// artifact URI ends in {sorted(produced)}")


# ---------------------------------------------------------------- files in the artifact

def excluded(relative: PurePosixPath) -> bool:
    """Whether a path inside a component folder stays out of its artifact."""
    if len(relative.parts) == 1 and relative.name in ("gdk-config.json", "recipe.yaml", "recipe.json"):
        return True
    for part in relative.parts:
        if part.startswith(".") or part in ("__pycache__", "tests", "test", "greengrass-build", "zip-build",
                                             "node_modules"):
            return True
    name = relative.name
    return name.endswith((".pyc", ".pyo")) or (name.startswith("test_") and name.endswith(".py")) \
        or name == "conftest.py"


def tree_files(folder: Path, prefix: str = "") -> list[tuple[Path, str]]:
    """(file, name in the zip) for every file under folder that is not excluded, sorted."""
    out = []
    for directory, subdirs, files in os.walk(folder):
        base = PurePosixPath(Path(directory).relative_to(folder).as_posix())
        subdirs[:] = sorted(d for d in subdirs if not excluded(base / d))
        for name in sorted(files):
            relative = base / name
            if not excluded(relative) and (Path(directory) / name).is_file():
                out.append((Path(directory) / name, prefix + relative.as_posix()))
    return sorted(out, key=lambda entry: entry[1])


def write_zip(target: Path, entries: list[tuple[Path | bytes, str]]) -> None:
    """A reproducible zip (fixed times, sorted, modes kept); wheels are stored, the rest deflated.
    An entry's source is a file or its bytes (a generated file, mode 0644)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for source, name in sorted(entries, key=lambda entry: entry[1]):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            mode = 0o644 if isinstance(source, bytes) else stat.S_IMODE(source.stat().st_mode) | 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as out:
                if isinstance(source, bytes):
                    out.write(source)
                else:
                    with open(source, "rb") as data:
                        shutil.copyfileobj(data, out, 1 << 20)
    os.replace(partial, target)


# ---------------------------------------------------------------- wheels

@dataclass(frozen=True)
class Target:
    python: str   # "3.10"
    arch: str     # "x86_64" | "aarch64"

    @property
    def label(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.arch}"

    def pip_args(self) -> list[str]:
        platforms = [f"manylinux2014_{self.arch}"] + [f"manylinux_2_{n}_{self.arch}" for n in GLIBC_MINORS]
        return [arg for p in platforms for arg in ("--platform", p)] + [
            "--python-version", self.python, "--implementation", "cp",
            "--abi", f"cp{self.python.replace('.', '')}", "--only-binary=:all:"]

    def markers(self) -> dict:
        return {"python_version": self.python, "python_full_version": f"{self.python}.0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "platform_machine": self.arch, "sys_platform": "linux", "platform_system": "Linux",
                "os_name": "posix"}


TARGETS = tuple(Target(py, arch) for arch in ARCHES for py in PYTHONS)


def parse_wheel(filename: str) -> tuple[str, str, set[tuple[str, str, str]]]:
    """(normalised name, version, tags) of a wheel file name (PEP 427, compressed tag sets expanded)."""
    parts = filename[:-len(".whl")].split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        raise ValueError(f"not a wheel file name: {filename}")
    py, abi, plat = parts[-3:]
    tags = {(p, a, q) for p in py.split(".") for a in abi.split(".") for q in plat.split(".")}
    return canonical(parts[0]), parts[1], tags


def canonical(name: str) -> str:
    """A distribution's normalised name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def not_pure(names: Iterable[str]) -> list[str]:
    """The wheels among names that are not pure Python (any tag other than *-none-any)."""
    return [name for name in names if any(abi != "none" or plat != "any" for _, abi, plat in parse_wheel(name)[2])]


def glibc_of(platform_tag: str, arch: str) -> tuple[int, int] | None:
    """The glibc a manylinux platform tag for `arch` needs (None: not manylinux for arch)."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    if not platform_tag.endswith("_" + arch):
        return None
    head = platform_tag[:-len(arch) - 1]
    if head in legacy:
        return legacy[head]
    found = re.fullmatch(r"manylinux_(\d+)_(\d+)", head)
    return (int(found.group(1)), int(found.group(2))) if found else None


def installable(filename: str, target: Target) -> bool:
    """Whether the wheel's tags let it install on target (CPython, glibc linux up to 2.GLIBC_MINORS)."""
    minor = int(target.python.split(".")[1])
    newest = (2, GLIBC_MINORS[-1])
    for py, abi, plat in parse_wheel(filename)[2]:
        if plat != "any" and not ((glibc_of(plat, target.arch) or (9, 0)) <= newest):
            continue
        if abi == "none" and (py in ("py3", f"cp3{minor}") or re.fullmatch(r"py3\d+", py)
                              and int(py[3:]) <= minor):
            return True
        if abi == f"cp3{minor}" and py == f"cp3{minor}":
            return True
        if abi == "abi3" and re.fullmatch(r"cp3\d+", py) and int(py[3:]) <= minor:
            return True
    return False


def fewest_wheels(per_target: dict[str, list[str]], targets: Iterable[Target]) -> dict[str, list[str]]:
    """Per target, the wheels pip chose, each swapped for the same release's wheel that installs
    on the most of these targets (cp311-abi3 for 3.11-3.13 rather than also a cp313-abi3)."""
    targets = list(targets)
    union = sorted({name for t in targets for name in per_target[t.label]})
    reach = {name: sum(installable(name, t) for t in targets) for name in union}
    chosen = {}
    for target in targets:
        names = []
        for name in per_target[target.label]:
            release = parse_wheel(name)[:2]
            same = [c for c in union if parse_wheel(c)[:2] == release and installable(c, target)]
            names.append(max(same or [name], key=lambda c: (reach.get(c, 0), c == name, c)))
        chosen[target.label] = sorted(names)
    return chosen


def requirement_lines(text: str) -> list[str]:
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def cache_key(requirements: str, targets: Iterable[Target], pip_version: str) -> str:
    material = json.dumps({"requirements": requirement_lines(requirements), "pip": pip_version,
                           "targets": [t.label for t in targets], "glibc": list(GLIBC_MINORS)})
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def default_cache() -> Path:
    if os.environ.get("BACKFILL_WHEEL_CACHE"):
        return Path(os.environ["BACKFILL_WHEEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "backfill" / "wheels"


def pip_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PIP_ENV_KEPT}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


class Wheelhouse:
    """The wheels a requirements.txt needs on every target, downloaded once and cached.

        house = Wheelhouse(default_cache())
        folder, files = house.wheels(Path("requirements.txt").read_text())

    `index_args` go to every pip call (default: none, so pip's default index or
    PIP_INDEX_URL); `python` runs pip (it needs 3.10+ for pip 26 on a cold cache).
    """

    def __init__(self, cache: Path, index_args: list[str] | None = None, targets: Iterable[Target] = TARGETS,
                 pip_version: str = PIP_VERSION, jobs: int = 4, python: str = sys.executable,
                 log: Callable[[str], None] = print) -> None:
        self.cache, self.index_args, self.targets = Path(cache), list(index_args or []), tuple(targets)
        self.pip_version, self.jobs, self.python, self.log = pip_version, max(1, jobs), python, log
        self.pip_runs = 0

    # -- public
    def wheels(self, requirements: str) -> tuple[Path, list[str]]:
        folder = self.cache / cache_key(requirements, self.targets, self.pip_version)
        manifest = self._manifest(folder)
        if manifest is None:
            self._fill(folder, requirements)
            manifest = self._manifest(folder)
            if manifest is None:
                raise BuildError(f"the wheel cache {folder} is incomplete after downloading")
        return folder, manifest["files"]

    def per_target(self, requirements: str) -> tuple[Path, dict[str, list[str]]]:
        """(cache folder, {target label: the wheels pip chose for it})."""
        folder, _ = self.wheels(requirements)
        return folder, dict(self._manifest(folder)["targets"])

    # -- cache
    @staticmethod
    def _manifest(folder: Path) -> dict | None:
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if all((folder / f).is_file() for f in manifest.get("files", [])):
            return manifest
        return None

    def _fill(self, folder: Path, requirements: str) -> None:
        if self.python == sys.executable and sys.version_info < (3, 10):
            raise BuildError(f"downloading wheels runs pip {self.pip_version}, which needs Python 3.10+; "
                             f"run this script with a newer python3 (this is {sys.version.split()[0]})")
        self.cache.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.log(f"  downloading wheels for {len(self.targets)} targets into {folder} (once; cached)")
        with tempfile.TemporaryDirectory(prefix=".partial-", dir=self.cache) as scratch:
            work = Path(scratch)
            (work / "requirements.txt").write_text(requirements)
            pip_wheel = self.pip_wheel()
            if requirement_lines(requirements):
                results = self._download_all(work, pip_wheel, self.targets, [])
            else:  # nothing to download: pip's wheel only
                results = {target: (work / target.label).mkdir() or True for target in self.targets}
            failed = [t for t, ok in results.items() if ok is not True]
            built: list[str] = []
            if failed:
                built = self._build_sdists(work, pip_wheel, results[failed[0]])
                results.update(self._download_all(work, pip_wheel, failed, ["--find-links", str(work / "built")]))
                failed = [t for t, ok in results.items() if ok is not True]
                if failed:
                    raise BuildError(f"no wheels for {failed[0].label}:\n{results[failed[0]]}")
            final = work / "final"
            final.mkdir()
            per_target = {}
            for target in self.targets:
                names = sorted(p.name for p in (work / target.label).glob("*.whl"))
                per_target[target.label] = names
                for name in names:
                    if not (final / name).exists():
                        shutil.copy2(work / target.label / name, final / name)
            shutil.copy2(pip_wheel, final / pip_wheel.name)
            files = sorted(p.name for p in final.iterdir())
            (final / "manifest.json").write_text(json.dumps(
                {"requirements": requirement_lines(requirements), "pip": pip_wheel.name, "files": files,
                 "targets": per_target, "built_from_sdist": built}, indent=1))
            try:
                os.rename(final, folder)
            except OSError:
                if self._manifest(folder) is None:  # not a concurrent build that finished first
                    raise
        self.log(f"  {len(files)} wheels in {time.monotonic() - started:.1f} s")

    def pip_wheel(self) -> Path:
        """pip's own wheel (pinned), fetched with the interpreter's pip once."""
        folder = self.cache / "pip"
        found = sorted(folder.glob(f"pip-{self.pip_version}-*.whl"))   # not the unpacked folder: *.whl files
        if found:
            return found[-1]
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".partial-", dir=self.cache) as scratch:
            command = [self.python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                       "-d", scratch, f"pip=={self.pip_version}", *self.index_args]
            result = self._run(command)
            if result.returncode != 0:
                raise BuildError(f"could not download pip {self.pip_version} with {self.python} -m pip "
                                 f"(a cold cache needs pip and the package index):\n{tail(result)}")
            wheel = next(Path(scratch).glob("pip-*.whl"))
            os.replace(wheel, folder / wheel.name)
        return folder / wheel.name

    def _run(self, command: list[str]) -> subprocess.CompletedProcess:
        self.pip_runs += 1
        return subprocess.run(command, env=pip_env(), capture_output=True, text=True)

    def _pip(self, pip_wheel: Path, markers: dict, args: list[str]) -> subprocess.CompletedProcess:
        return self._run([self.python, "-c", PIP_RUNNER, str(self._unpacked(pip_wheel)), json.dumps(markers), *args])

    @staticmethod
    def _unpacked(pip_wheel: Path) -> Path:
        """pip's wheel unpacked beside it (imports from a folder start faster and keep their .pyc)."""
        folder = pip_wheel.with_suffix("")
        if not (folder / "pip" / "__init__.py").exists():
            partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=pip_wheel.parent))
            with zipfile.ZipFile(pip_wheel) as archive:
                archive.extractall(partial)
            try:
                os.rename(partial, folder)
            except OSError:              # unpacked meanwhile by a concurrent build
                shutil.rmtree(partial, ignore_errors=True)
        return folder

    def _download_all(self, work: Path, pip_wheel: Path, targets: Iterable[Target],
                      extra: list[str]) -> dict[Target, bool | str]:
        def download(target: Target) -> bool | str:
            dest = work / target.label
            dest.mkdir(exist_ok=True)
            result = self._pip(pip_wheel, target.markers(), [
                "download", "--quiet", "--progress-bar", "off", *target.pip_args(), *self.index_args, *extra,
                "-d", str(dest), "-r", str(work / "requirements.txt")])
            return True if result.returncode == 0 else tail(result)
        targets = list(targets)
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(targets))) as pool:
            return dict(zip(targets, pool.map(download, targets)))

    def _build_sdists(self, work: Path, pip_wheel: Path, first_error: str) -> list[str]:
        """Dependencies with no wheel at all: fetch for this host (sdists allowed), build each sdist once."""
        host = work / "host"
        result = self._pip(pip_wheel, {}, ["download", "--quiet", "--progress-bar", "off", *self.index_args,
                                            "-d", str(host), "-r", str(work / "requirements.txt")])
        sdists = [p for p in host.glob("*") if p.name.endswith((".tar.gz", ".zip", ".tar.bz2"))]
        if result.returncode != 0 or not sdists:
            host_error = tail(result) if result.returncode else "(no dependency is an sdist)"
            raise BuildError(f"no wheels for every target:\n{first_error}\n"
                             f"for this host, allowing sdists:\n{host_error}")
        built = work / "built"
        result = self._pip(pip_wheel, {}, ["wheel", "--no-deps", "--quiet", *self.index_args, "-w", str(built),
                                            *map(str, sdists)])
        if result.returncode != 0:
            raise BuildError(f"could not build wheels from {[p.name for p in sdists]}:\n{tail(result)}")
        names = sorted(p.name for p in built.glob("*.whl"))
        native = not_pure(names)
        if native:
            raise BuildError(f"{', '.join(native)}: no wheel for the targets and not pure Python, "
                             "so it cannot be built here for linux aarch64/x86_64")
        self.log(f"  built from sdist (pure Python): {', '.join(names)}")
        return names


def tail(result: subprocess.CompletedProcess, lines: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


# ---------------------------------------------------------------- the build

def house_arches(house: Wheelhouse) -> list[str]:
    return [arch for arch in ARCHES if any(t.arch == arch for t in house.targets)]


def runtime_zips(project: Project, house: Wheelhouse, files: list[tuple[Path, str]]) -> dict[str, list]:
    """{zip name: entries} of a runtime component: one zip per architecture, its wheels and manifest."""
    folder, per_target = house.per_target((project.folder / "requirements.txt").read_text())
    without_file = project.folder / "without.txt"
    without = {canonical(line) for line in requirement_lines(without_file.read_text())} if without_file.exists() else set()
    per_target = {label: [n for n in names if parse_wheel(n)[0] not in without] for label, names in per_target.items()}
    zips = {}
    for arch in house_arches(house):
        targets = [t for t in house.targets if t.arch == arch]
        chosen = fewest_wheels(per_target, targets)
        wheels = sorted({name for names in chosen.values() for name in names})
        manifest = json.dumps({"arch": arch, "targets": chosen,
                               "requirements": requirement_lines((project.folder / "requirements.txt").read_text())},
                              indent=1, sort_keys=True).encode() + b"\n"
        zips[f"{project.name}-{arch}.zip"] = files + [(folder / name, f"wheels/{name}") for name in wheels] + [
            (manifest, "wheels/manifest.json")]
    return zips


def build_project(project: Project, root: Path, out: Path, house: Wheelhouse) -> str:
    recipes = out / "recipes"
    artifacts = out / "artifacts" / project.name / project.version
    if project.kind == "bundle":
        check_recipe(project, set())
        what = "recipe only"
    else:
        if project.build.get("build_system") != "custom":
            raise BuildError(f"{project.folder}/gdk-config.json: build_system must be custom (this script)")
        check_recipe(project, set(project.zip_names(house_arches(house))))
        files = tree_files(project.folder)
        clash = sorted({name.split("/")[0] for _, name in files} & set(RESERVED[project.kind]))
        if clash:
            raise BuildError(f"{project.folder}: {clash} are added by the build; remove them from the folder")
        if project.kind == "runtime":
            zips = runtime_zips(project, house, files)
        else:
            common = root / "components" / "_common"
            zips = {project.zip_names()[0]: files + tree_files(common / "backfill_common", "backfill_common/")}
        sizes = []
        for name, entries in zips.items():
            write_zip(artifacts / name, entries)
            wheels = sum(1 for _, n in entries if n.endswith(".whl"))
            sizes.append(f"{(artifacts / name).relative_to(out)} {(artifacts / name).stat().st_size / 1e6:.1f} MB "
                         f"({len(entries) - wheels} files" + (f", {wheels} wheels)" if wheels else ")"))
        what = "; ".join(sizes)
    artifacts.mkdir(parents=True, exist_ok=True)
    recipes.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project.recipe, recipes / project.recipe.name)
    return f"{project.name} {project.version}: {what}"


def clean(out: Path, projects: list[Project], everything: bool) -> None:
    """Remove what this build rewrites (never `out` itself: it may be any folder)."""
    if everything:
        for sub in ("recipes", "artifacts"):
            shutil.rmtree(out / sub, ignore_errors=True)
        return
    for project in projects:
        shutil.rmtree(out / "artifacts" / project.name, ignore_errors=True)
        (out / "recipes" / project.recipe.name).unlink(missing_ok=True)


def build(root: Path, out: Path, wanted: list[str], house: Wheelhouse,
          log: Callable[[str], None] = print) -> list[str]:
    projects = find_projects(root)
    chosen = select(projects, wanted) if wanted else projects
    clean(out, chosen, everything=not wanted)
    return [log(line) or line for line in (build_project(p, root, out, house) for p in chosen)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("components", nargs="*", help="component names, short names or folders (default: all)")
    parser.add_argument("--out", type=Path, help="output folder (default: <root>/greengrass-build)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this script's)")
    parser.add_argument("--jobs", type=int, default=4, help="concurrent pip downloads on a cold cache (default 4)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    out = (args.out or root / "greengrass-build").resolve()
    started = time.monotonic()
    house = Wheelhouse(default_cache(), jobs=args.jobs)
    try:
        lines = build(root, out, args.components, house)
    except (BuildError, OSError, ValueError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    print(f"built {len(lines)} into {out} in {time.monotonic() - started:.1f} s (wheel cache {house.cache})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
