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
- a step is a script string or {Script, Timeout, Skipif, Setenv, RequiresPrivilege};
  RequiresPrivilege is a boolean or the string "true"/"false" (Coerce.toBoolean);
- a field of the wrong type (ComponentDependencies or Platform as a list, Setenv as a
  list, ...) is refused with the file, the field and what was expected, where the
  nucleus's Jackson fails with its own words;
- names and versions become paths (`packages/artifacts/<name>/<version>/`, a ZIP's
  folder), so a name must be [a-zA-Z0-9-_.]+ and not only dots, a version a semantic
  version with no spaces, and a ZIP artifact's name must leave a folder name that is
  not "." or "..";
- a YAML recipe whose aliases expand to more than MAX_YAML_NODES nodes, or any recipe
  nested deeper than MAX_DEPTH (+2 for ComponentConfiguration.DefaultConfiguration),
  is refused (limits.py; localgg's own bounds).
Raises RecipeError with the file and the reason.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import limits, semver

FORMAT_VERSION = "2020-01-25"
NAME_PATTERN = re.compile(r"[a-zA-Z0-9-_.]+")  # used with fullmatch: "$" would let a final newline in
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
        # greengrass:<file> is the artifact CreateComponentVersion stores for an imported Lambda
        return self.uri.rstrip("/").rsplit("/", 1)[-1].split("greengrass:", 1)[-1]


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
        """The first manifest that matches `device` (os, architecture), its steps checked."""
        for manifest in self.manifests:
            if platform_matches(ci_get(manifest, "Platform") or {}, device):
                lifecycle = self._lifecycle_for(manifest)
                check_lifecycle(lifecycle, self.source or self.name)
                return Selected(lifecycle, _artifacts(manifest, self.source or self.name))
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
    items = ci_get(manifest, "Artifacts") or []
    _expect(items, list, f"{source}: Manifests[].Artifacts", "a list")
    for item in items:
        _expect(item, dict, f"{source}: Manifests[].Artifacts[]", "a mapping with URI")
        uri = ci_get(item, "URI") or ci_get(item, "Uri")
        if not uri or not isinstance(uri, str):
            raise RecipeError(f"{source}: an artifact has no URI")
        unarchive = str(ci_get(item, "Unarchive") or "NONE").upper()
        if unarchive not in ("NONE", "ZIP"):
            raise RecipeError(f"{source}: artifact {uri}: Unarchive must be ZIP or NONE, not {unarchive}")
        permission = ci_get(item, "Permission") or {}
        _expect(permission, dict, f"{source}: artifact {uri}: Permission", "a mapping (Read, Execute)")
        artifact = Artifact(uri, unarchive, permission)
        if artifact.file_name in ("", ".", ".."):
            raise RecipeError(f"{source}: artifact {uri}: the URI must end with a file name")
        if unarchive == "ZIP" and zip_folder(artifact.file_name) in (".", ".."):
            raise RecipeError(f"{source}: artifact {uri}: a ZIP named {artifact.file_name!r} would unpack to a "
                              f"folder called {zip_folder(artifact.file_name)!r}")
        out.append(artifact)
    return tuple(out)


def zip_folder(file_name: str) -> str:
    """Where a ZIP artifact is unpacked, under {artifacts:decompressedPath}: its name without the extension."""
    return file_name.rsplit(".", 1)[0]


def _expect(value: object, kind: type, field: str, expected: str) -> None:
    if not isinstance(value, kind):
        raise RecipeError(f"{field} must be {expected}, not {_kind(value)}")


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _boolean(value: object, field: str) -> bool:
    """Coerce.toBoolean: true, or a string that says "true" (any case); "false" is false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RecipeError(f"{field} must be true or false, not {value!r}")


STEPS = ("install", "startup", "run", "shutdown", "recover")


def step(lifecycle: dict, name: str, where: str = "") -> Step | None:
    """The lifecycle step `name` (install, run, startup, shutdown, recover), or None.
    Raises RecipeError naming `where` (the recipe file), the field and what was expected."""
    field_name = f"{where + ': ' if where else ''}Lifecycle.{name.capitalize()}"
    value = ci_get(lifecycle, name)
    if value is None:
        return None
    if isinstance(value, str):
        return Step(value)
    if not isinstance(value, dict):
        raise RecipeError(f"{field_name} must be a script or a mapping with Script, not {_kind(value)}")
    script = ci_get(value, "Script")
    if script is None:
        raise RecipeError(f"{field_name} has no Script")
    if not isinstance(script, str):
        raise RecipeError(f"{field_name}.Script must be a string, not {_kind(script)}")
    timeout = ci_get(value, "Timeout")
    if timeout is not None:
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise RecipeError(f"{field_name}.Timeout must be a number of seconds, not {timeout!r}") from None
    skipif = ci_get(value, "Skipif")
    if skipif is not None and not isinstance(skipif, str):
        raise RecipeError(f"{field_name}.Skipif must be a string, not {_kind(skipif)}")
    setenv = ci_get(value, "Setenv") or {}
    _expect(setenv, dict, f"{field_name}.Setenv", "a mapping of variable names to values")
    privileged = ci_get(value, "RequiresPrivilege", False)
    return Step(script, timeout, skipif, dict(setenv),
                _boolean(privileged, f"{field_name}.RequiresPrivilege") if privileged is not None else False)


def check_lifecycle(lifecycle: object, where: str) -> None:
    """Every step and the lifecycle's own Setenv, as they will be run: raises RecipeError."""
    _expect(lifecycle, dict, f"{where}: Lifecycle", "a mapping of steps")
    for name in STEPS:
        step(lifecycle, name, where)
    _expect(ci_get(lifecycle, "Setenv") or {}, dict, f"{where}: Lifecycle.Setenv",
            "a mapping of variable names to values")


def valid_name(name: object) -> bool:
    """A component name that is safe as a path segment: [a-zA-Z0-9-_.]+, not only dots, <= 128."""
    return (isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None and len(name) <= 128
            and name.strip(".") != "")


def valid_version(version: object) -> bool:
    return (isinstance(version, str) and version == version.strip() and semver.valid(version)
            and len(version) <= 64)


def parse_recipe(data: object, source: str = "") -> Recipe:
    where = source or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping")
    if limits.too_deep(data, limits.MAX_DEPTH + 2):
        raise RecipeError(f"{where}: the recipe nests deeper than {limits.MAX_DEPTH + 2} levels (localgg's limit)")
    fmt = str(ci_get(data, "RecipeFormatVersion") or "")
    if fmt != FORMAT_VERSION:
        raise RecipeError(f"{where}: RecipeFormatVersion must be {FORMAT_VERSION}, not {fmt or 'missing'}")
    name = ci_get(data, "ComponentName")
    if not valid_name(name):
        raise RecipeError(f"{where}: ComponentName must match {NAME_PATTERN.pattern}, not only dots, "
                          f"(<= 128 chars): {name!r}")
    version = ci_get(data, "ComponentVersion")
    version = str(version) if isinstance(version, (str, int, float)) and not isinstance(version, bool) else ""
    if not valid_version(version):
        raise RecipeError(f"{where}: ComponentVersion must be a semantic version with no spaces: {version!r}")
    manifests = ci_get(data, "Manifests")
    if not isinstance(manifests, list) or not manifests:
        raise RecipeError(f"{where}: Recipe file {name}-{version}.yaml is missing manifests")
    for manifest in manifests:
        _expect(manifest, dict, f"{where}: Manifests[]", "a mapping (Platform, Lifecycle, Artifacts)")
        _expect(ci_get(manifest, "Platform") or {}, dict, f"{where}: Manifests[].Platform",
                "a mapping such as {os: linux}")
        _expect(ci_get(manifest, "Selections") or [], list, f"{where}: Manifests[].Selections", "a list")
        own = ci_get(manifest, "Lifecycle")
        if own is not None:
            _expect(own, dict, f"{where}: Manifests[].Lifecycle", "a mapping of steps")
        _artifacts(manifest, where)
    lifecycle = ci_get(data, "Lifecycle") or {}
    _expect(lifecycle, dict, f"{where}: Lifecycle", "a mapping of steps")
    component_configuration = ci_get(data, "ComponentConfiguration") or {}
    _expect(component_configuration, dict, f"{where}: ComponentConfiguration", "a mapping with DefaultConfiguration")
    config = ci_get(component_configuration, "DefaultConfiguration") or {}
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise RecipeError(f"{where}: DefaultConfiguration is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise RecipeError(f"{where}: DefaultConfiguration must be a mapping")
    deps = {}
    dependencies = ci_get(data, "ComponentDependencies") or {}
    _expect(dependencies, dict, f"{where}: ComponentDependencies",
            "a mapping of component names to {VersionRequirement, DependencyType}")
    for dep_name, spec in dependencies.items():
        _expect(spec, dict, f"{where}: ComponentDependencies.{dep_name}", "a mapping with VersionRequirement")
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
                  lifecycle=lifecycle, raw=data, source=source)


class _BoundedLoader(yaml.SafeLoader):
    """safe_load, refusing documents whose aliases expand beyond MAX_YAML_NODES nodes."""

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > limits.MAX_YAML_NODES:
            raise yaml.YAMLError(f"its aliases expand to more than {limits.MAX_YAML_NODES} nodes (localgg's limit)")
        return self.construct_document(node)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many nodes the document would have with every alias copied out (a recursive alias is endless)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        return limits.MAX_YAML_NODES + 1
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > limits.MAX_YAML_NODES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def load_recipe(path: Path) -> Recipe:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_BoundedLoader)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RecipeError(f"Unable to parse {path} as a recipe due to: {exc}") from exc
    except RecursionError:
        raise RecipeError(f"Unable to parse {path} as a recipe due to: it nests too deeply") from None
    return parse_recipe(data, str(path))


def find_recipes(directory: Path) -> list[Recipe]:
    """Every recipe under `directory`, recursively (.yaml, .yml, .json; others are skipped).

    One file that does not parse fails the whole call, as it fails a deployment."""
    recipes = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.suffix.lower() in RECIPE_SUFFIXES and path.stat().st_size > 0:
            recipes.append(load_recipe(path))
    return recipes
