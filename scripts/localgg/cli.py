"""`localgg`: the command line, shaped like greengrass-cli so the same commands work on a device.

    localgg start --root DIR [--thing NAME]                 run the core in the foreground
    localgg deployment create --root DIR --recipeDir R --artifactDir A --merge NAME=VERSION
                              [--update-config JSON|FILE] [--remove NAME] [--runWith NAME:posixUser=USER[:GROUP]]
                              [--wait SECONDS]
    localgg deployment status --root DIR -i ID | deployment list --root DIR
    localgg component list|details -n NAME|restart -n NAMES|stop -n NAMES --root DIR
    localgg logs get --root DIR (--log-file FILE | --component NAME) [--follow]
    localgg pubsub pub -t TOPIC -m MESSAGE|FILE --root DIR | pubsub sub -t TOPIC --root DIR
    localgg iotcore pub -t TOPIC -m MESSAGE|FILE [-q 0|1] --root DIR | iotcore sub -t TOPIC [-q 0|1] --root DIR

localgg's own (no greengrass-cli equivalent):

    localgg status --root DIR                               the core's state as JSON (IoT Core link, spool, IPC)
    localgg fault link down|up|flap|limit|clear|status --root DIR
    localgg fault component kill -n NAME --root DIR | fault core restart [--kill] --root DIR
    localgg fault broker restart|stop|start|status [--kill] --cloud DIR
    localgg cloud start --dir DIR [--port N] [--broker mosquitto|amqtt|auto] [--no-limits]
    localgg cloud record --cloud DIR --topic FILTER [--topic FILTER ...] --db FILE
    localgg cloud publish --cloud DIR --topic T --payload P [--qos 0|1] [--retain]
    localgg cloud shadow get|update --cloud DIR --thing-name T [--shadow-name N] [--payload JSON] [OUTFILE]
    localgg cloud shadow status --cloud DIR --thing-name T [--shadow-name N]   (when the device last reported, the delta)
    localgg cloud job create --cloud DIR --job-id ID --thing-name T [--thing-name T2 ...] --document JSON|file://PATH
    localgg cloud job list|describe|cancel --cloud DIR [--job-id ID] [--thing-name T] [--force]

The greengrass-cli commands talk to the running core over IPC, with the real awsiotsdk
client and the token the core writes to `<root>/cli_ipc_info/`, as greengrass-cli does.
Outputs are greengrass-cli's. `--wait` (a localgg addition) waits for the deployment to
end and exits 0 only if it SUCCEEDED. `status` and `fault` use the core's control socket;
`fault broker` and `cloud` the cloud's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


class CliError(Exception):
    pass


# -- the running core --------------------------------------------------------------------

def _root(args: argparse.Namespace) -> Path:
    root = args.root or os.environ.get("GGC_ROOT_PATH")
    if not root:
        raise CliError("GGC root path not configured: pass --root DIR (or set GGC_ROOT_PATH)")
    return Path(root).resolve()


def connect(root: Path):
    """An IPC client authenticated as aws.greengrass.Cli. Its stream callbacks run on the
    connection's thread, in the order the events came (the default executor may reorder them)."""
    info_file = root / "cli_ipc_info" / "localgg-cli"
    if not info_file.exists():
        raise CliError(f"no localgg core has run under {root}: start one with `localgg start --root {root}`")
    info = json.loads(info_file.read_text())
    if not os.path.exists(info["socket_path"]):
        raise CliError(f"the localgg core under {root} is not running: start it with `localgg start --root {root}`")
    import awsiot.greengrasscoreipc
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    try:
        client = awsiot.greengrasscoreipc.connect(ipc_socket=info["socket_path"], authtoken=info["cli_auth_token"])
        return GreengrassCoreIPCClientV2(client=client, executor=None)
    except Exception as exc:  # connection refused, access denied
        raise CliError(f"cannot reach the localgg core under {root}: {exc!r}") from exc


def _date(created_on: str) -> str:
    stamp = _dt.datetime.fromtimestamp(int(created_on) / 1000, _dt.timezone.utc)
    return stamp.strftime("%d-%m-%Y %H:%M:%S UTC")


def _json_arg(text: str) -> dict:
    try:
        is_file = Path(text).is_file()
    except OSError:  # a JSON string longer than a file name may be (ENAMETOOLONG) is no file
        is_file = False
    if is_file:
        text = Path(text).read_text()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError("Update configuration parameter is not a properly formatted JSON file or a JSON string") \
            from exc
    if not isinstance(value, dict):
        raise CliError("Update configuration parameter must be a JSON object")
    return value


