"""Component configuration: a case-insensitive tree with a modification time on every node.

Usage::

    store = ConfigStore(clock_ms=lambda: 1000)
    store.replace("com.example.A", {"port": 8080}, timestamp_ms=1)
    store.merge("com.example.A", ["limits"], {"max": 5}, timestamp_ms=2000)   # -> changed leaf paths
    store.get("com.example.A", ["Port"])          # -> Leaf(name="port", value=8080, ...)
    store.watch("com.example.A", ["limits"], callback)   # callback(component, leaf_path)

Semantics are the nucleus's `config/Topics.java` and `Topic.java`
(scripts/localgg/docs/ipc-services.md section 4): keys are case-insensitive and keep
the spelling first stored; a leaf takes a proposed value only if the proposed
timestamp is not older than its own; a merge into a leaf turns it into a container;
a container's modtime is the newest of its own and its children's.
Raises nothing for unknown paths: `get` returns None.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("localgg.config")

Path = tuple[str, ...]
Watcher = Callable[[str, list[str]], None]


@dataclass
class Leaf:
    name: str
    value: object
    modtime: int


@dataclass
class Container:
    name: str
    modtime: int
    children: dict[str, "Leaf | Container"] = field(default_factory=dict)  # keyed by name.lower()

    def child(self, name: str) -> "Leaf | Container | None":
        return self.children.get(name.lower())

    def latest(self) -> int:
        return max([self.modtime] + [c.latest() if isinstance(c, Container) else c.modtime
                                     for c in self.children.values()])


def to_python(node: Leaf | Container) -> object:
    if isinstance(node, Leaf):
        return copy.deepcopy(node.value)
    return {child.name: to_python(child) for child in node.children.values()}


def _build(name: str, value: object, ts: int) -> Leaf | Container:
    if isinstance(value, dict):
        box = Container(name, ts)
        for key, sub in value.items():
            box.children[str(key).lower()] = _build(str(key), sub, ts)
        return box
    return Leaf(name, copy.deepcopy(value), ts)


class ConfigStore:
    """The `configuration` trees of every component, with watchers."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self.clock_ms = clock_ms
        self._roots: dict[str, Container] = {}
        self._watchers: list[tuple[str, Path, Watcher]] = []
        self.generation: dict[str, int] = {}
        self._views: dict[tuple[str, Path], tuple[int, object]] = {}

    # -- reading --------------------------------------------------------------------

    def components(self) -> list[str]:
        return sorted(self._roots)

    def has(self, component: str) -> bool:
        return component in self._roots

    def get(self, component: str, path: list[str] | tuple[str, ...] = ()) -> Leaf | Container | None:
        node: Leaf | Container | None = self._roots.get(component)
        for key in path:
            if not isinstance(node, Container):
                return None
            node = node.child(key)
        return node

    def value(self, component: str, path: list[str] | tuple[str, ...] = (), default: object = None) -> object:
        node = self.get(component, path)
        return default if node is None else to_python(node)

    def view(self, component: str, path: list[str] | tuple[str, ...] = (), default: object = None) -> object:
        """Like value(), but one shared copy until the component's configuration changes,
        for readers on a hot path (authorization, the MQTT settings). Do not mutate it."""
        key = (component, tuple(k.lower() for k in path))
        generation = self.generation.get(component, 0)
        cached = self._views.get(key)
        if cached is None or cached[0] != generation:
            cached = (generation, self.value(component, path, default))
            self._views[key] = cached
        return cached[1]

    def _bump(self, component: str) -> None:
        self.generation[component] = self.generation.get(component, 0) + 1

    # -- writing --------------------------------------------------------------------

    def replace(self, component: str, value: dict, timestamp_ms: int) -> list[list[str]]:
        """Make `component`'s configuration exactly `value` (a deployment's REPLACE)."""
        old = self._roots.get(component)
        new = _build(component, value, timestamp_ms)
        changed = _diff_paths(old, new, [])
        self._roots[component] = new
        self._bump(component)
        self._changed(component, changed)
        return changed

    def remove_component(self, component: str) -> None:
        old = self._roots.pop(component, None)
        self._bump(component)
        if old is not None:
            self._changed(component, [[c.name] for c in old.children.values()])

    def merge(self, component: str, path: list[str], value: dict, timestamp_ms: int) -> list[list[str]]:
        """Merge `value` into the container at `path` (created if missing) with the timestamp.

        A leaf on the way is replaced by a container. Returns the changed leaf paths.
        """
        root = self._roots.setdefault(component, Container(component, timestamp_ms))
        node, prefix = root, []
        for key in path:
            child = node.child(key)
            if not isinstance(child, Container):
                child = Container(child.name if child else key, timestamp_ms)
                node.children[key.lower()] = child
            prefix.append(child.name)
            node = child
        changed: list[list[str]] = []
        self._merge_into(node, value, timestamp_ms, prefix, changed)
        self._changed(component, changed)
        return changed

    def _merge_into(self, box: Container, value: dict, ts: int, prefix: list[str],
                    changed: list[list[str]]) -> None:
        for key, new in value.items():
            key = str(key)
            old = box.child(key)
            path = prefix + [old.name if old else key]
            if isinstance(new, dict):
                if not isinstance(old, Container):
                    if isinstance(old, Leaf) and ts < old.modtime:
                        continue
                    old = Container(path[-1], ts)
                    box.children[key.lower()] = old
                    changed.append(path)
                self._merge_into(old, new, ts, path, changed)
            elif isinstance(old, Leaf):
                if ts < old.modtime:
                    continue
                old.modtime = ts
                if old.value != new or type(old.value) is not type(new):
                    old.value = copy.deepcopy(new)
                    changed.append(path)
            else:
                if isinstance(old, Container) and ts < old.latest():
                    continue
                box.children[key.lower()] = Leaf(path[-1], copy.deepcopy(new), ts)
                changed.append(path)
        box.modtime = max(box.modtime, ts)

    def remove(self, component: str, path: list[str]) -> bool:
        """Delete the node at `path` (a deployment's RESET). Returns whether it existed."""
        if not path:
            return False
        parent = self.get(component, path[:-1])
        if not isinstance(parent, Container) or parent.child(path[-1]) is None:
            return False
        node = parent.children.pop(path[-1].lower())
        self._changed(component, [list(path[:-1]) + [node.name]])
        return True

    # -- watching -------------------------------------------------------------------

    def watch(self, component: str, path: list[str], callback: Watcher) -> Callable[[], None]:
        """Call `callback(component, leaf_path)` for every change at or below `path`.

        Returns a function that stops watching."""
        entry = (component, tuple(k.lower() for k in path), callback)
        self._watchers.append(entry)

        def cancel() -> None:
            if entry in self._watchers:
                self._watchers.remove(entry)
        return cancel

    def _changed(self, component: str, paths: list[list[str]]) -> None:
        if not paths:
            return
        self._bump(component)
        for watched_component, prefix, callback in list(self._watchers):
            if watched_component != component:
                continue
            for path in paths:
                lowered = tuple(k.lower() for k in path)
                if lowered[:len(prefix)] == prefix or prefix[:len(lowered)] == lowered:
                    try:
                        callback(component, path)
                    except Exception:  # a watcher's failure must not stop the change
                        log.exception("configuration watcher of %s failed", component)

    # -- persistence ----------------------------------------------------------------

    def snapshot(self) -> dict:
        return {name: _dump(root) for name, root in self._roots.items()}

    def restore(self, data: dict) -> None:
        self._roots = {name: _load(tree) for name, tree in data.items()}
        for name in self._roots:
            self._bump(name)


