"""`python3 scripts/dev.py device-check --arch arm64` (issue: proof on a device's terms, item 3),
the parts that need no emulation: the mirror read from apt's sources as this machine writes
them, the command lines (mmdebstrap, pip download, the namespace), localgg's requirements
read from the real pyproject.toml, the script run inside (checked by a real /bin/sh for its
syntax), the install time read from install.py's own words, and the report. A real run takes
minutes under qemu (README: Device proof): it is a command, not a suite test."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from build_testkit import load_script

devicecheck = load_script("devicecheck")
REPO = Path(__file__).resolve().parents[2]
ARM64 = devicecheck.ARCHES["arm64"]

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.example.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_is_the_one_apt_uses_for_the_suite_itself() -> None:
    assert devicecheck.mirror_from_sources({"debian.sources": DEB822}) == "http://deb.example.org/debian"
    security_only = DEB822.split("\n\n")[1]
    assert devicecheck.mirror_from_sources({"debian.sources": security_only}) is None


def test_one_line_sources_disabled_stanzas_and_other_files() -> None:
    one_line = ("# deb http://old.example.org/debian bookworm main\n"
                "deb-src http://src.example.org/debian bookworm main\n"
                "deb [arch=amd64 signed-by=/k.gpg] http://one.example.org/debian/ bookworm main contrib\n")
    assert devicecheck.mirror_from_sources({"sources.list": one_line}) == "http://one.example.org/debian"
    disabled = "Enabled: no\n" + DEB822.split("\n\n")[0]
    assert devicecheck.mirror_from_sources({"debian.sources": disabled}) is None
    # apt reads only *.list and *.sources (this machine has *.disabled-by-farm files)
    assert devicecheck.mirror_from_sources({"x.list.disabled-by-farm": one_line}) is None
    # sources.list first, then sources.list.d/ in name order
    assert devicecheck.mirror_from_sources({"debian.sources": DEB822, "sources.list": one_line}) \
        == "http://one.example.org/debian"


def test_this_machines_apt_sources_name_a_mirror() -> None:
    files = {p.name: p.read_text() for p in [Path("/etc/apt/sources.list"),
                                             *Path("/etc/apt/sources.list.d").glob("*")] if p.is_file()}
    mirror = devicecheck.mirror_from_sources(files)
    assert mirror is not None and re.match(r"https?://[^ ]+$", mirror)


def test_mmdebstrap_makes_a_cached_arm64_bookworm_tarball() -> None:
    command = devicecheck.mmdebstrap_command(ARM64, "http://deb.example.org/debian", Path("/c/u.tar"))
    assert command[0] == "mmdebstrap"
    assert "--architectures=arm64" in command and "--variant=minbase" in command
    assert "--format=tar" in command       # not guessed from the file name (a .partial one is a directory)
    included = next(a for a in command if a.startswith("--include=")).split("=", 1)[1].split(",")
    assert {"python3", "python3-venv", "mosquitto"} <= set(included)
    assert command[-3:] == ["bookworm", "/c/u.tar", "http://deb.example.org/debian"]
    # the cache name changes with what the tarball holds
    assert devicecheck.userland_name(ARM64, "http://a/debian") != devicecheck.userland_name(ARM64, "http://b/debian")
    assert devicecheck.userland_name(ARM64, "http://a/debian").startswith("bookworm-arm64-")


def test_localggs_requirements_come_from_pyproject() -> None:
    found = devicecheck.localgg_requirements((REPO / "pyproject.toml").read_text())
    names = sorted(re.split(r"[<>=!~ ]", spec, 1)[0].lower() for spec in found)
    assert names == sorted(devicecheck.LOCALGG_DISTRIBUTIONS)
    assert "awsiotsdk==1.31.0" in found          # the pin, as written
    with pytest.raises(ValueError, match="cryptography"):
        devicecheck.localgg_requirements('dependencies = [\n    "awsiotsdk==1",\n    "PyYAML",\n    "paho-mqtt",\n]\n')
    with pytest.raises(ValueError, match="no \\[project\\] dependencies"):
        devicecheck.localgg_requirements("[project]\nname = 'x'\n")


def test_pip_downloads_wheels_only_for_cpython_311_aarch64() -> None:
    command = devicecheck.pip_download_command("/v/bin/python", ["awsiotsdk==1.31.0", "PyYAML>=6"], ARM64, Path("/w"))
    assert command[:4] == ["/v/bin/python", "-m", "pip", "download"]
    assert "--only-binary=:all:" in command
    assert command[command.index("--python-version") + 1] == "3.11"
    platforms = [command[i + 1] for i, a in enumerate(command) if a == "--platform"]
    assert "manylinux2014_aarch64" in platforms and "manylinux_2_36_aarch64" in platforms
    assert "manylinux_2_37_aarch64" not in platforms       # bookworm's glibc is 2.36
    assert all(p.endswith("_aarch64") for p in platforms)
    assert command[-2:] == ["awsiotsdk==1.31.0", "PyYAML>=6"]


def test_the_namespace_has_its_own_mounts_pids_and_network_and_dies_with_unshare(tmp_path: Path) -> None:
    rootfs = tmp_path / "root fs"          # a space: quoted for the shell
    command = devicecheck.namespace_command(rootfs, "/backfill/inside.sh")
    assert command[0] == "unshare"
    for flag in ("--mount", "--pid", "--net", "--fork", "--kill-child"):
        assert flag in command
    assert f"--mount-proc={rootfs}/proc" in command
    script = command[-1]
    words = shlex.split(script.replace(";", " ; "))
    assert words[:2] == ["set", "-e"]
    assert ["ip", "link", "set", "lo", "up"] == words[3:8]
    assert ["mount", "--rbind", "/dev", f"{rootfs}/dev"] == words[9:13]
    assert words[-7:] == ["exec", "chroot", str(rootfs), "/usr/bin/env", "-i", "/bin/sh", "/backfill/inside.sh"]
    assert subprocess.run(["/bin/sh", "-n", "-c", script]).returncode == 0


def test_the_script_inside_installs_with_no_index_then_runs_the_driver(tmp_path: Path) -> None:
    script = devicecheck.inside_script(ARM64, "1.2.3", 60, 600, 1800)
    path = tmp_path / "inside.sh"
    path.write_text(script)
    assert subprocess.run(["/bin/sh", "-n", str(path)]).returncode == 0
    lines = script.splitlines()
    assert lines[0] == "set -e"
    pip = next(line for line in lines if " -m pip install" in line)
    assert "--no-index" in pip and "--find-links /backfill/wheels" in pip
    assert "PIP_NO_INDEX=1" in script and "LOCALGG_RUN_AS=default" in script
    driver = shlex.split(lines[-1])
    assert driver[:3] == ["exec", "/opt/localgg/bin/python", "/backfill/scripts/devicerun.py"]
    assert driver[driver.index("--machine") + 1] == "aarch64"
    assert driver[driver.index("--version") + 1] == "1.2.3"
    assert driver[driver.index("--seconds") + 1] == "60"


def test_the_runtimes_install_time_is_read_from_install_pys_words() -> None:
    runtime = (REPO / "components" / "io.backfill.Runtime" / "install.py").read_text()
    # the line install.py prints, as its source writes it
    assert 'installed {files} files into {folder} in {time.monotonic() - started:.1f} s' in runtime
    log = ("2026-12-07T18:00:01Z [INFO] (Install) io.backfill.Runtime: stdout. install.py: creating ...\n"
           "2026-12-07T18:00:27Z [INFO] (Install) io.backfill.Runtime: stdout. install.py: installed 1843 files "
           "into /w/io.backfill.Runtime/venv-0123456789ab in 25.4 s; /w/venv -> venv-0123456789ab.\n")
    assert devicecheck.runtime_install_seconds(log) == 25.4
    assert devicecheck.runtime_install_seconds("install.py: /w/venv is current; nothing to do") is None


def test_the_runtimes_wheels_and_imports_are_read_from_its_log() -> None:
    log = ("... io.backfill.Runtime: stdout. install.py: creating /w/venv-b0e1 with Python 3.11.2 (/usr/bin/python3) "
           "from 18 wheels for cp311-aarch64 in /p/io.backfill.Runtime-aarch64/wheels. {scriptName=x}\n"
           "... io.backfill.Runtime: stdout. install.py: imported 3 modules in the new environment: _awscrt, awscrt, "
           "bme680. {scriptName=x}\n")
    assert devicecheck.runtime_target(log) == "cp311-aarch64"
    assert devicecheck.runtime_imports(log) == ["_awscrt", "awscrt", "bme680"]
    assert devicecheck.runtime_target("") is None and devicecheck.runtime_imports("") == []
    runtime = (REPO / "components" / "io.backfill.Runtime" / "install.py").read_text()
    assert "from \"\n        f\"{len(targets[label])} wheels for {label} in {wheels}\")" in runtime
    assert 'say(f"imported {len(imports)} modules in the new environment: {\', \'.join(imports)}")' in runtime


def test_produced_is_every_seq_from_0_to_the_last_seen_of_each_run() -> None:
    # the follower subscribed after seq 2 of run a: 0-2 were produced all the same
    assert devicecheck.produced_keys({("a", 3), ("a", 5), ("b", 1)}) == \
        {("a", 0), ("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 0), ("b", 1)}
    assert devicecheck.produced_keys(set()) == set()
    sampler = (REPO / "components" / "io.backfill.Bme680Sensor" / "bme680_sensor" / "sampler.py").read_text()
    assert "self.seq = 0" in sampler and "self.seq += 1" in sampler


PROC_NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0
"""
PROC_NET_ROUTE = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def test_the_network_inside_is_read_from_proc() -> None:
    assert devicecheck.interfaces(PROC_NET_DEV) == ["lo"]
    assert devicecheck.routes(PROC_NET_ROUTE) == 0
    assert devicecheck.routes(PROC_NET_ROUTE + "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n") == 1
    # this process's own namespace, as the kernel writes it: lo is always there
    assert "lo" in devicecheck.interfaces(Path("/proc/net/dev").read_text())
    assert devicecheck.routes(Path("/proc/net/route").read_text()) >= 0


