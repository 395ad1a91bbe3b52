"""The cloud shadow service: AWS IoT Core's device shadows, over the shadow MQTT topics.

Usage::

    service = ShadowService(Path("cloud"))   # needs the cloud's broker running
    service.start()
    service.document("thing", "")            # a Shadow, or None (classic shadow: name "")
    service.stop()

Requests on `$aws/things/<thing>/shadow[/name/<name>]/{update,get,delete}` are answered on
`.../accepted` and `.../rejected`, plus `update/delta` (when desired and reported differ)
and `update/documents`, with the CLOUD flavour of shadow/document.py (IoT Core's rules:
"Invalid JSON", versions that continue after a delete, ...). Shadows are kept in
`<cloud>/shadows.db`. Requests are handled one at a time, in arrival order.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path

from .. import limits
from ..shadow import document as doc
from . import mqtt

log = logging.getLogger("localgg.cloud.shadows")

REQUEST = re.compile(r"^\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(update|get|delete)$")
SUBSCRIPTIONS = [f"$aws/things/+/shadow/{op}" for op in ("update", "get", "delete")] + \
                [f"$aws/things/+/shadow/name/+/{op}" for op in ("update", "get", "delete")]


def prefix(thing: str, name: str) -> str:
    return f"$aws/things/{thing}/shadow" + (f"/name/{name}" if name else "")


class ShadowStore:
    """shadows.db: one row per (thing, name); a deleted shadow keeps its last version."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS shadows (thing TEXT NOT NULL, name TEXT NOT NULL, "
                         "state TEXT, metadata TEXT, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, "
                         "PRIMARY KEY (thing, name))")

    def load(self, thing: str, name: str) -> tuple[doc.Shadow | None, int | None]:
        """The live shadow (or None) and the tombstone version of a deleted one (None if none)."""
        row = self._db.execute("SELECT state, metadata, version, deleted FROM shadows WHERE thing=? AND name=?",
                               (thing, name)).fetchone()
        if row is None:
            return None, None
        state, metadata, version, deleted = row
        if deleted:
            return None, version
        return doc.Shadow(json.loads(state), json.loads(metadata), version), None

    def save(self, thing: str, name: str, shadow: doc.Shadow) -> None:
        self._db.execute("INSERT OR REPLACE INTO shadows (thing, name, state, metadata, version, deleted) "
                         "VALUES (?,?,?,?,?,0)", (thing, name, json.dumps(shadow.state),
                                                   json.dumps(shadow.metadata), shadow.version))

    def delete(self, thing: str, name: str, version: int) -> None:
        self._db.execute("UPDATE shadows SET deleted=1, state=NULL, metadata=NULL, version=? WHERE thing=? AND name=?",
                         (version, thing, name))

    def close(self) -> None:
        self._db.close()


class ShadowService:
    def __init__(self, cloud_dir: Path, clock=time.time) -> None:
        self.cloud_dir = cloud_dir
        self.clock = clock
        self.store = ShadowStore(cloud_dir / "shadows.db")
        self._lock = threading.Lock()
        self._client = None

    def start(self) -> None:
        self._client = mqtt.connect(self.cloud_dir, "localgg-shadow-service", self._on_message)
        for topic in SUBSCRIPTIONS:
            mqtt.subscribe(self._client, topic, 1)

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
        with self._lock:
            self.store.close()

    def document(self, thing: str, name: str = "") -> doc.Shadow | None:
        with self._lock:
            return self.store.load(thing, name)[0]

    def _on_message(self, client, userdata, message) -> None:
        match = REQUEST.match(message.topic)
        if match is None:
            return
        thing, name, op = match.group(1), match.group(2) or "", match.group(3)
        with self._lock:
            try:
                replies = self.handle(thing, name, op, message.payload)
            except Exception:  # never let one request stop the service
                log.exception("shadow request on %s failed", message.topic)
                replies = [(f"{prefix(thing, name)}/{op}/rejected",
                            {"code": 500, "message": "Internal service failure", "timestamp": int(self.clock())})]
        for topic, body in replies:
            client.publish(topic, json.dumps(body, separators=(",", ":")).encode(), qos=1)

    def handle(self, thing: str, name: str, op: str, payload: bytes) -> list[tuple[str, dict]]:
        """The messages to publish for one request."""
        base = f"{prefix(thing, name)}/{op}"
        now = int(self.clock())
        token = _client_token(payload)
        current, deleted_version = self.store.load(thing, name)
        try:
            doc.validate_names(thing, name)
            if op == "update":
                result = doc.update(current, payload, now, flavour=doc.CLOUD, deleted_version=deleted_version)
                self.store.save(thing, name, result.shadow)
                out = [(f"{base}/accepted", result.accepted),
                       (f"{base}/documents", result.documents)]
                if result.delta is not None:
                    out.append((f"{base}/delta", result.delta))
                return out
            if current is None:
                raise doc.not_found(name)
            if op == "get":
                return [(f"{base}/accepted", doc.get_payload(current, now, flavour=doc.CLOUD, client_token=token))]
            self.store.delete(thing, name, doc.tombstone_version(current))
            body = doc.delete_payload(current, now, flavour=doc.CLOUD)
            if token is not None:
                body["clientToken"] = token
            return [(f"{base}/accepted", body)]
        except doc.ShadowError as error:
            if error.client_token is None and token is not None:
                error.client_token = token
            return [(f"{base}/rejected", doc.rejected_payload(error, now, flavour=doc.CLOUD))]


def _client_token(payload: bytes) -> str | None:
    try:
        body = limits.loads(payload or b"{}", doc.PARSE_DEPTH)
    except ValueError:
        return None
    token = body.get("clientToken") if isinstance(body, dict) else None
    return token if isinstance(token, str) else None
