"""Work items to Lambda instances, as the LambdaManager does for a NoContainer Lambda. Pure:
no process, no clock; the launcher (launcher.py) feeds it events and does what it returns.

    plan = Dispatch(Settings.from_configuration(config))
    plan.begin(now)                       # pinned: [Start(0)]
    plan.arrive(item, now)                # [Start(1), Invoke(1, item)] or [Invoke(0, item)] or [Drop(...)]
    plan.finished(0, now)                 # the instance answered: the next queued item, if any
    plan.exited(0, now)                   # it died: pinned starts another
    plan.tick(now)                        # timeouts (Kill) and, on demand, idle instances (Stop)

What it reproduces (AWS docs: run-lambda-functions "Lambda function lifecycle",
API_LambdaExecutionParameters; facts in iot-rules-and-lambda.md B):
- pinned: one instance, started with the component, kept between invocations (globals
  kept); invocations wait in one queue and run one at a time;
- on-demand: an instance per work item, up to maxInstancesCount in parallel, an idle one
  reused; an instance idle for maxIdleTimeInSeconds exits;
- at most maxQueueSize items wait; a newer one is dropped (said in the log);
- an invocation running longer than timeoutInSeconds is ended: its instance is killed (a
  pinned Lambda gets a new one, its globals lost). Whether the nucleus kills a pinned
  instance or only abandons the invocation is not documented (?): killing is the stricter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Union

# (default, low, high) per configuration key: LambdaExecutionParameters' documented defaults;
# the bounds are the recipe generator's (timeout >= 1, maxIdleTime >= 30 in its constants) and ours
LIMITS = {"timeoutInSeconds": (3, 1, 2147483647), "maxIdleTimeInSeconds": (60, 30, 2147483647),
          "maxInstancesCount": (100, 1, 2147483647), "maxQueueSize": (1000, 1, 2147483647)}
ENCODINGS = ("json", "binary")


@dataclass(frozen=True)
class Settings:
    pinned: bool = True
    timeout_s: float = 3.0
    max_idle_s: float = 60.0
    max_instances: int = 100
    max_queue: int = 1000
    encoding: str = "json"

    @classmethod
    def from_configuration(cls, config: dict) -> "Settings":
        """The settings of a Lambda component's configuration (the keys the generated recipe
        has). A bad value raises ValueError naming the key and the allowed range."""
        values: dict[str, Any] = {}
        for key, (default, low, high) in LIMITS.items():
            value = config.get(key, default)
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)            # configuration values may arrive as text
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
                    or float(value) != int(value):
                raise ValueError(f"{key}: {value!r} refused, allowed a whole number {low}..{high}")
            values[key] = int(value)
        pinned = config.get("pinned", True)
        if isinstance(pinned, str) and pinned.lower() in ("true", "false"):
            pinned = pinned.lower() == "true"
        if not isinstance(pinned, bool):
            raise ValueError(f"pinned: {pinned!r} refused, allowed true | false")
        encoding = str(config.get("inputPayloadEncodingType", "json")).lower()
        if encoding not in ENCODINGS:
            raise ValueError(f"inputPayloadEncodingType: {encoding!r} refused, allowed json | binary")
        return cls(pinned=pinned, timeout_s=float(values["timeoutInSeconds"]),
                   max_idle_s=float(values["maxIdleTimeInSeconds"]),
                   max_instances=1 if pinned else values["maxInstancesCount"],
                   max_queue=values["maxQueueSize"], encoding=encoding)


@dataclass(frozen=True)
class Start:
    instance: int


@dataclass(frozen=True)
class Invoke:
    instance: int
    item: Any


@dataclass(frozen=True)
class Kill:
    instance: int
    reason: str


@dataclass(frozen=True)
class Stop:
    instance: int


@dataclass(frozen=True)
class Drop:
    item: Any
    reason: str


Action = Union[Start, Invoke, Kill, Stop, Drop]


@dataclass
class _Instance:
    busy_since: float | None = None     # None: idle
    idle_since: float = 0.0


class Dispatch:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue: deque = deque()
        self.instances: dict[int, _Instance] = {}
        self._next = 0
        self.invoked = self.dropped = self.timed_out = 0

    def begin(self, now: float) -> list[Action]:
        return self._start(now) if self.settings.pinned else []

    def arrive(self, item: Any, now: float) -> list[Action]:
        if len(self.queue) >= self.settings.max_queue:
            self.dropped += 1
            return [Drop(item, f"{len(self.queue)} work items already wait (maxQueueSize "
                               f"{self.settings.max_queue})")]
        self.queue.append(item)
        return self._assign(now)

    def finished(self, instance: int, now: float) -> list[Action]:
        state = self.instances.get(instance)
        if state is not None:
            state.busy_since, state.idle_since = None, now
        return self._assign(now)

    def exited(self, instance: int, now: float) -> list[Action]:
        if self.instances.pop(instance, None) is None:
            return self._assign(now)            # one we stopped or killed
        return self._replace(now) + self._assign(now)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for number, state in list(self.instances.items()):
            if state.busy_since is not None and now - state.busy_since >= self.settings.timeout_s:
                del self.instances[number]
                self.timed_out += 1
                actions.append(Kill(number, f"the invocation ran over timeoutInSeconds "
                                            f"({self.settings.timeout_s:g} s)"))
                actions += self._replace(now)
            elif (state.busy_since is None and not self.settings.pinned
                  and now - state.idle_since >= self.settings.max_idle_s):
                del self.instances[number]
                actions.append(Stop(number))
        return actions + self._assign(now)

    # -- inside
    def _replace(self, now: float) -> list[Action]:
        return self._start(now) if self.settings.pinned and not self.instances else []

    def _start(self, now: float) -> list[Action]:
        number, self._next = self._next, self._next + 1
        self.instances[number] = _Instance(idle_since=now)
        return [Start(number)]

    def _assign(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self.queue:
            idle = [n for n, s in sorted(self.instances.items()) if s.busy_since is None]
            if not idle:
                if self.settings.pinned or len(self.instances) >= self.settings.max_instances:
                    break
                actions += self._start(now)
                continue
            self.instances[idle[0]].busy_since = now
            self.invoked += 1
            actions.append(Invoke(idle[0], self.queue.popleft()))
        return actions
