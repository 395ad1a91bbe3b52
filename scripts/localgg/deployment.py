"""What a local deployment decides, without doing it: versions, configuration, the recipe store.

Usage::

    store = RecipeStore(root / "packages" / "recipes")
    store.add(recipe)                                    # a parsed recipe.Recipe
    versions = resolve({"A": "1.0.0"}, store, running={"B": "2.0.0"}, builtins={...})
    config = resolve_configuration(current, recipe.default_configuration,
                                   {"MERGE": {...}, "RESET": ["/x"]})

Rules (docs/lifecycle-recipes.md 4): breadth-first from the roots, every requirement on
a component ANDed; the running version wins if it satisfies them, else the highest
local version that does; what a root reaches must not depend on itself, however
indirectly ("Circular dependency detected for component A-v1.0.0"). Configuration: the current configuration, then RESET (JSON
pointers; "" resets everything), then the recipe defaults fill the gaps, then MERGE
(objects merged deeply, everything else replaced).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import base64
from pathlib import Path

import yaml

from . import semver
from .recipe import Recipe, RecipeError, load_recipe


SOURCE_SUFFIX = ".source"


class ResolutionError(ValueError):
    pass


class RecipeStore:
    """`<root>/packages/recipes/<b64url(sha256(name))>@<version>.recipe.yaml`, as the nucleus keeps it.

    Beside each copy, `<copy>.source` names the file it came from (a localgg addition):
    an error found in a stored recipe names the user's file, not the copy."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str, version: str) -> Path:
        digest = base64.urlsafe_b64encode(hashlib.sha256(name.encode()).digest()).decode().rstrip("=")
        return self.directory / f"{digest}@{version}.recipe.yaml"

    def add(self, recipe: Recipe) -> None:
        path = self._path(recipe.name, recipe.version)
        path.write_text(yaml.safe_dump(recipe.raw, sort_keys=False))
        source = path.with_name(path.name + SOURCE_SUFFIX)
        if recipe.source:
            source.write_text(recipe.source)
        else:
            source.unlink(missing_ok=True)

    def get(self, name: str, version: str) -> Recipe:
        path = self._path(name, version)
        if not path.exists():
            raise RecipeError(f"no recipe for {name}@{version} in {self.directory}")
        try:
            origin = path.with_name(path.name + SOURCE_SUFFIX).read_text()
        except OSError:
            return load_recipe(path)
        try:
            return dataclasses.replace(load_recipe(path), source=origin)
        except RecipeError as exc:
            raise RecipeError(str(exc).replace(str(path), origin)) from exc

    def versions(self, name: str) -> list[str]:
        prefix = self._path(name, "x").name.split("@")[0] + "@"
        found = [p.name[len(prefix):-len(".recipe.yaml")] for p in self.directory.glob(prefix + "*.recipe.yaml")]
        return sorted(found, key=semver.Version.parse)


def resolve(roots: dict[str, str], store: RecipeStore, running: dict[str, str],
            builtins: dict[str, str]) -> dict[str, str]:
    """Component -> version for the roots and everything they depend on.

    `roots` maps a root component to a requirement (a version or a range)."""
    requirements: dict[str, list[tuple[str, str]]] = {}
    chosen: dict[str, str] = {}
    queue = []
    for name, requirement in roots.items():
        requirements.setdefault(name, []).append(("LOCAL_DEPLOYMENT", requirement))
        queue.append(name)
    while queue:
        name = queue.pop(0)
        version = _choose(name, requirements[name], store, running, builtins)
        if chosen.get(name) == version:
            continue
        chosen[name] = version
        if name in builtins:
            continue
        for dep, spec in store.get(name, version).dependencies.items():
            requirements.setdefault(dep, []).append((name, spec.version_requirement))
            queue.append(dep)
    dependencies = {n: [] if n in builtins else list(store.get(n, v).dependencies) for n, v in chosen.items()}
    for root in roots:
        _refuse_cycles(root, chosen, dependencies)
    return chosen


def _refuse_cycles(root: str, chosen: dict[str, str], dependencies: dict[str, list[str]]) -> None:
    """DependencyResolver.detectCircularDependency: what `root` reaches must have an order."""
    reached, queue = set(), [root]
    while queue:
        name = queue.pop()
        if name not in reached:
            reached.add(name)
            queue.extend(d for d in dependencies.get(name, ()) if d in chosen)
    waiting = {n: {d for d in dependencies.get(n, ()) if d in reached} for n in reached}
    ready = [n for n, deps in waiting.items() if not deps]
    ordered = 0
    while ready:
        done = ready.pop()
        ordered += 1
        for name, deps in waiting.items():
            if done in deps:
                deps.discard(done)
                if not deps:
                    ready.append(name)
    if ordered != len(reached):
        raise ResolutionError(f"Circular dependency detected for component {root}-v{chosen[root]}")


def _choose(name: str, reqs: list[tuple[str, str]], store: RecipeStore, running: dict[str, str],
            builtins: dict[str, str]) -> str:
    def ok(version: str) -> bool:
        return all(semver.satisfies(version, r) for _, r in reqs)

    if name in builtins:
        candidates = [builtins[name]]
    else:
        candidates = ([running[name]] if name in running else []) + list(reversed(store.versions(name)))
    for version in candidates:
        if ok(version):
            return version
    wanted = ", ".join(f"{who} requires {r}" for who, r in reqs)
    raise ResolutionError(
        "Device is configured to run offline and no local component version satisfies the requirements. "
        f"Check whether the version constraints conflict and that the component exists in your recipe "
        f"directory. Component {name} version constraints: {wanted}. {_have(name, candidates, builtins)}")


def _have(name: str, candidates: list[str], builtins: dict[str, str]) -> str:
    """What there is instead (a localgg addition to the nucleus's text)."""
    if name in builtins:
        return f"(localgg: {name} is built in, version {builtins[name]} only.)"
    if candidates:
        return f"(localgg: the versions of {name} here are {', '.join(sorted(set(candidates), key=semver.Version.parse))}.)"
    return (f"(localgg: there is no recipe of {name}: none in the recipe directory of this deployment or of an "
            f"earlier one.)")


def _pointer_parts(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"RESET path must be a JSON pointer starting with '/': {pointer!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _fill_gaps(target: dict, defaults: dict) -> None:
    for key, value in defaults.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(target[key], dict) and isinstance(value, dict):
            _fill_gaps(target[key], value)


def deep_merge(target: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def resolve_configuration(current: dict | None, defaults: dict, update: dict | None) -> dict:
    config = copy.deepcopy(current) if current is not None else {}
    update = update or {}
    for pointer in update.get("RESET") or []:
        parts = _pointer_parts(str(pointer))
        if not parts:
            config = {}
            continue
        node = config
        for key in parts[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    _fill_gaps(config, defaults)
    merge = update.get("MERGE") or {}
    if not isinstance(merge, dict):
        raise ValueError("MERGE must be a JSON object")
    deep_merge(config, merge)
    return config
