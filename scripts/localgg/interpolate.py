"""Recipe variables: `{configuration:/ptr}`, `{artifacts:path}`, `{Other.Comp:configuration:/ptr}`...

Usage::

    ctx = Scope(values={"artifacts:path": "/gg/packages/artifacts/A/1.0.0", ...},
                configuration={"port": 8080}, dependencies={"B": Scope(...)})
    interpolate("python3 {artifacts:path}/a.py --port {configuration:/port}", ctx)

Rules (the nucleus's KernelConfigResolver; docs/lifecycle-recipes.md 3.4): the
same-component pass runs first, then `{Component:namespace:key}` for DIRECT
dependencies only; configuration values render as text (strings raw, objects and
arrays as compact JSON); anything unknown or missing is left exactly as written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

SAME = re.compile(r"\{([.\w-]+):([^:}]*)\}")
CROSS = re.compile(r"\{([.\w-]+):([.\w-]+):([^:}]*)\}")
_MISSING = object()


@dataclass
class Scope:
    """What one component's variables resolve to."""

    values: dict[str, str] = field(default_factory=dict)   # "namespace:key" -> text
    configuration: dict = field(default_factory=dict)
    dependencies: dict[str, "Scope"] = field(default_factory=dict)


def json_pointer(document: object, pointer: str) -> object:
    """RFC 6901 lookup; returns _MISSING when a step is absent."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        return _MISSING
    node = document
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node


def render(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _lookup(scope: Scope, namespace: str, key: str) -> str | None:
    if namespace == "configuration":
        found = json_pointer(scope.configuration, key)
        return None if found is _MISSING else render(found)
    return scope.values.get(f"{namespace}:{key}")


def interpolate(text: str, scope: Scope) -> str:
    def same(m: re.Match) -> str:
        found = _lookup(scope, m.group(1), m.group(2))
        return m.group(0) if found is None else found

    def cross(m: re.Match) -> str:
        other = scope.dependencies.get(m.group(1))
        found = None if other is None else _lookup(other, m.group(2), m.group(3))
        return m.group(0) if found is None else found

    return CROSS.sub(cross, SAME.sub(same, text))


def interpolate_tree(node: object, scope: Scope) -> object:
    """Interpolate every string inside a lifecycle mapping."""
    if isinstance(node, str):
        return interpolate(node, scope)
    if isinstance(node, dict):
        return {k: interpolate_tree(v, scope) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, scope) for v in node]
    return node
