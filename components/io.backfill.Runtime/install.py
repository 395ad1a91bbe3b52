#!/usr/bin/env python3
"""Make the shared virtual environment of the Backfill components from the wheels beside this file.

    python3 install.py --venv DIR [--wheels DIR]

io.backfill.Runtime's Install step (it runs at every start of the core). Standard library
only, Python 3.10+, no pip and no package index. Beside this file: wheels/, built by
scripts/build.py for ONE machine architecture (the recipe's manifest picked it) and
CPython 3.10-3.13, with wheels/manifest.json naming, per `cp<XY>-<machine>` target, the
exact wheels that make the environment (the build resolved them with pip). It

- does nothing, and says so, when DIR already links to an environment built from the same
  manifest by this Python (the common case: milliseconds);
- otherwise builds a new environment beside DIR (`DIR-<fingerprint>`): a venv without pip
  and without the system's site packages (works on Debian without python3-venv), every
  wheel of this Python's target unpacked into it with each file checked against the
  wheel's RECORD hash, byte-compiled, and every top-level module of every wheel imported
  by the new environment's python (a wheel that cannot load here - another libc, ABI or
  word size - fails the install, not the components); synced to disk; then points DIR
  at it in one atomic rename, and syncs again. The components run the folder DIR points
  to (`readlink -f`), so a running one keeps its environment until it restarts: the
  previous environment is kept, older ones are removed before a build;
- the fingerprint is the manifest, this installer, the interpreter's path, its X.Y, ABI
  flags and machine: a patch update of the system's Python keeps the environment;
- on any failure removes what it half built and leaves DIR as it was (the next start
  retries); the exit status is 1 with the reason.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import csv
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
STAMP = ".backfill-install.json"
INSTALLER = "backfill-runtime"
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class InstallError(Exception):
    pass


def say(message: str) -> None:
    print(f"install.py: {message}", flush=True)


def target_label() -> str:
    """This interpreter's target, as the build names it: cp311-aarch64 (a free-threaded or a
    32-bit Python gets a label that no artifact has)."""
    machine = platform.machine().lower()
    machine = MACHINES.get(machine, machine) if struct.calcsize("P") == 8 else f"{machine}-32bit"
    threading = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    return f"cp{sys.version_info[0]}{sys.version_info[1]}{threading}-{machine}"


def fingerprint(manifest_bytes: bytes) -> dict:
    """What the environment is built from; a different one means a new environment. Not the
    patch level of Python nor its build date: a venv survives a security update of python3."""
    return {"manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "target": target_label(),
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}{getattr(sys, 'abiflags', '')}",
            "executable": os.path.realpath(sys.executable),
            "installer_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}


def fingerprint_id(wanted: dict) -> str:
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]


def is_current(link: Path, wanted: dict) -> bool:
    try:
        stamp = json.loads((link / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp == wanted and (link / "bin" / "python").exists()


# ---------------------------------------------------------------- one wheel

def record_hashes(archive: zipfile.ZipFile, dist_info: str) -> dict[str, str]:
    """{path: "sha256=..."} from the wheel's RECORD (the RECORD itself has no hash)."""
    try:
        text = archive.read(f"{dist_info}/RECORD").decode()
    except KeyError as exc:
        raise InstallError(f"{archive.filename}: no {dist_info}/RECORD") from exc
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2 and row[1]}


def dist_info_of(archive: zipfile.ZipFile) -> str:
    found = {PurePosixPath(n).parts[0] for n in archive.namelist() if PurePosixPath(n).parts
             and PurePosixPath(n).parts[0].endswith(".dist-info")}
    if len(found) != 1:
        raise InstallError(f"{archive.filename}: expected one .dist-info folder, found {sorted(found)}")
    return found.pop()


