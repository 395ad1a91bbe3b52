"""The host's side of `python3 scripts/dev.py device-check` (the I/O shell of devicecheck's plan):
the Debian packages and binfmt_misc, the build, the cached userland and wheels, the unpacked
userland, the run in its namespaces, the report, and the cleanup (on failure and Ctrl-C too).
Standard library only, as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import devicecheck

BINFMT = Path("/proc/sys/fs/binfmt_misc")


def check(arch: devicecheck.Arch, options, ensure_package, ensure_venv, python: str, root: Path, say) -> int:
    began = time.monotonic()
    times: dict = {}
    for package, program in (("mmdebstrap", "mmdebstrap"), (f"qemu-user-static", f"{arch.binfmt}-static"),
                             ("binfmt-support", "update-binfmts")):
        if ensure_package(package, lambda p=program: shutil.which(p), "for device-check") is None:
            print(f"device-check needs {package} (Debian package) and it could not be installed here.", file=sys.stderr)
            return 1
    problem = register_binfmt(arch, say)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    mirror = options.mirror or devicecheck.mirror_from_sources(apt_sources())
    if not mirror:
        print(f"no Debian mirror for {devicecheck.SUITE} in /etc/apt/sources.list*: give --mirror", file=sys.stderr)
        return 1
    cache = options.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_runs(cache, say)
    work = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=cache))
    process, interrupted = None, False
    try:
        rootfs = work / "rootfs"
        inside = rootfs / devicecheck.INSIDE.lstrip("/")
        say("building the bundle (scripts/build.py) into the userland's copy")
        begin = time.monotonic()
        subprocess.run([sys.executable, str(root / "scripts" / "build.py"), "--out", str(work / "greengrass-build")],
                       check=True)
        times["build"] = time.monotonic() - begin

        tarball = cache / devicecheck.userland_name(arch, mirror)
        times["userland"] = cached(
            tarball, lambda partial: subprocess.run(devicecheck.mmdebstrap_command(arch, mirror, partial), check=True),
            f"a Debian {devicecheck.SUITE} {arch.name} userland, made with mmdebstrap from {mirror} (its package "
            "scripts run under qemu: minutes)", say)
        ensure_venv()
        requirements = devicecheck.localgg_requirements((root / "pyproject.toml").read_text())
        wheels = cache / devicecheck.wheels_name(arch, requirements)
        times["wheels"] = cached(
            wheels, lambda partial: subprocess.run(devicecheck.pip_download_command(python, requirements, arch, partial),
                                                   check=True),
            f"localgg's dependencies for cp{devicecheck.PYTHON_VERSION} {arch.machine} ({', '.join(requirements)})", say)

        begin = time.monotonic()
        rootfs.mkdir()
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(rootfs)], check=True)
        inside.mkdir(parents=True)
        ignore = shutil.ignore_patterns("__pycache__", "greengrass-build", "*.pyc")
        for folder in ("scripts", "components", "recipes"):
            shutil.copytree(root / folder, inside / folder, ignore=ignore, symlinks=True)
        shutil.move(str(work / "greengrass-build"), str(inside / "greengrass-build"))
        shutil.copytree(wheels, inside / "wheels")
        version = (subprocess.run([sys.executable, "-c", "import bundleinfo; print(bundleinfo.version())"],
                                  cwd=root / "scripts", capture_output=True, text=True, check=True).stdout.strip())
        seconds = options.seconds
        (inside / "inside.sh").write_text(devicecheck.inside_script(
            arch, version, seconds, options.drain_timeout, options.deploy_timeout))
        times["unpack"] = time.monotonic() - begin

        say(f"in the userland (chroot; own mount, PID and network namespaces, loopback only): localgg's venv "
            f"from its wheels, then the cloud, a core, the deployment and {seconds:g} s of readings")
        # its own process group (Ctrl-C reaches it through us, below), and SIGKILL if we die
        process = subprocess.Popen(devicecheck.namespace_command(rootfs, f"{devicecheck.INSIDE}/inside.sh"),
                                   start_new_session=True, preexec_fn=die_with_parent)
        limit = seconds + options.deploy_timeout + options.drain_timeout + 1800
        try:
            process.wait(limit)
        except subprocess.TimeoutExpired:
            say(f"the run took more than {limit:g} s: stopping it")
            stop(process, say)
        except KeyboardInterrupt:
            say("interrupted: stopping the run inside (its processes end with its namespace)")
            stop(process, say)
            interrupted = True
        keep_logs(inside / "state", cache / "last-run", say)
        result_file = rootfs / devicecheck.RESULT.lstrip("/")
        result = devicecheck.parse_result(result_file.read_text() if result_file.exists() else "")
        times["total"] = time.monotonic() - began
        for line in devicecheck.render(result, arch, {k: round(v, 1) for k, v in times.items()}):
            print(line, flush=True)
        return 130 if interrupted else 0 if result.ok else 1
    finally:
        if process is not None and process.poll() is None:
            stop(process, say)
        remove(work, say)


def cached(path: Path, make, what: str, say) -> float:
    """path, made by make(partial) into path.partial then renamed, unless it is there; the seconds it took."""
    begin = time.monotonic()
    if path.exists():
        say(f"{what}: {path} (cached)")
        return time.monotonic() - begin
    say(f"{what}: into {path}")
    partial = path.with_name(".partial-" + path.name)      # the same suffix (mmdebstrap reads the format from it)
    if partial.is_dir():
        shutil.rmtree(partial)
    make(partial)
    os.replace(partial, path)
    return time.monotonic() - begin


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when dev.py ends, even by SIGKILL (prctl
    PR_SET_PDEATHSIG); unshare's --kill-child then takes its namespace's processes."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def register_binfmt(arch: devicecheck.Arch, say) -> str | None:
    """binfmt_misc mounted and qemu's entry for the arch enabled (None), or what is wrong."""
    if not (BINFMT / "status").exists():
        say(f"mounting binfmt_misc on {BINFMT}")
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False)
    entry = BINFMT / arch.binfmt
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        say(f"registering {arch.binfmt} with binfmt_misc (update-binfmts)")
        subprocess.run(["update-binfmts", "--enable", arch.binfmt], check=False)
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        return f"binfmt_misc has no enabled {arch.binfmt} entry ({entry}): the userland's programs cannot run here"
    return None


