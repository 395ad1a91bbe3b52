"""The message contracts: JSON Schemas under schemas/, compiled once, checked at every boundary.

    from backfill_common import contracts
    errors = contracts.check("reading-raw", doc)        # [] when valid, else readable messages
    contracts.require("ack", doc)                       # raises ContractError

Names: reading-raw, reading-corrected, ack, batch-v1, shadow, config-sensor,
config-correction, config-store. Validators are built once per process (no re-parse per message).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

from . import strictjson

SCHEMAS = Path(__file__).resolve().parent / "schemas"

# name -> (schema file, JSON pointer inside it)
NAMES = {
    "reading-raw": ("reading.json", "#/$defs/raw"),
    "reading-corrected": ("reading.json", "#/$defs/corrected"),
    "ack": ("ack.json", ""),
    "batch-v1": ("batch-v1.json", ""),
    "shadow": ("shadow.json", ""),
    "config-sensor": ("config-sensor.json", ""),
    "config-correction": ("config-correction.json", ""),
    "config-store": ("config-store.json", ""),
}
MAX_ERRORS = 5
INTEGER_FIELDS = ("seq", "t", "mono", "held_from")   # integers of a reading that Greengrass may hand back as 42.0


class ContractError(ValueError):
    """A document that does not satisfy its contract; `errors` lists why."""

    def __init__(self, name: str, errors: list[str]) -> None:
        super().__init__(f"not a valid {name}: " + "; ".join(errors))
        self.name, self.errors = name, errors


def load(file: str) -> dict:
    """The schema document in schemas/<file>."""
    return json.loads((SCHEMAS / file).read_text())


@functools.lru_cache(maxsize=None)
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    """The compiled validator for a contract name (KeyError for an unknown name)."""
    file, pointer = NAMES[name]
    schema_id = load(file)["$id"]
    return jsonschema.Draft202012Validator({"$ref": schema_id + pointer}, registry=_registry())


def schema_of(name: str) -> dict:
    """The resolved schema object of a contract name (for defaults and ranges)."""
    file, pointer = NAMES[name]
    node = load(file)
    for part in filter(None, pointer.lstrip("#").split("/")):
        node = node[part]
    return node


def check(name: str, doc: object) -> list[str]:
    """Why `doc` breaks contract `name` (at most MAX_ERRORS reasons); [] when it is valid."""
    errors = []
    where = strictjson.non_finite(doc)
    if where is not None:       # jsonschema's minimum and maximum never refuse NaN
        errors.append(f"{where}: not a finite number (JSON has no NaN or Infinity)")
    for error in validator(name).iter_errors(doc):
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        errors.append(f"{where}: {_short(error.message)}")
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def known_properties(name: str) -> frozenset:
    """Every property name contract `name` knows, through its $refs and allOf."""
    file, _ = NAMES[name]
    names: set = set()
    stack = [schema_of(name)]
    defs = load(file).get("$defs", {})
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                stack.append(defs.get(ref.split("/")[-1]))
            stack.extend(v for k, v in node.items() if k in ("allOf", "anyOf", "oneOf", "$defs"))
        elif isinstance(node, list):
            stack.extend(node)
    return frozenset(names)


def check_tolerant(name: str, doc: object, reserved: tuple = ()) -> tuple[list[str], list[str]]:
    """A tolerant reader for additive changes: (errors, extra field names). A document that
    breaks the contract only by carrying fields it does not know (not in `reserved`, and
    finite) is valid here, and its extras are named; otherwise the contract's errors."""
    errors = check(name, doc)
    if not errors or not isinstance(doc, dict):
        return errors, []
    known = known_properties(name)
    extras = sorted(k for k in doc if k not in known)
    if not extras or any(k in reserved for k in extras) or strictjson.non_finite(doc) is not None:
        return errors, []
    if check(name, {k: v for k, v in doc.items() if k in known}):
        return errors, []
    return [], extras


def integers(reading: dict) -> dict:
    """A copy of a reading (after its contract check) with INTEGER_FIELDS as ints: a JSON
    number that went through Greengrass's configuration or a double-typed client is 42.0."""
    out = dict(reading)
    for key in INTEGER_FIELDS:
        if isinstance(out.get(key), float):
            out[key] = int(out[key])
    return out


def require(name: str, doc: object) -> None:
    """Raise ContractError unless `doc` satisfies contract `name`."""
    errors = check(name, doc)
    if errors:
        raise ContractError(name, errors)


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + "..."
