"""The store's end-to-end world: real processes, real faults, a cloud that remembers.

    world = World(short_tmp("bfs-"))          # `localgg cloud start` and `localgg start --cloud` as processes
    world.deploy(CONFIG)                      # the build's bundle with the CLI (`localgg deployment create`)
    world.fault("link", "down")               # `localgg fault ...`, exactly as a person types it
    mark = world.highest()                    # {run: highest seq seen so far}
    ...
    world.assert_delivered(mark, world.highest())   # every (run, seq) produced since is in the cloud
    world.close()

- The core runs as its own process (`localgg start`), so `fault core restart --kill` kills a
  real process and the reaper kills its components, as on a device.
- `local` (LocalWatch) follows local pub/sub topics as the greengrass-cli does (an IPC client
  authenticated as aws.greengrass.Cli) and reconnects by itself after a core restart.
- `cloud` (CloudLog) is a cloud-side MQTT subscriber with a persistent session (MQTT 5,
  clean start once, session expiry one hour) on mosquitto with persistence: it receives
  what IoT Core accepted even across a broker restart, as an IoT rule would. (localgg's
  Recorder starts a clean session at each reconnection and says it may miss messages.)
- "Produced": a sensor run numbers its readings 0, 1, 2, ... without gaps, so what a run
  produced is 0..the highest seq seen of it anywhere (raw topic, acknowledgements, cloud);
  every run the sensor started is in its log ("run <id> of <thing>").
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Optional

from conftest import DEVICE_ENV, wait_for
from pipeline_harness import BUNDLE, CORRECTION, SENSOR, STORE, THING, VERSION, built
from store_and_forward import packer

RAW, CORRECTED, ACKS = "backfill/readings/raw", "backfill/readings/corrected", "backfill/acks"
READINGS_TOPIC = f"dt/backfill/{THING}/readings"
SHADOW_DOCUMENTS = f"$aws/things/{THING}/shadow/name/backfill/update/documents"
COMPONENTS = (SENSOR, CORRECTION, STORE)
FAST_MQTT = {"minimumReconnectDelaySeconds": 0.1, "maximumReconnectDelaySeconds": 0.5,
             "keepAliveTimeoutMs": 5000, "operationTimeoutMs": 5000}
RUN_LINE = re.compile(r"run ([0-9a-f]{16}) of ")

Key = tuple[str, int]


class LocalWatch:
    """Local pub/sub topics seen as greengrass-cli sees them; reconnects after a core restart.

    Every message is kept with the wall time it arrived: `got(topic)` -> [(time, doc)]."""

    def __init__(self, root: Path, topics: Iterable[str]) -> None:
        self.root, self.topics = root, list(topics)
        self._lock = threading.Lock()
        self.messages: dict[str, list] = {topic: [] for topic in self.topics}
        self.connections = 0
        self._client = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._lost.set()
        self._thread = threading.Thread(target=self._keep_connected, name="local watch", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return not self._lost.is_set()

    def _keep_connected(self) -> None:
        from localgg.cli import connect
        while not self._stop.is_set():
            if not self._lost.wait(0.2):
                continue
            self._drop()
            try:
                client = connect(self.root)
                for topic in self.topics:
                    client.subscribe_to_topic(topic=topic, on_stream_event=self._on_event(topic),
                                              on_stream_closed=self._lost.set)
            except Exception:  # the core is (re)starting: try again shortly
                self._stop.wait(0.2)
                continue
            self._client = client
            self.connections += 1
            self._lost.clear()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _on_event(self, topic: str):
        def handle(event) -> None:
            if event.json_message is not None:
                doc = event.json_message.message
            else:
                try:
                    doc = json.loads(bytes(event.binary_message.message))
                except ValueError:
                    doc = bytes(event.binary_message.message)
            with self._lock:
                self.messages[topic].append((time.time(), doc))
        return handle

    def got(self, topic: str) -> list:
        with self._lock:
            return list(self.messages[topic])

    def docs(self, topic: str) -> list:
        return [doc for _, doc in self.got(topic)]

    def publish_json(self, topic: str, doc: object) -> None:
        from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage
        message = PublishMessage(json_message=JsonMessage(message=doc))
        self._live().publish_to_topic(topic=topic, publish_message=message)

    def publish_binary(self, topic: str, payload: bytes) -> None:
        from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage
        self._live().publish_to_topic(topic=topic,
                                      publish_message=PublishMessage(binary_message=BinaryMessage(message=payload)))

    def _live(self):
        return wait_for(lambda: self._client if self.connected else None, 60, message="the CLI's IPC connection")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._drop()


class CloudLog:
    """A cloud-side subscriber with a persistent session: every message IoT Core accepted on
    `topics`, with its arrival time, across broker restarts (mosquitto keeps the session)."""

    def __init__(self, cloud_dir: Path, topics: Iterable[str], name: str = "backfill-e2e-cloud") -> None:
        import ssl

        import paho.mqtt.client as paho
        from localgg.cloud import mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.topics = list(topics)
        self._lock = threading.Lock()
        self.messages: list[tuple[str, bytes, float]] = []
        self._decoded = 0
        self._readings: dict[Key, list[dict]] = {}
        self.connects = 0
        info = mqtt.endpoint(cloud_dir)
        cert, key, ca = mqtt.client_files(cloud_dir, name)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=mqtt.unique_client_id(name),
                                  protocol=paho.MQTTv5)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key),
                            tls_version=ssl.PROTOCOL_TLS_CLIENT)
        subscribed = threading.Event()

        def on_connect(client, userdata, flags, rc, properties) -> None:
            if rc.is_failure:
                return
            self.connects += 1
            if not flags.session_present:     # a new session (first time, or the broker lost it)
                client.subscribe([(topic, 1) for topic in self.topics])

        def on_subscribe(client, userdata, mid, codes, properties) -> None:
            subscribed.set()

        def on_message(client, userdata, message) -> None:
            with self._lock:
                self.messages.append((message.topic, bytes(message.payload), time.time()))
        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = 3600
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self.client.connect(info["host"], info["port"], keepalive=30,
                            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY, properties=connect)
        self.client.loop_start()
        if not subscribed.wait(15):
            raise ConnectionError("the cloud log could not subscribe")

    def payloads(self, topic: str) -> list[tuple[bytes, float]]:
        with self._lock:
            return [(payload, at) for t, payload, at in self.messages if t == topic]

    def readings(self) -> dict[Key, list[dict]]:
        """Every copy of every reading IoT Core received in the store's batches, by (run, seq)
        (decoded with packer.decode, as a consumer does; each batch once)."""
        with self._lock:
            fresh = [(payload, at) for topic, payload, at in self.messages[self._decoded:] if topic == READINGS_TOPIC]
            self._decoded = len(self.messages)
        for payload, at in fresh:
            for reading in packer.decode(payload):
                reading["received_at"] = at
                self._readings.setdefault((reading["run"], int(reading["seq"])), []).append(reading)
        return {key: list(copies) for key, copies in self._readings.items()}

    def shadow_documents(self) -> list[dict]:
        return [json.loads(payload) for payload, _ in self.payloads(SHADOW_DOCUMENTS)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def effective(copies: list[dict]) -> dict:
    """The copy a consumer keeps (README: a copy carrying t_orig was re-timed and replaces one without it)."""
    retimed = [c for c in copies if c.get("t_orig") is not None]
    return (retimed or copies)[-1]


class World:
    def __init__(self, base: Path, as_device: bool = False) -> None:
        """as_device: the components run as ggc_user:ggc_group (as a nucleus installed as root runs
        them) with the system's python3 first on the core's PATH, as on a Pi; otherwise as the
        user running the tests, with the project's Python."""
        self.base, self.cloud_dir, self.root = base, base / "cloud", base / "gg"
        if as_device:                             # base: conftest.device_tmp, reachable by that user
            self.env = dict(os.environ, **DEVICE_ENV)
        else:
            self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        self.procs: list[subprocess.Popen] = []
        self.local: Optional[LocalWatch] = None
        self.cloud: Optional[CloudLog] = None
        try:
            self.spawn("cloud.out", "cloud", "start", "--dir", str(self.cloud_dir))
            wait_for(lambda: (self.cloud_dir / "control.sock").exists(), 30, message="the cloud")
            self.cloud = CloudLog(self.cloud_dir, ["dt/#", SHADOW_DOCUMENTS])
            self.spawn("core.out", "start", "--root", str(self.root), "--thing", THING, "--cloud", str(self.cloud_dir))
            wait_for(self.responds, 90, message="the core")
            self.local = LocalWatch(self.root, [RAW, ACKS, SHADOW_DOCUMENTS])
        except BaseException:
            self.close()
            raise

    # -- processes and the CLI ----------------------------------------------------------------
    def spawn(self, log: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "localgg", *args], env=self.env, cwd=self.base,
                                stdout=open(self.base / log, "a"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([sys.executable, "-m", "localgg", *args], env=self.env, cwd=self.base,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"localgg {' '.join(args)}:\n{result.stdout}\n{result.stderr}\n{self.log_tail()}"
        return result.stdout

    def fault(self, *args: str) -> str:
        """`localgg fault ARGS --root ROOT` (or `--cloud CLOUD` for the broker)."""
        where = ["--cloud", str(self.cloud_dir)] if args[0] == "broker" else ["--root", str(self.root)]
        return self.cli("fault", *args, *where)

    def control(self, request: dict) -> dict:
        """One request on the core's control socket (what `localgg status` and `fault` use)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(self.root / "control.sock"))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data or b"{}")

    def responds(self) -> bool:
        try:
            return bool((self.root / "localgg.pid").exists() and self.control({"cmd": "status"}).get("pid"))
        except (OSError, ValueError):
            return False

    def status(self) -> dict:
        return self.control({"cmd": "status"})

    def online(self) -> bool:
        try:
            return bool(self.status()["iotcore"]["online"])
        except (OSError, ValueError, KeyError):     # the core is restarting
            return False

    def running(self, names: Iterable[str] = COMPONENTS) -> bool:
        try:
            states = self.status()["components"]
        except (OSError, ValueError, KeyError):
            return False
        return all(states.get(name) == "RUNNING" for name in names)

    def deploy(self, config: dict, timeout: float = 600) -> str:
        """The bundle from the build, with the Nucleus, ShadowManager and the three components as
        roots (`--update-config` reaches root components only, as on the nucleus)."""
        recipes, artifacts = built()
        roots = {BUNDLE: VERSION, SENSOR: VERSION, CORRECTION: VERSION, STORE: VERSION,
                 "aws.greengrass.Nucleus": "2.18.2", "aws.greengrass.ShadowManager": "2.3.12"}
        merges = [arg for name, version in roots.items() for arg in ("--merge", f"{name}={version}")]
        return self.cli("deployment", "create", "--root", str(self.root), "--recipeDir", str(recipes),
                        "--artifactDir", str(artifacts), *merges, "--update-config", json.dumps(config),
                        "--wait", str(int(timeout)), timeout=timeout + 30)

    def configure(self, component: str, merge: dict, timeout: float = 30) -> None:
        """A deployment that changes one component's configuration (applied live, no restart),
        then waits until the component has it in effect: its last good settings (settings.json
        in its work folder) hold every merged value. A setting the component refused (a value
        out of range, or at odds with another key) fails here with the component's reason, not
        later as a test that ran under settings other than the ones it set."""
        self.deploy({component: {"MERGE": merge}})
        path = self.root / "work" / component / "settings.json"
        if not path.exists():                 # a component without followed settings
            return

        def differing() -> dict:
            try:
                effective = json.loads(path.read_text())
            except (OSError, ValueError):    # being replaced: read it again
                return {key: "?" for key in merge}
            return {key: effective.get(key) for key, value in merge.items() if effective.get(key) != value}
        try:
            wait_for(lambda: not differing(), timeout, interval=0.1, message=f"{component} to apply {merge}")
        except AssertionError as error:
            log = self.root / "logs" / f"{component}.log"
            refused = [line for line in log.read_text(errors="replace").splitlines() if "refused" in line]
            raise AssertionError(f"{error}: in effect {differing()}; the component said: "
                                 f"{refused[-3:] or 'nothing about it'}") from None

    def pids(self, name: str) -> set[int]:
        """The processes the core runs for a component (their working directory is its work folder)."""
        work = str((self.root / "work" / name).resolve())
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "cwd") == work:
                        found.add(int(entry.name))
                except OSError:
                    continue
        return found

    def restarted(self, name: str, old: set[int]) -> bool:
        now = self.pids(name)
        return bool(now) and not (now & old) and self.running([name])

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted((self.root / "logs").glob("*.log")):
            out.append(f"--- {path.name}")
            out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    # -- the store's database -----------------------------------------------------------------
    def store_db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.root / 'work' / STORE / 'store.db'}?mode=ro", uri=True, timeout=10)

    def store_query(self, sql: str, args: tuple = ()) -> list:
        db = self.store_db()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def backlog(self) -> int:
        return self.store_query("SELECT COUNT(*) FROM readings")[0][0]

    def counters(self) -> dict:
        rows = self.store_query("SELECT value FROM meta WHERE key = 'counters'")
        return json.loads(rows[0][0]) if rows else {}

    # -- what was produced and what arrived -----------------------------------------------------
    def logged_runs(self) -> list[str]:
        """Every run the sensor started, in order (its log says `run <id> of <thing>` at start)."""
        path = self.root / "logs" / f"{SENSOR}.log"
        if not path.exists():
            return []
        return RUN_LINE.findall(path.read_text(errors="replace"))

    def raw(self) -> dict[Key, tuple[float, dict]]:
        """(arrival time, reading) of every raw reading seen on local pub/sub (the first copy)."""
        out: dict[Key, tuple[float, dict]] = {}
        for at, doc in self.local.got(RAW):
            out.setdefault((doc["run"], int(doc["seq"])), (at, doc))
        return out

    def acked(self) -> dict[str, int]:
        """{run: the highest seq the store acknowledged} for the sensor's runs (this device's)."""
        top: dict[str, int] = {}
        for doc in self.local.docs(ACKS):
            if doc.get("device") == THING:
                top[doc["run"]] = max(top.get(doc["run"], -1), int(doc["seq"]))
        return top

    def highest(self) -> dict[str, int]:
        """{run: the highest seq seen of it anywhere}: the run produced 0..that."""
        top: dict[str, int] = {}
        keys = list(self.raw()) + list(self.cloud.readings()) + list(self.acked().items())
        for run, seq in keys:
            top[run] = max(top.get(run, -1), seq)
        return top

    def current_run(self) -> str:
        return self.local.docs(RAW)[-1]["run"]

    def expected(self, mark: dict[str, int], end: dict[str, int]) -> set[Key]:
        """(run, seq) produced after `mark` up to `end` (both from highest())."""
        return {(run, seq) for run, top in end.items() for seq in range(mark.get(run, -1) + 1, top + 1)}

    def unacked_tail(self, runs: Iterable[str], end: dict[str, int]) -> set[Key]:
        """The readings of ended `runs` above the highest seq the store acknowledged: what the
        sensor still held (in its memory only) when it was stopped or killed."""
        acked = self.acked()
        return {(run, seq) for run in runs for seq in range(acked.get(run, -1) + 1, end.get(run, -1) + 1)}

    def missing(self, keys: set[Key]) -> set[Key]:
        return keys - set(self.cloud.readings())

    def wait_delivered(self, mark: dict[str, int], end: dict[str, int], timeout: float = 90,
                       exempt: set[Key] = frozenset()) -> set[Key]:
        """Wait until every (run, seq) produced between mark and end, but `exempt`, is in the
        cloud; fail with what is missing. Returns the expected set."""
        keys = self.expected(mark, end) - set(exempt)
        try:
            wait_for(lambda: not self.missing(keys), timeout, interval=0.25, message="every reading in the cloud")
        except AssertionError:
            gone = sorted(self.missing(keys))
            raise AssertionError(f"{len(gone)} of {len(keys)} readings never reached the cloud: "
                                 f"{summarize(gone)}\n{self.log_tail()}") from None
        return keys

    def new_runs_seen(self, before: Iterable[str]) -> None:
        """Every run the sensor started since `before` left readings somewhere (none vanished whole)."""
        top = self.highest()
        silent = [run for run in self.logged_runs() if run not in set(before) and run not in top]
        assert not silent, f"sensor runs that left no reading anywhere: {silent}"

    def wait_drained(self, timeout: float = 60) -> None:
        wait_for(lambda: self.backlog() == 0, timeout, interval=0.25, message="the store's backlog to be confirmed")

    def wait_flowing(self, count: int = 10, timeout: float = 120) -> None:
        """Fresh readings reach the cloud (the pipeline is up and online)."""
        start = time.time()
        wait_for(lambda: len([1 for copies in self.cloud.readings().values()
                              if copies[0]["received_at"] > start]) >= count,
                 timeout, interval=0.25, message=f"readings flowing to the cloud\n{self.log_tail()}")

    def produce(self, count: int, timeout: Optional[float] = None) -> None:
        """Wait until the sensor has published `count` more raw readings (10 Hz: count / 10 s)."""
        seen = set(self.raw())

        def new() -> int:
            return len(set(self.raw()) - seen)      # the sensor's resends of older seqs do not count
        wait_for(lambda: new() >= count, timeout or count / 5 + 30, interval=0.1, message=f"{count} new raw readings")

    def close(self) -> None:
        if self.local is not None:
            self.local.close()
        pid_file = self.root / "localgg.pid"
        if pid_file.exists():  # a core restarted by `fault core restart --kill` is no child of ours
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
                wait_for(lambda: not pid_file.exists(), 40)
            except (ProcessLookupError, ValueError, AssertionError):
                pass
        if self.cloud is not None:
            self.cloud.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def summarize(keys: list[Key]) -> str:
    """[(run, seq)] as runs with seq ranges: "1a2b3c4d: 5-9, 12"."""
    by_run: dict[str, list[int]] = {}
    for run, seq in sorted(keys):
        by_run.setdefault(run, []).append(seq)
    parts = []
    for run, seqs in by_run.items():
        ranges, start = [], seqs[0]
        for a, b in zip(seqs, seqs[1:] + [None]):
            if b != a + 1:
                ranges.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        parts.append(f"{run}: {', '.join(ranges)}")
    return "; ".join(parts)
