"""The IoT Core stand-in: mosquitto on loopback with mutual TLS, started and stopped by us.

Usage::

    broker = Broker(Path("cloud"), port=0)   # 0: pick a free port
    broker.start()                            # returns once it accepts TLS connections
    broker.restart(); broker.stop()

Clients authenticate with a certificate from the cloud's CA, as devices do with IoT Core
(`require_certificate`, the certificate's CN is the MQTT username). With `limits=True`
(the default) packets above IoT Core's 128 KB payload quota (plus room for the topic and
headers) make mosquitto drop the connection. IoT Core's per-connection publish rate and
throughput quotas are enforced by the nucleus's own client (see iotcore/spool.py), not here.

`find_mosquitto()` looks on PATH and in /usr/sbin (scripts/dev.py installs the Debian
package when it is missing).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .pki import CertificateAuthority

IOT_CORE_MAX_PAYLOAD = 128 * 1024
PACKET_OVERHEAD = 1024  # topic (<= 256 B, 512 for reserved), packet id, MQTT 5 properties


class BrokerError(RuntimeError):
    pass


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise BrokerError(f"the broker exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise BrokerError(f"nothing listens on port {port} after {timeout} s")
            time.sleep(0.05)


class Broker:
    name = "mosquitto"
    mqtt_version = "mqtt5"

    def __init__(self, directory: Path, port: int = 0, limits: bool = True) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.limits = limits
        self.process: subprocess.Popen | None = None
        self.pki = directory / "pki"

    def _config(self) -> Path:
        ca = CertificateAuthority.load_or_create(self.pki)
        if not (self.pki / "server.crt").exists():
            ca.issue_server(self.pki, ["localhost", "127.0.0.1"])
        lines = [
            # mosquitto started as root drops to user "mosquitto", who cannot read our files
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.pki / 'ca.crt'}",
            f"certfile {self.pki / 'server.crt'}",
            f"keyfile {self.pki / 'server.key'}",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
            "persistence true",
            f"persistence_location {self.directory}/",
            f"log_dest file {self.directory / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "max_keepalive 1200",
            "set_tcp_nodelay true",
        ]
        if self.limits:
            lines.append(f"max_packet_size {IOT_CORE_MAX_PAYLOAD + PACKET_OVERHEAD}")
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 15.0) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError("mosquitto is not installed (Debian package mosquitto; "
                              "python3 scripts/dev.py installs it)")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._config()
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, timeout, self.process)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def binary(self) -> str | None:
        return find_mosquitto()

    def describe(self) -> str:
        """Which broker runs, for people: "mosquitto (/usr/sbin/mosquitto, MQTT 5)"."""
        return f"{self.name} ({self.binary() or 'not installed'}, MQTT {'3.1.1' if self.mqtt_version == 'mqtt3' else '5'})"


def find_amqtt() -> str | None:
    return shutil.which("amqtt", path=str(Path(sys.executable).parent)) or shutil.which("amqtt")


class EmbeddedBroker(Broker):
    """The fallback when mosquitto cannot be installed: amqtt (pip), TLS, MQTT 3.1.1 only.

    Client certificates are checked when presented but not required, and there is no
    packet size limit: the main job says so when it uses this."""

    name = "amqtt"
    mqtt_version = "mqtt3"

    def binary(self) -> str | None:
        return find_amqtt()

    def _config(self) -> Path:
        ca = CertificateAuthority.load_or_create(self.pki)
        if not (self.pki / "server.crt").exists():
            ca.issue_server(self.pki, ["localhost", "127.0.0.1"])
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "ssl": True,
                                            "cafile": str(self.pki / "ca.crt"),
                                            "certfile": str(self.pki / "server.crt"),
                                            "keyfile": str(self.pki / "server.key")}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        path = self.directory / "amqtt.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def start(self, timeout: float = 15.0) -> None:
        binary = find_amqtt()
        if binary is None:
            raise BrokerError("neither mosquitto nor amqtt is installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "amqtt.log", "a")
        self.process = subprocess.Popen([binary, "-c", str(self._config())], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for_port(self.port, timeout, self.process)