def destination(name: str, dist_info: str, paths: dict[str, Path]) -> tuple[str, Path]:
    """(scheme, path): where a file of the wheel goes (PEP 427: <dist>.data/<scheme>/... to that scheme)."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name:
        raise InstallError(f"unsafe path in a wheel: {name!r}")
    data = dist_info[:-len(".dist-info")] + ".data"
    if parts[0] == data:
        if len(parts) < 3 or parts[1] not in paths:
            raise InstallError(f"unknown wheel data scheme in {name!r}")
        return parts[1], paths[parts[1]].joinpath(*parts[2:])
    return "purelib", paths["purelib"].joinpath(*parts)


def top_level(name: str, dist_info: str) -> str | None:
    """The importable top-level module a wheel entry makes (a package's __init__, a module, an extension)."""
    parts = PurePosixPath(name).parts
    if parts[0] in (dist_info, dist_info[:-len(".dist-info")] + ".data") or parts[0] in ("tests", "test"):
        return None
    if len(parts) == 2 and parts[1] == "__init__.py":
        return parts[0]
    if len(parts) == 1 and name.endswith((".py", ".so")) and parts[0].split(".")[0].isidentifier():
        return parts[0].split(".")[0]
    return None


def unpack_wheel(wheel: Path, paths: dict[str, Path], python: Path) -> tuple[int, set[str]]:
    """Unpack one wheel into the environment's paths, every file checked against RECORD;
    returns (files, the top-level modules it provides)."""
    count, modules = 0, set()
    with zipfile.ZipFile(wheel) as archive:
        dist_info = dist_info_of(archive)
        hashes = record_hashes(archive, dist_info)
        for info in archive.infolist():
            if info.is_dir():
                continue
            data = archive.read(info)
            expected = hashes.get(info.filename)
            if expected is None and not info.filename.startswith(f"{dist_info}/"):
                raise InstallError(f"{wheel.name}: {info.filename} is not in its RECORD")
            if expected is not None:
                algorithm, _, digest = expected.partition("=")
                if algorithm not in hashlib.algorithms_guaranteed:
                    raise InstallError(f"{wheel.name}: unknown hash {algorithm} for {info.filename}")
                actual = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode()
                if actual != digest:
                    raise InstallError(f"{wheel.name}: {info.filename} does not match its RECORD hash")
            scheme, target = destination(info.filename, dist_info, paths)
            if scheme == "scripts" and data.startswith(b"#!python"):
                data = b"#!" + str(python).encode() + data[len(b"#!python"):]
            if target.is_symlink():   # bin/python links to the system's python: never write through it
                raise InstallError(f"{wheel.name}: {info.filename} would overwrite the link {target}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            module = top_level(info.filename, dist_info)
            if module:
                modules.add(module)
            mode = (info.external_attr >> 16) & 0o777
            if scheme == "scripts" or mode & 0o111:
                target.chmod(0o755)
            count += 1
        installer = paths["purelib"] / dist_info / "INSTALLER"
        installer.write_text(INSTALLER + "\n")
    return count, modules


# ---------------------------------------------------------------- the environment

def scheme_paths(root: Path) -> dict[str, Path]:
    """The venv scheme's folders for a venv at root (this interpreter's layout)."""
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"   # "venv": 3.11+
    names = sysconfig.get_paths(scheme=scheme, vars={"base": str(root), "platbase": str(root),
                                                      "installed_base": str(root),
                                                      "installed_platbase": str(root)})
    return {"purelib": Path(names["purelib"]), "platlib": Path(names["platlib"]),
            "scripts": Path(names["scripts"]), "data": root,
            "headers": root / "include" / "site" / f"python{sys.version_info[0]}.{sys.version_info[1]}"}


def build_environment(partial: Path, wheels: Path, names: list[str], wanted: dict) -> int:
    venv.EnvBuilder(system_site_packages=False, clear=True, symlinks=True, with_pip=False).create(partial)
    paths = scheme_paths(partial)
    final = partial.with_name(partial.name.removesuffix(".partial"))      # where it will be
    config = partial / "pyvenv.cfg"
    config.write_text(config.read_text().replace(str(partial), str(final)))
    python = final / "bin" / "python"
    files, modules = 0, set()
    for name in names:
        wheel = wheels / name
        if not wheel.is_file():
            raise InstallError(f"the manifest names {name}, which is not in {wheels}")
        count, provided = unpack_wheel(wheel, paths, python)
        files, modules = files + count, modules | provided
    if not compileall.compile_dir(str(paths["purelib"]), quiet=2, workers=1, stripdir=str(partial),
                                  prependdir=str(final)):
        say("note: some files did not byte-compile (they are compiled when first imported)")
    imports = sorted(modules)
    check = subprocess.run([str(partial / "bin" / "python"), "-I", "-c",
                            "import importlib, sys\n"
                            "for name in sys.argv[1:]:\n"
                            "    try:\n"
                            "        importlib.import_module(name)\n"
                            "    except BaseException as exc:\n"
                            "        sys.exit(f'{name}: {type(exc).__name__}: {exc}')\n", *imports],
                           capture_output=True, text=True, timeout=300)
    if check.returncode != 0:
        raise InstallError(f"the new environment cannot import what its wheels provide: "
                           f"{(check.stderr.strip().splitlines() or ['(no message)'])[-1]}")
    say(f"imported {len(imports)} modules in the new environment: {', '.join(imports)}")
    (partial / STAMP).write_text(json.dumps(wanted, indent=1))
    return files


def point(link: Path, folder: Path) -> None:
    """link -> folder (a relative symlink), replaced in one rename."""
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)                    # a plain folder from an earlier layout
    temporary = link.with_name(f".{link.name}.link-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name)
    os.replace(temporary, link)


def prune(link: Path, keep: set[str]) -> None:
    """Remove the environments beside link except those in keep (and what a failed build left)."""
    for folder in link.parent.glob(f"{link.name}-*"):
        if folder.name not in keep and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def install(link: Path, wheels: Path) -> int:
    if sys.version_info < (3, 10):
        say(f"needs Python 3.10 or newer; this is {platform.python_version()} ({sys.executable})")
        return 1
    try:
        manifest_bytes = (wheels / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
        targets = manifest["targets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        say(f"no readable {wheels}/manifest.json ({exc}): this artifact was not built by scripts/build.py")
        return 1
    label = target_label()
    if label not in targets:
        say(f"this artifact has no wheels for {label} (Python {platform.python_version()} on "
            f"{platform.machine()}); it has {', '.join(sorted(targets))}. The Backfill components need "
            "64-bit Linux (aarch64 or x86_64) with CPython 3.10-3.13.")
        return 1
    wanted = fingerprint(manifest_bytes)
    if is_current(link, wanted):
        say(f"{link} is current (same wheels, Python {platform.python_version()}); nothing to do")
        return 0
    previous = os.readlink(link) if link.is_symlink() else None
    folder = link.with_name(f"{link.name}-{fingerprint_id(wanted)}")
    partial = folder.with_name(folder.name + ".partial")
    started = time.monotonic()
    say(f"creating {folder} with Python {platform.python_version()} ({sys.executable}) from "
        f"{len(targets[label])} wheels for {label} in {wheels}")
    prune(link, {previous or ""})           # room first: only the current environment stays meanwhile
    try:
        for stale in (partial, folder):
            if stale.exists():
                shutil.rmtree(stale)
        files = build_environment(partial, wheels, list(targets[label]), wanted)
        os.sync()                           # the files are on disk before anything says they are current
        os.rename(partial, folder)
        point(link, folder)
        os.sync()
    except (OSError, ValueError, InstallError, zipfile.BadZipFile, subprocess.SubprocessError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if not (link.is_symlink() and os.readlink(link) == folder.name):
            shutil.rmtree(folder, ignore_errors=True)
        say(f"FAILED: {exc}. {link} is unchanged"
            f"{f' (still {previous})' if previous else ''}; the next start retries.")
        return 1
    prune(link, {folder.name, previous or ""})
    say(f"installed {files} files into {folder} in {time.monotonic() - started:.1f} s; {link} -> {folder.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, required=True, help="the environment's path (a link the build keeps current)")
    parser.add_argument("--wheels", type=Path, default=HERE / "wheels")
    args = parser.parse_args(argv)
    link = args.venv.absolute()
    link.parent.mkdir(parents=True, exist_ok=True)
    with open(link.parent / f".{link.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # one installer at a time per environment
        return install(link, args.wheels.absolute())


if __name__ == "__main__":
    sys.exit(main())
