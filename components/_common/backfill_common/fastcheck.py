"""A fast yes/no check compiled from a contract's JSON Schema, for the ingest hot path. Pure.

    is_valid = compile_contract("reading-corrected")     # None if the schema uses a keyword
    if is_valid is not None and is_valid(doc): ...       # this compiler does not know
    else: errors = contracts.check("reading-corrected", doc)   # jsonschema decides and explains

jsonschema walks a schema with $ref and unevaluatedProperties in ~400 us per reading; this
compiles the same schema file (never a hand copy) into closures, ~20x faster. It knows only
the keywords our reading schemas use (type, enum, const, minimum, maximum, minLength,
maxLength, pattern, required, properties, additionalProperties/unevaluatedProperties false,
a local $ref); anything else makes compile return None. A test holds it to jsonschema's
verdict on generated documents; and a "no" is always re-checked by jsonschema, so it can
only ever be stricter, never looser.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional

from . import contracts

Check = Callable[[object], bool]
ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples", "$comment"}
SIMPLE = {"type", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "pattern"}
OBJECT = {"required", "properties", "additionalProperties", "unevaluatedProperties"}


class Unsupported(Exception):
    pass


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite_number(value: object) -> bool:
    """JSON's numbers: NaN and Infinity are not (jsonschema still says a NaN is a number)."""
    return _is_number(value) and (not isinstance(value, float) or math.isfinite(value))


TYPES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "number": _is_finite_number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def _same(a: object, b: object) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _resolve(schema: dict, root: dict) -> dict:
    """Merge a local {"$ref": "#/..."} into the schema that holds it (object schemas only)."""
    if "$ref" not in schema:
        return schema
    ref = schema["$ref"]
    if not ref.startswith("#/"):
        raise Unsupported(ref)
    target = root
    for part in ref[2:].split("/"):
        target = target[part]
    base = _resolve(target, root)
    rest = {k: v for k, v in schema.items() if k != "$ref"}
    merged = dict(base)
    for key, value in rest.items():
        if key == "required":
            merged["required"] = list(base.get("required", [])) + list(value)
        elif key == "properties":
            props = dict(base.get("properties", {}))
            for name, sub in value.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            merged["properties"] = props
        elif key in base and base[key] != value and key not in ANNOTATIONS:
            raise Unsupported(f"conflicting {key}")
        else:
            merged[key] = value
    return merged


def _compile(schema: dict, root: dict) -> Check:
    schema = _resolve(schema, root)
    if set(schema) == {"allOf"}:
        parts = [_compile(s, root) for s in schema["allOf"]]
        return lambda v: all(p(v) for p in parts)
    unknown = set(schema) - ANNOTATIONS - SIMPLE - OBJECT
    if unknown:
        raise Unsupported(", ".join(sorted(unknown)))
    checks: list[Check] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        tests = [TYPES[k] for k in kinds]
        if len(tests) == 1:
            checks.append(tests[0])
        elif len(tests) == 2:
            one, two = tests
            checks.append(lambda v: one(v) or two(v))
        else:
            checks.append(lambda v: any(t(v) for t in tests))
    if "enum" in schema:
        options = list(schema["enum"])
        checks.append(lambda v: any(_same(v, o) for o in options))
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda v: _same(v, const))
    if "minimum" in schema and "maximum" in schema:
        low, high = schema["minimum"], schema["maximum"]
        checks.append(lambda v: not _is_number(v) or low <= v <= high)
    elif "minimum" in schema:
        low = schema["minimum"]
        checks.append(lambda v: not _is_number(v) or v >= low)
    elif "maximum" in schema:
        high = schema["maximum"]
        checks.append(lambda v: not _is_number(v) or v <= high)
    if "minLength" in schema:
        shortest = schema["minLength"]
        checks.append(lambda v: not isinstance(v, str) or len(v) >= shortest)
    if "maxLength" in schema:
        longest = schema["maxLength"]
        checks.append(lambda v: not isinstance(v, str) or len(v) <= longest)
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda v: not isinstance(v, str) or search(v) is not None)
    if OBJECT & set(schema):
        checks.append(_object(schema, root))
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)
    return lambda v: all(c(v) for c in checks)


def _object(schema: dict, root: dict) -> Check:
    required = tuple(schema.get("required", ()))
    props = {name: _compile(sub, root) for name, sub in schema.get("properties", {}).items()}
    closed = schema.get("additionalProperties") is False or schema.get("unevaluatedProperties") is False
    for key in ("additionalProperties", "unevaluatedProperties"):
        if key in schema and schema[key] not in (False, True):
            raise Unsupported(key)

    def check(value: object) -> bool:
        if not isinstance(value, dict):
            return True
        for name in required:
            if name not in value:
                return False
        for name, item in value.items():
            test = props.get(name)
            if test is None:
                if closed:
                    return False
            elif not test(item):
                return False
        return True
    return check


def compile_contract(name: str) -> Optional[Check]:
    """The fast check of a contract, or None if its schema is beyond this compiler."""
    file, pointer = contracts.NAMES[name]
    root = contracts.load(file)
    node = root
    for part in filter(None, pointer.lstrip("#").split("/")):
        node = node[part]
    try:
        return _compile(node, root)
    except (Unsupported, KeyError, re.error):
        return None
