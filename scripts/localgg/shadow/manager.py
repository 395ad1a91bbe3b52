"""aws.greengrass.ShadowManager in the core: local shadows over IPC and local pub/sub, and sync.

Usage (the kernel owns one; it serves only while aws.greengrass.ShadowManager is deployed)::

    shadows = ShadowManager(kernel)
    await shadows.start()
    payload = shadows.update("com.ex.App", "thing", "", b'{"state": {...}}')   # the IPC response bytes

Rules (docs/shadow.md): checks run in the order UpdateThingShadowRequestHandler and friends
use (rate limit, names, payload, authorization, document rules); every outcome is also
published on LOCAL pub/sub as a binary message: `.../update/delta`, `.../update/documents`
and `.../update/accepted` in that order, `.../{get,delete}/accepted` and `*/rejected`.
Requests published by components on `$aws/things/+/shadow/#` (`update`, `get`, `delete`)
are served too, without authorization or rate limits. Documents persist in
`work/aws.greengrass.ShadowManager/shadow.db`.

Sync (configuration `synchronize`, docs/shadow.md 4): with IoT Core online, a local
update of a synced shadow is sent to the cloud shadow service; cloud updates arriving on
`update/accepted` are applied locally; while offline nothing is queued, and every
(re)connection runs a full three-way sync (sync.py). Deviation: the real ShadowManager
writes to the cloud over the HTTPS IoT data plane; localgg uses the shadow MQTT topics
through the core's own IoT Core connection (so writes are spooled and rate-limited with it).
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
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from . import document as doc
from .store import ShadowStore
from .sync import BOTH_WAYS, CLOUD_TO_DEVICE, DEVICE_TO_CLOUD, SyncRecord, full_sync

if TYPE_CHECKING:
    from ..kernel import Kernel

log = logging.getLogger("localgg.shadows")

NAME = "aws.greengrass.ShadowManager"
REQUEST = re.compile(r"^\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(update|get|delete)$")
RESPONSE = re.compile(r"^\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(update|get|delete)/(accepted|rejected)$")
MAX_DOCUMENT_SIZE = 30720
TOO_MANY = "Too Many Requests"
SYNC_TOKEN = "localgg-shadow-sync-"
CLOUD_TIMEOUT = 10.0


class ShadowRequestError(Exception):
    """For the IPC layer: the error shape and message to raise."""

    def __init__(self, shape: str, message: str, resource_type: str | None = None) -> None:
        super().__init__(message)
        self.shape, self.message, self.resource_type = shape, message, resource_type


def topic_prefix(thing: str | None, name: str | None) -> str:
    return f"$aws/things/{thing}/shadow" + (f"/name/{name}" if name else "")


class WindowRateLimiter:
    """IpcRateLimiter: fixed one-second windows, a total and a per-thing count."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._window = -1
        self._total = 0
        self._things: dict[str, int] = {}

    def allow(self, thing: str, total_rate: int, thing_rate: int) -> bool:
        window = int(self.clock())
        if window != self._window:
            self._window, self._total, self._things = window, 0, {}
        if self._total >= total_rate or self._things.get(thing, 0) >= thing_rate:
            return False
        self._total += 1
        self._things[thing] = self._things.get(thing, 0) + 1
        return True


