"""localgg's lambda-launcher shell with real instance processes (runtime.py) and a small real
handler, its IPC replaced by events put on its queue: a pinned instance keeps its globals
between invocations, an invocation over timeoutInSeconds kills the instance and the next one
runs on a new instance, the event is decoded per inputPayloadEncodingType with the topic as
context.client_context.custom['subject'], the function's environment variables are set, and
an on-demand instance exits after maxIdleTimeInSeconds (a clock injected)."""

from __future__ import annotations

import json
import os
import sys
import threading

import pytest

from conftest import wait_for
from localgg.lambdas.launcher import Launcher

HANDLER = '''
import json, os, time
calls = 0
def handler(event, context):
    global calls
    calls += 1
    if isinstance(event, dict) and event.get("sleep"):
        time.sleep(event["sleep"])
    with open(os.environ["OUT"], "a") as out:
        out.write(json.dumps({"pid": os.getpid(), "calls": calls, "event": event if isinstance(event, dict)
                              else event.decode(), "subject": context.client_context.custom["subject"],
                              "mode": os.environ.get("MODE")}) + "\\n")
'''


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make(tmp_path):
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "probe.py").write_text(HANDLER)
    started = []

    def make(config: dict, clock=None):
        function = {"python": sys.executable, "handler": "probe.handler", "artifact": str(tmp_path / "fn"),
                    "variables": {"OUT": str(tmp_path / "out.jsonl"), "MODE": "test"}, "user": None}
        env = dict(os.environ, AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH=str(tmp_path / "fn"))
        launcher = Launcher(None, config, function, env, **({"clock": clock} if clock else {}))
        stop = threading.Event()
        thread = threading.Thread(target=launcher.run, args=(stop,), daemon=True)
        thread.start()
        started.append((stop, thread))
        return launcher
    yield make
    for stop, thread in started:
        stop.set()
        thread.join(10)


def lines(tmp_path) -> list[dict]:
    path = tmp_path / "out.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def idle(launcher) -> bool:
    try:        # read while the launcher's thread may change it: a torn read is just "not yet"
        states = list(launcher.plan.instances.values())
    except RuntimeError:
        return False
    return bool(states) and all(s.busy_since is None for s in states)


def send(launcher, doc, topic="in/t") -> None:
    launcher.events.put(("message", topic, json.dumps(doc).encode() if isinstance(doc, dict) else doc))


def test_pinned_keeps_globals_and_a_timeout_kills_the_instance(make, tmp_path):
    launcher = make({"pinned": True, "timeoutInSeconds": 1, "pubsubTopics": {"0": {"topic": "in/t"}}})
    for n in range(3):
        send(launcher, {"n": n})
    wait_for(lambda: len(lines(tmp_path)) == 3, 20, message="three invocations")
    first = lines(tmp_path)
    assert [r["calls"] for r in first] == [1, 2, 3] and len({r["pid"] for r in first}) == 1
    assert first[0] == {"pid": first[0]["pid"], "calls": 1, "event": {"n": 0}, "subject": "in/t", "mode": "test"}
    send(launcher, {"sleep": 30})                                # over the 1 s timeout
    send(launcher, {"n": 4})
    wait_for(lambda: len(lines(tmp_path)) == 4, 20, message="the invocation after the timeout")
    after = lines(tmp_path)[-1]
    assert after["event"] == {"n": 4} and after["calls"] == 1 and after["pid"] != first[0]["pid"]
    assert launcher.plan.timed_out == 1


def test_binary_encoding_gives_bytes_and_on_demand_instances_exit_when_idle(make, tmp_path):
    clock = Clock()
    launcher = make({"pinned": False, "maxIdleTimeInSeconds": 30, "inputPayloadEncodingType": "binary"}, clock)
    assert launcher.processes == {}                                # on demand: nothing before work
    send(launcher, b"raw bytes", topic="in/b")
    wait_for(lambda: lines(tmp_path), 20, message="the invocation")
    assert lines(tmp_path)[0]["event"] == "raw bytes" and lines(tmp_path)[0]["subject"] == "in/b"
    process = next(iter(launcher.processes.values()))
    wait_for(lambda: idle(launcher), 10, message="the instance idle")
    clock.now = 31.0
    wait_for(lambda: process.poll() is not None and not launcher.processes, 10, message="the idle instance to exit")
