"""The plan of `python3 scripts/dev.py device-check --arch arm64`, standard library only, no I/O:
what to install on the host, the command lines that make and cache a Debian bookworm arm64
userland (the base of Raspberry Pi OS Bookworm, Python 3.11) and localgg's wheels for it, the
namespace the run goes into (its own mounts, PIDs and network: only loopback, so no package
index is reachable and nothing outlives it), the script that runs inside, and the report read
from what comes back. dev.py does it (the I/O shell); scripts/devicerun.py is the part that
runs inside the userland, under qemu-user's emulated CPU.

    arch = ARCHES["arm64"]
    mirror_from_sources({"debian.sources": text})           # the machine's apt mirror, or None
    mmdebstrap_command(arch, mirror, Path("userland.tar"))
    pip_download_command(python, localgg_requirements(pyproject), arch, Path("wheels"))
    namespace_command(rootfs, "/backfill/inside.sh")
    lines = render(parse_result(text), host_times)
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

SUITE = "bookworm"           # Raspberry Pi OS Bookworm's base: Debian 12, Python 3.11
PYTHON_VERSION = "3.11"
VARIANT = "minbase"          # Essential + Priority: required (passwd's useradd, for ggc_user)
# python3-venv: localgg's venv with pip (ensurepip's wheel) for its own dependencies, offline
USERLAND_PACKAGES = ("python3", "python3-venv", "mosquitto", "ca-certificates", "procps")
# what localgg imports beyond the standard library (rich and matplotlib are dev.py's view only)
LOCALGG_DISTRIBUTIONS = ("awsiotsdk", "pyyaml", "paho-mqtt", "cryptography")
INSIDE = "/backfill"         # where the run's files are, inside the userland
LOCALGG_VENV = "/opt/localgg"
RESULT = f"{INSIDE}/result.json"
# nothing listens there: pip would fail at once if it tried an index despite --no-index
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"


@dataclass(frozen=True)
class Arch:
    name: str                # as the command takes it, Debian's name
    machine: str             # platform.machine() inside, the Runtime artifact's suffix
    binfmt: str              # the binfmt_misc entry qemu-user-static registers
    pip_platforms: Tuple[str, ...]


# manylinux2014 (glibc 2.17) up to bookworm's glibc 2.36
ARCHES = {"arm64": Arch("arm64", "aarch64", "qemu-aarch64",
                        ("manylinux2014_aarch64",) + tuple(f"manylinux_2_{m}_aarch64" for m in range(17, 37)))}


# ---------------------------------------------------------------- the host's apt mirror

def _deb822_stanzas(text: str) -> List[Dict[str, str]]:
    stanzas, current, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0].isspace() and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def mirror_from_sources(files: Dict[str, str], suite: str = SUITE) -> Optional[str]:
    """The first mirror the machine's apt uses for `suite` itself (not -security, -updates),
    from the contents of /etc/apt/sources.list and /etc/apt/sources.list.d/* (by file name:
    *.list one-line style, *.sources deb822, anything else is ignored as apt ignores it)."""
    for name in sorted(files, key=lambda n: (n != "sources.list", n)):
        text = files[name]
        if name.endswith(".sources"):
            for stanza in _deb822_stanzas(text):
                if stanza.get("enabled", "yes").lower() == "no" or "deb" not in stanza.get("types", "").split():
                    continue
                if suite in stanza.get("suites", "").split():
                    uris = stanza.get("uris", "").split()
                    if uris:
                        return uris[0].rstrip("/")
        elif name.endswith(".list"):
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1].rstrip("/")
    return None


# ---------------------------------------------------------------- the userland and the wheels

def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:12]


def userland_name(arch: Arch, mirror: str) -> str:
    return f"{SUITE}-{arch.name}-{cache_key(SUITE, arch.name, VARIANT, USERLAND_PACKAGES, mirror)}.tar"


def mmdebstrap_command(arch: Arch, mirror: str, target: Path) -> List[str]:
    """A Debian userland for `arch` as a tarball (its maintainer scripts run under qemu-user)."""
    return ["mmdebstrap", "--format=tar", f"--variant={VARIANT}", f"--architectures={arch.name}",
            f"--include={','.join(USERLAND_PACKAGES)}", SUITE, str(target), mirror]


def localgg_requirements(pyproject: str) -> List[str]:
    """localgg's own requirements from pyproject.toml's [project] dependencies, as written there."""
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", pyproject, re.S | re.M)
    if block is None:
        raise ValueError("pyproject.toml: no [project] dependencies list")
    found = []
    for spec in re.findall(r'"([^"]+)"', block.group(1)):
        name = re.split(r"[<>=!~;\[ ]", spec, 1)[0]
        if name.lower().replace("_", "-") in LOCALGG_DISTRIBUTIONS:
            found.append(spec)
    missing = set(LOCALGG_DISTRIBUTIONS) - {re.split(r"[<>=!~;\[ ]", s, 1)[0].lower() for s in found}
    if missing:
        raise ValueError(f"pyproject.toml: no requirement for {', '.join(sorted(missing))}")
    return found


def wheels_name(arch: Arch, requirements: List[str]) -> str:
    return f"localgg-wheels-{arch.machine}-cp{PYTHON_VERSION.replace('.', '')}-" \
           f"{cache_key(requirements, arch.pip_platforms)}"


def pip_download_command(python: str, requirements: List[str], arch: Arch, dest: Path) -> List[str]:
    """The wheels of localgg's dependencies for the userland's CPython and machine, on the host."""
    command = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", PYTHON_VERSION, "--dest", str(dest)]
    for platform in arch.pip_platforms:
        command += ["--platform", platform]
    return command + list(requirements)


# ---------------------------------------------------------------- the run

def namespace_command(rootfs: Path, script: str) -> List[str]:
    """`script` run by the userland's /bin/sh in a chroot at rootfs, in new mount, PID and
    network namespaces: proc and /dev are mounted in the private mount namespace only (gone
    with it), the network is loopback alone (no package index, no cloud but ours), and when
    unshare ends, however it ends, its child gets SIGKILL (--kill-child) and with the PID
    namespace's first process every process in it goes. The script starts with an empty
    environment (nothing of the host's: its PIP_* settings, its PATH)."""
    root = shlex.quote(str(rootfs))
    setup = (f"set -e; ip link set lo up; mount --rbind /dev {root}/dev; "
             f"exec chroot {root} /usr/bin/env -i /bin/sh {shlex.quote(script)}")
    return ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child", "--propagation", "private",
            f"--mount-proc={rootfs}/proc", "--", "/bin/sh", "-c", setup]


def inside_script(arch: Arch, version: str, seconds: float, drain_timeout: float, deploy_timeout: float) -> str:
    """What /bin/sh runs inside: localgg's venv from the wheels with pip and no index, then
    scripts/devicerun.py (the cloud, the core, the deployment, the minute, the count)."""
    venv_python = f"{LOCALGG_VENV}/bin/python"
    q = shlex.quote
    return "\n".join([
        "set -e",
        # systemd's PATH, and every component step as ggc_user, as on a device (localgg/runwith.py)
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "
        "LOCALGG_RUN_AS=default",
        f"export PIP_NO_INDEX=1 PIP_INDEX_URL={UNREACHABLE_INDEX} PIP_DISABLE_PIP_VERSION_CHECK=1",
        "export DEVICE_CHECK_STARTED=$(date +%s.%N)   # devicerun.py times localgg's venv from here",
        f"rm -rf {LOCALGG_VENV}",
        f"python3 -m venv {LOCALGG_VENV}",
        f"{venv_python} -m pip install --quiet --no-index --find-links {INSIDE}/wheels "
        + " ".join(q(d) for d in LOCALGG_DISTRIBUTIONS),
        f"exec {venv_python} {INSIDE}/scripts/devicerun.py --version {q(version)} --machine {q(arch.machine)} "
        f"--seconds {seconds:g} --drain-timeout {drain_timeout:g} --deploy-timeout {deploy_timeout:g} "
        f"--result {RESULT}",
        ""])


def runtime_install_seconds(log: str) -> Optional[float]:
    """How long io.backfill.Runtime's install.py took, from its line in the component's log."""
    found = re.findall(r"install\.py: installed \d+ files into \S+ in ([0-9.]+) s", log)
    return float(found[-1]) if found else None


def runtime_target(log: str) -> Optional[str]:
    """The wheels install.py picked (`cp311-aarch64`), from its line in the component's log."""
    found = re.findall(r"install\.py: creating \S+ with Python .*? from \d+ wheels for (\S+) in ", log)
    return found[-1] if found else None


def runtime_imports(log: str) -> List[str]:
    """The modules install.py imported in the new environment (awscrt's native _awscrt among them)."""
    found = re.findall(r"install\.py: imported \d+ modules in the new environment: ([\w, ]+?)\.", log)
    return [name.strip() for name in found[-1].split(",")] if found else []


def interfaces(proc_net_dev: str) -> List[str]:
    """The network interfaces /proc/net/dev lists (those of the reader's network namespace)."""
    return [line.split(":", 1)[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line]


def routes(proc_net_route: str) -> int:
    """How many IPv4 routes /proc/net/route lists (none: nothing but loopback is reachable)."""
    return len([line for line in proc_net_route.splitlines()[1:] if line.strip()])


def produced_keys(seen: set) -> set:
    """Every (run, seq) the sensor produced up to the last one seen: a run's seq starts at 0
    and goes up by one a reading (bme680_sensor/sampler.py), so the readings sampled before
    the follower subscribed count too."""
    last: Dict[str, int] = {}
    for run, seq in seen:
        last[run] = max(last.get(run, -1), int(seq))
    return {(run, seq) for run, top in last.items() for seq in range(top + 1)}


# ---------------------------------------------------------------- the result

@dataclass
class Result:
    machine: str = ""
    python: str = ""
    produced: int = 0
    delivered: int = 0
    missing: List[List] = field(default_factory=list)     # (run, seq) produced, not delivered
    seen: int = 0                                          # of produced, seen on local pub/sub
    runtime_target: Optional[str] = None                   # the wheels io.backfill.Runtime installed
    runtime_imports: List[str] = field(default_factory=list)
    network: List[str] = field(default_factory=list)        # the interfaces inside
    routes: int = -1                                        # IPv4 routes inside (-1: not read)
    times: Dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.produced > 0 and not self.missing and self.delivered == self.produced
                and self.network == ["lo"] and self.routes == 0)


def count(produced: set, delivered: set) -> Tuple[int, int, List[List]]:
    """(produced, of them delivered, the missing ones sorted)."""
    missing = sorted(produced - delivered)
    return len(produced), len(produced) - len(missing), [list(key) for key in missing]


def parse_result(text: str) -> Result:
    try:
        data = json.loads(text)
    except ValueError as error:
        return Result(error=f"no readable result from inside the userland ({error})")
    if not isinstance(data, dict):
        return Result(error="no readable result from inside the userland (not an object)")
    known = {k: data[k] for k in ("machine", "python", "produced", "delivered", "missing", "times", "error",
                                  "seen", "runtime_target", "runtime_imports", "network", "routes") if k in data}
    return Result(**known)


def render(result: Result, arch: Arch, host_times: Dict[str, float]) -> List[str]:
    """The report: the architecture Python saw inside, the times, produced against delivered."""
    lines = [f"device-check --arch {arch.name}: Debian {SUITE} {arch.name} userland under qemu-user, "
             f"no package index reachable"]
    if result.machine:
        mark = "" if result.machine == arch.machine else f"  (expected {arch.machine})"
        lines.append(f"  python inside: {result.python}, platform.machine() = {result.machine}{mark}")
    if result.network:
        closed = result.network == ["lo"] and result.routes == 0
        lines.append(f"  network inside: {', '.join(result.network)}, {result.routes} IPv4 routes"
                     + ("" if closed else "  (expected lo alone and no route: a package index may be reachable)"))
    if result.runtime_target:
        native = "awscrt's native _awscrt imported" if "_awscrt" in result.runtime_imports else "no _awscrt import"
        mark = "" if result.runtime_target.endswith(f"-{arch.machine}") else f"  (expected *-{arch.machine})"
        lines.append(f"  io.backfill.Runtime installed its wheels for {result.runtime_target} "
                     f"({len(result.runtime_imports)} modules imported; {native}){mark}")
    times = dict(host_times, **result.times)
    labels = [("build", "build the bundle (host)"), ("userland", "userland tarball (cached after the first run)"),
              ("wheels", "localgg's wheels for the userland (cached)"), ("unpack", "unpack the userland"),
              ("localgg_venv", "localgg's venv inside, pip --no-index"),
              ("cloud", "cloud side up (mosquitto, TLS)"), ("core", "core up"),
              ("deploy", "deployment to FINISHED"), ("runtime_install", "  of which io.backfill.Runtime's install.py"),
              ("run", "the pipeline running"), ("drain", "until IoT Core had every reading"),
              ("total", "in all")]
    for key, label in labels:
        if key in times:
            lines.append(f"  {label:<48} {times[key]:8.1f} s")
    lines.append(f"  readings produced (seq 0 to the last one seen on local pub/sub, corrected): {result.produced} "
                 f"({result.seen} seen there); delivered to the recorder: {result.delivered}; "
                 f"missing: {len(result.missing)}")
    if result.missing:
        lines.append(f"  first missing (run, seq): {', '.join(str(tuple(k)) for k in result.missing[:5])}")
    if result.error:
        lines.append(f"  FAILED: {result.error}")
    lines.append("  OK: every reading produced reached the recorder" if result.ok else "  NOT OK")
    return lines
