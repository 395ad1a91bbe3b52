"""Bounds on what a client, a recipe or a deployment can make the core hold (localgg's own).

The nucleus has few such bounds: a Java stack or heap gives out somewhere. localgg
states its own, so that one bad input fails alone with a message that names it,
instead of failing later somewhere else (a save, a stop, every later request):

- MAX_DEPTH: how deeply JSON and YAML values may nest (IPC requests, recipes,
  configuration including its key path). 64 levels; a shadow document may have 6.
- MAX_YAML_NODES: how many nodes a YAML document may expand to through its aliases
  (`&a [*b, *b, ...]` doubles at every level: 790 bytes made 1.79 GB).
- MAX_RECORDED_TEXT: how much of a text that echoes input (a failure cause naming a
  path) a deployment record keeps.
- MAX_OUTGOING_BYTES / MAX_OUTGOING_HARD: an IPC connection's unsent bytes: above the
  first, events for its subscriptions are dropped (and counted in the log); above the
  second (a client that does not even read its responses) the connection is closed.

Untrusted JSON is measured before it is parsed (`check_nesting`, `loads`): CPython's json
decoder recurses once per level, so a 100,000-level request would run it to the
interpreter's recursion limit. A garbage collection that starts down there runs other
objects' finalizers with no stack left: they fail with RecursionError, "Exception ignored
in ..." (pytest's "multiple unraisable exception warnings"). Refused by counting brackets
instead, nothing else happens.

Usage::

    if too_deep(value, MAX_DEPTH): ...
    request = loads(payload)         # ValueError when it is not JSON or nests too deeply
    text = clip(cause)
"""

from __future__ import annotations

import itertools
import json
import re

MAX_DEPTH = 64
MAX_YAML_NODES = 100_000
MAX_RECORDED_TEXT = 4096
MAX_OUTGOING_BYTES = 32 * 1024 * 1024
MAX_OUTGOING_HARD = 64 * 1024 * 1024


def depth(value: object, limit: int) -> int:
    """How deeply `value` nests dicts and lists ({} is 1, a scalar 0), counted without
    recursion and only up to `limit + 1` (enough to say it is too deep)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    return depth(value, limit) > limit


_STRING = re.compile(rb'"(?:[^"\\]+|\\.)*"?', re.DOTALL)   # an unterminated string matches once, to the end: linear
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


def nesting(data: bytes | str) -> int:
    """How deeply the JSON text `data` nests arrays and objects, without parsing it (and
    without recursion): brackets counted outside strings. Malformed text gets some number;
    the parser then refuses it."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= 1:
        return raw.count(b"[") + raw.count(b"{")
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw)).translate(_STEP)
    return max(itertools.accumulate(b if b < 128 else b - 256 for b in brackets))


def check_nesting(data: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Raise ValueError if the JSON text `data` nests deeper than `limit` levels."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") > limit and nesting(raw) > limit:
        raise ValueError(f"request nested deeper than {limit} levels (localgg's limit)")


def loads(data: bytes | str, limit: int = MAX_DEPTH, **kwargs) -> object:
    """json.loads, after `check_nesting`: never recurses deeper than `limit` levels."""
    check_nesting(data, limit)
    return json.loads(data, **kwargs)


def clip(text: str, limit: int = MAX_RECORDED_TEXT) -> str:
    """`text`, or its start and how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