def _names(values: list[str]) -> list[str]:
    return [n for v in values for n in re.split(r" *[&,]+ *", v) if n]


# -- commands -------------------------------------------------------------------------------

def cmd_start(args: argparse.Namespace) -> int:
    from .kernel import Kernel, write_private
    root = _root(args)
    root.mkdir(parents=True, exist_ok=True)
    if args.cloud:
        from .cloud.service import provision
        provision(Path(args.cloud), root, args.thing)
    (root / "config").mkdir(exist_ok=True)
    start_file = root / "config" / "start.json"
    argv = sys.argv[1:] if sys.argv[1:2] == ["start"] else ["start", "--root", str(root), "--thing", args.thing]
    write_private(start_file, json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}))
    kernel = Kernel(root, thing_name=args.thing, region=args.region)

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        await kernel.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, kernel.request_exit)
        (root / "localgg.pid").write_text(str(os.getpid()))
        print(f"localgg core running under {root} (thing {args.thing}); IPC socket {kernel.socket_path}",
              flush=True)
        await kernel.exit_requested.wait()
        try:
            await kernel.stop()
        except Exception:  # noqa: BLE001 - still leave no pid behind, and still restart if asked
            import traceback
            print("localgg: stopping the core failed:", file=sys.stderr)
            traceback.print_exc()
        finally:
            (root / "localgg.pid").unlink(missing_ok=True)
        return kernel.restart_requested

    if asyncio.run(main()):
        print("localgg core restarting", flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "localgg", *json.loads(start_file.read_text())["argv"]])
    return 0


def _control(path: Path, request: dict, absent: str) -> dict:
    """One request on a control socket, the core's or the cloud's: a JSON object with its "cmd",
    one line each way; a reply with an "error" raises it."""
    import socket
    if not path.exists():
        raise CliError(absent)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data or b"{}")
    if "error" in reply:
        raise CliError(reply["error"])
    return reply


def _core(root: Path, request: dict) -> dict:
    return _control(root / "control.sock", request, f"the localgg core under {root} is not running")


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(_core(_root(args), {"cmd": "status"}), indent=2))
    return 0


def cmd_fault_link(args: argparse.Namespace) -> int:
    request = {"cmd": "link", "action": args.action}
    if args.action == "flap":
        request.update(down=args.down, up=args.up)
    if args.action == "limit":
        request.update(bandwidth=args.bandwidth, latency=None if args.latency is None else args.latency / 1000)
    print(json.dumps(_core(_root(args), request)["link"]))
    return 0


def cmd_fault_component(args: argparse.Namespace) -> int:
    reply = _core(_root(args), {"cmd": "kill", "component": args.name})
    print(f"SIGKILL sent to {reply['killed']} process groups of {args.name}")
    return 0


