"""ShadowManager's sync with the cloud shadow service: one worker, one request at a time.

Usage (shadow/manager.py owns one)::

    syncer = ShadowSync(iotcore, settings, active, update_local, delete_local, clock)
    syncer.start(store)                               # the worker, and a full sync on each connection
    syncer.local_changed("thing", "", "update", accepted)   # a local write of a synced shadow
    await syncer.stop()

Rules (docs/shadow.md 4): with IoT Core online, a local update of a synced shadow is sent
to the cloud; cloud updates arriving on `update/accepted` are applied locally (through
`update_local`/`delete_local`, which publish as a local write does but are not sent back);
while offline nothing is queued, and every (re)connection clears the queue and runs a full
three-way sync (sync.py) of every synced shadow. A version conflict or a missed cloud
update runs a full sync of that shadow.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from .. import limits
from . import document as doc
from .document import ShadowRequestError
from .store import ShadowStore
from .sync import BOTH_WAYS, CLOUD_TO_DEVICE, DEVICE_TO_CLOUD, SyncRecord, full_sync

log = logging.getLogger("localgg.shadows")

RESPONSE = re.compile(r"^\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(update|get|delete)/(accepted|rejected)$")
SYNC_TOKEN = "localgg-shadow-sync-"
CLOUD_TIMEOUT = 10.0


def topic_prefix(thing: str | None, name: str | None) -> str:
    return f"$aws/things/{thing}/shadow" + (f"/name/{name}" if name else "")


@dataclass(frozen=True)
class SyncSettings:
    shadows: tuple[tuple[str, str], ...] = ()
    direction: str = BOTH_WAYS


class ShadowSync:
    def __init__(self, iotcore, settings: Callable[[], SyncSettings], active: Callable[[], bool],
                 update_local: Callable[[str, str, bytes], object], delete_local: Callable[[str, str], object],
                 clock=time.time) -> None:
        self.iotcore = iotcore            # iotcore.bridge.IoTCoreBridge: online, publish, subscribe, add_listener
        self.settings, self.active = settings, active
        self.update_local, self.delete_local = update_local, delete_local
        self.clock = clock
        self.store: ShadowStore | None = None
        self._cloud_subscriptions: dict[tuple[str, str], object] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._stopping = False

    def start(self, store: ShadowStore) -> None:
        self.store = store
        self._queue = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._work())
        self.iotcore.add_listener(self._on_connection)

    async def stop(self) -> None:
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait([self._worker], timeout=5)

    def _synced(self, thing: str, name: str) -> bool:
        return (thing, name) in self.settings().shadows

    def local_changed(self, thing: str, name: str, op: str, accepted: dict | None) -> None:
        settings = self.settings()
        if (thing, name) not in settings.shadows or settings.direction == CLOUD_TO_DEVICE:
            return
        if not self.iotcore.online:
            return  # dropped: the full sync on reconnect carries it
        self._queue.put_nowait(("local", thing, name, op, accepted))

    def _on_connection(self, online: bool) -> None:
        if online and self.active() and self._queue is not None:
            while not self._queue.empty():  # SyncHandler.start clears the queue, then syncs everything
                self._queue.get_nowait()
            for thing, name in self.settings().shadows:
                self._queue.put_nowait(("full", thing, name, None, None))

    async def _work(self) -> None:
        while not self._stopping:
            kind, thing, name, op, body = await self._queue.get()
            if not self.iotcore.online:
                continue
            try:
                await self._ensure_cloud_subscription(thing, name)
                if kind == "full":
                    await self._full_sync(thing, name)
                elif kind == "local":
                    await self._push_local(thing, name, op, body)
                elif kind == "cloud":
                    await self._apply_cloud(thing, name, op, body)
            except (asyncio.TimeoutError, ConnectionError, ShadowRequestError, doc.ShadowError) as exc:
                log.warning("shadow sync of %s/%s failed (%s); a full sync runs on the next connection",
                            thing, name or "classic", exc)
            except Exception:
                log.exception("shadow sync of %s/%s failed", thing, name or "classic")

    async def _ensure_cloud_subscription(self, thing: str, name: str) -> None:
        if (thing, name) not in self._cloud_subscriptions:
            self._cloud_subscriptions[(thing, name)] = await self.iotcore.subscribe(
                f"{topic_prefix(thing, name)}/+/+", 1, self._on_cloud)

    def _on_cloud(self, event: dict) -> None:
        message = event["message"]
        match = RESPONSE.match(message["topicName"])
        if match is None:
            return
        thing, name, op, outcome = match.group(1), match.group(2) or "", match.group(3), match.group(4)
        try:
            body = limits.loads(base64.b64decode(message["payload"]), doc.PARSE_DEPTH)
        except ValueError:
            return
        token = body.get("clientToken") if isinstance(body, dict) else None
        future = self._pending.pop(token, None) if token else None
        if future is not None:
            if not future.done():
                future.set_result((outcome, body))
            return
        if outcome == "accepted" and op in ("update", "delete") and not str(token or "").startswith(SYNC_TOKEN):
            if self.settings().direction != DEVICE_TO_CLOUD and self._synced(thing, name):
                self._queue.put_nowait(("cloud", thing, name, op, body))

    async def _cloud(self, thing: str, name: str, op: str, body: dict) -> tuple[str, dict]:
        token = SYNC_TOKEN + uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        payload = json.dumps({**body, "clientToken": token}).encode()
        try:
            await self.iotcore.publish(f"{topic_prefix(thing, name)}/{op}", payload, 1)
            return await asyncio.wait_for(future, CLOUD_TIMEOUT)
        finally:
            self._pending.pop(token, None)

    async def _cloud_get(self, thing: str, name: str) -> doc.Shadow | None:
        outcome, body = await self._cloud(thing, name, "get", {})
        if outcome == "rejected":
            if body.get("code") == 404:
                return None
            raise ConnectionError(f"cloud get rejected: {body}")
        state = {k: v for k, v in (body.get("state") or {}).items() if k in ("desired", "reported")}
        return doc.Shadow(state, body.get("metadata") or {}, int(body.get("version", 0)))

    async def _full_sync(self, thing: str, name: str) -> None:
        settings = self.settings()
        record = self.store.sync_record(thing, name)
        local, cloud = self.store.get(thing, name), await self._cloud_get(thing, name)
        plan = full_sync(local, cloud, record, settings.direction)
        cloud_version = cloud.version if cloud else record.cloud_version
        if plan.update_local is not None:
            self.update_local(thing, name, json.dumps(plan.update_local).encode())
        if plan.delete_local:
            self.delete_local(thing, name)
        if plan.update_cloud is not None:
            outcome, body = await self._cloud(thing, name, "update", plan.update_cloud)
            if outcome != "accepted":
                raise ConnectionError(f"cloud update rejected: {body}")
            cloud_version = int(body.get("version", cloud_version))
        if plan.delete_cloud:
            await self._cloud(thing, name, "delete", {})
            cloud_version += 1
        local = self.store.get(thing, name)
        self._record(thing, name, plan.agreed, local, cloud_version)
        log.info("full shadow sync of %s/%s done", thing, name or "classic")

    def _record(self, thing: str, name: str, agreed: dict | None, local: doc.Shadow | None, cloud_version: int) -> None:
        self.store.save_sync(thing, name, SyncRecord(agreed, local.version if local else 0, cloud_version,
                                                     int(self.clock())))

    async def _push_local(self, thing: str, name: str, op: str, accepted: dict | None) -> None:
        record = self.store.sync_record(thing, name)
        if op == "delete":
            outcome, _ = await self._cloud(thing, name, "delete", {})
            self._record(thing, name, None, None, record.cloud_version + 1)
            return
        request = {"state": accepted.get("state")}
        if record.cloud_version:
            request["version"] = record.cloud_version
        outcome, body = await self._cloud(thing, name, "update", request)
        if outcome != "accepted":
            if body.get("code") == 409:
                return await self._full_sync(thing, name)
            raise ConnectionError(f"cloud update rejected: {body}")
        local = self.store.get(thing, name)
        self._record(thing, name, local.state if local else None, local, int(body.get("version", 0)))

    async def _apply_cloud(self, thing: str, name: str, op: str, body: dict) -> None:
        record = self.store.sync_record(thing, name)
        version = int(body.get("version", 0))
        if op == "delete":  # LocalDeleteSyncRequest: delete/accepted carries the deleted version
            if version < record.cloud_version:
                return await self._full_sync(thing, name)
            if self.store.get(thing, name) is not None:
                self.delete_local(thing, name)
            self._record(thing, name, None, None, version + 1)
            return
        if version <= record.cloud_version:
            return  # an echo of our own write, or old news
        if version != record.cloud_version + 1:
            return await self._full_sync(thing, name)  # missed updates from the cloud
        state = {k: v for k, v in (body.get("state") or {}).items() if k in ("desired", "reported")}
        self.update_local(thing, name, json.dumps({"state": state}).encode())
        local = self.store.get(thing, name)
        self._record(thing, name, local.state if local else None, local, version)
