"""A paho-mqtt client for the cloud side's tools and for tests: an MQTT peer written by
someone else than the core's own client, authenticated by a certificate from the cloud's CA."""

from __future__ import annotations

import json
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .pki import CertificateAuthority


def endpoint(cloud_dir: Path) -> dict:
    return json.loads((cloud_dir / "endpoint.json").read_text())


def client_files(cloud_dir: Path, name: str) -> tuple[Path, Path, Path]:
    folder = cloud_dir / "clients" / name
    files = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    if not all(f.exists() for f in files):
        CertificateAuthority.load_or_create(cloud_dir / "pki").issue_client(folder, name, "cert.pem", "key.pem",
                                                                            "ca.pem")
    return files


def connect(cloud_dir: Path, name: str, on_message=None, timeout: float = 10.0) -> paho.Client:
    """A connected MQTT 5 client with its network loop running; `on_message(client, userdata, message)`."""
    info = endpoint(cloud_dir)
    cert, key, ca = client_files(cloud_dir, name)
    protocol = paho.MQTTv311 if info.get("mqtt") == "mqtt3" else paho.MQTTv5
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
    client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()
    topics: dict[str, int] = {}
    client.user_data_set(topics)

    def on_connect(c, userdata, flags, rc, properties) -> None:
        if rc.is_failure:
            return
        for topic, qos in userdata.items():  # after a broker restart the session is gone: subscribe again
            c.subscribe(topic, qos)
        connected.set()
    client.on_connect = on_connect
    if on_message is not None:
        client.on_message = on_message
    client.reconnect_delay_set(min_delay=0.1, max_delay=2)
    client.connect(info["host"], info["port"], keepalive=30)
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        raise ConnectionError(f"{name} could not connect to the broker at {info['host']}:{info['port']}")
    return client


def subscribe(client: paho.Client, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
    """Subscribe and wait for the SUBACK; the subscription is made again after every reconnect."""
    client.user_data_get()[topic] = qos
    done = threading.Event()
    previous = client.on_subscribe
    client.on_subscribe = lambda c, u, mid, codes, p: done.set()
    client.subscribe(topic, qos)
    if not done.wait(timeout):
        raise TimeoutError(f"no SUBACK for {topic}")
    client.on_subscribe = previous
