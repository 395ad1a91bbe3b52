"""localgg's stand-in for aws.greengrass.LambdaLauncher and LambdaManager (NoContainer only).

A Lambda component's recipe, as CreateComponentVersion generates it (generated.py), runs
`{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start` at startup and
`... stop; ... clean` at shutdown, with the function's settings in AWS_GREENGRASS_LAMBDA_*
(setenv). localgg installs `lambda-launcher` (install(), a two-line shell script) into the
stand-in's artifact folder, so those scripts run as written. `start` stays in the foreground
as the component's startup process: it reads the component's configuration (GetConfiguration),
subscribes to its event sources (pubsubTopics: PUB_SUB with SubscribeToTopic, IOT_CORE with
SubscribeToIoTCore), reports RUNNING (UpdateState) once subscribed, and hands each message,
as a work item, to instances of the function (runtime.py) as dispatch.py decides. An instance
runs as the user in AWS_GREENGRASS_LAMBDA_LINUX_PROCESS_PARAMS (the component's, which the
core sets as a device does: ggc_user when the core runs as root), though the launcher itself
runs privileged, as the recipe asks. SIGTERM (the
component's stop) ends the instances and the launcher. `stop` and `clean` have nothing left to
do.

Differences from a device, all on the strict side: the real LambdaManager is a nucleus plugin
that subscribes on the function's behalf; here the launcher subscribes as the component, so
its accessControl must allow SubscribeToTopic (SubscribeToIoTCore) on its event sources, which
scripts/import-lambda's policy does. GreengrassContainer is refused (localgg runs no
containers): deploy with containerMode NoContainer.
"""

from __future__ import annotations

import base64
import json
import grp
import os
import pwd
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .dispatch import Dispatch, Drop, Invoke, Kill, Settings, Start, Stop

HERE = Path(__file__).resolve().parent
SCRIPT_NAME = "lambda-launcher"


def install(folder: Path, python: str = sys.executable) -> Path:
    """Write the `lambda-launcher` executable into `folder` (the stand-in's artifacts)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SCRIPT_NAME
    scripts = HERE.parent.parent
    target.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(scripts))} "
                      f"exec {shlex.quote(python)} -m localgg.lambdas.launcher \"$@\"\n")
    target.chmod(0o755)
    return target


def function_settings(env: dict) -> dict:
    """What the recipe's setenv says about the function, checked; ValueError names what is wrong."""
    missing = [k for k in ("AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH", "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER",
                           "AWS_GREENGRASS_LAMBDA_EXEC_ARGS") if not env.get(k)]
    if missing:
        raise ValueError(f"the recipe's setenv lacks {', '.join(missing)}")
    try:
        exec_args = json.loads(env["AWS_GREENGRASS_LAMBDA_EXEC_ARGS"])
        params = json.loads(env.get("AWS_GREENGRASS_LAMBDA_PARAMS") or "{}")
    except ValueError as error:
        raise ValueError(f"AWS_GREENGRASS_LAMBDA_EXEC_ARGS or _PARAMS is not JSON: {error}") from None
    if not (isinstance(exec_args, list) and exec_args and all(isinstance(a, str) for a in exec_args)):
        raise ValueError("AWS_GREENGRASS_LAMBDA_EXEC_ARGS must be a JSON list of strings")
    variables = (params or {}).get("EnvironmentVariables") or {}
    try:
        user = json.loads(env.get("AWS_GREENGRASS_LAMBDA_LINUX_PROCESS_PARAMS") or "null")
    except ValueError:
        raise ValueError("AWS_GREENGRASS_LAMBDA_LINUX_PROCESS_PARAMS is not JSON") from None
    return {"python": exec_args[0], "handler": env["AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER"],
            "artifact": env["AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH"],
            "variables": {str(k): str(v) for k, v in variables.items()},
            "user": user if isinstance(user, dict) and user.get("user") else None}


def process_user(user: dict | None) -> dict:
    """Popen's arguments to run an instance as `user` ({"user", "group"}), with the user's groups."""
    if not user:
        return {}
    entry = pwd.getpwnam(user["user"])
    gid = grp.getgrnam(user["group"]).gr_gid if user.get("group") else entry.pw_gid
    return {"user": entry.pw_uid, "group": gid, "extra_groups": os.getgrouplist(entry.pw_name, gid)}


def event_sources(config: dict) -> list[tuple[str, str]]:
    """(topic, PUB_SUB | IOT_CORE) of the configuration's pubsubTopics ({"0": {topic, type}, ...})."""
    topics = config.get("pubsubTopics") or {}
    entries = topics.values() if isinstance(topics, dict) else topics
    out = []
    for entry in entries:
        kind = str(entry.get("type", "PUB_SUB")).upper()
        if kind not in ("PUB_SUB", "IOT_CORE") or not entry.get("topic"):
            raise ValueError(f"pubsubTopics: {entry!r} refused, needs a topic and a type PUB_SUB | IOT_CORE")
        out.append((str(entry["topic"]), kind))
    return out