def _diff_paths(old: Leaf | Container | None, new: Leaf | Container, prefix: list[str]) -> list[list[str]]:
    """Leaf paths that differ between two trees (added, removed or changed)."""
    if isinstance(old, Container) and isinstance(new, Container):
        out = []
        for key in set(old.children) | set(new.children):
            o, n = old.children.get(key), new.children.get(key)
            name = (n or o).name
            if n is None:
                out.append(prefix + [name])
            else:
                out.extend(_diff_paths(o, n, prefix + [name]))
        return out
    if isinstance(old, Leaf) and isinstance(new, Leaf) and old.value == new.value:
        return []
    if old is None and isinstance(new, Container):
        return [p for key, child in new.children.items() for p in _diff_paths(None, child, prefix + [child.name])] \
            or ([prefix] if prefix else [])
    return [prefix] if prefix else []


def _dump(node: Leaf | Container) -> dict:
    if isinstance(node, Leaf):
        return {"n": node.name, "t": node.modtime, "v": node.value}
    return {"n": node.name, "t": node.modtime, "c": [_dump(c) for c in node.children.values()]}


def _load(data: dict) -> Leaf | Container:
    if "c" in data:
        box = Container(data["n"], data["t"])
        for child in data["c"]:
            node = _load(child)
            box.children[node.name.lower()] = node
        return box
    return Leaf(data["n"], data["v"], data["t"])
