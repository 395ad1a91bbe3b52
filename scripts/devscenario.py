"""The main job's scenarios (`python3 scripts/dev.py run --scenario NAME`): what faults, when.

    steps = plan("outage", offline=60, restart_core=True)      # pure: [Step(at, action, label)]
    runner = Scenario(steps, do=apply, drained=cloud_has_all, finish=follower.finish_at)
    runner.start()    # a thread: each step at its time, then waits for the drain, then finish()

The planner only says what to do; `do(step)` does it (localgg fault ...), so the plan is
tested without a core. Actions: "link down", "link up", "link limit", "link clear",
"core restart", "core restart --kill", "broker restart", "kill <component>", and in the soak
"clock step <seconds>" (the sensor's wall clock that far off the true time; 0: back to it),
"disk fill", "disk free" (the store's disk nearly full, room again). Times are seconds after the scenario starts (a warm-up
first, so that the pipeline runs before the first fault).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

SCENARIOS = ("outage", "flap", "kill", "slow-link", "chaos", "soak")
COMPONENTS = ("io.backfill.Bme680Sensor", "io.backfill.TemperatureCorrection", "io.backfill.StoreAndForward")
FLAP_DOWN_S, FLAP_UP_S = 8.0, 12.0
KILL_SPACING_S = 20.0
SLOW_BANDWIDTH, SLOW_LATENCY_MS = 400, 300      # bytes/s each way, ms each way


@dataclass(frozen=True)
class Step:
    at: float
    action: str
    label: str


def plan(name: str, *, offline: float = 60.0, restart_core: bool = False, cycles: int = 4, kills: int = 3,
         seed: int = 1, limited: float = 120.0, warmup: float = 15.0, minutes: float = 30.0) -> list[Step]:
    """The faults of a scenario, in time order."""
    if name in ("chaos", "soak"):
        return chaos(minutes * 60, seed, warmup, CHAOS_FAULTS if name == "chaos" else SOAK_FAULTS)
    if name == "outage":
        steps = [Step(warmup, "link down", f"link down for {offline:g} s")]
        if restart_core:      # the link's fault is the network's: it stays down across the restart
            steps.append(Step(warmup + offline / 2, "core restart", "core restart, the link still down"))
        return steps + [Step(warmup + offline, "link up", "link up")]
    if name == "flap":
        steps = []
        for cycle in range(cycles):
            start = warmup + cycle * (FLAP_DOWN_S + FLAP_UP_S)
            steps += [Step(start, "link down", f"flap {cycle + 1}: down"),
                      Step(start + FLAP_DOWN_S, "link up", f"flap {cycle + 1}: up")]
        return steps
    if name == "kill":
        rng = random.Random(seed)                  # seeded: the same kills at the same times again
        times = sorted(warmup + rng.uniform(0, kills * KILL_SPACING_S) for _ in range(kills))
        steps = []
        for at in times:
            victim = rng.choice(COMPONENTS)
            steps.append(Step(at, f"kill {victim}", f"SIGKILL {victim.rsplit('.', 1)[-1]}"))
        return steps
    if name == "slow-link":
        return [Step(warmup, "link limit", f"link limited: {SLOW_BANDWIDTH} B/s, {SLOW_LATENCY_MS} ms"),
                Step(warmup + limited, "link clear", "link cleared")]
    raise ValueError(f"no scenario {name!r}; one of {', '.join(SCENARIOS)}")


CHAOS_GAP_S = (3.0, 10.0)           # between two faults
CHAOS_FAULTS = ("kill", "core restart", "core restart --kill", "broker restart", "link down", "link limit")
# the soak's (scripts/bench soak) also step the sensor's clock back and fill the store's disk
SOAK_FAULTS = CHAOS_FAULTS + ("clock step", "disk full")
HELD_S = (2.0, 20.0)                # how long a link, clock or disk fault lasts
CLOCK_BEHIND_S = (30.0, 3600.0)     # how far the sensor's clock steps back
# a held fault: its kind, the action that undoes it and that action's label
UNDO = {"link down": ("link", "link up", "link up"),
        "link limit": ("link", "link clear", "link unlimited"),
        "clock step": ("clock", "clock step 0", "the sensor's clock steps to the true time (as NTP does)"),
        "disk full": ("disk", "disk free", "the store's disk has room again")}


def chaos(seconds: float, seed: int, warmup: float = 15.0, faults: tuple = CHAOS_FAULTS) -> list[Step]:
    """A fault every few seconds for `seconds`, drawn at random from `faults` (seeded, so
    replayable): a component SIGKILLed, the core restarted (gracefully or SIGKILLed with its
    components), the broker restarted, the link down or limited for a while (then back);
    with SOAK_FAULTS also the sensor's wall clock stepped back (then forward to the true time,
    as NTP steps it) and the store's disk nearly full for a while (then room again). One link,
    one clock and one disk fault at a time; each is undone before the end."""
    rng = random.Random(seed)
    steps: list[Step] = []
    at, end = warmup, warmup + seconds
    held: dict = {}                              # kind ("link", "clock", "disk") -> (undo at, fault)
    while at < end:
        due = [kind for kind, (back_at, _) in held.items() if at >= back_at]
        if due:
            _, action, label = UNDO[held.pop(due[0])[1]]
            steps.append(Step(at, action, label))
        else:
            fault = rng.choice([f for f in faults if f not in UNDO or UNDO[f][0] not in held])
            if fault == "kill":
                victim = rng.choice(COMPONENTS)
                steps.append(Step(at, f"kill {victim}", f"SIGKILL {victim.rsplit('.', 1)[-1]}"))
            elif fault in UNDO:
                hold = rng.uniform(*HELD_S)
                held[UNDO[fault][0]] = (at + hold, fault)
                if fault == "link down":
                    steps.append(Step(at, fault, f"link down for {hold:.0f} s"))
                elif fault == "link limit":
                    steps.append(Step(at, fault, f"link limited ({SLOW_BANDWIDTH} B/s, {SLOW_LATENCY_MS} ms) "
                                                 f"for {hold:.0f} s"))
                elif fault == "clock step":
                    behind = round(rng.uniform(*CLOCK_BEHIND_S))
                    steps.append(Step(at, f"clock step -{behind}",
                                      f"the sensor's clock steps {behind} s back for {hold:.0f} s"))
                else:
                    steps.append(Step(at, "disk fill", f"the store's disk nearly full for {hold:.0f} s"))
            else:
                steps.append(Step(at, fault, fault.replace("--kill", "(SIGKILL)")))
        at += rng.uniform(*CHAOS_GAP_S)
    for kind, (_, fault) in held.items():
        _, action, _ = UNDO[fault]
        steps.append(Step(end, action, {"link": "link back for the drain", "clock": "the clock back for the drain",
                                        "disk": "the disk's room back for the drain"}[kind]))
    return steps


def fault_end(steps: list[Step]) -> float:
    return max((s.at for s in steps), default=0.0)


class Scenario(threading.Thread):
    """Carries out a plan: each step at its time (`do` may take a while: a core restart waits
    for the core), then waits until `drained()` (or `drain_timeout`), then calls `finish()`."""

    def __init__(self, steps: list[Step], do: Callable[[Step], None], drained: Callable[[], bool],
                 finish: Callable[[], None], drain_timeout: float = 300.0,
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(daemon=True, name="scenario")
        self.steps, self.do, self.drained, self.finish = steps, do, drained, finish
        self.drain_timeout, self.say, self.clock, self.wall = drain_timeout, say, clock, wall
        self.events: list[tuple[float, str]] = []     # (epoch seconds, label)
        self.fault_end_wall: Optional[float] = None
        self.drained_in_time: Optional[bool] = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        started = self.clock()
        try:
            for step in self.steps:
                if self._stop.wait(max(0.0, started + step.at - self.clock())):
                    return
                self.say(f"    -- scenario: {step.label}")
                self.events.append((self.wall(), step.label))
                self.do(step)
            self.fault_end_wall = self.wall()
            self.say("    -- scenario: faults over; waiting until IoT Core has every reading")
            deadline = self.clock() + self.drain_timeout
            while not self._stop.is_set() and self.clock() < deadline:
                if self.drained():
                    self.drained_in_time = True
                    self.events.append((self.wall(), "drained"))
                    return
                self._stop.wait(1.0)
            self.drained_in_time = False
        finally:
            self.finish()
