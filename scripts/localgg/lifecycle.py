"""One component's lifecycle: the nucleus's states and transitions, driving real scripts.

Usage::

    comp = Component(name, version, lifecycle, dependencies, host)   # host: see Host
    comp.request_start()          # NEW -> Install -> INSTALLED -> (deps ready) -> STARTING -> ...
    comp.report("ERRORED")        # what UpdateState does
    comp.request_restart(); comp.request_stop(); comp.request_reinstall()
    await comp.close()            # shutdown and end

The rules are GenericExternalService's and Lifecycle's (docs/lifecycle-recipes.md 1):
- Install runs from NEW, timeout 120 s; an error sends it back to NEW;
- INSTALLED waits until every HARD dependency is RUNNING or FINISHED, then STARTING;
- a Startup step (timeout 120 s) makes the component RUNNING when it exits 0 or reports
  RUNNING; without one, Run starts and the component is RUNNING at once; with neither,
  FINISHED. Run exiting 0 goes STOPPING (Shutdown runs) then FINISHED;
- an error (non-zero exit, timeout, UpdateState ERRORED) is ERRORED, then Recover, then
  a restart straight away: no backoff. The third error in the same state, each within
  an hour of the previous, is BROKEN instead; only a reinstall (a deployment) leaves it;
- a HARD dependency that stops being ready restarts its RUNNING or STARTING dependers;
- stopping: Shutdown (timeout 15 s), then SIGTERM to every script, SIGKILL after 5 s;
- each step runs as the user `Host.run_as` names (runwith.py: RequiresPrivilege, runWith).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from .processes import ComponentLog, Script
from .recipe import Step, ci_get, step as find_step

if TYPE_CHECKING:
    from .runwith import Account

log = logging.getLogger("localgg.lifecycle")

NEW, INSTALLED, STARTING, RUNNING, STOPPING = "NEW", "INSTALLED", "STARTING", "RUNNING", "STOPPING"
ERRORED, BROKEN, FINISHED = "ERRORED", "BROKEN", "FINISHED"

TIMEOUTS = {"install": 120.0, "startup": 120.0, "shutdown": 15.0, "recover": 60.0}
MAX_CONTINUAL_ERRORS = 3
ERROR_RESET_SECONDS = 3600.0

# the transitions a component may report itself, by current state
# (Lifecycle.ALLOWED_STATE_TRANSITION_FOR_REPORTING)
REPORTABLE = {NEW: {ERRORED}, STARTING: {RUNNING, ERRORED, FINISHED},
              RUNNING: {ERRORED, FINISHED}, STOPPING: {ERRORED, FINISHED}}


class Host(Protocol):
    def dependency_ready(self, name: str) -> bool: ...
    def environment(self, component: str) -> dict[str, str]: ...
    def work_dir(self, component: str) -> Path: ...
    def log_dir(self) -> Path: ...
    def state_changed(self, component: "Component", old: str, new: str) -> None: ...
    def process_started(self, component: str, pid: int) -> None: ...
    def run_as(self, component: str, privileged: bool) -> "Account | None": ...


class SkipifError(ValueError):
    pass


def should_skip(expression: str | None, path: str) -> bool:
    """Skipif: `[!]exists <path>` or `[!]onpath <executable>`."""
    if not expression:
        return False
    text = expression.strip()
    negate = text.startswith("!")
    text = text[1:].strip() if negate else text
    verb, _, arg = text.partition(" ")
    arg = arg.strip()
    if verb == "exists" and arg:
        result = os.path.exists(os.path.expanduser(arg))
    elif verb == "onpath" and arg:
        result = shutil.which(arg, path=path) is not None
    else:
        raise SkipifError(f"invalid Skipif expression {expression!r}: use [!]exists <path> or [!]onpath <file>")
    return result != negate


@dataclass
class _Exit:
    generation: int
    kind: str       # "run" or "startup"
    code: int


@dataclass
class Component:
    name: str
    version: str
    lifecycle: dict                      # already interpolated
    dependencies: dict[str, str]         # name -> HARD | SOFT
    host: Host
    clock: Callable[[], float] = time.monotonic
    state: str = NEW
    errors: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._desired: str | None = None       # RUNNING, FINISHED (stop), INSTALLED (restart), NEW (reinstall)
        self._wake = asyncio.Event()
        self._exits: list[_Exit] = []
        self._reported: list[str] = []
        self._scripts: list[Script] = []
        self._generation = 0
        self._errored_from = NEW
        self._task: asyncio.Task | None = None
        self._closing = False
        self._log = ComponentLog(self.host.log_dir(), self.name)
        self.previous_state = NEW
        self.state_since = self.clock()

    # -- requests ---------------------------------------------------------------------

    def request_start(self) -> None:
        if self._desired is None or self._desired == FINISHED:
            self._desired = RUNNING
        self._ensure_task()
        self._poke()

    def request_restart(self) -> bool:
        if self.state == NEW and self._desired is None:
            return False
        self._desired = INSTALLED
        self._ensure_task()
        self._poke()
        return True

    def request_stop(self) -> None:
        self._desired = FINISHED
        self._poke()

    def request_reinstall(self) -> None:
        self._desired = NEW
        self._ensure_task()
        self._poke()

    def report(self, state: str) -> bool:
        """UpdateState from the component: applied only if the transition is allowed."""
        if state not in REPORTABLE.get(self.state, ()):
            return False
        self._reported.append(state)
        self._poke()
        return True

    def kill(self) -> int:
        """SIGKILL every script of this component (a fault). Returns how many process groups."""
        for script in self._scripts:
            script.kill()
        return len(self._scripts)

    def script_in(self, groups: set[int]) -> Script | None:
        """The running script whose process group (its session too) is one of `groups`."""
        return next((s for s in self._scripts if s.pid in groups and s.running), None)

    @property
    def reinstall_pending(self) -> bool:
        return self._desired == NEW

    @property
    def settled(self) -> bool:
        """RUNNING or FINISHED with no restart, reinstall or start still to carry out."""
        pending = self._desired in (INSTALLED, NEW) or (self.state == FINISHED and self._desired == RUNNING)
        return self.state in (RUNNING, FINISHED) and not pending

    def dependency_changed(self) -> None:
        self._poke()

    async def close(self) -> None:
        """Shut the component down for good (removal or core stop): Shutdown, then kill."""
        self._closing = True
        try:
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
            if self.state in (STARTING, RUNNING, STOPPING, ERRORED):
                self._set(STOPPING)
                await self._shutdown()
                self._set(FINISHED)
        finally:
            await asyncio.shield(self._stop_scripts())  # whatever interrupts us, no process is left behind
            self._log.close()

    # -- internals ----------------------------------------------------------------------

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drive())

    def _poke(self) -> None:
        self._wake.set()

    async def _wait(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    def _set(self, new: str) -> None:
        old = self.state
        if old == new:
            return
        if new not in (ERRORED, BROKEN):
            self.errors.pop(old, None)  # a good report clears the current state's error count
        self.previous_state, self.state = old, new
        self.state_since = self.clock()
        self.host.state_changed(self, old, new)

    def _error(self, reason: str) -> None:
        now = self.clock()
        current = self.state
        log.info("%s errored in %s: %s", self.name, current, reason)
        self._log.write("ERROR", "service-errored", reason, serviceName=self.name, currentState=current)
        if current in (NEW, STARTING, RUNNING):
            history = self.errors.setdefault(current, [])
            if history and now - history[-1] >= ERROR_RESET_SECONDS:
                history.clear()
            history.append(now)
            if len(history) >= MAX_CONTINUAL_ERRORS:
                self._set(BROKEN)
                return
        self._errored_from = current
        self._set(ERRORED)

    def _step(self, name: str) -> Step | None:
        try:
            found = find_step(self.lifecycle, name)
            if found is not None and should_skip(found.skipif, self._env().get("PATH", "")):
                return None
            return found
        except ValueError as exc:  # RecipeError, SkipifError: the step cannot run
            return Step(script=f"echo {_shell_quote(str(exc))} >&2; exit 1")

    def _env(self, extra: dict | None = None) -> dict[str, str]:
        env = dict(self.host.environment(self.name))
        env.update({str(k): str(v) for k, v in (ci_get(self.lifecycle, "Setenv") or {}).items()})
        env.update({str(k): str(v) for k, v in (extra or {}).items()})
        return env

    async def _spawn(self, name: str, found: Step) -> Script:
        script = await Script.start(found.script, cwd=self.host.work_dir(self.name), env=self._env(found.setenv),
                                    log=self._log, script_name=f"services.{self.name}.lifecycle.{name.capitalize()}",
                                    state=lambda: self.state,
                                    account=self.host.run_as(self.name, found.requires_privilege))
        script.privileged = found.requires_privilege
        self._scripts.append(script)
        self.host.process_started(self.name, script.pid)
        return script

    async def _foreground(self, name: str) -> str | None:
        """Run a step to completion. None on success (or no step), else why it failed."""
        found = self._step(name)
        if found is None:
            return None
        script = await self._spawn(name, found)
        timeout = found.timeout if found.timeout is not None else TIMEOUTS[name]
        try:
            code = await asyncio.wait_for(asyncio.shield(script.wait()), timeout)
        except asyncio.TimeoutError:
            await script.stop()
            return f"Timeout in {name}"
        finally:
            if script in self._scripts and not script.running:
                self._scripts.remove(script)
        return None if code == 0 else f"Script errored in {name}: exit code {code}"

    def _watch(self, script: Script, kind: str) -> None:
        generation = self._generation

        async def watcher() -> None:
            code = await script.wait()
            self._exits.append(_Exit(generation, kind, code))
            self._poke()
        asyncio.ensure_future(watcher())

    def _take_exit(self) -> _Exit | None:
        while self._exits:
            ex = self._exits.pop(0)
            if ex.generation == self._generation:
                return ex
        return None

    def _take_report(self) -> str | None:
        return self._reported.pop(0) if self._reported else None

    def _deps_ready(self) -> bool:
        return all(self.host.dependency_ready(dep) for dep, kind in self.dependencies.items() if kind == "HARD")

    async def _stop_scripts(self) -> None:
        scripts, self._scripts = self._scripts, []
        await asyncio.gather(*(s.stop() for s in scripts), return_exceptions=True)

    async def _shutdown(self) -> None:
        failure = None
        found = self._step("shutdown")
        if found is not None:
            script = await self._spawn("shutdown", found)
            timeout = found.timeout if found.timeout is not None else TIMEOUTS["shutdown"]
            try:
                await asyncio.wait_for(asyncio.shield(script.wait()), timeout)
            except asyncio.TimeoutError:
                failure = "Timeout in shutdown"
        await self._stop_scripts()
        if failure:
            self._log.write("ERROR", "service-errored", failure, serviceName=self.name)

    async def _drive(self) -> None:
        try:
            while not self._closing:
                await self._step_state()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take the core down
            log.exception("lifecycle of %s failed", self.name)
            self._set(BROKEN)

    async def _step_state(self) -> None:
        state, desired = self.state, self._desired
        self._reported = [r for r in self._reported if r in REPORTABLE.get(state, ())]
        if desired == NEW:
            if state in (STARTING, RUNNING):
                self._set(STOPPING)
                await self._shutdown()
            await self._stop_scripts()
            self.errors.clear()
            self._desired = RUNNING
            return self._set(NEW)
        if state == NEW:
            if desired is None:
                return await self._wait()
            if desired == FINISHED:
                self._desired = None
                return self._set(FINISHED)
            if self._take_report() == ERRORED:
                return self._error("Component reported ERRORED")
            failure = await self._foreground("install")
            if self._closing:
                return
            return self._error(failure) if failure else self._set(INSTALLED)
        if state == INSTALLED:
            if desired == FINISHED:
                self._desired = None
                return self._set(FINISHED)
            if desired in (RUNNING, INSTALLED) and self._deps_ready():
                self._desired = RUNNING
                return self._set(STARTING)
            return await self._wait()
        if state == STARTING:
            return await self._starting()
        if state == RUNNING:
            return await self._running()
        if state == ERRORED:
            await self._foreground("recover")
            if self._errored_from == NEW:
                return self._set(NEW)
            stop = self._desired == FINISHED  # a stop asked for meanwhile is not undone by the error
            self._desired = None if stop else (RUNNING if self._desired in (None, INSTALLED) else self._desired)
            self._set(STOPPING)
            await self._shutdown()
            return self._set(FINISHED if stop else INSTALLED)
        if state == BROKEN:
            if self.previous_state in (STARTING, RUNNING, ERRORED):
                await self._shutdown()
            await self._stop_scripts()
            while self._desired != NEW and not self._closing:
                await self._wait()
            return
        if state == FINISHED:
            if desired in (RUNNING, INSTALLED):
                self._desired = RUNNING
                return self._set(INSTALLED)
            return await self._wait()

    async def _starting(self) -> None:
        self._generation += 1
        startup = self._step("startup")
        if startup is None:
            run = self._step("run")
            if run is None:
                self._desired = None
                return self._set(FINISHED)
            script = await self._spawn("run", run)
            self._watch(script, "run")
            self._set(RUNNING)
            if run.timeout is not None:
                asyncio.get_running_loop().call_later(run.timeout, self._run_timeout, self._generation, script)
            return
        script = await self._spawn("startup", startup)
        self._watch(script, "startup")
        timeout = startup.timeout if startup.timeout is not None else TIMEOUTS["startup"]
        deadline = self.clock() + timeout
        while not self._closing:
            report = self._take_report()
            if report == RUNNING:
                return self._set(RUNNING)
            if report == ERRORED:
                return self._error("Component reported ERRORED")
            if report == FINISHED:
                return await self._stop_to(FINISHED)
            ex = self._take_exit()
            if ex is not None:
                return self._set(RUNNING) if ex.code == 0 else self._error(
                    f"Non-zero exit code in startup: {ex.code}")
            if self._desired in (FINISHED, INSTALLED, NEW):
                return await self._stop_to(FINISHED if self._desired == FINISHED else INSTALLED)
            if not self._deps_ready():
                return await self._stop_to(INSTALLED)
            remaining = deadline - self.clock()
            if remaining <= 0:
                return self._error("startup timeout")
            await self._wait(remaining)

    async def _running(self) -> None:
        while not self._closing:
            report = self._take_report()
            if report == ERRORED:
                return self._error("Component reported ERRORED")
            if report == FINISHED:
                return await self._stop_to(FINISHED)
            ex = self._take_exit()
            if ex is not None:
                if ex.code != 0:
                    what = "Run" if ex.kind == "run" else "Startup"
                    return self._error(f"{what} script exited with code {ex.code}")
                if ex.kind == "run":
                    log.info("%s: Service finished running", self.name)
                    return await self._stop_to(FINISHED)
            if self._desired == FINISHED:
                return await self._stop_to(FINISHED)
            if self._desired == INSTALLED:
                self._desired = RUNNING
                return await self._stop_to(INSTALLED)
            if self._desired == NEW:
                return
            if not self._deps_ready():
                log.info("Restarting %s because a dependency was in a bad state", self.name)
                return await self._stop_to(INSTALLED)
            await self._wait()

    async def _stop_to(self, target: str) -> None:
        self._set(STOPPING)
        self._generation += 1
        await self._shutdown()
        if target == FINISHED:
            self._desired = None
        self._set(target)

    def _run_timeout(self, generation: int, script: Script) -> None:
        if generation == self._generation and script.running and self.state == RUNNING:
            self._reported.append(ERRORED)
            self._poke()


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