def test_count_and_the_report() -> None:
    produced = {("r1", 1), ("r1", 2), ("r1", 3)}
    assert devicecheck.count(produced, {("r1", 1), ("r1", 2), ("r1", 3), ("r0", 9)}) == (3, 3, [])
    assert devicecheck.count(produced, {("r1", 2)}) == (3, 1, [["r1", 1], ["r1", 3]])
    text = json.dumps({"machine": "aarch64", "python": "3.11.2", "produced": 3, "delivered": 3, "missing": [],
                       "seen": 2, "runtime_target": "cp311-aarch64", "runtime_imports": ["_awscrt", "awscrt"],
                       "network": ["lo"], "routes": 0,
                       "times": {"deploy": 140.2, "runtime_install": 31.0}})
    result = devicecheck.parse_result(text)
    assert result.ok
    lines = devicecheck.render(result, ARM64, {"build": 3.0, "total": 400.0})
    assert any("platform.machine() = aarch64" in line and "expected" not in line for line in lines)
    assert any("deployment to FINISHED" in line and "140.2" in line for line in lines)
    assert any("produced" in line and "(2 seen there); delivered to the recorder: 3; missing: 0" in line
               for line in lines)
    assert any("wheels for cp311-aarch64" in line and "_awscrt imported" in line and "expected" not in line
               for line in lines)
    assert any(line.strip() == "network inside: lo, 0 IPv4 routes" for line in lines)
    assert lines[-1].strip().startswith("OK")
    # the same with a way out: not OK, and said
    reachable = devicecheck.parse_result(text.replace('"network": ["lo"], "routes": 0', '"network": ["lo", "eth0"], "routes": 1'))
    assert not reachable.ok
    assert any("a package index may be reachable" in line for line in devicecheck.render(reachable, ARM64, {}))


def test_a_loss_an_other_machine_or_no_result_is_not_ok() -> None:
    lost = devicecheck.parse_result(json.dumps({"machine": "aarch64", "produced": 3, "delivered": 2,
                                                "missing": [["r1", 3]], "network": ["lo"], "routes": 0}))
    assert not lost.ok and "('r1', 3)" in "\n".join(devicecheck.render(lost, ARM64, {}))
    x86 = devicecheck.parse_result(json.dumps({"machine": "x86_64", "error": "platform.machine() is x86_64",
                                               "runtime_target": "cp311-x86_64"}))
    assert not x86.ok and any("expected aarch64" in line for line in devicecheck.render(x86, ARM64, {}))
    assert any("expected *-aarch64" in line for line in devicecheck.render(x86, ARM64, {}))
    nothing = devicecheck.parse_result("")
    assert not nothing.ok and "no readable result" in nothing.error
    assert not devicecheck.parse_result(json.dumps({"machine": "aarch64", "produced": 0, "network": ["lo"],
                                                    "routes": 0})).ok
    assert devicecheck.render(nothing, ARM64, {})[-1].strip() == "NOT OK"
