"""Lifecycle scripts as real processes, and the per-component log file.

Usage::

    log = ComponentLog(root / "logs", "com.example.Hello")
    proc = await Script.start("python3 app.py", cwd=work, env=env, log=log, script_name="...Run",
                              state=lambda: "RUNNING")
    code = await proc.wait()
    await proc.stop()          # SIGTERM to its process group, SIGKILL after 5 s

As the nucleus does (docs/lifecycle-recipes.md 2): `sh -c <script>` in the
component's work directory, stdin an open pipe nobody writes, every stdout line
logged at INFO as `stdout. <line>.` and stderr at WARN, termination by SIGTERM
then SIGKILL after 5 s. Each script runs in its own process group. When the core dies
without stopping them (SIGKILL), `Reaper` kills those groups, as systemd kills the
nucleus's cgroup.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .runwith import Account

GRACE_SECONDS = 5.0


def log_line(level: str, source: str, event: str, message: str = "", **context: object) -> str:
    """One line in the nucleus's text log format."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    text = f"{now} [{level}] {source}: {event}."
    if message:
        text += f" {message}."
    if context:
        text += " {" + ", ".join(f"{k}={v}" for k, v in context.items()) + "}"
    return text + "\n"


class ComponentLog:
    """`<root>/logs/<Component>.log`, appended line by line."""

    def __init__(self, directory: Path, component: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{component}.log"
        self.component = component
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def write(self, level: str, event: str, message: str = "", **context: object) -> None:
        if not self._file.closed:
            self._file.write(log_line(level, f"(Copier) {self.component}", event, message, **context))

    def close(self) -> None:
        self._file.close()


class Script:
    """A running lifecycle script.

    Exit is detected with a pidfd, so a child of `sh` that keeps the output pipes open
    cannot hide it (asyncio's Process.wait() on Python 3.11 waits for the pipes too)."""

    def __init__(self, process: subprocess.Popen, log: ComponentLog, script_name: str,
                 state: Callable[[], str]) -> None:
        self.process = process
        self.pid = process.pid
        self._log = log
        self._script_name = script_name
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future = self._loop.create_future()
        self.exit_code: int | None = None
        self.privileged = False      # the step has RequiresPrivilege (shims.py asks)
        for stream, level, event in ((process.stdout, "INFO", "stdout"), (process.stderr, "WARN", "stderr")):
            os.set_blocking(stream.fileno(), False)
            self._loop.add_reader(stream.fileno(), self._read, stream, level, event, [b""])
        try:
            self._pidfd = os.pidfd_open(process.pid)
            self._loop.add_reader(self._pidfd, self._check_exit)
        except (AttributeError, OSError):  # no pidfd: poll
            self._pidfd = None
            self._loop.call_later(0.05, self._poll)

    @classmethod
    async def start(cls, script: str, *, cwd: Path, env: dict[str, str], log: ComponentLog,
                    script_name: str, state: Callable[[], str], shell: str = "sh",
                    account: "Account | None" = None) -> "Script":
        """`account`: run as that user (runwith.py), with its HOME, USER and LOGNAME as `sudo -H`
        gives them; None runs as the core's user."""
        log.write("INFO", "shell-runner-start", scriptName=script_name, serviceName=log.component,
                  currentState=state(), command=f'["{script}"]')
        user: dict = {}
        if account is not None:
            env = {**env, **account.environment()}
            user = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
        process = subprocess.Popen([shell, "-c", script], cwd=str(cwd), env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **user)
        return cls(process, log, script_name, state)

    def _read(self, stream, level: str, event: str, pending: list[bytes]) -> None:
        try:
            chunk = os.read(stream.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        data = pending[0] + chunk
        if chunk:
            *lines, pending[0] = data.split(b"\n")
        else:
            lines, pending[0] = ([data] if data else []), b""
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            self._log.write(level, event, line, scriptName=self._script_name,
                            serviceName=self._log.component, currentState=self._state())
        if not chunk:
            self._loop.remove_reader(stream.fileno())
            stream.close()

    def _check_exit(self) -> None:
        code = self.process.poll()
        if code is None:
            return
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if not self._exited.done():
            self._exited.set_result(code if code >= 0 else 128 - code)

    def _poll(self) -> None:
        self._check_exit()
        if not self._exited.done():
            self._loop.call_later(0.05, self._poll)

    async def wait(self) -> int:
        code = await asyncio.shield(self._exited)
        if self.exit_code is None:
            self.exit_code = code
            await asyncio.sleep(0)  # let the readers log what is already in the pipes
            self._log.write("INFO", f"{self._script_name.rsplit('.', 1)[-1]} script exited",
                            exitCode=code, serviceName=self._log.component, currentState=self._state())
            if self.process.stdin:
                self.process.stdin.close()
        return code

    @property
    def running(self) -> bool:
        return not self._exited.done()

    def kill(self) -> None:
        """SIGKILL the whole process group now."""
        _signal_group(self.pid, signal.SIGKILL)

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """SIGTERM the whole process group, SIGKILL whatever is left after `grace` seconds."""
        if self.running:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), grace)
            except asyncio.TimeoutError:
                pass
        # the group may outlive its leader (children of sh)
        _signal_group(self.pid, signal.SIGKILL)
        await self.wait()


def running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie waiting for its reaper has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_leftover_groups(pgids: set[int], work_dir: Path) -> int:
    """SIGKILL processes of groups a previous core left behind (it was killed itself).

    Only processes whose working directory is under `work_dir` are touched, so a
    recycled process-group id cannot hit an unrelated program. Returns how many."""
    killed = 0
    work = str(work_dir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pgrp = int(fields[2])
            cwd = os.readlink(entry / "cwd")
        except (OSError, IndexError, ValueError):
            continue
        if pgrp in pgids and (cwd == work or cwd.startswith(work + os.sep)):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


class Reaper:
    """A watchdog process that outlives the core: when the core's end of its pipe closes
    (the core died, however), it SIGKILLs the process groups listed in `record`.

    Usage: `reaper = Reaper.start(record_file, work_dir)`; `reaper.stop()` on a clean stop."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @classmethod
    def start(cls, record: Path, work_dir: Path) -> "Reaper":
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from localgg.processes import reaper_main; reaper_main(sys.argv[1:])",
             str(record), str(work_dir)],
            stdin=subprocess.PIPE, start_new_session=True, close_fds=True)
        return cls(process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write(b"stop\n")
            self.process.stdin.close()
            self.process.wait(5)


def reaper_main(argv: list[str]) -> None:
    record, work_dir = Path(argv[0]), Path(argv[1])
    line = sys.stdin.readline()
    if line.strip() == "stop":
        return
    try:
        import json
        pgids = set(json.loads(record.read_text() or "[]"))
    except (OSError, ValueError):
        return
    kill_leftover_groups(pgids, work_dir)