def list_token(principal: str, thing: str, offset: int) -> str:
    """ListNamedShadowsForThing's nextToken: AES-CBC (zero IV) of the offset, keyed by PBKDF2
    of principal+thing salted with the thing (ListNamedShadowsForThingIPCHandler)."""
    key = PBKDF2HMAC(hashes.SHA256(), 32, thing.encode(), 65536).derive((principal + thing).encode())
    padder = padding.PKCS7(128).padder()
    data = padder.update(str(offset).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(b"\0" * 16)).encryptor()
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def read_list_token(principal: str, thing: str, token: str) -> int:
    try:
        raw = base64.b64decode(token, validate=True)
        key = PBKDF2HMAC(hashes.SHA256(), 32, thing.encode(), 65536).derive((principal + thing).encode())
        decryptor = Cipher(algorithms.AES(key), modes.CBC(b"\0" * 16)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        data = unpadder.update(decryptor.update(raw) + decryptor.finalize()) + unpadder.finalize()
        return int(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShadowRequestError("InvalidArgumentsError", "Invalid nextToken argument") from exc


@dataclass(frozen=True)
class SyncSettings:
    shadows: tuple[tuple[str, str], ...] = ()
    direction: str = BOTH_WAYS


class ShadowManager:
    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel
        self.store: ShadowStore | None = None
        self.limiter = WindowRateLimiter()
        self._bus_subscription = None
        self._cloud_subscriptions: dict[tuple[str, str], object] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._stopping = False

    # -- life ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.kernel.deployed(NAME)

    def config(self, key: str, default: object = None) -> object:
        return self.kernel.config.value(NAME, [key], default)

    async def start(self) -> None:
        self.store = ShadowStore(self.kernel.path("work", NAME, "shadow.db"))
        self._bus_subscription = self.kernel.bus.subscribe("$aws/things/+/shadow/#", NAME, None, self._on_local)
        self._queue = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._sync_worker())
        self.kernel.iotcore.add_listener(self._on_connection)

    async def stop(self) -> None:
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait([self._worker], timeout=5)
        if self._bus_subscription is not None:
            self._bus_subscription.cancel()
        if self.store is not None:
            self.store.close()

    def _require_active(self, operation: str) -> None:
        if not self.active:
            raise ShadowRequestError("ServiceError", f"Operation aws.greengrass#{operation} is not supported by "
                                     "Greengrass")

    def _size_limit(self) -> int:
        value = self.config("shadowDocumentSizeLimitBytes", 8192)
        try:
            value = int(value)
        except (TypeError, ValueError):
            return 8192
        if value < 0 or value > MAX_DOCUMENT_SIZE:
            log.error("Maximum shadow size provided %s is either less than 0 or exceeds default maximum shadow size "
                      "of %d", value, MAX_DOCUMENT_SIZE)
            return 8192
        return value or 8192

    def _rate_limit(self, thing: str | None) -> None:
        if not thing:
            return
        limits = self.config("rateLimits", {}) or {}
        if not self.limiter.allow(thing, int(limits.get("maxTotalLocalRequestsRate", 200)),
                                  int(limits.get("maxLocalRequestsPerSecondPerThing", 20))):
            raise ShadowRequestError("ServiceError", TOO_MANY)

    # -- local pub/sub -------------------------------------------------------------------

    def _publish(self, thing: str | None, name: str | None, suffix: str, body: dict) -> None:
        raw = json.dumps(body, separators=(",", ":")).encode()
        self.kernel.bus.publish(f"{topic_prefix(thing, name)}/{suffix}", NAME,
                                {"binaryMessage": {"message": base64.b64encode(raw).decode()}})

    def _reject(self, thing, name, op: str, error: doc.ShadowError) -> ShadowRequestError:
        if "+" not in str(thing) and "#" not in str(thing):
            self._publish(thing, name, f"{op}/rejected", doc.rejected_payload(error, int(time.time())))
        return ShadowRequestError(error.ipc_shape, error.ipc_message,
                                  "shadow" if error.code == 404 else None)

    def _authorize(self, caller: str, operation: str, thing, name, op: str) -> None:
        try:
            self.kernel.authz.check(caller, NAME, f"aws.greengrass#{operation}", topic_prefix(thing, name))
        except Exception as exc:  # authz.Denied
            self._reject(thing, name, op, doc.ShadowError(401, "Unauthorized"))
            raise ShadowRequestError("UnauthorizedError", str(exc)) from exc

    def _on_local(self, event: dict) -> None:
        """A component published a request on local pub/sub."""
        body = event.get("jsonMessage") or event.get("binaryMessage") or {}
        topic = (body.get("context") or {}).get("topic", "")
        match = REQUEST.match(topic)
        if match is None or not self.active:
            return
        thing, name, op = match.group(1), match.group(2) or "", match.group(3)
        message = body.get("message")
        payload = json.dumps(message).encode() if "jsonMessage" in event else base64.b64decode(message or "")
        try:
            if op == "update":
                self._update(None, thing, name, payload, origin="pubsub")
            elif op == "get":
                self._get(None, thing, name)
            else:
                self._delete(None, thing, name, origin="pubsub")
        except ShadowRequestError:
            pass  # already published on .../rejected

    # -- operations ------------------------------------------------------------------------

    def get(self, caller: str, thing: str | None, name: str | None) -> bytes:
        self._require_active("GetThingShadow")
        self._rate_limit(thing)
        return self._get(caller, thing, name or "")

    def _get(self, caller: str | None, thing, name: str) -> bytes:
        try:
            doc.validate_names(thing, name)
        except doc.ShadowError as error:
            raise self._reject(thing, name, "get", error)
        if caller is not None:
            self._authorize(caller, "GetThingShadow", thing, name, "get")
        shadow = self.store.get(thing, name)
        if shadow is None:
            raise self._reject(thing, name, "get", doc.not_found(name))
        body = doc.get_payload(shadow, int(time.time()))
        self._publish(thing, name, "get/accepted", body)
        return json.dumps(body, separators=(",", ":")).encode()

    def update(self, caller: str, thing: str | None, name: str | None, payload: bytes | None) -> bytes:
        self._require_active("UpdateThingShadow")
        self._rate_limit(thing)
        return self._update(caller, thing, name or "", payload, origin="ipc")

    def _update(self, caller: str | None, thing, name: str, payload: bytes | None, origin: str) -> bytes:
        try:
            doc.validate_names(thing, name)
            if not payload:
                raise doc.ShadowError(400, "Missing update payload")
        except doc.ShadowError as error:
            raise self._reject(thing, name, "update", error)
        if caller is not None:
            self._authorize(caller, "UpdateThingShadow", thing, name, "update")
        now = int(time.time())
        current = self.store.get(thing, name)
        try:
            result = doc.update(current, payload, now, max_size=self._size_limit())
        except doc.ShadowError as error:
            raise self._reject(thing, name, "update", error)
        self.store.put(thing, name, result.shadow, now)
        if result.delta is not None:
            self._publish(thing, name, "update/delta", result.delta)
        self._publish(thing, name, "update/documents", result.documents)
        self._publish(thing, name, "update/accepted", result.accepted)
        if origin != "sync":
            self._local_changed(thing, name, "update", result.accepted)
        return json.dumps(result.accepted, separators=(",", ":")).encode()

    def delete(self, caller: str, thing: str | None, name: str | None) -> bytes:
        self._require_active("DeleteThingShadow")
        self._rate_limit(thing)
        return self._delete(caller, thing, name or "", origin="ipc")

    def _delete(self, caller: str | None, thing, name: str, origin: str) -> bytes:
        try:
            doc.validate_names(thing, name)
        except doc.ShadowError as error:
            raise self._reject(thing, name, "delete", error)
        if caller is not None:
            self._authorize(caller, "DeleteThingShadow", thing, name, "delete")
        shadow = self.store.get(thing, name)
        if shadow is None:
            raise self._reject(thing, name, "delete", doc.not_found(name))
        now = int(time.time())
        self.store.delete(thing, name, doc.tombstone_version(shadow), now)
        self._publish(thing, name, "delete/accepted", doc.delete_payload(shadow, now))
        if origin != "sync":
            self._local_changed(thing, name, "delete", None)
        return b""

    def list_named(self, caller: str, thing: str | None, page_size: int | None, next_token: str | None) -> dict:
        self._require_active("ListNamedShadowsForThing")
        try:
            doc.validate_names(thing, None)
        except doc.ShadowError as error:
            raise ShadowRequestError("InvalidArgumentsError", error.message)
        self._rate_limit(thing)
        try:
            self.kernel.authz.check(caller, NAME, "aws.greengrass#ListNamedShadowsForThing", thing)
        except Exception as exc:
            raise ShadowRequestError("UnauthorizedError", str(exc)) from exc
        size = 25 if page_size is None else int(page_size)
        if not 1 <= size <= 100:
            raise ShadowRequestError("InvalidArgumentsError", "pageSize argument must be between 1 and 100")
        offset = read_list_token(caller, thing, next_token) if next_token else 0
        results = self.store.named_shadows(thing, size, offset)
        body = {"results": results, "timestamp": time.time()}
        if len(results) == size:
            body["nextToken"] = list_token(caller, thing, offset + size)
        return body

    # -- sync ------------------------------------------------------------------------------

    def sync_settings(self) -> SyncSettings:
        sync = self.config("synchronize", {}) or {}
        shadows: list[tuple[str, str]] = []

        def add(thing: str, spec: dict) -> None:
            if spec.get("classic", True):
                shadows.append((thing, ""))
            shadows.extend((thing, str(n)) for n in spec.get("namedShadows") or [])
        if isinstance(sync.get("coreThing"), dict):
            add(self.kernel.thing_name, sync["coreThing"])
        for thing, spec in (sync.get("shadowDocumentsMap") or {}).items():
            add(thing, spec or {})
        for spec in sync.get("shadowDocuments") or []:
            add(spec.get("thingName"), spec)
        direction = str(sync.get("direction", BOTH_WAYS))
        lowered = {d.lower(): d for d in (BOTH_WAYS, DEVICE_TO_CLOUD, CLOUD_TO_DEVICE)}
        if direction.lower() not in lowered:
            log.error("Unknown direction value. %r; syncing in both directions", direction)
        return SyncSettings(tuple(dict.fromkeys(shadows)), lowered.get(direction.lower(), BOTH_WAYS))

    def _synced(self, thing: str, name: str) -> bool:
        return (thing, name) in self.sync_settings().shadows

    def _local_changed(self, thing: str, name: str, op: str, accepted: dict | None) -> None:
        settings = self.sync_settings()
        if (thing, name) not in settings.shadows or settings.direction == CLOUD_TO_DEVICE:
            return
        if not self.kernel.iotcore.online:
            return  # dropped: the full sync on reconnect carries it
        self._queue.put_nowait(("local", thing, name, op, accepted))

    def _on_connection(self, online: bool) -> None:
        if online and self.active and self._queue is not None:
            while not self._queue.empty():  # SyncHandler.start clears the queue, then syncs everything
                self._queue.get_nowait()
            for thing, name in self.sync_settings().shadows:
                self._queue.put_nowait(("full", thing, name, None, None))

    async def _sync_worker(self) -> None:
        while not self._stopping:
            kind, thing, name, op, body = await self._queue.get()
            if not self.kernel.iotcore.online:
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
            self._cloud_subscriptions[(thing, name)] = await self.kernel.iotcore.subscribe(
                f"{topic_prefix(thing, name)}/+/+", 1, self._on_cloud)

    def _on_cloud(self, event: dict) -> None:
        message = event["message"]
        match = RESPONSE.match(message["topicName"])
        if match is None:
            return
        thing, name, op, outcome = match.group(1), match.group(2) or "", match.group(3), match.group(4)
        try:
            body = json.loads(base64.b64decode(message["payload"]))
        except ValueError:
            return
        token = body.get("clientToken") if isinstance(body, dict) else None
        future = self._pending.pop(token, None) if token else None
        if future is not None:
            if not future.done():
                future.set_result((outcome, body))
            return
        if outcome == "accepted" and op in ("update", "delete") and not str(token or "").startswith(SYNC_TOKEN):
            if self.sync_settings().direction != DEVICE_TO_CLOUD and self._synced(thing, name):
                self._queue.put_nowait(("cloud", thing, name, op, body))

    async def _cloud(self, thing: str, name: str, op: str, body: dict) -> tuple[str, dict]:
        token = SYNC_TOKEN + uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        payload = json.dumps({**body, "clientToken": token}).encode()
        try:
            await self.kernel.iotcore.publish(f"{topic_prefix(thing, name)}/{op}", payload, 1)
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
        settings = self.sync_settings()
        record = self.store.sync_record(thing, name)
        local, cloud = self.store.get(thing, name), await self._cloud_get(thing, name)
        plan = full_sync(local, cloud, record, settings.direction)
        cloud_version = cloud.version if cloud else record.cloud_version
        if plan.update_local is not None:
            self._update(None, thing, name, json.dumps(plan.update_local).encode(), origin="sync")
        if plan.delete_local:
            self._delete(None, thing, name, origin="sync")
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
                                                     int(time.time())))

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
                self._delete(None, thing, name, origin="sync")
            self._record(thing, name, None, None, version + 1)
            return
        if version <= record.cloud_version:
            return  # an echo of our own write, or old news
        if version != record.cloud_version + 1:
            return await self._full_sync(thing, name)  # missed updates from the cloud
        state = {k: v for k, v in (body.get("state") or {}).items() if k in ("desired", "reported")}
        self._update(None, thing, name, json.dumps({"state": state}).encode(), origin="sync")
        local = self.store.get(thing, name)
        self._record(thing, name, local.state if local else None, local, version)
