"""Component recipes (RecipeFormatVersion 2020-01-25): parsing, manifest selection, steps.

Usage::

    recipe = load_recipe(Path("recipes/com.example.Hello.yaml"))    # YAML or JSON
    chosen = recipe.select(device_platform())    # first matching manifest -> lifecycle, artifacts
    run = step(chosen.lifecycle, "run")          # Step(script=..., timeout=None, ...) or None

Rules (component-common's RecipeLoader and PlatformHelper, the nucleus's
GenericExternalService; docs/lifecycle-recipes.md section 3):
- keys are case-insensitive (`Run`, `run`, `Script`, `script`);
- Manifests is required; the FIRST manifest whose Platform matches wins; a Platform
  value of `*` (or `all`/`any` for os and architecture) matches anything, `/re/` is
  a regular expression, anything else must be equal (case-sensitive);
- a manifest's own Lifecycle wins; otherwise the top-level Lifecycle is filtered
  by the manifest's Selections (plus `all`);
- a step is a script string or {Script, Timeout, Skipif, Setenv, RequiresPrivilege}.
Raises RecipeError with the file and the reason.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import semver

FORMAT_VERSION = "2020-01-25"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9-_.]+$")
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the reason."""


def ci_get(mapping: object, key: str, default: object = None) -> object:
    """Case-insensitive lookup, as the nucleus reads recipes and configuration."""
    if not isinstance(mapping, dict):
        return default
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for k, v in mapping.items():
        if str(k).lower() == lowered:
            return v
    return default


@dataclass(frozen=True)
class Dependency:
    version_requirement: str
    type: str = "HARD"


@dataclass(frozen=True)
class Artifact:
    uri: str
    unarchive: str = "NONE"
    permission: dict = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Selected:
    lifecycle: dict
    artifacts: tuple[Artifact, ...]


@dataclass(frozen=True)
class Step:
    script: str
    timeout: float | None = None
    skipif: str | None = None
    setenv: dict = field(default_factory=dict)
    requires_privilege: bool = False


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    type: str
    default_configuration: dict
    dependencies: dict[str, Dependency]
    manifests: tuple[dict, ...]
    lifecycle: dict
    raw: dict
    source: str = ""

    def select(self, device: dict[str, str]) -> Selected:
        """The first manifest that matches `device` (os, architecture)."""
        for manifest in self.manifests:
            if platform_matches(ci_get(manifest, "Platform") or {}, device):
                return Selected(self._lifecycle_for(manifest), _artifacts(manifest, self.source))
        raise RecipeError(f"{self.source or self.name}: no manifest matches the platform {device}")

    def _lifecycle_for(self, manifest: dict) -> dict:
        own = ci_get(manifest, "Lifecycle")
        if isinstance(own, dict) and own:
            return own
        keywords = {"all"}
        for m in self.manifests:
            keywords.update(str(s) for s in (ci_get(m, "Selections") or []))
        selections = [str(s) for s in (ci_get(manifest, "Selections") or [])] + ["all"]
        return _filter_selections(self.lifecycle, keywords, selections)


def _filter_selections(node: object, keywords: set[str], selections: list[str]) -> object:
    if not isinstance(node, dict):
        return node
    if any(k in keywords for k in node):
        for choice in selections:
            if choice in node:
                return _filter_selections(node[choice], keywords, selections)
        return {}
    return {k: _filter_selections(v, keywords, selections) for k, v in node.items()}


def device_platform() -> dict[str, str]:
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64",
            "i386": "x86", "i686": "x86"}.get(machine, "arm" if machine.startswith("arm") else machine)
    system = _platform.system().lower()
    return {"os": system if system in ("linux", "darwin", "windows") else "unknown", "architecture": arch}


def platform_matches(requirement: dict, device: dict[str, str]) -> bool:
    for key, wanted in requirement.items():
        if wanted is None or wanted == "*":
            continue
        wanted = str(wanted)
        if key in ("os", "architecture") and wanted in ("all", "any"):
            continue
        label = device.get(key)
        if not label:
            return False
        if len(wanted) > 1 and wanted.startswith("/") and wanted.endswith("/"):
            if not re.fullmatch(wanted[1:-1], label):
                return False
        elif wanted != label:
            return False
    return True


