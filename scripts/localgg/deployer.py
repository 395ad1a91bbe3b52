"""The deployment service: local deployments run one at a time, as the nucleus's DeploymentService runs them.

Usage (the kernel owns one; `deployment.py` decides, this does)::

    deployer = Deployer(kernel, root, thing_name, config, recipes, validation, device_platform())
    deployer.start()                                   # the worker, in the running loop
    deployment_id = deployer.submit({...CreateLocalDeploymentRequest...})
    deployer.get(deployment_id).to_model()             # QUEUED, IN_PROGRESS, SUCCEEDED or FAILED
    await deployer.stop()                              # a deployment half done runs its cleanups first

Rules (docs/lifecycle-recipes.md 4): recipes and artifacts are copied in, versions and
configuration resolved (deployment.py), ZIP artifacts unpacked, then the components that
keep their version are asked to validate their new configuration, the plan is merged
(removed components stopped, changed ones reinstalled or restarted) and tracked until
every component is RUNNING or FINISHED, judged once a second; one BROKEN fails the
deployment, rolled back if the request asks for it. Records persist in `deployments/`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import artifacturi, limits, runwith
from .lambdas import launcher as lambda_launcher
from .lambdas.generated import LAUNCHER as LAMBDA_LAUNCHER
from . import lifecycle as lc
from .authz import CLI
from .configstore import ConfigStore
from .deployment import RecipeStore, ResolutionError, resolve, resolve_configuration
from .interpolate import Scope, interpolate_tree
from .iotcore.bridge import DISK_SPOOLER
from .ipc.config import VALIDATION_TIMEOUT, Validation
from .recipe import Recipe, RecipeError, find_recipes, step as find_step, zip_folder

log = logging.getLogger("localgg")

NUCLEUS = "aws.greengrass.Nucleus"
NUCLEUS_VERSION = "2.18.2"
LOCAL_GROUP = "LOCAL_DEPLOYMENT"
TRACK_INTERVAL = 1.0  # DeploymentService checks the services' states once a second

# Components the core provides itself: name -> (version, state, default configuration).
# These two are always there (greengrass-cli needs aws.greengrass.Cli on a device too).
BUILTINS: dict[str, tuple[str, str, dict]] = {
    NUCLEUS: (NUCLEUS_VERSION, lc.FINISHED, {"awsRegion": "us-east-1"}),
    CLI: ("2.16.1", lc.RUNNING, {}),
}
# These are there once a deployment brings them in, as a root or a dependency, as on a
# device (ShadowManager's IPC operations are "not supported" until it is deployed).
AVAILABLE: dict[str, tuple[str, str, dict]] = {
    "aws.greengrass.ShadowManager": ("2.3.12", lc.RUNNING, {}),
    DISK_SPOOLER: ("1.0.3", lc.RUNNING, {}),
    "aws.greengrass.TokenExchangeService": ("2.0.3", lc.RUNNING, {}),
    # what a Lambda component's generated recipe depends on (lambdas/generated.py); the
    # launcher's stand-in installs its `lambda-launcher` (lambdas/launcher.py) when deployed
    LAMBDA_LAUNCHER: ("2.0.13", lc.RUNNING, {}),
    "aws.greengrass.LambdaRuntimes": ("2.0.8", lc.RUNNING, {}),
}


class DeploymentError(ValueError):
    pass


@dataclass
class ServiceSpec:
    """What a deployment decided for one component."""

    name: str
    version: str
    lifecycle: dict = field(default_factory=dict)
    dependencies: dict[str, str] = field(default_factory=dict)
    configuration: dict = field(default_factory=dict)
    builtin: bool = False
    run_with: dict | None = None         # {"posixUser": "user[:group]"} from the deployment's componentToRunWithInfo

    def to_json(self) -> dict:
        out = {"version": self.version, "lifecycle": self.lifecycle, "dependencies": self.dependencies,
               "builtin": self.builtin}
        if self.run_with:
            out["runWith"] = self.run_with
        return out


@dataclass
class Deployment:
    id: str
    request: dict
    created_on: int
    status: str = "QUEUED"
    details: dict = field(default_factory=dict)

    def to_model(self) -> dict:
        out = {"deploymentId": self.id, "status": self.status, "createdOn": str(self.created_on)}
        if self.details:
            out["deploymentStatusDetails"] = self.details
        return out


@dataclass
class Builtin:
    name: str
    version: str
    state: str


class Host(Protocol):
    """What is deployed, and what the deployer needs done to it (the kernel is one)."""

    components: dict[str, lc.Component]
    specs: dict[str, ServiceSpec]
    builtins: dict[str, Builtin]
    groups: dict[str, dict[str, str]]
    run_policy: runwith.Policy

    def new_component(self, spec: ServiceSpec) -> lc.Component: ...
    def forget(self, component: str) -> None: ...   # its token and its IPC connections
    def save(self) -> bool: ...


class Deployer:
    def __init__(self, host: Host, root: Path, thing_name: str, config: ConfigStore, recipes: RecipeStore,
                 validation: Validation, platform: dict, clock=time.time) -> None:
        self.host = host
        self.root, self.thing_name, self.platform = root, thing_name, platform
        self.config, self.recipes = config, recipes
        self.validation = validation
        self.validation_timeout = VALIDATION_TIMEOUT   # seconds a deployment waits for validity reports
        self.clock = clock
        self.deployments: dict[str, Deployment] = {}
        self._queue: asyncio.Queue = asyncio.Queue()
        self._changed = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._stopping = False

    def artifacts_path(self, component: str, version: str) -> Path:
        return self.root / "packages" / "artifacts" / component / version

    def unarchived_path(self, component: str, version: str) -> Path:
        return self.root / "packages" / "artifacts-unarchived" / component / version

    def start(self) -> None:
        self._worker = asyncio.ensure_future(self._work())

    async def stop(self) -> None:
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()  # a deployment half done: let its own cleanups run first
            await asyncio.wait([self._worker], timeout=30)

    def state_changed(self) -> None:
        """A component changed state: a deployment being tracked looks again."""
        self._changed.set()

    # -- the records -----------------------------------------------------------------

    def submit(self, request: dict) -> str:
        dep = Deployment(str(uuid.uuid4()), request, int(self.clock() * 1000))
        self.deployments[dep.id] = dep
        self._persist(dep)
        self._queue.put_nowait(dep)
        return dep.id

    def get(self, deployment_id: str) -> Deployment | None:
        if deployment_id in self.deployments:
            return self.deployments[deployment_id]
        path = self.root / "deployments" / f"{deployment_id}.json"
        if path.exists():
            data = json.loads(path.read_text())
            return Deployment(data["id"], data["request"], data["createdOn"], data["status"], data.get("details", {}))
        return None

    def history(self) -> list[Deployment]:
        found = [self.get(p.stem) for p in sorted((self.root / "deployments").glob("*.json"))]
        return sorted((d for d in found if d), key=lambda d: d.created_on)

    def _persist(self, dep: Deployment) -> None:
        write_json(self.root / "deployments" / f"{dep.id}.json",
                   {"id": dep.id, "request": dep.request, "createdOn": dep.created_on,
                    "status": dep.status, "details": dep.details})

    # -- running them ----------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            dep = await self._queue.get()
            try:
                await self._run_deployment(dep)
            except Exception as exc:  # never let one deployment kill the worker
                log.exception("deployment %s failed unexpectedly", dep.id)
                self._finish(dep, "FAILED", "FAILED_NO_STATE_CHANGE", str(exc))

    def _finish(self, dep: Deployment, status: str, detailed: str, cause: str = "",
                stack: list[str] | None = None, types: list[str] | None = None) -> None:
        dep.status = status
        dep.details = {"detailedDeploymentStatus": detailed}
        cause = limits.clip(cause)  # it may echo a huge input, and every ListLocalDeployments carries it
        if cause:
            dep.details.update({"deploymentFailureCause": cause,
                                "deploymentErrorStack": stack or ["DEPLOYMENT_FAILURE"],
                                "deploymentErrorTypes": types or []})
        self._persist(dep)
        level = logging.INFO if status == "SUCCEEDED" else logging.ERROR
        log.log(level, "deployment %s %s%s", dep.id, status, f": {cause}" if cause else "")

    async def _run_deployment(self, dep: Deployment) -> None:
        dep.status = "IN_PROGRESS"
        self._persist(dep)
        request = dep.request
        try:
            plan, roots = self._plan(request)
        except artifacturi.ArtifactUriError as exc:
            return self._finish(dep, "FAILED", "FAILED_NO_STATE_CHANGE", str(exc), exc.stack, exc.types)
        except (RecipeError, ResolutionError, DeploymentError, ValueError, OSError) as exc:
            return self._finish(dep, "FAILED", "FAILED_NO_STATE_CHANGE", str(exc))
        # components that keep running their version are asked about their new configuration
        proposed = {n: s.configuration for n, s in plan.items()
                    if n in self.host.components and n in self.host.specs and self.host.specs[n].version == s.version
                    and s.configuration != self.config.value(n, default={})}
        cause = await self.validation.validate(dep.id, proposed, self.validation_timeout)
        if cause is not None:
            return self._finish(dep, "FAILED", "FAILED_NO_STATE_CHANGE", cause,
                                ["DEPLOYMENT_FAILURE", "COMPONENT_CONFIGURATION_NOT_VALID"])
        previous = {n: ServiceSpec(n, s.version, s.lifecycle, s.dependencies,
                                   self.config.value(n, default={}), s.builtin, s.run_with)
                    for n, s in self.host.specs.items()}
        group = request.get("groupName") or LOCAL_GROUP
        previous_roots = dict(self.host.groups.get(group, {}))
        started = time.monotonic()
        self.host.groups[group] = roots
        await self._activate(plan)
        broken = await self._track(plan, started)
        if broken is None:
            return self._finish(dep, "SUCCEEDED", "SUCCESSFUL")
        cause = f"Service {broken} in broken state after deployment"
        stack = ["DEPLOYMENT_FAILURE", "COMPONENT_UPDATE_ERROR", "COMPONENT_BROKEN"]
        if (request.get("failureHandlingPolicy") or "DO_NOTHING") == "ROLLBACK":
            self.host.groups[group] = previous_roots
            await self._activate(previous)
            return self._finish(dep, "FAILED", "FAILED_ROLLBACK_COMPLETE", cause, stack, ["USER_COMPONENT_ERROR"])
        self._finish(dep, "FAILED", "FAILED_ROLLBACK_NOT_REQUESTED", cause, stack, ["USER_COMPONENT_ERROR"])

    def _plan(self, request: dict) -> tuple[dict[str, ServiceSpec], dict[str, str]]:
        group = request.get("groupName") or LOCAL_GROUP  # the Cli handler checked the name and the paths
        recipe_dir = request.get("recipeDirectoryPath")
        if recipe_dir:
            if not Path(recipe_dir).is_dir():
                raise DeploymentError(f"recipe directory {recipe_dir} does not exist")
            for recipe in find_recipes(Path(recipe_dir)):
                self.recipes.add(recipe)
        artifact_dir = request.get("artifactsDirectoryPath")
        if artifact_dir:
            source = Path(artifact_dir).resolve()
            if not source.is_dir():
                raise DeploymentError(f"artifact directory {artifact_dir} does not exist")
            shutil.copytree(source, self.root / "packages" / "artifacts", dirs_exist_ok=True)
        roots = {n: v for n, v in self.host.groups.get(group, {}).items()
                 if n not in (request.get("rootComponentsToRemove") or [])}
        roots.update(request.get("rootComponentVersionsToAdd") or {})
        # the other groups' roots stay deployed, pinned to what runs (DependencyResolver)
        constraints = {n: v for g, members in self.host.groups.items() if g != group for n, v in members.items()}
        running = {n: s.version for n, s in self.host.specs.items()}
        builtin_versions = {n: b.version for n, b in self.host.builtins.items()}
        builtin_versions.update({n: v[0] for n, v in AVAILABLE.items()})
        versions = resolve({**constraints, **roots}, self.recipes, running, builtin_versions)
        updates = request.get("componentToConfiguration") or {}
        for name in updates:
            if name not in roots:  # KernelConfigResolver applies updates to roots only, and says nothing
                log.warning("Ignoring the configuration update for %s: it is not a root component of this deployment "
                            "(the nucleus applies --update-config to root components only: add --merge %s=VERSION)",
                            name, name)
        recipes: dict[str, Recipe] = {n: self.recipes.get(n, v) for n, v in versions.items()
                                      if n not in builtin_versions}
        plan: dict[str, ServiceSpec] = {}
        for name, version in versions.items():
            current = self.config.value(name) if (name in self.host.specs or name in self.host.builtins) else None
            if name in recipes:
                defaults = recipes[name].default_configuration
            else:
                defaults = {**BUILTINS, **AVAILABLE}.get(name, ("", "", {}))[2]
            update = updates.get(name) if name in roots else None
            if update is not None and not isinstance(update, dict):
                raise DeploymentError(f"the configuration update for {name} must be {{\"MERGE\": ..., \"RESET\": [...]}}")
            config = resolve_configuration(current, defaults, update)
            if limits.too_deep(config):
                raise DeploymentError(f"the configuration of {name} nests deeper than {limits.MAX_DEPTH} levels "
                                      f"(localgg's limit)")
            plan[name] = ServiceSpec(name, version, configuration=config, builtin=name not in recipes)
        run_with_info = request.get("componentToRunWithInfo") or {}
        for name in plan:
            if name in roots and name in run_with_info:  # KernelConfigResolver.updateRunWith: roots only
                info = run_with_info[name]
                posix_user = info.get("posixUser") if isinstance(info, dict) else None
                if posix_user and self.host.run_policy.default is not None:
                    try:
                        runwith.lookup(str(posix_user))
                    except runwith.RunWithError as exc:
                        raise DeploymentError(f"{name}: {exc}") from exc
                plan[name].run_with = {"posixUser": str(posix_user)} if posix_user else None
            elif name in self.host.specs:
                plan[name].run_with = self.host.specs[name].run_with
        selections = {name: recipe.select(self.platform) for name, recipe in recipes.items()}
        # DefaultDeploymentTask: every resolved component's artifact URIs are checked before any is prepared
        artifacturi.check_prerequisites(((n, [a.uri for a in s.artifacts]) for n, s in selections.items()),
                                        set(versions))
        if LAMBDA_LAUNCHER in versions and LAMBDA_LAUNCHER not in recipes:
            lambda_launcher.install(self.artifacts_path(LAMBDA_LAUNCHER, versions[LAMBDA_LAUNCHER]))
        for name, recipe in recipes.items():
            selected = selections[name]
            self._prepare_artifacts(recipe, selected.artifacts)
            plan[name].dependencies = {d: spec.type for d, spec in recipe.dependencies.items()}
            plan[name].lifecycle = selected.lifecycle
        interpolate_config = str(plan[NUCLEUS].configuration.get("interpolateComponentConfiguration", "false")
                                 if NUCLEUS in plan else self.config.value(NUCLEUS, ["interpolateComponentConfiguration"],
                                                                           False)).lower() == "true"
        for name in recipes:
            scope = self._scope(plan, name, recipes)
            plan[name].lifecycle = interpolate_tree(plan[name].lifecycle, scope)
            if interpolate_config:  # system variables only, no {configuration:...} (nucleus >= 2.6)
                plan[name].configuration = interpolate_tree(plan[name].configuration, Scope(values=scope.values))
        return plan, {n: versions[n] for n in roots}

    def _scope(self, plan: dict[str, ServiceSpec], name: str, recipes: dict[str, Recipe], deps: bool = True) -> Scope:
        spec = plan[name]
        scope = Scope(values={
            "artifacts:path": str(self.artifacts_path(name, spec.version)),
            "artifacts:decompressedPath": str(self.unarchived_path(name, spec.version)),
            "work:path": str(self.root / "work" / name),
            "kernel:rootPath": str(self.root),
            "iot:thingName": self.thing_name,
        }, configuration=spec.configuration)
        if deps and name in recipes:
            scope.dependencies = {d: self._scope(plan, d, recipes, deps=False)
                                  for d in recipes[name].dependencies if d in plan}
        return scope

    def _prepare_artifacts(self, recipe: Recipe, artifacts) -> None:
        folder = self.artifacts_path(recipe.name, recipe.version)
        for artifact in artifacts:
            if artifacturi.scheme(artifact.uri).upper() == "DOCKER":
                raise DeploymentError(f"{recipe.name}@{recipe.version}: artifact {artifact.uri}: localgg does not "
                                      f"pull Docker images (on a device {artifacturi.DOCKER_MANAGER} does)")
            path = folder / artifact.file_name
            if not path.is_file():
                raise DeploymentError(
                    f"{recipe.name}@{recipe.version}: artifact {artifact.uri} not found: put {artifact.file_name} in "
                    f"<artifactDir>/{recipe.name}/{recipe.version}/")
            if artifact.unarchive == "ZIP":
                stem = zip_folder(path.name)
                if not stem:
                    raise DeploymentError(f"{recipe.name}@{recipe.version}: a ZIP artifact needs a name: {artifact.uri}")
                target = self.unarchived_path(recipe.name, recipe.version) / stem
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                try:
                    with zipfile.ZipFile(path) as archive:
                        _safe_extract(archive, target)
                except zipfile.BadZipFile as exc:
                    raise DeploymentError(f"{recipe.name}@{recipe.version}: {artifact.file_name} is not a ZIP: {exc}")
            execute = str((artifact.permission or {}).get("Execute", "NONE")).upper()
            if execute in ("OWNER", "ALL"):
                path.chmod(path.stat().st_mode | (0o111 if execute == "ALL" else 0o100))

    async def _activate(self, plan: dict[str, ServiceSpec]) -> None:
        timestamp = int(self.clock() * 1000)
        removed = [n for n in self.host.specs if n not in plan]
        await asyncio.gather(*(self._remove(n) for n in removed if n in self.host.components))
        for name in removed:
            self.host.specs.pop(name, None)
            if name not in BUILTINS:
                self.host.builtins.pop(name, None)
                self.config.remove_component(name)
        for name, spec in plan.items():
            self.config.replace(name, spec.configuration, timestamp)
            if spec.builtin:
                if name not in self.host.builtins:
                    state = AVAILABLE[name][1] if name in AVAILABLE else lc.RUNNING
                    self.host.builtins[name] = Builtin(name, spec.version, state)
                self.host.specs[name] = spec
                continue
            old = self.host.specs.get(name)
            self.host.specs[name] = spec
            comp = self.host.components.get(name)
            if comp is None:
                comp = self.host.components[name] = self.host.new_component(spec)
                comp.request_start()
                continue
            reinstall = (old is None or old.version != spec.version or old.run_with != spec.run_with
                         or find_step(old.lifecycle, "install") != find_step(spec.lifecycle, "install"))
            restart = old is not None and (old.lifecycle != spec.lifecycle or old.dependencies != spec.dependencies)
            comp.version, comp.lifecycle, comp.dependencies = spec.version, spec.lifecycle, spec.dependencies
            if reinstall or comp.state == lc.BROKEN:
                comp.request_reinstall()
            elif restart:
                comp.request_restart()
            else:
                comp.request_start()
        for comp in self.host.components.values():
            comp.dependency_changed()
        self.host.save()

    async def _remove(self, name: str) -> None:
        comp = self.host.components.pop(name)
        await comp.close()
        self.host.forget(name)

    async def _track(self, plan: dict[str, ServiceSpec], since: float) -> str | None:
        """Wait until every deployed component is RUNNING or FINISHED; the first one that went
        BROKEN after the merge (`since`, monotonic) otherwise.

        Like the nucleus's DeploymentService, success is only judged once a second: a Run
        script that crashes at once is BROKEN before the first look."""
        tracked = [n for n, s in plan.items() if not s.builtin]
        loop = asyncio.get_running_loop()
        next_look = loop.time() + TRACK_INTERVAL
        while not self._stopping:
            self._changed.clear()
            for name in tracked:
                comp = self.host.components.get(name)
                if (comp is not None and comp.state == lc.BROKEN and comp.state_since >= since
                        and not comp.reinstall_pending):
                    return name
            if loop.time() >= next_look:
                if all(self.host.components[n].settled for n in tracked if n in self.host.components):
                    return None
                next_look = loop.time() + TRACK_INTERVAL
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, next_look - loop.time()))
            except asyncio.TimeoutError:
                pass
        return None



def _safe_extract(archive: zipfile.ZipFile, target: Path) -> None:
    base = target.resolve()
    for member in archive.infolist():
        extracted = Path(archive.extract(member, target)).resolve()  # zipfile sanitizes the name
        if not extracted.is_relative_to(base):
            raise DeploymentError(f"ZIP entry {member.filename} escapes the extraction directory")
        mode = member.external_attr >> 16
        if mode and not member.is_dir():
            extracted.chmod(mode & 0o777)


def write_json(path: Path, data: object) -> None:
    text = json.dumps(data, indent=1, sort_keys=True)  # before touching the file: a failure leaves it whole
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
