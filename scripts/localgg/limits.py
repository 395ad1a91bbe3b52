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

Usage::

    if too_deep(value, MAX_DEPTH): ...
    text = clip(cause)
"""

from __future__ import annotations

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


def clip(text: str, limit: int = MAX_RECORDED_TEXT) -> str:
    """`text`, or its start and how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