def cmd_fault_core(args: argparse.Namespace) -> int:
    import subprocess

    from .processes import running
    root = _root(args)
    pid_file = root / "localgg.pid"
    if not pid_file.exists():
        raise CliError(f"the localgg core under {root} is not running")
    old_pid = int(pid_file.read_text())
    if not args.kill:
        _core(root, {"cmd": "restart"})
        _wait(lambda: not pid_file.exists() or not _responds(root), 60, "the core to stop")
    else:
        start = json.loads((root / "config" / "start.json").read_text())
        os.kill(old_pid, signal.SIGKILL)
        _wait(lambda: not running(old_pid), 10, "the killed core to go")
        pid_file.unlink(missing_ok=True)
        (root / "control.sock").unlink(missing_ok=True)
        out = open(root / "logs" / "localgg.out", "a")
        subprocess.Popen([sys.executable, "-m", "localgg", *start["argv"]], env=start["env"], cwd=start["cwd"],
                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _wait(lambda: pid_file.exists() and _responds(root), 60, "the core to start again")
    print(f"localgg core under {root} restarted (pid {pid_file.read_text().strip()})")
    return 0


def _responds(root: Path) -> bool:
    try:
        _core(root, {"cmd": "status"})
        return True
    except (CliError, OSError, ValueError):
        return False


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise CliError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cloud_dir(args: argparse.Namespace) -> Path:
    return Path(args.cloud).resolve()


def cmd_fault_broker(args: argparse.Namespace) -> int:
    cloud = _cloud_dir(args)
    reply = _control(cloud / "control.sock", {"cmd": "broker", "action": args.action, "kill": args.kill},
                     f"no cloud is running in {cloud}")
    print(json.dumps(reply["broker"]))
    return 0


def cmd_cloud_start(args: argparse.Namespace) -> int:
    from .cloud.service import Cloud
    cloud = Cloud(Path(args.dir), args.port, limits=not args.no_limits, broker=args.broker)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cloud.start()
    cloud.serve_control()
    if cloud.broker.mqtt_version == "mqtt3":
        print("mosquitto is not installed: using the embedded amqtt broker instead (MQTT 3.1.1, client "
              "certificates optional, no IoT Core packet size limit); cores connect with mqtt.version mqtt3", flush=True)
    print(f"localgg cloud running in {cloud.directory}: IoT Core at 127.0.0.1:{cloud.broker.port} "
          f"(TLS, CA {cloud.directory / 'pki' / 'ca.crt'}, broker {cloud.broker.describe()})", flush=True)
    stop.wait()
    cloud.stop()
    return 0


def cmd_cloud_record(args: argparse.Namespace) -> int:
    from .cloud.recorder import Recorder
    recorder = Recorder(_cloud_dir(args), args.topic, Path(args.db)).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"recording {', '.join(args.topic)} into {args.db} (client id {recorder.client_id})", flush=True)
    stop.wait()
    recorder.stop()
    return 0


def cmd_cloud_publish(args: argparse.Namespace) -> int:
    from .cloud import mqtt
    client = mqtt.connect(_cloud_dir(args), "localgg-cli-publisher",
                          client_id=mqtt.unique_client_id("localgg-cli-publisher"))
    info = client.publish(args.topic, args.payload.encode(), qos=args.qos, retain=args.retain)
    info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    return 0


def _json_object(option: str, value: str, what: str) -> dict:
    """A JSON object given on the command line, or in a file as `file://PATH` (the AWS CLI's way)."""
    text = value
    if text.startswith("file://"):
        try:
            text = Path(text[len("file://"):]).read_text()
        except OSError as error:
            raise CliError(f"{option} {value}: {error.strerror}")
    try:
        document = json.loads(text)
    except ValueError as error:
        raise CliError(f"{option} is not JSON: {error}")
    if not isinstance(document, dict):
        raise CliError(f"{option} must be a JSON object {what}")
    return document


def cmd_cloud_shadow(args: argparse.Namespace) -> int:
    """`aws iot-data get-thing-shadow|update-thing-shadow` against the cloud stand-in: the
    document goes to OUTFILE (or stdout); a rejection is said on stderr, exit status 255 as
    the AWS CLI's."""
    from .cloud.shadow_client import request
    document = None
    if args.action == "update":
        document = _json_object("--payload", args.payload, "({\"state\": {...}})")
    operation = "get" if args.action == "status" else args.action
    ok, doc = request(_cloud_dir(args), args.thing_name, args.shadow_name or "", operation, document)
    if not ok:
        code = {400: "InvalidRequestException", 401: "UnauthorizedException", 404: "ResourceNotFoundException",
                409: "ConflictException", 413: "RequestEntityTooLargeException"}.get(doc.get("code"), "Error")
        print(f"An error occurred ({code}) when calling the {'GetThingShadow' if args.action == 'get' else 'UpdateThingShadow'} "
              f"operation: {doc.get('message', doc)}", file=sys.stderr)
        return 255
    if args.action == "status":
        from .cloud.shadow_client import summary
        print("\n".join(summary(doc, time.time())))
        return 0
    text = json.dumps(doc, indent=2)
    if args.outfile and args.outfile != "-":
        Path(args.outfile).write_text(text + "\n")
    else:
        print(text)
    return 0


JOB_OPERATIONS = {"create": "CreateJob", "cancel": "CancelJob", "list": "ListJobs", "describe": "DescribeJob"}


