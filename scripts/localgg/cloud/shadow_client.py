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
