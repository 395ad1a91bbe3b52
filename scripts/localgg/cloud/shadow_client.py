"""A device shadow request as the AWS side makes it, over the cloud's shadow MQTT topics:
what `localgg cloud shadow get|update` uses (the shapes of `aws iot-data get-thing-shadow` and
`update-thing-shadow`: the document of the shadow, or the rejection with its code).

    ok, doc = request(Path("cloud"), "pi-1", "backfill", "get")
    ok, doc = request(Path("cloud"), "pi-1", "backfill", "update", {"state": {"desired": {...}}})

The reply is matched by a clientToken of its own (a request document without one gets one);
`ok` is False for `.../rejected` ({"code": 404, "message": "No shadow exists with name: ..."})."""

from __future__ import annotations

import json
import queue
import secrets
from pathlib import Path
from typing import Optional

from . import mqtt
from .shadow_service import prefix

OPERATIONS = ("get", "update", "delete")


def request(cloud_dir: Path, thing: str, name: str, operation: str, document: Optional[dict] = None,
            timeout: float = 10.0) -> tuple[bool, dict]:
    if operation not in OPERATIONS:
        raise ValueError(f"operation: one of {', '.join(OPERATIONS)}")
    token = secrets.token_hex(8)
    body = dict(document or {})
    ours = "clientToken" not in body          # ours only for matching: not shown
    body.setdefault("clientToken", token)
    token = body["clientToken"]
    base = f"{prefix(thing, name)}/{operation}"
    replies: queue.Queue = queue.Queue()

    def on_message(client, userdata, message) -> None:
        try:
            doc = json.loads(bytes(message.payload))
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("clientToken") == token:
            replies.put((message.topic.endswith("/accepted"), doc))

    client = mqtt.connect(cloud_dir, "localgg-cli-shadow", on_message=on_message,
                          client_id=mqtt.unique_client_id("localgg-cli-shadow"))
    try:
        for outcome in ("accepted", "rejected"):
            mqtt.subscribe(client, f"{base}/{outcome}", 1, timeout)
        client.publish(base, json.dumps(body).encode(), qos=1).wait_for_publish(timeout)
        try:
            ok, doc = replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer on {base}/accepted or /rejected in {timeout:g} s "
                               "(is `localgg cloud start` running?)") from None
    finally:
        client.loop_stop()
        client.disconnect()
    if ours:
        doc.pop("clientToken", None)
    return ok, doc


def newest(metadata: object) -> Optional[float]:
    """The newest `timestamp` under a shadow's metadata subtree (when that part was last reported)."""
    if not isinstance(metadata, dict):
        return None
    found = [metadata["timestamp"]] if isinstance(metadata.get("timestamp"), (int, float)) else []
    found += [t for t in (newest(v) for k, v in metadata.items() if k != "timestamp") if t is not None]
    return max(found) if found else None


def _flat(value: object, prefix: str = "") -> list[str]:
    """key=value for every scalar under value (nested keys joined by dots)."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in _flat(inner, f"{prefix}{key}.")]
    return [f"{prefix[:-1]}={json.dumps(value)}"]


def summary(doc: dict, now: float, width: int = 100) -> list[str]:
    """A shadow document as a person reads it: when the device last reported, each reported
    section with its time and values, and what the desired state still waits for (the delta)."""
    import time
    state, metadata = doc.get("state") or {}, doc.get("metadata") or {}
    reported, meta = state.get("reported") or {}, metadata.get("reported") or {}

    def when(stamp: Optional[float]) -> str:
        if stamp is None:
            return "never"
        return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(stamp))} UTC ({max(0, now - stamp):.0f} s ago)"

    lines = [f"version {doc.get('version', '?')}; the device last reported {when(newest(meta))}"]
    for section in sorted(reported):
        lines.append(f"reported.{section}  (at {when(newest(meta.get(section)))})")
        values = _flat(reported[section]) if isinstance(reported[section], dict) else [json.dumps(reported[section])]
        line = "   "
        for item in values:
            if len(line) + len(item) + 1 > width:
                lines.append(line)
                line = "   "
            line += " " + item
        if line.strip():
            lines.append(line)
    delta = state.get("delta") or {}
    lines.append("delta (desired, not yet reported): " + (", ".join(_flat(delta)) if delta else "none"))
    return lines