def cmd_cloud_job(args: argparse.Namespace) -> int:
    """`aws iot create-job|list-jobs|describe-job|describe-job-execution|cancel-job` against the
    cloud's Jobs service (its control socket): their JSON on stdout; a refusal is said on stderr
    as the AWS CLI says it, exit status 255."""
    for name in ("job_id", "thing_name", "document", "description", "force"):
        if not hasattr(args, name):
            setattr(args, name, None)
    request: dict = {"cmd": "jobs", "action": args.action}
    if args.action != "list":
        if not args.job_id:
            raise CliError(f"job {args.action}: --job-id is required")
        request["jobId"] = args.job_id
    if args.action == "create":
        if not args.thing_name:
            raise CliError("job create: --thing-name is required (repeat it for more things)")
        if not args.document:
            raise CliError("job create: --document is required (JSON, or file://PATH)")
        document = _json_object("--document", args.document, "(the job document)")
        request.update(targets=args.thing_name, document=document, description=args.description or "")
    elif args.action == "describe" and args.thing_name:
        if len(args.thing_name) > 1:
            raise CliError("job describe: one --thing-name (the execution's thing)")
        request["thingName"] = args.thing_name[0]
    elif args.action == "cancel":
        request["force"] = bool(args.force)
    cloud = _cloud_dir(args)
    reply = _control(cloud / "control.sock", request, f"no cloud is running in {cloud}")
    if "refused" in reply:
        operation = "DescribeJobExecution" if request.get("thingName") else JOB_OPERATIONS[args.action]
        print(f"An error occurred ({reply['refused']['exception']}) when calling the {operation} operation: "
              f"{reply['refused']['message']}", file=sys.stderr)
        return 255
    print(json.dumps(reply, indent=4))
    return 0


