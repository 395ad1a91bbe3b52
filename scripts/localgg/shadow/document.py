"""Shadow documents: validation, merge, per-leaf metadata, delta and the MQTT/IPC payloads.

Usage::

    from localgg.shadow import document as sd
    sd.validate_names("Thing", "config")        # ShadowError 400 for bad names
    r = sd.update(current, payload, now)         # Shadow | None, bytes, epoch s; LOCAL by default
    # store r.shadow; publish r.delta (unless None), r.documents, r.accepted (== the IPC response)
    # ShadowError e: publish sd.rejected_payload(e, now), raise e.ipc_shape(e.ipc_message)
    sd.get_payload(shadow, now)                  # get/accepted == GetThingShadow; none: sd.not_found(name)
    sd.delete_payload(shadow, now); tomb = sd.tombstone_version(shadow)
    sd.update(None, payload, now, flavour=sd.CLOUD, deleted_version=tomb)   # a re-created cloud shadow

Pure: bytes and dicts in, new dicts out, time is `now`. Facts: scripts/localgg/docs/shadow.md
sections 1.3-1.7, 2, 6, 7; SM paths are in the aws-greengrass-shadow-manager mirror under
src/main/java/com/aws/greengrass/shadowmanager/, DOC = awsdocs/aws-iot-docs doc_source/.

Both flavours: a field set to null or {} is deleted; `"desired": null|{}` deletes the
section (CLOUD: UNCERTAIN), `"state": null` both; `{"state":{}}` still makes a version (and
a shadow); objects merge, arrays are replaced whole; update/accepted echoes the request's
state with {"timestamp": now} per leaf, nulls too; untouched leaves keep their timestamps;
delta = desired fields differing from reported (numbers by value: 1 == 1.0, true != 1;
arrays whole) with desired's metadata; nesting deeper than 6 is 400; merged desired +
reported (compact UTF-8 JSON) above max_size is 413; documents.previous is null for a new
shadow; delete/accepted has the deleted version, the tombstone version + 1
(ShadowManagerDAOImpl.deleteShadowThing; sync/model/LocalDeleteSyncRequest).

LOCAL (ShadowManager) vs CLOUD (AWS IoT Core):
 1. Unparsable: LOCAL 500 "Internal service failure" + IPC ServiceError(<parser message>)
    (ipc/UpdateThingShadowRequestHandler), junk after the value ignored, UTF-16/32 read
    (Jackson readTree); CLOUD 400 "Invalid JSON", non-UTF-8 415 (DOC device-shadow-error-messages);
    CLOUD refuses a number beyond a double (1e999) as it refuses NaN: stored, it would reach the
    device as `Infinity` in every delta (LOCAL reads it as infinity, as Jackson's DoubleNode does).
 2. Empty payload: LOCAL 400 "Missing update payload"; CLOUD 400 "Invalid JSON" (UNCERTAIN).
 3. Schema: LOCAL "Invalid JSON: <networknt 1.0.52 messages, '. '-joined, '$.' removed>"
    (resources/json/schema/update_payload_schema.json, util/JsonUtil); CLOUD "Missing required
    node: state", "State|Desired|Reported node must be an object", "Invalid version", "Invalid
    clientToken" (DOC device-shadow-error-messages).
 4. state.delta: LOCAL drops it and echoes other unknown state keys when desired or reported
    is there (commit 2e8d744, schema anyOf); CLOUD "State contains an invalid node".
 5. clientToken: LOCAL <= 64 characters (schema); CLOUD <= 64 UTF-8 bytes (DOC device-shadow-document).
 6. version: LOCAL any number >= 0 cut to int; none yet: only 1 (400 "Invalid version"), else
    the current one (409) (util/JsonUtil.validatePayload). CLOUD an integer >= 0 (400 "Invalid
    version") equal to the current one, or to deleted_version or 0 (409; UNCERTAIN if none).
 7. Arrays holding null: LOCAL stores them (util/JsonMerger); CLOUD 400 "Invalid JSON" (DOC
    device-shadow-document: "Arrays can't have null values"; the text is UNCERTAIN).
 8. Nulls in the first write into an empty section, or in an object replacing a non-object:
    LOCAL stores them (model/ShadowState.update, JsonMerger); CLOUD drops them.
 9. "state": null inside a section patch (or the request state) clears it, "state": {} makes
    it a no-op: LOCAL only (JsonMerger.merge, ShadowState.update, JsonUtil.isNullStateDocument/
    isEmptyStateDocument); for CLOUD "state" in a section is a plain key.
10. Metadata: LOCAL runs model/ShadowStateMetadata.update as written, stale entries too (after
    `"desired": {}` with reported present, metadata.desired stays); CLOUD mirrors the state.
11. After a delete: LOCAL versions restart at 1 (deleted_version ignored; shadow.md section 5);
    CLOUD continues at deleted_version + 1 (DOC device-shadow-data-flow).
12. Payload key order: LOCAL as SM's ResponseMessageBuilder calls; CLOUD as DOC's examples.
Raises ShadowError(code, message, ipc_shape, ipc_message, client_token).
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass

from .. import limits

LOCAL, CLOUD = "local", "cloud"
MAX_DEPTH = 6
PARSE_DEPTH = 200        # measured before parsing (json recurses per level); deeper is not JSON we read
_NAME_PATTERN = "[a-zA-Z0-9:_-]+"
_SHAPES = {400: "InvalidArgumentsError", 401: "UnauthorizedError", 404: "ResourceNotFoundError",
           409: "ConflictError", 413: "InvalidArgumentsError", 415: "InvalidArgumentsError",
           500: "ServiceError"}
_ORDER = {  # (LOCAL, CLOUD) key order of each payload; a clientToken of None is left out
    "accepted": (("version", "clientToken", "timestamp", "state", "metadata"),
                 ("state", "metadata", "timestamp", "clientToken", "version")),
    "delta": (("version", "timestamp", "state", "metadata", "clientToken"),
              ("state", "metadata", "timestamp", "clientToken", "version")),
    "documents": (("previous", "current", "clientToken", "timestamp"),
                  ("previous", "current", "timestamp", "clientToken")),
    "get": (("state", "metadata", "version", "timestamp"),
            ("state", "metadata", "timestamp", "clientToken", "version")),
    "rejected": (("timestamp", "clientToken", "code", "message"),
                 ("code", "message", "timestamp", "clientToken")),
    "delete": (("version", "timestamp"), ("version", "timestamp")),
}
_SECTIONS = ("desired", "reported")
_MISSING = object()  # Jackson's MissingNode: a payload of only whitespace


class ShadowError(Exception):
    """A refused request: `message` for */rejected, `ipc_shape(ipc_message)` for the IPC caller."""

    def __init__(self, code: int, message: str, *, ipc_message: str | None = None,
                 client_token: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.ipc_shape = code, message, _SHAPES.get(code, "ServiceError")
        self.ipc_message = message if ipc_message is None else ipc_message
        self.client_token = client_token


class ShadowRequestError(Exception):
    """For the IPC layer: the error shape and message to raise."""

    def __init__(self, shape: str, message: str, resource_type: str | None = None) -> None:
        super().__init__(message)
        self.shape, self.message, self.resource_type = shape, message, resource_type


@dataclass(frozen=True)
class Shadow:
    state: dict      # {"desired": {...}?, "reported": {...}?}
    metadata: dict   # the same shape, leaves {"timestamp": T}
    version: int


@dataclass(frozen=True)
class UpdateResult:
    shadow: Shadow
    accepted: dict
    delta: dict | None
    documents: dict
    client_token: str | None


# -- names ------------------------------------------------------------------------------

def validate_names(thing_name: str | None, shadow_name: str | None) -> None:
    """util/Validator.java: a thing name is required, <= 128; no shadow name = classic, <= 64."""
    if not thing_name:
        raise ShadowError(400, "ThingName is missing")
    for label, name, limit in (("ThingName", thing_name, 128), ("ShadowName", shadow_name, 64)):
        if name and len(name) > limit:
            raise ShadowError(400, f"{label} has a maximum length of {limit}")
        if name and not re.fullmatch(_NAME_PATTERN, name):
            raise ShadowError(400, f"{label} must match pattern {_NAME_PATTERN}")


def shadow_name_for_messages(shadow_name: str | None) -> str:
    return shadow_name or "Unnamed Shadow"


def not_found(shadow_name: str | None) -> ShadowError:
    """Get/Delete of a missing shadow (model/ErrorMessage.createShadowNotFoundMessage)."""
    return ShadowError(404, f"No shadow exists with name: {shadow_name_for_messages(shadow_name)}",
                       ipc_message="No shadow found")


# -- update -----------------------------------------------------------------------------

def update(current: Shadow | None, payload: bytes | None, now: int, *, flavour: str = LOCAL,
           max_size: int = 8192, deleted_version: int | None = None) -> UpdateResult:
    """Apply an update request to `current` (None: no shadow, or a deleted one)."""
    local = _is_local(flavour)
    request = _parse(payload, local)
    token = _validate_local(request) if local else _validate_cloud(request)
    state = request["state"]
    for key in ("reported", "desired"):
        if _too_deep((state or {}).get(key), 1):
            raise ShadowError(400, f"JSON contains too many levels of nesting; maximum is {MAX_DEPTH}",
                              client_token=token)
    version = _next_version(current, request, local, deleted_version, token)
    desired, reported = _new_sections(current, state, local)
    if _size(desired) + _size(reported) > max_size:
        raise ShadowError(413, "The payload exceeds the maximum size allowed", client_token=token)
    metadata, patch = _new_metadata(current, state, desired, reported, now, local)
    shadow = Shadow(_sections(desired, reported), metadata, version)
    found = delta(desired, reported)
    return UpdateResult(
        shadow=shadow,
        accepted=_build("accepted", local, version=version, clientToken=token, timestamp=now,
                        state=copy.deepcopy(state), metadata=patch),
        delta=None if found is None else _build(
            "delta", local, version=version, timestamp=now, state=found,
            metadata=delta_metadata(found, metadata.get("desired")), clientToken=token),
        documents=_build("documents", local, previous=None if current is None else _document(current),
                         current=_document(shadow), clientToken=token, timestamp=now),
        client_token=token)


def _is_local(flavour: str) -> bool:
    if flavour not in (LOCAL, CLOUD):
        raise ValueError(f"unknown flavour {flavour!r}")
    return flavour == LOCAL


def _no_constants(name: str) -> object:
    raise ValueError(f"Non-standard token '{name}'")   # Jackson refuses NaN and Infinity


def _finite_float(text: str) -> float:
    """CLOUD: a number too large for a double (1e999) is refused like NaN, 400 "Invalid JSON".
    Python (and Jackson's DoubleNode) would read it as infinity, which no JSON can carry back
    out: stored, the delta would say `Infinity` and every device sync would fail on it."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"Numeric value ({text}) out of range of a double")
    return value


def _parse(payload: bytes | None, local: bool) -> object:
    if not payload:
        raise ShadowError(400, "Missing update payload" if local else "Invalid JSON")
    raw = bytes(payload)
    try:
        text = raw.decode(json.detect_encoding(raw) if local else "utf-8")
        limits.check_nesting(text, PARSE_DEPTH)  # never run json's recursion to the interpreter's limit
        if not local:
            return json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
        text = text.lstrip(" \t\r\n")
        return json.JSONDecoder(parse_constant=_no_constants).raw_decode(text)[0] if text else _MISSING
    except UnicodeDecodeError as e:
        if local:
            raise ShadowError(500, "Internal service failure", ipc_message=str(e)) from None
        raise ShadowError(415, "Unsupported documented encoding; supported encoding is UTF-8") from None
    except ValueError as e:
        if local:
            raise ShadowError(500, "Internal service failure", ipc_message=str(e)) from None
        raise ShadowError(400, "Invalid JSON") from None


def _validate_local(request: object) -> str | None:
    if request is _MISSING or request is None or request == {}:
        raise ShadowError(400, "Invalid JSON: ")
    if isinstance(request, dict) and isinstance(request.get("state"), dict):
        request["state"].pop("delta", None)
    errors = _schema_errors(request)
    if errors:
        raise ShadowError(400, "Invalid JSON: " + ". ".join(e.replace("$.", "") for e in errors))
    return request.get("clientToken")


def _schema_errors(request: object) -> list[str]:
    """update_payload_schema.json as networknt 1.0.52 words it, in its HashMap orders: root
    type, required, properties (clientToken, state, version); state: type, properties
    (desired, reported), anyOf."""
    if not isinstance(request, dict):
        return [f"$: {_json_type(request)} found, object expected"]
    errors = [] if "state" in request else ["$.state: is missing but it is required"]
    token, state, version = request.get("clientToken", ""), request.get("state"), request.get("version", 0)
    if not isinstance(token, str):
        errors.append(f"$.clientToken: {_json_type(token)} found, string expected")
    elif len(token) > 64:
        errors.append("$.clientToken: may only be 64 characters long")
    union = "found, but [object, null] is required"
    if state is not None and not isinstance(state, dict):
        errors.append(f"$.state: {_json_type(state)} {union}")
    elif state:
        errors += [f"$.state.{key}: {_json_type(state[key])} {union}" for key in _SECTIONS
                   if state.get(key) is not None and not isinstance(state[key], dict)]
        extra = [key for key in state if not key.startswith("#")]   # additionalProperties skips "#..."
        if extra and "desired" not in state and "reported" not in state:
            errors += ["$.state.reported: is missing but it is required",
                       "$.state.desired: is missing but it is required"]
            errors += [f"$.state.{key}: is not defined in the schema and the schema does not allow "
                       "additional properties" for key in extra]
    if not _is_number(version):
        errors.append(f"$.version: {_json_type(version)} found, number expected")
    elif version < 0:
        errors.append("$.version: must have a minimum value of 0")
    return errors


def _validate_cloud(request: object) -> str | None:
    if not isinstance(request, dict):
        raise ShadowError(400, "Invalid JSON")
    token = request.get("clientToken")
    if "clientToken" in request and (not isinstance(token, str)
                                     or len(token.encode("utf-8", "surrogatepass")) > 64):
        raise ShadowError(400, "Invalid clientToken")
    message = _cloud_error(request)
    if message:
        raise ShadowError(400, message, client_token=token)
    return token


def _cloud_error(request: dict) -> str | None:
    state, version = request.get("state"), request.get("version", 0)
    if "state" not in request:
        return "Missing required node: state"
    if state is not None and not isinstance(state, dict):
        return "State node must be an object"
    if any(key not in _SECTIONS for key in state or {}):
        return "State contains an invalid node"
    for key in _SECTIONS:
        if (state or {}).get(key) is not None and not isinstance(state[key], dict):
            return f"{key.capitalize()} node must be an object"
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return "Invalid version"
    return "Invalid JSON" if _null_in_array(state) else None


def _null_in_array(node: object, in_array: bool = False) -> bool:
    if node is None:
        return in_array
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return any(_null_in_array(child, isinstance(node, list)) for child in children)


def _too_deep(node: object, depth: int) -> bool:
    """util/JsonUtil.calculateDepth: a non-empty object or array deeper than 6 (section = 1)."""
    if not isinstance(node, (dict, list)) or not node:
        return False
    children = node.values() if isinstance(node, dict) else node
    return depth > MAX_DEPTH or any(_too_deep(child, depth + 1) for child in children)


def _next_version(current: Shadow | None, request: dict, local: bool, deleted_version: int | None,
                  token: str | None) -> int:
    asked = request.get("version")
    if local and asked is not None:   # util/JsonUtil.validatePayload: Jackson asInt
        if current is None and _java_cast(asked, 32) != 1:
            raise ShadowError(400, "Invalid version", client_token=token)
        if current is not None and _java_cast(asked, 32) != current.version:
            raise ShadowError(409, "Version conflict", client_token=token)
    base = current.version if current is not None else 0 if local else deleted_version or 0
    if not local and "version" in request and asked != base:
        raise ShadowError(409, "Version conflict", client_token=token)
    return base + 1


# -- merge ------------------------------------------------------------------------------

def _new_sections(current: Shadow | None, state: object, local: bool) -> tuple[dict | None, dict | None]:
    """model/ShadowState.update, on copies of the current sections."""
    old = current.state if current is not None else {}
    sections = {key: copy.deepcopy(old.get(key)) or None for key in _SECTIONS}
    if _is_null_state(state):
        return None, None
    if not _is_empty_state(state):
        for key, value in state.items():
            if key in sections:
                sections[key] = _update_section(sections[key], value, local)
    return sections["desired"], sections["reported"]


def _update_section(section: dict | None, value: dict | None, local: bool) -> dict | None:
    if _missing(value):
        return None
    if section is None:
        return copy.deepcopy(value) if local else _merge_tree(value)
    if local and _is_null_state(value):
        _clear_state(section)
    elif not (local and _is_empty_state(value)):
        _merge_fields(section, value, local)
    return section or None


def _merge_fields(source: dict, patch: dict, local: bool) -> None:
    """util/JsonMerger.merge of two objects, in place on `source` (a private copy)."""
    for field, new in patch.items():
        old = source.get(field)
        if _missing(new):
            if not _missing(old):
                del source[field]
        elif _missing(old):
            child = _merge_tree(new) if isinstance(new, dict) else copy.deepcopy(new)
            if child is not None:
                source[field] = child
        elif isinstance(old, dict) and isinstance(new, dict):
            _merge_fields(old, new, local)
        elif local or not isinstance(new, dict):
            source[field] = copy.deepcopy(new)
        elif (child := _merge_tree(new)) is None:
            del source[field]
        else:
            source[field] = child


def _merge_tree(node: dict) -> dict | None:
    """JsonMerger.createMergeTree: a copy without nulls and {}; None if only those were in it."""
    result, dropped = {}, False
    for key, value in node.items():
        value = _merge_tree(value) if isinstance(value, dict) and value else value
        if _missing(value):
            dropped = True
        else:
            result[key] = copy.deepcopy(value)
    return None if dropped and not result else result


def _clear_state(node: object) -> None:
    if isinstance(node, dict) and "state" in node:
        _clear_state(node["state"])
    elif isinstance(node, dict):
        node.clear()


def _is_null_state(node: object) -> bool:
    return node is None or isinstance(node, dict) and "state" in node and node["state"] is None


def _is_empty_state(node: object) -> bool:
    return isinstance(node, dict) and (not node or "state" in node and _is_empty_state(node["state"]))


def _missing(node: object) -> bool:
    """JsonUtil.isNullOrMissing: null, absent or an EMPTY OBJECT."""
    return node is None or node == {}


def _sections(desired: dict | None, reported: dict | None) -> dict:
    return {key: value for key, value in zip(_SECTIONS, (desired, reported)) if value is not None}


def _size(section: dict | None) -> int:
    text = "" if section is None else json.dumps(section, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


# -- metadata ---------------------------------------------------------------------------

def _new_metadata(current: Shadow | None, state: object, desired: dict | None, reported: dict | None,
                  now: int, local: bool) -> tuple[dict, object]:
    """model/ShadowStateMetadata.update: (the stored metadata, the request's metadata patch)."""
    patch = _metadata_patch(state, now)
    if desired is None and reported is None:
        return {}, patch
    metadata = copy.deepcopy(current.metadata) if current is not None else {}
    values = dict(zip(_SECTIONS, (desired, reported)))
    for key, value in values.items():
        part = patch.get(key) if isinstance(patch, dict) else None
        if _missing(part):
            continue   # SM skips an empty patch: LOCAL keeps stale metadata of a cleared section
        merged = metadata.get(key) if isinstance(metadata.get(key), dict) else {}
        if value is not None:
            _merge_metadata(value, merged, part)
        metadata[key] = merged if value is not None and merged else None
    if local:
        return _sections(metadata.get("desired"), metadata.get("reported")), patch
    return {key: _project(metadata.get(key), value, now) for key, value in values.items()
            if value is not None}, patch


def _metadata_patch(node: object, now: int) -> object:
    if isinstance(node, dict):
        return {key: _metadata_patch(value, now) for key, value in node.items()}
    if isinstance(node, list):
        return [_metadata_patch(value, now) for value in node]
    return {"timestamp": now}


def _merge_metadata(state: dict, metadata: dict, patch: dict) -> None:
    """ShadowStateMetadata.merge as written (a leaf turned object recurses into the old leaf)."""
    for name, new in patch.items():
        value, old = state.get(name), metadata.get(name)
        if _missing(value):
            metadata.pop(name, None)
            continue
        if isinstance(new, list):
            metadata[name] = copy.deepcopy(new)
            continue
        if _missing(old) or type(old) is not type(new):
            old = metadata[name] = copy.deepcopy(new)
        if _is_leaf(new) or _is_leaf(old):
            metadata[name] = copy.deepcopy(new)
        if not _is_leaf(new) and isinstance(new, dict) and isinstance(old, dict) and isinstance(value, dict):
            _merge_metadata(value, old, new)


def _project(metadata: object, value: object, now: int) -> object:
    """CLOUD: metadata with exactly the shape of `value` (a leaf it lacks gets `now`)."""
    if isinstance(value, dict):
        inner = metadata if isinstance(metadata, dict) and not _is_leaf(metadata) else {}
        return {key: _project(inner.get(key), child, now) for key, child in value.items()}
    if isinstance(value, list):
        inner = metadata if isinstance(metadata, list) else []
        return [_project(inner[i] if i < len(inner) else None, child, now) for i, child in enumerate(value)]
    return copy.deepcopy(metadata) if _is_leaf(metadata) else {"timestamp": now}


def _is_leaf(node: object) -> bool:
    """ShadowStateMetadata.isMetadataNode: an object whose only key is an integer timestamp."""
    return isinstance(node, dict) and len(node) == 1 and _is_number(node.get("timestamp")) \
        and isinstance(node["timestamp"], int)


# -- delta ------------------------------------------------------------------------------

def delta(desired: dict | None, reported: dict | None) -> dict | None:
    """model/ShadowState.getDelta + util/JsonUtil.calculateDelta; None: nothing to say."""
    if not desired:
        return None
    return copy.deepcopy(desired) if reported is None else _value_delta(reported, desired)


def _value_delta(reported: object, desired: object) -> object:
    if isinstance(reported, dict) and isinstance(desired, dict):
        found = {}
        for field, wanted in desired.items():
            have = reported.get(field)
            if _missing(wanted):
                if not _missing(have):
                    found[field] = None
            elif _missing(have):
                found[field] = copy.deepcopy(wanted)
            elif (diff := _value_delta(have, wanted)) is not None:
                found[field] = diff
        return found or None
    if _is_number(reported) and _is_number(desired):   # asLong() == asLong() && asDouble() == asDouble()
        same = _java_cast(reported, 64) == _java_cast(desired, 64) and _double(reported) == _double(desired)
        return None if same else desired
    return None if _jackson_equal(reported, desired) else copy.deepcopy(desired)


def delta_metadata(found: object, desired_metadata: object) -> object:
    """ShadowStateMetadata.getDeltaMetadata: desired's metadata laid over the delta's shape.

    Where SM throws a NullPointerException (desired without any metadata, only after a first
    write such as {"desired":{"a":{}}}), the missing entries are null here."""
    if isinstance(found, dict):
        inner = desired_metadata if isinstance(desired_metadata, dict) else {}
        return {key: delta_metadata(value, inner.get(key)) for key, value in found.items()}
    if isinstance(found, list):
        inner = desired_metadata if isinstance(desired_metadata, list) else []
        return [delta_metadata(v, inner[i] if i < len(inner) else None) for i, v in enumerate(found)]
    return copy.deepcopy(desired_metadata)


def _json_type(value: object) -> str:
    """networknt TypeFactory.getValueNodeType names."""
    if isinstance(value, bool) or value is None:
        return "null" if value is None else "boolean"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number"}[type(value)]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _java_cast(value: int | float, bits: int) -> int:
    """Jackson asLong/asInt = a Java (long)/(int) cast: integers wrap, doubles saturate, NaN is 0."""
    top = 2 ** (bits - 1)
    if isinstance(value, int):
        return (value + top) % (2 * top) - top
    if value != value or abs(value) == float("inf"):
        return 0 if value != value else top - 1 if value > 0 else -top
    return max(-top, min(top - 1, int(value)))


def _double(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def _jackson_equal(a: object, b: object) -> bool:
    """JsonNode.equals: the same node type and value (1 != 1.0, true != 1, -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_jackson_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_jackson_equal(x, y) for x, y in zip(a, b))
    return repr(a) == repr(b) if isinstance(a, float) else a == b


# -- payloads ---------------------------------------------------------------------------

def _build(kind: str, local: bool, **fields: object) -> dict:
    return {key: fields[key] for key in _ORDER[kind][0 if local else 1]
            if key in fields and not (key == "clientToken" and fields[key] is None)}


def _document(shadow: Shadow) -> dict:
    """A document as update/documents shows it (model/ShadowDocument.toJson(true))."""
    return {"state": copy.deepcopy(shadow.state), "metadata": copy.deepcopy(shadow.metadata),
            "version": shadow.version}


def get_payload(shadow: Shadow, now: int, *, flavour: str = LOCAL, client_token: str | None = None) -> dict:
    """get/accepted == the GetThingShadow response: delta inside state, timestamp = now."""
    state = copy.deepcopy(shadow.state)
    found = delta(state.get("desired"), state.get("reported"))
    if found is not None:
        state["delta"] = found
    return _build("get", _is_local(flavour), state=state, metadata=copy.deepcopy(shadow.metadata),
                  version=shadow.version, timestamp=now, clientToken=client_token)


def delete_payload(shadow: Shadow, now: int, *, flavour: str = LOCAL) -> dict:
    """delete/accepted: the deleted document's version (the IPC response itself is b"")."""
    return _build("delete", _is_local(flavour), version=shadow.version, timestamp=now)


def tombstone_version(shadow: Shadow) -> int:
    """The version a deleted shadow keeps; CLOUD passes it back as update(deleted_version=)."""
    return shadow.version + 1


def rejected_payload(error: ShadowError, now: int, *, flavour: str = LOCAL) -> dict:
    return _build("rejected", _is_local(flavour), timestamp=now, clientToken=error.client_token,
                  code=error.code, message=error.message)
