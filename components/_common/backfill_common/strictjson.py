"""Strict JSON at every boundary: no NaN or Infinity in or out (IoT rules and JavaScript
refuse them), and no nesting deep enough to run json's recursive decoder near the
interpreter's limit (a garbage collection down there runs finalizers with no stack left).

    doc = loads(payload)            # ValueError: not JSON, NaN/Infinity, or nested too deeply
    text = dumps(doc)               # compact; ValueError for a non-finite number
    where = non_finite(doc)         # "temperature" (the first path to a NaN/Infinity) or None
"""

from __future__ import annotations

import json
import math
import re
from typing import Optional

MAX_DEPTH = 32          # our messages nest 3 levels; a shadow document 6

_STRING = re.compile(rb'"(?:[^"\\]+|\\.)*"?', re.DOTALL)   # an unterminated string matches once, to the end: linear
_OPEN = re.compile(rb"[\[{]")
_CLOSE = re.compile(rb"[\]}]")


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (no NaN or Infinity)")


_DECODER = json.JSONDecoder(parse_constant=_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def nesting(raw: bytes) -> int:
    """How deeply JSON text nests arrays and objects, counted without parsing or recursion."""
    if raw.count(b"[") + raw.count(b"{") <= 1:
        return raw.count(b"[") + raw.count(b"{")
    structure = _STRING.sub(b"", raw)
    depth = deepest = 0
    for match in re.finditer(rb"[\[{\]}]", structure):
        depth += 1 if match.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def loads(data: bytes | bytearray | str, max_depth: int = MAX_DEPTH) -> object:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting(raw) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    text = raw.decode("utf-8") if not isinstance(data, str) else data
    return _DECODER.decode(text)


def dumps(value: object) -> str:
    return _ENCODER.encode(value)


def non_finite(doc: object) -> Optional[str]:
    """The path of the first NaN or Infinity in `doc` (decoded already), or None."""
    stack = [(doc, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path or "(document)"
        if isinstance(node, dict):
            stack.extend((v, f"{path}/{k}" if path else str(k)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(node))
    return None