def _artifacts(manifest: dict, source: str) -> tuple[Artifact, ...]:
    out = []
    for item in ci_get(manifest, "Artifacts") or []:
        uri = ci_get(item, "URI") or ci_get(item, "Uri")
        if not uri:
            raise RecipeError(f"{source}: an artifact has no URI")
        unarchive = str(ci_get(item, "Unarchive") or "NONE").upper()
        if unarchive not in ("NONE", "ZIP"):
            raise RecipeError(f"{source}: artifact {uri}: Unarchive must be ZIP or NONE, not {unarchive}")
        out.append(Artifact(str(uri), unarchive, ci_get(item, "Permission") or {}))
    return tuple(out)


def step(lifecycle: dict, name: str) -> Step | None:
    """The lifecycle step `name` (install, run, startup, shutdown, recover), or None."""
    value = ci_get(lifecycle, name)
    if value is None:
        return None
    if isinstance(value, str):
        return Step(value)
    if not isinstance(value, dict):
        raise RecipeError(f"lifecycle step {name} must be a script or an object")
    script = ci_get(value, "Script")
    if script is None:
        raise RecipeError(f"lifecycle step {name} has no Script")
    timeout = ci_get(value, "Timeout")
    return Step(str(script), float(timeout) if timeout is not None else None,
                ci_get(value, "Skipif"), dict(ci_get(value, "Setenv") or {}),
                bool(ci_get(value, "RequiresPrivilege", False)))


def parse_recipe(data: object, source: str = "") -> Recipe:
    where = source or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping")
    fmt = str(ci_get(data, "RecipeFormatVersion") or "")
    if fmt != FORMAT_VERSION:
        raise RecipeError(f"{where}: RecipeFormatVersion must be {FORMAT_VERSION}, not {fmt or 'missing'}")
    name = ci_get(data, "ComponentName")
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > 128:
        raise RecipeError(f"{where}: ComponentName must match {NAME_PATTERN.pattern} (<= 128 chars): {name!r}")
    version = str(ci_get(data, "ComponentVersion") or "")
    if not semver.valid(version) or len(version) > 64:
        raise RecipeError(f"{where}: ComponentVersion must be a semantic version: {version!r}")
    manifests = ci_get(data, "Manifests")
    if not isinstance(manifests, list) or not manifests:
        raise RecipeError(f"{where}: Recipe file {name}-{version}.yaml is missing manifests")
    config = ci_get(ci_get(data, "ComponentConfiguration") or {}, "DefaultConfiguration") or {}
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise RecipeError(f"{where}: DefaultConfiguration is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise RecipeError(f"{where}: DefaultConfiguration must be a mapping")
    deps = {}
    for dep_name, spec in (ci_get(data, "ComponentDependencies") or {}).items():
        requirement = str(ci_get(spec, "VersionRequirement") or "")
        try:
            semver.check_range(requirement)
        except ValueError as exc:
            raise RecipeError(f"{where}: dependency {dep_name}: VersionRequirement {requirement!r}: {exc}") from exc
        dep_type = str(ci_get(spec, "DependencyType") or "HARD").upper()
        if dep_type not in ("HARD", "SOFT"):
            raise RecipeError(f"{where}: dependency {dep_name}: DependencyType must be HARD or SOFT")
        deps[str(dep_name)] = Dependency(requirement or "*", dep_type)
    return Recipe(name=name, version=version,
                  type=str(ci_get(data, "ComponentType") or "aws.greengrass.generic"),
                  default_configuration=config, dependencies=deps, manifests=tuple(manifests),
                  lifecycle=ci_get(data, "Lifecycle") or {}, raw=data, source=source)


def load_recipe(path: Path) -> Recipe:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RecipeError(f"Unable to parse {path} as a recipe due to: {exc}") from exc
    return parse_recipe(data, str(path))


def find_recipes(directory: Path) -> list[Recipe]:
    """Every recipe under `directory`, recursively (.yaml, .yml, .json; others are skipped).

    One file that does not parse fails the whole call, as it fails a deployment."""
    recipes = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.suffix.lower() in RECIPE_SUFFIXES and path.stat().st_size > 0:
            recipes.append(load_recipe(path))
    return recipes