class Launcher:
    """The shell around Dispatch: IPC subscriptions in, instance processes out."""

    def __init__(self, client, config: dict, function: dict, env: dict, clock=time.monotonic) -> None:
        self.client, self.function, self.env, self.clock = client, function, env, clock
        self.settings = Settings.from_configuration(config)
        self.sources = event_sources(config)
        self.plan = Dispatch(self.settings)
        self.events: "queue.Queue[tuple]" = queue.Queue()
        self.processes: dict[int, subprocess.Popen] = {}
        self._ids = 0

    def log(self, text: str) -> None:
        print(f"lambda-launcher: {text}", file=sys.stderr, flush=True)

    def subscribe(self) -> None:
        from awsiot.greengrasscoreipc.model import QOS
        for topic, kind in self.sources:
            if kind == "PUB_SUB":
                self.client.subscribe_to_topic(topic=topic, on_stream_event=self._on_pubsub)
            else:
                self.client.subscribe_to_iot_core(topic_name=topic, qos=QOS.AT_LEAST_ONCE,
                                                  on_stream_event=self._on_iot_core)

    def _on_pubsub(self, event) -> None:
        if event.json_message is not None:
            payload = json.dumps(event.json_message.message).encode()
            topic = event.json_message.context.topic
        else:
            payload = bytes(event.binary_message.message)
            topic = event.binary_message.context.topic
        self.events.put(("message", topic, payload))

    def _on_iot_core(self, event) -> None:
        self.events.put(("message", event.message.topic_name, bytes(event.message.payload)))

    def run(self, stop: threading.Event) -> None:
        self.do(self.plan.begin(self.clock()))
        while not stop.is_set():
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                self.do(self.plan.tick(self.clock()))
                continue
            now = self.clock()
            if event[0] == "message":
                self._ids += 1
                item = {"id": self._ids, "topic": event[1], "encoding": self.settings.encoding,
                        "payload": base64.b64encode(event[2]).decode()}
                self.do(self.plan.arrive(item, now))
            elif event[0] == "answer":
                if not event[2].get("ok", False):
                    self.log(f"invocation {event[2].get('id')} failed: {event[2].get('error')}")
                self.do(self.plan.finished(event[1], now))
            elif event[0] == "exited" and event[1] in self.processes:
                self.processes.pop(event[1])
                self.log(f"instance {event[1]} exited with code {event[2]}")
                self.do(self.plan.exited(event[1], now))
            self.do(self.plan.tick(now))
        for number in list(self.processes):
            self._end(number)

    def do(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Start):
                self._start(action.instance)
            elif isinstance(action, Invoke):
                process = self.processes.get(action.instance)
                try:
                    process.stdin.write(json.dumps(action.item) + "\n")
                    process.stdin.flush()
                except (OSError, AttributeError) as error:
                    self.log(f"could not hand work item {action.item['id']} to instance {action.instance}: {error}")
            elif isinstance(action, Kill):
                self.log(f"killing instance {action.instance}: {action.reason}")
                self._end(action.instance, kill=True)
            elif isinstance(action, Stop):
                self.log(f"instance {action.instance} idle for maxIdleTimeInSeconds: stopped")
                self._end(action.instance)
            elif isinstance(action, Drop):
                self.log(f"dropped a message on {action.item['topic']}: {action.reason}")

    def _start(self, number: int) -> None:
        python = shutil.which(self.function["python"], path=self.env.get("PATH")) or self.function["python"]
        env = dict(self.env)
        env.update(self.function["variables"])
        env["LOCALGG_LAMBDA_TIMEOUT_S"] = str(self.settings.timeout_s)
        user = self.function.get("user") if os.geteuid() == 0 else None
        if user:
            env.update({"HOME": pwd.getpwnam(user["user"]).pw_dir, "USER": user["user"], "LOGNAME": user["user"]})
        process = subprocess.Popen([python, "-u", str(HERE / "runtime.py"), f"--handler={self.function['handler']}"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
                                   cwd=os.getcwd(), **process_user(user))
        self.processes[number] = process
        threading.Thread(target=self._read, args=(number, process), daemon=True).start()
        self.log(f"instance {number} started (pid {process.pid}, {'pinned' if self.settings.pinned else 'on-demand'})")

    def _read(self, number: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if "id" in answer:
                self.events.put(("answer", number, answer))
        self.events.put(("exited", number, process.wait()))

    def _end(self, number: int, kill: bool = False) -> None:
        process = self.processes.pop(number, None)
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        if kill:
            process.kill()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start(env: dict) -> int:
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ReportedLifecycleState
    name = env.get("AWS_GREENGRASS_LAMBDA_COMPONENT") or ""
    client = GreengrassCoreIPCClientV2()
    config = client.get_configuration(key_path=[]).value or {}
    mode = str(config.get("containerMode", env.get("AWS_GREENGRASS_LAMBDA_CONTAINER_MODE", ""))) or "NoContainer"
    if mode != "NoContainer":
        print(f"lambda-launcher: containerMode {mode} refused: localgg runs Lambdas with NoContainer only "
              f"(set containerMode NoContainer in the deployment) {name}", file=sys.stderr)
        return 1
    try:
        launcher = Launcher(client, config, function_settings(env), env)
    except ValueError as error:
        print(f"lambda-launcher: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    launcher.subscribe()
    client.update_state(state=ReportedLifecycleState.RUNNING)
    launcher.log(f"{launcher.function['handler']} on {[t for t, _ in launcher.sources]} "
                 f"({'pinned' if launcher.settings.pinned else 'on-demand'}, timeout {launcher.settings.timeout_s:g} s)")
    launcher.run(stop)
    client.close()
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "start":
        return start(dict(os.environ))
    if command in ("stop", "clean"):
        return 0          # SIGTERM to the startup process (the component's stop) ends everything
    print(f"usage: {SCRIPT_NAME} start|stop|clean", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
