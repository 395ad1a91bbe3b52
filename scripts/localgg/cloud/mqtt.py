"""A paho-mqtt client for the cloud side's tools and for tests: an MQTT peer written by
someone else than the core's own client, authenticated by a certificate from the cloud's CA."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import threading
from pathlib import Path
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .pki import CertificateAuthority


def endpoint(cloud_dir: Path) -> dict:
    return json.loads((cloud_dir / "endpoint.json").read_text())


FILES = ("cert.pem", "key.pem", "ca.pem")


def client_files(cloud_dir: Path, name: str) -> tuple[Path, Path, Path]:
    """The certificate, key and CA of the cloud tool `name` (issued on first use).

    Issued into a private folder renamed into place, so that two processes starting at once
    never read one's certificate with the other's key."""
    clients = cloud_dir / "clients"
    folder = clients / name
    files = tuple(folder / f for f in FILES)
    for _ in range(2):
        if all(f.exists() for f in files):
            return files
        clients.mkdir(parents=True, exist_ok=True)
        fresh = clients / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        CertificateAuthority.load_or_create(cloud_dir / "pki").issue_client(fresh, name, *FILES)
        try:
            os.rename(fresh, folder)  # atomic; fails if another process got there first
        except OSError:
            shutil.rmtree(fresh, ignore_errors=True)
            if not all(f.exists() for f in files):  # a folder left half-written by an older localgg
                shutil.rmtree(folder, ignore_errors=True)
    if not all(f.exists() for f in files):
        raise OSError(f"cannot issue a client certificate into {folder}")
    return files


def unique_client_id(name: str) -> str:
    """A client id no other process uses: the broker closes a connection when another one
    connects with its client id ("already connected, closing old connection")."""
    return f"{name}-{os.getpid()}-{secrets.token_hex(3)}"


class _Session:
    """What a client must do again after every reconnection, and the SUBACKs it waits for."""

    def __init__(self) -> None:
        self.topics: dict[str, int] = {}
        self.acked: set[int] = set()
        self.resubscribing: set[int] = set()
        self.changed = threading.Condition()


def connect(cloud_dir: Path, name: str, on_message=None, timeout: float = 10.0, client_id: str | None = None,
            on_state: Callable[[bool, str], None] | None = None) -> paho.Client:
    """A connected MQTT 5 client with its network loop running; `on_message(client, userdata, message)`.

    `name` is the certificate's identity (the MQTT username); `client_id` defaults to `name`.
    paho reconnects by itself and the subscriptions are made again; `on_state(connected,
    reason)` is called on every later disconnection, and on every reconnection once the
    broker has acknowledged the subscriptions again."""
    info = endpoint(cloud_dir)
    cert, key, ca = client_files(cloud_dir, name)
    protocol = paho.MQTTv311 if info.get("mqtt") == "mqtt3" else paho.MQTTv5
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or name, protocol=protocol)
    client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()
    session = _Session()
    client.user_data_set(session)

    def on_connect(c, userdata: _Session, flags, rc, properties) -> None:
        if rc.is_failure:
            if on_state is not None and connected.is_set():
                on_state(False, f"connection refused: {rc}")
            return
        with userdata.changed:
            topics = dict(userdata.topics)
        # after a broker restart the session is gone: subscribe again
        mids = {c.subscribe(topic, qos)[1] for topic, qos in topics.items()}
        with userdata.changed:
            userdata.resubscribing = mids - userdata.acked  # a SUBACK may have come already
            userdata.acked -= mids
            resubscribed = not userdata.resubscribing
        if resubscribed and on_state is not None and connected.is_set():
            on_state(True, "reconnected")
        connected.set()

    def on_subscribe(c, userdata: _Session, mid, codes, properties) -> None:
        with userdata.changed:
            if mid in userdata.resubscribing:
                userdata.resubscribing.discard(mid)
                done = not userdata.resubscribing
            else:
                userdata.acked.add(mid)
                done = False
            userdata.changed.notify_all()
        if done and on_state is not None:
            on_state(True, "reconnected")

    def on_disconnect(c, userdata, flags, rc, properties) -> None:
        if on_state is not None and connected.is_set():
            on_state(False, str(rc))
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
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
    session: _Session = client.user_data_get()
    with session.changed:
        session.topics[topic] = qos
    _, mid = client.subscribe(topic, qos)
    with session.changed:
        if not session.changed.wait_for(lambda: mid in session.acked, timeout):
            raise TimeoutError(f"no SUBACK for {topic}")
        session.acked.discard(mid)  # paho reuses message ids