def cmd_deployment_create(args: argparse.Namespace) -> int:
    merges = {}
    for item in args.merge or []:
        name, sep, version = item.partition("=")
        if not sep or not name or not version:
            raise CliError(f"--merge takes NAME=VERSION, not {item!r}")
        merges[name] = version
    updates = _json_arg(args.update_config) if args.update_config else None
    run_with = _run_with(args.runWith or [])
    client = connect(_root(args))
    try:
        response = client.create_local_deployment(
            group_name=args.groupId,
            root_component_versions_to_add=merges or None,
            root_components_to_remove=_names(args.remove or []) or None,
            component_to_configuration=updates,
            component_to_run_with_info=run_with or None,
            recipe_directory_path=str(Path(args.recipeDir).resolve()) if args.recipeDir else None,
            artifacts_directory_path=str(Path(args.artifactDir).resolve()) if args.artifactDir else None,
            failure_handling_policy=args.failure_handling_policy)
        print(f"Local deployment submitted! Deployment Id: {response.deployment_id}", flush=True)
        if args.wait is None:
            return 0
        deadline = time.monotonic() + args.wait
        while True:
            status = client.get_local_deployment_status(deployment_id=response.deployment_id).deployment
            if status.status in TERMINAL:
                _print_status(status)
                return 0 if status.status == "SUCCEEDED" else 1
            if time.monotonic() > deadline:
                print(f"{response.deployment_id}: still {status.status} after {args.wait} s", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        client.close()


def _run_with(items: list[str]) -> dict:
    """greengrass-cli's `--runWith <component>:posixUser=<user>[:<group>]`."""
    from awsiot.greengrasscoreipc.model import RunWithInfo
    out: dict = {}
    for item in items:
        name, sep, setting = item.partition(":")
        key, eq, value = setting.partition("=")
        if not sep or not name or key != "posixUser" or not eq or not value:
            raise CliError(f"--runWith takes NAME:posixUser=USER[:GROUP], not {item!r}")
        out[name] = RunWithInfo(posix_user=value)
    return out


def _print_status(deployment) -> None:
    print(f"{deployment.deployment_id}: {deployment.status}")
    print(f"Created on: {_date(deployment.created_on)}")
    details = deployment.deployment_status_details
    if deployment.status == "FAILED" and details is not None:
        if details.detailed_deployment_status:
            print(f"Detailed Status: {details.detailed_deployment_status}")
        if details.deployment_error_stack:
            print(f"Deployment Error Stack: {', '.join(details.deployment_error_stack)}")
        if details.deployment_error_types:
            print(f"Deployment Error Types: {', '.join(details.deployment_error_types)}")
        if details.deployment_failure_cause:
            print(f"Deployment Failure Cause: {details.deployment_failure_cause}")


def cmd_deployment_status(args: argparse.Namespace) -> int:
    client = connect(_root(args))
    try:
        _print_status(client.get_local_deployment_status(deployment_id=args.deploymentId).deployment)
    finally:
        client.close()
    return 0


def cmd_deployment_list(args: argparse.Namespace) -> int:
    client = connect(_root(args))
    try:
        entries = [f"Deployment ID: {d.deployment_id}\nCreated on: {_date(d.created_on)}\nStatus: {d.status}\n"
                   for d in client.list_local_deployments().local_deployments]
    finally:
        client.close()
    print("\n".join(entries), end="")
    return 0


def _print_component(details) -> None:
    config = json.dumps(details.configuration, separators=(",", ":")) if details.configuration is not None else "null"
    print(f"Component Name: {details.component_name}\n    Version: {details.version}\n"
          f"    State: {details.state}\n    Configuration: {config}")


def cmd_component_list(args: argparse.Namespace) -> int:
    client = connect(_root(args))
    try:
        components = client.list_components().components
    finally:
        client.close()
    print("Components currently running in Greengrass:")
    for details in components:
        _print_component(details)
    return 0


def cmd_component_details(args: argparse.Namespace) -> int:
    client = connect(_root(args))
    try:
        _print_component(client.get_component_details(component_name=args.name).component_details)
    finally:
        client.close()
    return 0


def cmd_component_restart(args: argparse.Namespace) -> int:
    client = connect(_root(args))
    try:
        failed = [n for n in _names(args.names)
                  if client.restart_component(component_name=n).restart_status != "SUCCEEDED"]
    finally:
        client.close()
    for name in failed:
        print(f"Failed to restart {name}", file=sys.stderr)
    return 1 if failed else 0


def cmd_component_stop(args: argparse.Namespace) -> int:
    client = connect(_root(args))
    try:
        failed = [n for n in _names(args.names)
                  if client.stop_component(component_name=n).stop_status != "SUCCEEDED"]
    finally:
        client.close()
    for name in failed:
        print(f"Failed to stop {name}", file=sys.stderr)
    return 1 if failed else 0


# -- pubsub and iotcore: greengrass-cli's topic commands ---------------------------------------
# (aws-greengrass-cli client/.../commands/topic/{PubSubCommand,IotCoreCommand,TopicBaseInfo}.java and
# NucleusAdapterIpcClientImpl.java: the texts below are theirs.) The CLI's clients may publish and
# subscribe to anything (CLIService.authorizePubSubPermission grants `*`).

TOPIC_EMPTY = "Topic name cannot be empty"
# MqttClient.java: a filter an existing cloud filter covers sends no SUBSCRIBE
# (findExistingSubscriberForTopic); a cloud filter is dropped only when it covers no local
# subscriber; every PUBLISH goes to each local subscriber whose filter matches.
IOTCORE_OVERLAP = ("Overlapping filters: 'iotcore sub -t base/#' while a component holds base/x adds a second "
                   "IoT Core subscription, and the core keeps base/# after this command ends, for as long as "
                   "base/x lives. The broker sends a copy per matching filter, so that component then gets "
                   "every base/x message twice until the core restarts (the nucleus does the same, and IoT Core "
                   "promises no de-duplication).")


def _topic(args: argparse.Namespace) -> str:
    if not args.topic or not args.topic.strip():
        raise CliError(TOPIC_EMPTY)
    return args.topic


def _content(message: str) -> bytes:
    """`-m` names a file (read whole) when one exists at that path, else it is the message."""
    path = Path(os.path.expanduser(message))
    try:
        if path.is_file():
            return path.read_bytes()
    except (OSError, ValueError):
        pass
    return message.encode()


def cmd_pubsub_pub(args: argparse.Namespace) -> int:
    from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage
    topic = _topic(args)
    client = connect(_root(args))
    try:
        client.publish_to_topic(topic=topic, publish_message=PublishMessage(
            binary_message=BinaryMessage(message=_content(args.message))))
    finally:
        client.close()
    return 0


def cmd_iotcore_pub(args: argparse.Namespace) -> int:
    topic = _topic(args)
    client = connect(_root(args))
    try:
        client.publish_to_iot_core(topic_name=topic, qos=args.qos, payload=_content(args.message))
    finally:
        client.close()
    return 0


def _printable(payload: bytes) -> str:
    return payload.decode("utf-8", errors="replace")


def _subscribe(args: argparse.Namespace, subscribe, unauthorized: str, closed_text: str) -> int:
    """Subscribe, say so, print every message until Ctrl-C (or SIGTERM); exit 1 if the core ends the stream."""
    from awsiot.greengrasscoreipc.model import UnauthorizedError
    topic = _topic(args)
    done = threading.Event()
    ended_by_core = []
    client = connect(_root(args))

    def on_error(error: Exception) -> bool:
        print(f"Received a stream error.\n{error!r}", file=sys.stderr, flush=True)
        return False  # keep the stream open, as greengrass-cli does

    def on_closed() -> None:
        if not done.is_set():
            print(closed_text, flush=True)
            ended_by_core.append(True)
            done.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        try:
            _, operation = subscribe(client, topic, on_error, on_closed)
        except UnauthorizedError:
            print(unauthorized.format(topic), file=sys.stderr, flush=True)
            return 1
        print(f"Successfully subscribed to topic: {topic}", flush=True)
        done.wait()
        if not ended_by_core:
            operation.close()
    finally:
        client.close()
    return 1 if ended_by_core else 0


def cmd_pubsub_sub(args: argparse.Namespace) -> int:
    def on_event(event) -> None:
        # greengrass-cli names the subscription's topic, and reads binary messages only (a JSON
        # message makes it print an exception); localgg prints JSON messages as compact JSON.
        if event.binary_message is not None:
            text = _printable(event.binary_message.message or b"")
        elif event.json_message is not None:
            text = json.dumps(event.json_message.message, separators=(",", ":"))
        else:
            return
        print(f"Received new message on topic {args.topic}: {text}", flush=True)

    return _subscribe(args, lambda client, topic, on_error, on_closed: client.subscribe_to_topic(
        topic=topic, on_stream_event=on_event, on_stream_error=on_error, on_stream_closed=on_closed),
        "Unauthorized error while publishing to topic: {}",  # sic: greengrass-cli's text for a subscription
        "Subscribe to topic stream closed.")


def cmd_iotcore_sub(args: argparse.Namespace) -> int:
    def on_event(event) -> None:
        message = event.message
        print(f"Received new message on topic {message.topic_name}: {_printable(message.payload or b'')}", flush=True)

    return _subscribe(args, lambda client, topic, on_error, on_closed: client.subscribe_to_iot_core(
        topic_name=topic, qos=args.qos, on_stream_event=on_event, on_stream_error=on_error,
        on_stream_closed=on_closed),
        "Unauthorized error while subscribing to topic: {}", "Subscribe to IoT Core stream closed.")


def cmd_logs_get(args: argparse.Namespace) -> int:
    root = _root(args) if (args.root or os.environ.get("GGC_ROOT_PATH")) else None
    files = [Path(f) for f in (args.log_file or [])]
    if args.component:
        if root is None:
            raise CliError("--component needs --root")
        files += [root / "logs" / f"{c}.log" for c in args.component]
    if not files and root is not None:
        files = [root / "logs" / "greengrass.log"]
    if not files:
        raise CliError("name a log with --log-file FILE or --component NAME --root DIR")
    handles = []
    for path in files:
        if not path.exists():
            raise CliError(f"no log file {path}")
        handles.append(open(path, encoding="utf-8", errors="replace"))
    for handle in handles:
        sys.stdout.write(handle.read())
    sys.stdout.flush()
    while args.follow:
        for handle in handles:
            chunk = handle.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        time.sleep(0.2)
    return 0


# -- parser -----------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="localgg", description="A local Greengrass v2 core for development and tests.")
    sub = top.add_subparsers(dest="command", required=True)

    def with_root(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--root", "--ggcRootPath", dest="root", help="the core's root directory (env GGC_ROOT_PATH)")
        return p

    start = with_root(sub.add_parser("start", help="run the core in the foreground"))
    start.add_argument("--thing", default="localgg-thing", help="the thing name (AWS_IOT_THING_NAME)")
    start.add_argument("--region", default="us-east-1")
    start.add_argument("--cloud", metavar="DIR", help="connect to the IoT Core stand-in of `localgg cloud start --dir DIR`"
                       " (the thing is provisioned on first use)")
    start.set_defaults(func=cmd_start)
    with_root(sub.add_parser("status", help="(localgg) the core's state: IoT Core link, spool, components")
              ).set_defaults(func=cmd_status)

    deployment = sub.add_parser("deployment", help="local deployments").add_subparsers(dest="action", required=True)
    create = with_root(deployment.add_parser("create", help="deploy components from local recipes and artifacts"))
    create.add_argument("-r", "--recipeDir")
    create.add_argument("-a", "--artifactDir")
    create.add_argument("-m", "--merge", action="append", metavar="NAME=VERSION")
    create.add_argument("--remove", action="append", metavar="NAME")
    create.add_argument("-c", "--update-config", metavar="JSON|FILE")
    create.add_argument("--runWith", action="append", metavar="NAME:posixUser=USER[:GROUP]",
                        help="the user a root component's non-privileged steps run as")
    create.add_argument("-g", "--groupId")
    create.add_argument("-fp", "--failure-handling-policy", choices=["ROLLBACK", "DO_NOTHING"])
    create.add_argument("--wait", type=float, metavar="SECONDS",
                        help="(localgg) wait for the deployment to end; exit 0 only if it SUCCEEDED")
    create.set_defaults(func=cmd_deployment_create)
    status = with_root(deployment.add_parser("status", help="one deployment's status"))
    status.add_argument("-i", "--deploymentId", required=True)
    status.set_defaults(func=cmd_deployment_status)
    with_root(deployment.add_parser("list", help="local deployments")).set_defaults(func=cmd_deployment_list)

    component = sub.add_parser("component", help="components").add_subparsers(dest="action", required=True)
    with_root(component.add_parser("list")).set_defaults(func=cmd_component_list)
    details = with_root(component.add_parser("details"))
    details.add_argument("-n", "--name", required=True)
    details.set_defaults(func=cmd_component_details)
    for name, func in (("restart", cmd_component_restart), ("stop", cmd_component_stop)):
        p = with_root(component.add_parser(name))
        p.add_argument("-n", "--names", required=True, action="append")
        p.set_defaults(func=func)

    for service, help_text in (("pubsub", "local publish/subscribe"), ("iotcore", "AWS IoT Core (MQTT)")):
        commands = sub.add_parser(service, help=help_text, description=IOTCORE_OVERLAP if service == "iotcore"
                                  else None).add_subparsers(dest="action", required=True)
        pub = with_root(commands.add_parser("pub", help="Publish message to the specific topic"))
        pub.add_argument("-t", "--topic", required=True, help="The name of the topic.")
        pub.add_argument("-m", "--message", required=True,
                         help="The message that is published (a file's content when it names a file).")
        subscribe = with_root(commands.add_parser("sub", help="Subscribe the specific topic (Ctrl-C ends it)",
                                                  description=IOTCORE_OVERLAP if service == "iotcore" else None))
        subscribe.add_argument("-t", "--topic", required=True, help="The name of the topic.")
        if service == "iotcore":
            for p in (pub, subscribe):
                p.add_argument("-q", "--qos", default="0", choices=["0", "1"], help="The MQTT QoS to use (default 0).")
        pub.set_defaults(func=cmd_pubsub_pub if service == "pubsub" else cmd_iotcore_pub)
        subscribe.set_defaults(func=cmd_pubsub_sub if service == "pubsub" else cmd_iotcore_sub)

    fault = sub.add_parser("fault", help="(localgg) inject faults").add_subparsers(dest="target", required=True)
    link = with_root(fault.add_parser("link", help="the network between the core and IoT Core"))
    link.add_argument("action", choices=["down", "up", "flap", "limit", "clear", "status"])
    link.add_argument("--down", type=float, default=2.0, help="flap: seconds down")
    link.add_argument("--up", type=float, default=5.0, help="flap: seconds up")
    link.add_argument("--bandwidth", type=float, help="limit: bytes per second each way (0: none)")
    link.add_argument("--latency", type=float, help="limit: milliseconds each way")
    link.set_defaults(func=cmd_fault_link)
    comp = with_root(fault.add_parser("component", help="SIGKILL a component's processes"))
    comp.add_argument("action", choices=["kill"])
    comp.add_argument("-n", "--name", required=True)
    comp.set_defaults(func=cmd_fault_component)
    core = with_root(fault.add_parser("core", help="restart the core (components restart, the memory spool is lost)"))
    core.add_argument("action", choices=["restart"])
    core.add_argument("--kill", action="store_true", help="SIGKILL the core, then start it again")
    core.set_defaults(func=cmd_fault_core)
    broker = fault.add_parser("broker", help="the IoT Core stand-in broker")
    broker.add_argument("action", choices=["restart", "stop", "start", "status"])
    broker.add_argument("--cloud", required=True, metavar="DIR")
    broker.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    broker.set_defaults(func=cmd_fault_broker)

    cloud = sub.add_parser("cloud", help="(localgg) the AWS side: IoT Core stand-in, shadows, recorder"
                           ).add_subparsers(dest="action", required=True)
    cstart = cloud.add_parser("start", help="run the broker and the cloud shadow service in the foreground")
    cstart.add_argument("--dir", required=True)
    cstart.add_argument("--port", type=int, default=0, help="the broker's TLS port (default: a free one)")
    cstart.add_argument("--no-limits", action="store_true", help="no IoT Core packet size limit")
    cstart.add_argument("--broker", choices=["mosquitto", "amqtt", "auto"], default="mosquitto",
                        help="auto: mosquitto if installed, else the pip-installable amqtt (MQTT 3.1.1)")
    cstart.set_defaults(func=cmd_cloud_start)
    record = cloud.add_parser("record", help="store every message on some topics with its arrival time "
                              "(any number of recorders may run at once; a lost connection is said on stderr)")
    record.add_argument("--cloud", required=True, metavar="DIR")
    record.add_argument("--topic", action="append", required=True, metavar="FILTER",
                        help="an MQTT topic filter ('dt/#'); repeat it to record several")
    record.add_argument("--db", required=True, help="the SQLite file (table messages)")
    record.set_defaults(func=cmd_cloud_record)
    publish = cloud.add_parser("publish", help="publish one message as the cloud")
    publish.add_argument("--cloud", required=True, metavar="DIR")
    publish.add_argument("--topic", required=True)
    publish.add_argument("--payload", required=True)
    publish.add_argument("--qos", type=int, default=1, choices=[0, 1])
    publish.add_argument("--retain", action="store_true")
    publish.set_defaults(func=cmd_cloud_publish)

    shadow = cloud.add_parser("shadow", help="a device shadow as the AWS side sees it (aws iot-data "
                              "get-thing-shadow / update-thing-shadow)").add_subparsers(dest="action", required=True)
    for action, text in (("get", "the shadow document"), ("update", "update it (desired, or reported)"),
                         ("status", "(localgg) the document as a person reads it: when the device last "
                                    "reported, each reported section, the delta")):
        op = shadow.add_parser(action, help=text)
        op.add_argument("--cloud", required=True, metavar="DIR")
        op.add_argument("--thing-name", required=True)
        op.add_argument("--shadow-name", help="a named shadow (default: the classic shadow)")
        if action == "update":
            op.add_argument("--payload", required=True, help="the request document, JSON or file://PATH")
        if action != "status":
            op.add_argument("outfile", nargs="?", help="where the document goes (default: stdout)")
        op.set_defaults(func=cmd_cloud_shadow)

    job = cloud.add_parser("job", help="AWS IoT Jobs as the AWS side sees them (aws iot create-job, list-jobs, "
                           "describe-job[-execution], cancel-job)").add_subparsers(dest="action", required=True)
    for action, text in (("create", "create a job for things: their executions are QUEUED and notified"),
                         ("list", "the jobs, newest first"),
                         ("describe", "a job, or with --thing-name its execution on that thing"),
                         ("cancel", "cancel a job: QUEUED executions (and IN_PROGRESS ones with --force)")):
        op = job.add_parser(action, help=text)
        op.add_argument("--cloud", required=True, metavar="DIR")
        if action != "list":
            op.add_argument("--job-id", required=True)
        if action in ("create", "describe"):
            op.add_argument("--thing-name", action="append", metavar="T",
                            help="the target thing (create: repeat it for more things)")
        if action == "create":
            op.add_argument("--document", required=True, help="the job document, JSON or file://PATH")
            op.add_argument("--description")
        if action == "cancel":
            op.add_argument("--force", action="store_true", help="cancel IN_PROGRESS executions too")
        op.set_defaults(func=cmd_cloud_job)

    logs = sub.add_parser("logs", help="component and core logs").add_subparsers(dest="action", required=True)
    get = with_root(logs.add_parser("get"))
    get.add_argument("-lf", "--log-file", action="append")
    get.add_argument("--component", action="append", help="(localgg) <root>/logs/<NAME>.log")
    get.add_argument("-fol", "--follow", action="store_true")
    get.set_defaults(func=cmd_logs_get)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"localgg: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an IPC error from the core: print it as greengrass-cli does
        print(f"localgg: {type(exc).__name__}: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
