"""The main job (`python3 scripts/dev.py run`) as a user runs it (issue 13, item 1): `--help`
prints help and starts nothing; a `localgg fault core restart --kill` during the run is
followed (readings go on being shown) and `--seconds` still ends it by itself; Ctrl-C (SIGINT
to the whole process group, as a terminal sends it) leaves no process behind, and a second run
keeps the first one's state. Each run keeps its state in a folder of its own (`--state`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import short_tmp, wait_for

REPO = Path(__file__).resolve().parents[2]
# as a user runs it: a Python with none of the project's dependencies (Debian's, where there is
# one): dev.py makes the venv and goes on in it (the live view, the report's picture and the
# cloud's shadow need rich, matplotlib and paho-mqtt, which a bare python3 lacks)
USER_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
DEV = [USER_PYTHON, str(REPO / "scripts" / "dev.py"), "run"]


def default_sigint() -> None:
    """Ctrl-C reaches dev.py as it does from a terminal, even when these tests were started where
    SIGINT is ignored (a shell's `cmd &` ignores it, and children inherit that: Python then
    never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Job:
    """dev.py run in its own session, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*DEV, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True, preexec_fn=default_sigint)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def readings(self) -> int:
        return sum(1 for line in list(self.lines) if " seq " in line and line.lstrip().startswith("run "))

    def text(self) -> str:
        return "\n".join(self.lines)

    def ended(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._thread.join(5)


def left_behind(state: Path) -> list[str]:
    """Processes whose command line or working directory is inside `state`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and (str(state) in cmdline or cwd.startswith(str(state))):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def test_help_prints_help_and_starts_nothing():
    result = subprocess.run([*DEV, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: python3 scripts/dev.py run" in result.stdout and "--fresh" in result.stdout
    assert "building" not in result.stdout and "starting" not in result.stdout


def test_a_core_killed_and_restarted_is_followed_and_seconds_still_ends_the_run():
    state = short_tmp("bfd-") / "state"
    job = Job("--seconds", "60", "--state", str(state))
    try:
        wait_for(lambda: job.readings() >= 3, 240, interval=0.2, message=f"readings shown\n{job.text()}")
        subprocess.run([sys.executable, "-m", "localgg", "fault", "core", "restart", "--kill",
                        "--root", str(state / "root")], cwd=REPO, check=True, capture_output=True, timeout=120)
        wait_for(lambda: any("the core is back" in line for line in job.lines), 60, interval=0.2,
                 message=f"the run to follow the restarted core\n{job.text()}")
        after = len(job.lines)
        wait_for(lambda: sum(1 for line in job.lines[after:] if " seq " in line) >= 3, 60, interval=0.2,
                 message=f"readings after the restart\n{job.text()}")
        assert job.ended(180) == 0, job.text()             # --seconds ended it by itself
    finally:
        job.ended(1)
    assert "the core went away 1 time(s) and was followed" in job.text()
    wait_for(lambda: not left_behind(state), 30, interval=0.2, message=f"no process left: {left_behind(state)}")


def test_ctrl_c_leaves_nothing_behind_and_the_next_run_keeps_the_state():
    state = short_tmp("bfd-") / "state"
    job = Job("--state", str(state))
    try:
        wait_for(lambda: job.readings() >= 3, 240, interval=0.2, message=f"readings shown\n{job.text()}")
        os.killpg(job.proc.pid, signal.SIGINT)             # what a terminal's Ctrl-C does
        job.ended(120)
    finally:
        job.ended(1)
    assert "stopping the core and the cloud" in job.text()
    wait_for(lambda: not left_behind(state), 30, interval=0.2, message=f"no process left: {left_behind(state)}")
    assert (state / "root" / "work" / "io.backfill.StoreAndForward" / "store.db").exists()

    again = Job("--seconds", "5", "--state", str(state))
    assert again.ended(240) == 0, again.text()
    assert "keeping what an earlier run left" in again.text()
    wait_for(lambda: not left_behind(state), 30, interval=0.2, message=f"no process left: {left_behind(state)}")


def test_an_outage_scenario_with_a_core_restart_ends_by_itself_with_a_report_from_the_cloud():
    state = short_tmp("bfd-") / "state"
    job = Job("--scenario", "outage", "--offline", "20", "--restart-core", "--warmup", "5", "--state", str(state))
    try:
        code = job.ended(600)
    finally:
        job.ended(1)
    text = job.text()
    assert code == 0, text
    for event in ("link down for 20 s", "core restart, the link still down", "link up", "faults over"):
        assert f"-- scenario: {event}" in text, event
    assert "did not have every reading" not in text        # it ended on the drain, not on the timeout
    assert text.index("core restart") < text.index("the core is back") < text.index("-- scenario: link up")
    report = (state / "report-outage-restart-core.txt").read_text()
    assert report.splitlines()[0] == "report (outage-restart-core), from the cloud recorder:"
    assert [line.split()[:2] for line in report.splitlines() if line.split()[:1] == ["lost"]] == [["lost", "0"]]
    produced = next(int(line.split()[1]) for line in report.splitlines() if line.split()[:1] == ["produced"])
    assert produced >= 25                                  # 5 s warm-up + 20 s offline + 15 s tail at 1 Hz
    assert (state / "report-outage-restart-core.png").read_bytes()[:4] == b"\x89PNG"
    wait_for(lambda: not left_behind(state), 30, interval=0.2, message=f"no process left: {left_behind(state)}")


def report_of(state: Path, name: str) -> dict:
    """The report's rows: {"produced": "...", "lost": "...", ...} (the text after the name)."""
    rows = {}
    for line in (state / f"report-{name}.txt").read_text().splitlines()[2:]:
        for key in ("produced", "delivered to IoT Core", "lost", "duplicates", "evicted", "time to drain"):
            if line.strip().startswith(key):
                rows[key] = line.strip()[len(key):].strip()
    return rows


def test_flap_kill_and_slow_link_each_deliver_every_reading_by_the_recorders_count():
    """The three other scenarios, short, side by side (each its own core, cloud and state)."""
    runs = {"flap": ["--cycles", "2"], "kill": ["--kills", "3", "--seed", "4"], "slow-link": ["--limited", "25"]}
    states = {name: short_tmp("bfd-") / "state" for name in runs}
    jobs = {name: Job("--scenario", name, *args, "--warmup", "5", "--state", str(states[name]))
            for name, args in runs.items()}
    try:
        codes = {name: job.ended(600) for name, job in jobs.items()}
    finally:
        for job in jobs.values():
            job.ended(1)
    for name, job in jobs.items():
        text = job.text()
        assert codes[name] == 0, f"{name}:\n{text}"
        assert "did not have every reading" not in text, f"{name}:\n{text}"
        report = report_of(states[name], name)
        assert report["lost"] == "0", (name, report)
        produced = int(report["produced"].split()[0])
        assert produced >= 25 and report["delivered to IoT Core"].split()[0] == str(produced), (name, report)
        assert report["duplicates"].split()[0].isdigit(), (name, report)    # counted, whatever they are
    assert jobs["flap"].text().count("-- scenario: flap") == 4
    assert jobs["kill"].text().count("-- scenario: SIGKILL") == 3
    assert "-- scenario: link limited: 400 B/s, 300 ms" in jobs["slow-link"].text()
    for state in states.values():
        wait_for(lambda: not left_behind(state), 30, interval=0.2, message=f"no process left: {left_behind(state)}")
