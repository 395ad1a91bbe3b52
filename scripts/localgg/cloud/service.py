"""The cloud process: the IoT Core stand-in broker, the cloud shadow and Jobs services, a control socket.

Usage::

    cloud = Cloud(Path("cloud"))
    cloud.start()                          # writes cloud/endpoint.json
    cloud.provision(Path("root"), "thing") # a thing certificate, and root/config/cloud.json for the core
    cloud.broker.restart()                 # a fault
    cloud.stop()

`localgg cloud start --dir DIR` runs it in the foreground; `localgg fault broker ...`
talks to its control socket (`DIR/control.sock`, one JSON object per line, as the core's
control.py: `{"cmd": "broker", "action": "restart" | "stop" | "start" | "status", "kill": bool}`;
`localgg cloud job ...` sends `{"cmd": "jobs", "action": ...}` to jobs_service.py).
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from pathlib import Path

from .broker import Broker, BrokerError, EmbeddedBroker, find_mosquitto
from .pki import CertificateAuthority


def provision(cloud_dir: Path, root: Path, thing_name: str) -> None:
    """Register a thing: its certificate in `root` (like IoT Core's CreateKeysAndCertificate), and
    where IoT Core is in root/config/cloud.json. The cloud must have started once (endpoint.json)."""
    cloud_dir, root = cloud_dir.resolve(), root.resolve()
    endpoint = json.loads((cloud_dir / "endpoint.json").read_text())
    cert, key, root_ca = root / "thingCert.crt", root / "privKey.key", root / "rootCA.pem"
    if not (cert.exists() and key.exists() and root_ca.exists()):
        CertificateAuthority.load_or_create(cloud_dir / "pki").issue_client(root, thing_name)
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "cloud.json").write_text(json.dumps(
        {"cloud": str(cloud_dir), "host": endpoint["host"], "port": endpoint["port"], "cert": str(cert),
         "key": str(key), "ca": str(root_ca), "mqtt": endpoint.get("mqtt", "mqtt5")}))


class Cloud:
    def __init__(self, directory: Path, port: int = 0, limits: bool = True, broker: str = "mosquitto") -> None:
        """`broker`: "mosquitto", "amqtt" (the embedded fallback, MQTT 3.1.1), or "auto"
        (mosquitto when it is installed, else amqtt)."""
        self.directory = directory.resolve()
        if broker == "auto":
            broker = "mosquitto" if find_mosquitto() else "amqtt"
        if broker == "amqtt":
            self.broker: Broker = EmbeddedBroker(self.directory, port, limits=False)
        elif find_mosquitto() is None:
            raise BrokerError("mosquitto is not installed (Debian package mosquitto; python3 scripts/dev.py "
                              "installs it)")
        else:
            self.broker = Broker(self.directory, port, limits)
        self.shadows = None
        self.jobs = None
        self._control: socketserver.UnixStreamServer | None = None

    def start(self, shadows: bool = True, jobs: bool = True) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        (self.directory / "endpoint.json").write_text(json.dumps(
            {"host": "127.0.0.1", "port": self.broker.port, "ca": str(self.directory / "pki" / "ca.crt"),
             "pid": os.getpid(), "broker": self.broker.name, "mqtt": self.broker.mqtt_version}))
        if shadows:
            from .shadow_service import ShadowService
            self.shadows = ShadowService(self.directory)
            self.shadows.start()
        if jobs:
            from .jobs_service import JobsService
            self.jobs = JobsService(self.directory)
            self.jobs.start()

    def stop(self) -> None:
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        if self.shadows is not None:
            self.shadows.stop()
        if self.jobs is not None:
            self.jobs.stop()
        self.broker.stop()

    def provision(self, root: Path, thing_name: str) -> None:
        provision(self.directory, root, thing_name)

    # -- control ------------------------------------------------------------------------

    def serve_control(self) -> None:
        path = self.directory / "control.sock"
        path.unlink(missing_ok=True)
        cloud = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.readline() or b"{}")
                try:
                    reply = cloud.control(request)
                except Exception as exc:  # report, do not die
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                self.wfile.write(json.dumps(reply).encode() + b"\n")

        self._control = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        threading.Thread(target=self._control.serve_forever, daemon=True).start()

    def control(self, request: dict) -> dict:
        if request.get("cmd") == "jobs":
            if self.jobs is None:
                return {"error": "this cloud runs no Jobs service"}
            return self.jobs.control(request)
        if request.get("cmd") != "broker":
            return {"error": f"unknown command {request.get('cmd')!r}"}
        action = request.get("action")
        kill = bool(request.get("kill"))
        if action == "restart":
            self.broker.restart(kill=kill)
        elif action == "stop":
            self.broker.stop(kill=kill)
        elif action == "start":
            if not self.broker.running:
                self.broker.start()
        elif action not in (None, "status"):
            return {"error": f"unknown broker action {action!r}"}
        return {"broker": {"name": self.broker.name, "running": self.broker.running, "port": self.broker.port,
                           "pid": self.broker.process.pid if self.broker.running else None}}