def apt_sources() -> dict:
    files = {}
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            files[path.name] = path.read_text()
        except OSError:
            pass
    return files


def stop(process: subprocess.Popen, say) -> None:
    """SIGINT to the run's process group (the driver inside stops the core and the cloud and
    writes its result); SIGKILL to unshare after 180 s, which takes the namespace with it."""
    try:
        os.killpg(process.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    try:
        process.wait(180)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        say("the run did not stop within 180 s: SIGKILL (its namespace's processes go with it)")
        process.kill()
        process.wait()


def mounted_under(folder: Path) -> list[str]:
    """Mount points under folder in this (the host's) mount namespace: there must be none."""
    prefix = str(folder.resolve()) + "/"
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info if line.split()[4].startswith(prefix)]


def remove(work: Path, say) -> None:
    left = mounted_under(work)
    if left:                                  # never delete through a mount (its /dev, say)
        say(f"NOT removing {work}: mounted there: {', '.join(left)}")
        return
    shutil.rmtree(work, ignore_errors=True)


def remove_stale_runs(cache: Path, say) -> None:
    """What a run killed before its cleanup left (run-<pid>-*, its pid gone)."""
    for folder in cache.glob("run-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            say(f"removing {folder}, left by an earlier run that was killed")
            remove(folder, say)


def keep_logs(state: Path, target: Path, say) -> None:
    """The run's logs (the cloud's, the core's, each component's) kept in the cache for a look."""
    shutil.rmtree(target, ignore_errors=True)
    if not state.exists():
        return
    target.mkdir(parents=True)
    for log in list(state.glob("*.out")) + list((state / "root" / "logs").glob("*")):
        if log.is_file():
            shutil.copy2(log, target / log.name)
    say(f"the run's logs: {target}")
