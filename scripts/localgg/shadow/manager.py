"""aws.greengrass.ShadowManager in the core: local shadows over IPC and local pub/sub, and sync.

Usage (the kernel owns one; it serves only while aws.greengrass.ShadowManager is deployed)::

    shadows = ShadowManager(config, bus, authz, iotcore, "thing", work / NAME / "shadow.db", deployed)
    await shadows.start()
    payload = shadows.update("com.ex.App", "thing", "", b'{"state": {...}}')   # the IPC response bytes

Rules (docs/shadow.md): checks run in the order UpdateThingShadowRequestHandler and friends
use (rate limit, names, payload, authorization, document rules); every outcome is also
published on LOCAL pub/sub as a binary message: `.../update/delta`, `.../update/documents`
and `.../update/accepted` in that order, `.../{get,delete}/accepted` and `*/rejected`.
Requests published by components on `$aws/things/+/shadow/#` (`update`, `get`, `delete`)
are served too, without authorization or rate limits. Documents persist in
`work/aws.greengrass.ShadowManager/shadow.db`.

Sync (configuration `synchronize`, docs/shadow.md 4) is syncer.py's: with IoT Core online, a
local update of a synced shadow is sent to the cloud shadow service; cloud updates arriving
on `update/accepted` are applied locally; while offline nothing is queued, and every
(re)connection runs a full three-way sync (sync.py). Deviation: the real ShadowManager
writes to the cloud over the HTTPS IoT data plane; localgg uses the shadow MQTT topics
through the core's own IoT Core connection (so writes are spooled and rate-limited with it).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ..authz import Authorizer
from ..configstore import ConfigStore
from ..pubsub import PubSub
from . import document as doc
from .document import ShadowRequestError
from .store import ShadowStore
from .sync import BOTH_WAYS, CLOUD_TO_DEVICE, DEVICE_TO_CLOUD
from .syncer import ShadowSync, SyncSettings, topic_prefix

log = logging.getLogger("localgg.shadows")

NAME = "aws.greengrass.ShadowManager"
REQUEST = re.compile(r"^\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(update|get|delete)$")
MAX_DOCUMENT_SIZE = 30720
TOO_MANY = "Too Many Requests"


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


class ShadowManager:
    def __init__(self, config: ConfigStore, bus: PubSub, authz: Authorizer, iotcore, thing_name: str,
                 db_path: Path, deployed: Callable[[str], bool], clock=time.time) -> None:
        self.configuration, self.bus, self.authz = config, bus, authz
        self.thing_name, self.db_path = thing_name, db_path
        self.deployed = deployed          # deployed(NAME): serve only then
        self.clock = clock
        self.store: ShadowStore | None = None
        self.limiter = WindowRateLimiter()
        self._bus_subscription = None
        self.syncer = ShadowSync(iotcore, self.sync_settings, lambda: self.active,
                                 lambda thing, name, payload: self._update(None, thing, name, payload, origin="sync"),
                                 lambda thing, name: self._delete(None, thing, name, origin="sync"), clock)

    # -- life ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.deployed(NAME)

    def config(self, key: str, default: object = None) -> object:
        return self.configuration.value(NAME, [key], default)

    async def start(self) -> None:
        self.store = ShadowStore(self.db_path)
        self._bus_subscription = self.bus.subscribe("$aws/things/+/shadow/#", NAME, None, self._on_local)
        self.syncer.start(self.store)

    async def stop(self) -> None:
        await self.syncer.stop()
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
        self.bus.publish(f"{topic_prefix(thing, name)}/{suffix}", NAME,
                                {"binaryMessage": {"message": base64.b64encode(raw).decode()}})

    def _reject(self, thing, name, op: str, error: doc.ShadowError) -> ShadowRequestError:
        if "+" not in str(thing) and "#" not in str(thing):
            self._publish(thing, name, f"{op}/rejected", doc.rejected_payload(error, int(self.clock())))
        return ShadowRequestError(error.ipc_shape, error.ipc_message,
                                  "shadow" if error.code == 404 else None)

    def _authorize(self, caller: str, operation: str, thing, name, op: str) -> None:
        try:
            self.authz.check(caller, NAME, f"aws.greengrass#{operation}", topic_prefix(thing, name))
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
        body = doc.get_payload(shadow, int(self.clock()))
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
        now = int(self.clock())
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
            self.syncer.local_changed(thing, name, "update", result.accepted)
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
        now = int(self.clock())
        self.store.delete(thing, name, doc.tombstone_version(shadow), now)
        self._publish(thing, name, "delete/accepted", doc.delete_payload(shadow, now))
        if origin != "sync":
            self.syncer.local_changed(thing, name, "delete", None)
        return b""

    def list_named(self, caller: str, thing: str | None, page_size: int | None, next_token: str | None) -> dict:
        self._require_active("ListNamedShadowsForThing")
        try:
            doc.validate_names(thing, None)
        except doc.ShadowError as error:
            raise ShadowRequestError("InvalidArgumentsError", error.message)
        self._rate_limit(thing)
        try:
            self.authz.check(caller, NAME, "aws.greengrass#ListNamedShadowsForThing", thing)
        except Exception as exc:
            raise ShadowRequestError("UnauthorizedError", str(exc)) from exc
        size = 25 if page_size is None else int(page_size)
        if not 1 <= size <= 100:
            raise ShadowRequestError("InvalidArgumentsError", "pageSize argument must be between 1 and 100")
        offset = read_list_token(caller, thing, next_token) if next_token else 0
        results = self.store.named_shadows(thing, size, offset)
        body = {"results": results, "timestamp": self.clock()}
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
            add(self.thing_name, sync["coreThing"])
        for thing, spec in (sync.get("shadowDocumentsMap") or {}).items():
            add(thing, spec or {})
        for spec in sync.get("shadowDocuments") or []:
            add(spec.get("thingName"), spec)
        direction = str(sync.get("direction", BOTH_WAYS))
        lowered = {d.lower(): d for d in (BOTH_WAYS, DEVICE_TO_CLOUD, CLOUD_TO_DEVICE)}
        if direction.lower() not in lowered:
            log.error("Unknown direction value. %r; syncing in both directions", direction)
        return SyncSettings(tuple(dict.fromkeys(shadows)), lowered.get(direction.lower(), BOTH_WAYS))
