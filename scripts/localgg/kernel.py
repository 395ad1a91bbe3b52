"""The local core: one object that owns the root directory, the IPC server and every component.

Usage::

    kernel = Kernel(Path("/tmp/gg"), thing_name="backfill-dev")
    await kernel.start()                       # restores what was deployed, runs Install again
    deployment_id = kernel.submit_deployment({...CreateLocalDeploymentRequest...})
    await kernel.stop()

Layout under the root, as the nucleus's (docs/lifecycle-recipes.md 3.5):
`ipc.socket`, `config/` (what is deployed, its configuration, `effectiveConfig.yaml`), `packages/recipes`,
`packages/artifacts/<C>/<v>/`, `packages/artifacts-unarchived/<C>/<v>/<zip>/`,
`work/<C>/`, `logs/greengrass.log`, `logs/<C>.log`, `deployments/`, `cli_ipc_info/`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import string
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from . import effectiveconfig, limits, runwith
from . import lifecycle as lc
from .authz import CLI, Authorizer
from .configstore import ConfigStore
from .deployment import RecipeStore, ResolutionError, resolve, resolve_configuration
from .interpolate import Scope, interpolate_tree
from .ipc.cli import CLI_CLIENT_ACCESS, CliHandlers
from .ipc.config import VALIDATION_TIMEOUT, ConfigHandlers, Validation
from .ipc.lifecycle import LifecycleHandlers
from .ipc.mqttproxy import MqttProxyHandlers
from .iotcore.bridge import DISK_SPOOLER, CloudSettings, IoTCoreBridge
from .control import ControlServer
from .ipc.shadow import ShadowHandlers
from .shadow.manager import ShadowManager
from .ipc.pubsub import PubSubHandlers
from .processes import Reaper, kill_leftover_groups, log_line
from .pubsub import PubSub
from .recipe import Recipe, RecipeError, device_platform, find_recipes, step as find_step, zip_folder
from .server import Dispatcher, IpcServer

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


def new_token() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


class Kernel:
    def __init__(self, root: Path, thing_name: str = "localgg-thing", region: str = "us-east-1",
                 clock=time.time) -> None:
        self.root = Path(root).resolve()
        self.thing_name = thing_name
        self.region = region
        self.clock = clock
        self.socket_path = str(self.root / "ipc.socket")
        self.config = ConfigStore(lambda: int(self.clock() * 1000))
        self.authz = Authorizer(lambda component: self.config.view(component, ["accessControl"]),
                                granted={CLI: CLI_CLIENT_ACCESS})
        self.bus = PubSub()
        self.recipes = RecipeStore(self.root / "packages" / "recipes")
        self.components: dict[str, lc.Component] = {}
        self.specs: dict[str, ServiceSpec] = {}
        self.builtins: dict[str, Builtin] = {}
        self.groups: dict[str, dict[str, str]] = {}
        self.deployments: dict[str, Deployment] = {}
        self._tokens: dict[str, str] = {}       # token -> component
        self._token_of: dict[str, str] = {}     # component -> token
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._changed: asyncio.Event | None = None
        self._save_pending = False
        self._pgids: set[int] = set()
        self._reaper: Reaper | None = None
        self.dispatcher = Dispatcher()
        self.dispatcher.add(*PubSubHandlers(self.bus, self.authz).operations())
        self.validation = Validation()
        self.validation_timeout = VALIDATION_TIMEOUT   # seconds a deployment waits for validity reports
        self.dispatcher.add(*ConfigHandlers(self.config, lambda component: self.save_soon(),
                                            self.validation).operations())
        self.dispatcher.add(*LifecycleHandlers(self.report_state).operations())
        self.dispatcher.add(*CliHandlers(self).operations())
        self.iotcore = IoTCoreBridge(self.root, thing_name, lambda: self.config.view(NUCLEUS, ["mqtt"], {}),
                                     lambda: self.deployed(DISK_SPOOLER))
        self.dispatcher.add(*MqttProxyHandlers(self.iotcore, self.authz).operations())
        self.shadows = ShadowManager(self)
        self.dispatcher.add(*ShadowHandlers(self.shadows).operations())
        self.server = IpcServer(self.socket_path, self.authenticate, self.dispatcher)
        self.control = ControlServer(self)
        self.platform = device_platform()
        self.exit_requested: asyncio.Event | None = None
        self.restart_requested = False
        self._stopping = False
        self.run_policy = runwith.Policy(None, "not started")
        self._owned: set[tuple[str, str, runwith.Account]] = set()   # work dirs given to their user

    # -- paths ----------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def work_dir(self, component: str) -> Path:
        """`work/<C>`; the first time a core uses it for a version, it and what is in the version's
        artifact directories are given to the user the component's steps run as
        (RunWithPathOwnershipHandler: the artifact directories themselves stay the core's)."""
        path = self.path("work", component)
        path.mkdir(parents=True, exist_ok=True)
        account = self.run_as(component, False)
        version = self.version_of(component) or ""
        if account is not None and (component, version, account) not in self._owned:
            runwith.chown_tree(str(path), account)
            for folder in (self.artifacts_path(component, version), self.unarchived_path(component, version)):
                runwith.chown_tree(str(folder), account, include_top=False)
            self._owned.add((component, version, account))
        return path

    def log_dir(self) -> Path:
        return self.path("logs")

    def artifacts_path(self, component: str, version: str) -> Path:
        return self.path("packages", "artifacts", component, version)

    def unarchived_path(self, component: str, version: str) -> Path:
        return self.path("packages", "artifacts-unarchived", component, version)

    # -- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        for sub in ("config", "packages/recipes", "packages/artifacts", "packages/artifacts-unarchived",
                    "work", "logs", "deployments", "cli_ipc_info"):
            self.path(sub).mkdir(parents=True, exist_ok=True)
        self._setup_logging()
        asyncio.get_running_loop().set_exception_handler(_log_unhandled)
        self._queue = asyncio.Queue()
        self._changed = asyncio.Event()
        self.exit_requested = asyncio.Event()
        self._kill_leftovers()
        self._reaper = Reaper.start(self.path("config", "process-groups.json"), self.path("work"))
        for name, (version, state, defaults) in BUILTINS.items():
            self.builtins[name] = Builtin(name, version, state)
            if not self.config.has(name):
                self.config.replace(name, defaults, 1)
        self._restore()
        self.run_policy = self._decide_run_with()
        self.token_for(CLI)
        await self.iotcore.start(self.cloud_settings())
        await self.shadows.start()
        await self.server.start()
        await self.control.start()
        self._write_cli_info()
        self._worker = asyncio.ensure_future(self._deployment_worker())
        for comp in self.components.values():
            comp.request_start()
        self.write_effective_config()
        log.info("localgg %s started at %s (thing %s)", NUCLEUS_VERSION, self.root, self.thing_name)

    async def stop(self) -> None:
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()  # a deployment half done: let its own cleanups run first
            await asyncio.wait([self._worker], timeout=30)
        await asyncio.gather(*(c.close() for c in self.components.values()), return_exceptions=True)
        await self.shadows.stop()
        await self.iotcore.stop()
        await self.control.stop()
        await self.server.stop()
        self.save()
        self._pgids.clear()
        self._save_pgids()
        self._reaper.stop()
        log.info("localgg stopped")
        asyncio.get_running_loop().set_exception_handler(None)
        for handler in list(logging.getLogger("localgg").handlers):
            if getattr(handler, "_localgg_root", None) == str(self.root):
                logging.getLogger("localgg").removeHandler(handler)
                handler.close()

    def _setup_logging(self) -> None:
        logger = logging.getLogger("localgg")
        logger.setLevel(logging.INFO)
        handler = logging.FileHandler(self.path("logs", "greengrass.log"))
        handler._localgg_root = str(self.root)
        handler.setFormatter(_NucleusFormatter())
        logger.addHandler(handler)

    def _write_cli_info(self) -> None:
        write_private(self.path("cli_ipc_info", "localgg-cli"),
                      json.dumps({"cli_auth_token": self._token_of[CLI], "socket_path": self.socket_path}))

    def cloud_settings(self) -> CloudSettings | None:
        """Where IoT Core is, from `config/cloud.json` (written by `localgg start --cloud`)."""
        path = self.path("config", "cloud.json")
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return CloudSettings(data["host"], int(data["port"]), Path(data["cert"]), Path(data["key"]), Path(data["ca"]),
                             data.get("mqtt", "mqtt5"))

    # -- identity -------------------------------------------------------------------

    def authenticate(self, token: str | None) -> str | None:
        return self._tokens.get(token) if token else None

    def token_for(self, component: str) -> str:
        if component not in self._token_of:
            token = new_token()
            self._tokens[token] = component
            self._token_of[component] = token
        return self._token_of[component]

    def _forget_token(self, component: str) -> None:
        token = self._token_of.pop(component, None)
        self._tokens.pop(token, None)

    def add_external_component(self, name: str, configuration: dict | None = None) -> dict[str, str]:
        """A component whose process runs elsewhere (a test, a debugger): it gets a token and
        a configuration, and is reported RUNNING. Returns the environment its IPC client needs."""
        self.config.replace(name, configuration or {}, int(self.clock() * 1000))
        self.builtins[name] = Builtin(name, "0.0.0", lc.RUNNING)
        return self.environment(name)

    # -- the Host protocol the lifecycles use ---------------------------------------

    @staticmethod
    def _path() -> str:
        """The core's PATH and /bin, /usr/bin, /sbin, /usr/sbin if present (Exec's defaults)."""
        path = os.environ.get("PATH", "")
        for extra in ("/bin", "/usr/bin", "/sbin", "/usr/sbin"):
            if extra not in path.split(":") and os.path.isdir(extra):
                path = f"{path}:{extra}" if path else extra
        return path

    def environment(self, component: str) -> dict[str, str]:
        env = dict(os.environ)
        path = self._path()
        token = self.token_for(component)
        root_ca = self.path("rootCA.pem")  # written when the thing is provisioned
        env.update({
            "PATH": path,
            "SVCUID": token,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH": self.socket_path,
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": self.socket_path,
            "AWS_IOT_THING_NAME": self.thing_name,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "GGC_VERSION": NUCLEUS_VERSION,
            "GG_ROOT_CA_PATH": str(root_ca) if root_ca.exists() else "",
        })
        return env

    def dependency_ready(self, name: str) -> bool:
        state = self.state_of(name)
        if state in (lc.RUNNING, lc.FINISHED):
            return True
        comp = self.components.get(name)
        return state == lc.STOPPING and comp is not None and comp.previous_state != lc.STARTING

    def state_changed(self, component: lc.Component, old: str, new: str) -> None:
        log.info("service-set-state. {serviceName=%s, currentState=%s, newState=%s}", component.name, old, new)
        for other in self.components.values():
            if other is not component and component.name in other.dependencies:
                other.dependency_changed()
        if self._changed is not None:
            self._changed.set()

    def run_as(self, component: str, privileged: bool) -> runwith.Account | None:
        spec = self.specs.get(component)
        return self.run_policy.account(spec.run_with if spec else None, privileged)

    def _decide_run_with(self) -> runwith.Policy:
        """runwith.py's rules, decided once a start and logged once."""
        core_user = runwith.user_name(os.geteuid())
        posix_user = self.config.value(NUCLEUS, ["runWithDefault", "posixUser"])
        if os.geteuid() == 0 and not posix_user:  # what the installer run as root writes
            posix_user = runwith.DEFAULT_POSIX_USER
            self.config.merge(NUCLEUS, ["runWithDefault"], {"posixUser": posix_user}, int(self.clock() * 1000))
        python = shutil.which("python3", path=self._path())

        def prepare(name: str) -> runwith.Account:
            runwith.ensure_accounts(name)
            return runwith.lookup(name)
        try:
            policy = runwith.decide(os.geteuid(), os.environ.get(runwith.ENV), posix_user, core_user, prepare,
                                    lambda account: runwith.probe(account, str(self.root), python))
        except runwith.RunWithError as exc:
            policy = runwith.Policy(None, f"every lifecycle step runs as {core_user}: {exc}")
        quiet = policy.default is not None or os.geteuid() != 0
        log.log(logging.INFO if quiet else logging.WARNING, "run-with: %s", policy.note)
        return policy

    def process_started(self, component: str, pid: int) -> None:
        self._pgids.add(pid)
        self._save_pgids()

    def _save_pgids(self) -> None:
        live = {p for p in self._pgids if _group_alive(p)}
        self._pgids = live
        self.path("config", "process-groups.json").write_text(json.dumps(sorted(live)))

    def _kill_leftovers(self) -> None:
        record = self.path("config", "process-groups.json")
        if record.exists():
            killed = kill_leftover_groups(set(json.loads(record.read_text() or "[]")), self.path("work"))
            if killed:
                log.warning("killed %d processes left by a core that did not stop cleanly", killed)

    # -- state ----------------------------------------------------------------------

    def state_of(self, name: str) -> str | None:
        if name in self.components:
            return self.components[name].state
        if name in self.builtins:
            return self.builtins[name].state
        return None

    def deployed(self, name: str) -> bool:
        return name in self.builtins or name in self.components

    def version_of(self, name: str) -> str | None:
        if name in self.specs:
            return self.specs[name].version
        if name in self.builtins:
            return self.builtins[name].version
        return None

    def report_state(self, component: str, state: str) -> bool | None:
        comp = self.components.get(component)
        if comp is None:
            return None if component not in self.builtins else False
        return comp.report(state)

    def save(self) -> bool:
        """Write what is deployed and the configuration. A file that cannot be written is
        logged and left as it was; the other is still written. True if both were."""
        self._save_pending = False
        state = {"thing": self.thing_name, "groups": self.groups,
                 "services": {n: s.to_json() for n, s in self.specs.items()}}
        saved = True
        for name, data in (("state.json", lambda: state), ("configuration.json", self.config.snapshot)):
            try:
                _write_json(self.path("config", name), data())
            except Exception:  # noqa: BLE001 - one bad value must not stop the others, nor a stop
                log.exception("could not save %s: what changed since it was last saved is lost on restart", name)
                saved = False
        self.write_effective_config()
        return saved

    def write_effective_config(self) -> None:
        """`config/effectiveConfig.yaml` (effectiveconfig.py); a failure is logged as the nucleus
        logs it (`effective-config-dump-error`) and changes nothing else."""
        path = self.path("config", effectiveconfig.FILE_NAME)
        try:
            effectiveconfig.write_effective_config(path, self.effective_config())
        except Exception:  # noqa: BLE001
            log.exception("effective-config-dump-error. {file=%s}", path)

    def effective_config(self) -> dict:
        services: dict[str, effectiveconfig.ServiceEntry] = {}
        for name in sorted(set(self.builtins) | set(self.specs)):
            spec = self.specs.get(name)
            if spec is not None and not spec.builtin:
                kind = "GENERIC"
            else:
                kind = "NUCLEUS" if name == NUCLEUS else "PLUGIN" if name in BUILTINS or name in AVAILABLE else "GENERIC"
            services[name] = effectiveconfig.ServiceEntry(
                kind, self.version_of(name) or "0.0.0", self.config.value(name, default={}),
                spec.dependencies if spec else {}, spec.lifecycle if spec else {}, spec.run_with if spec else None)
        cloud = self.cloud_settings()
        system = {"certificateFilePath": str(cloud.cert) if cloud else "",
                  "privateKeyPath": str(cloud.key) if cloud else "",
                  "rootCaPath": str(cloud.ca) if cloud else "",
                  "rootpath": str(self.root), "thingName": self.thing_name}
        roots = [n for members in self.groups.values() for n in members]
        return effectiveconfig.effective_config(services, roots, system)

    def save_soon(self) -> None:
        if not self._save_pending:
            self._save_pending = True
            asyncio.get_running_loop().call_later(0.2, self.save)

    def _restore(self) -> None:
        config_file = self.path("config", "configuration.json")
        if config_file.exists():
            self.config.restore(json.loads(config_file.read_text()))
        state_file = self.path("config", "state.json")
        if not state_file.exists():
            return
        state = json.loads(state_file.read_text())
        self.groups = state.get("groups", {})
        for name, data in state.get("services", {}).items():
            spec = ServiceSpec(name, data["version"], data.get("lifecycle", {}), data.get("dependencies", {}),
                               builtin=data.get("builtin", False), run_with=data.get("runWith"))
            self.specs[name] = spec
            if spec.builtin:
                self.builtins.setdefault(name, Builtin(name, spec.version, lc.RUNNING)).version = spec.version
            else:
                self.components[name] = self._new_component(spec)

    def _new_component(self, spec: ServiceSpec) -> lc.Component:
        return lc.Component(spec.name, spec.version, spec.lifecycle, spec.dependencies, self)

    def request_exit(self, restart: bool = False) -> None:
        """Ask whoever runs the kernel (`localgg start`) to stop it, and to start it again."""
        self.restart_requested = restart
        self.exit_requested.set()

    def kill_component(self, name: str) -> int | None:
        comp = self.components.get(name)
        return None if comp is None else comp.kill()

    def status(self) -> dict:
        return {"pid": os.getpid(), "root": str(self.root), "thing": self.thing_name,
                "iotcore": self.iotcore.status(), "ipc": self.server.status(),
                "runWith": {"defaultUser": self.run_policy.default.name if self.run_policy.default else None,
                            "note": self.run_policy.note},
                "components": {n: self.state_of(n) for n in sorted(set(self.components) | set(self.builtins))}}

    # -- the CLI's operations -------------------------------------------------------

    def component_details(self, name: str) -> dict | None:
        state = self.state_of(name)
        if state is None:
            return None
        details = {"componentName": name, "version": self.version_of(name) or "0.0.0", "state": state}
        if self.config.has(name):
            details["configuration"] = self.config.value(name)
        return details

    def list_components(self) -> list[dict]:
        names = sorted(set(self.components) | set(self.builtins))
        return [self.component_details(n) for n in names]

    def restart_component(self, name: str) -> bool:
        comp = self.components.get(name)
        return comp.request_restart() if comp else name in self.builtins

    def stop_component(self, name: str) -> bool:
        comp = self.components.get(name)
        if comp:
            comp.request_stop()
        return comp is not None or name in self.builtins

    def submit_deployment(self, request: dict) -> str:
        dep = Deployment(str(uuid.uuid4()), request, int(self.clock() * 1000))
        self.deployments[dep.id] = dep
        self._persist_deployment(dep)
        self._queue.put_nowait(dep)
        return dep.id

    def deployment(self, deployment_id: str) -> Deployment | None:
        if deployment_id in self.deployments:
            return self.deployments[deployment_id]
        path = self.path("deployments", f"{deployment_id}.json")
        if path.exists():
            data = json.loads(path.read_text())
            return Deployment(data["id"], data["request"], data["createdOn"], data["status"], data.get("details", {}))
        return None

    def list_deployments(self) -> list[Deployment]:
        found = [self.deployment(p.stem) for p in sorted(self.path("deployments").glob("*.json"))]
        return sorted((d for d in found if d), key=lambda d: d.created_on)

    def _persist_deployment(self, dep: Deployment) -> None:
        _write_json(self.path("deployments", f"{dep.id}.json"),
                    {"id": dep.id, "request": dep.request, "createdOn": dep.created_on,
                     "status": dep.status, "details": dep.details})

    # -- deployments ----------------------------------------------------------------

    async def _deployment_worker(self) -> None:
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
        self._persist_deployment(dep)
        level = logging.INFO if status == "SUCCEEDED" else logging.ERROR
        log.log(level, "deployment %s %s%s", dep.id, status, f": {cause}" if cause else "")

    async def _run_deployment(self, dep: Deployment) -> None:
        dep.status = "IN_PROGRESS"
        self._persist_deployment(dep)
        request = dep.request
        try:
            plan, roots = self._plan(request)
        except (RecipeError, ResolutionError, DeploymentError, ValueError, OSError) as exc:
            return self._finish(dep, "FAILED", "FAILED_NO_STATE_CHANGE", str(exc))
        # components that keep running their version are asked about their new configuration
        proposed = {n: s.configuration for n, s in plan.items()
                    if n in self.components and n in self.specs and self.specs[n].version == s.version
                    and s.configuration != self.config.value(n, default={})}
        cause = await self.validation.validate(dep.id, proposed, self.validation_timeout)
        if cause is not None:
            return self._finish(dep, "FAILED", "FAILED_NO_STATE_CHANGE", cause,
                                ["DEPLOYMENT_FAILURE", "COMPONENT_CONFIGURATION_NOT_VALID"])
        previous = {n: ServiceSpec(n, s.version, s.lifecycle, s.dependencies,
                                   self.config.value(n, default={}), s.builtin, s.run_with)
                    for n, s in self.specs.items()}
        group = request.get("groupName") or LOCAL_GROUP
        previous_roots = dict(self.groups.get(group, {}))
        started = time.monotonic()
        self.groups[group] = roots
        await self._activate(plan)
        broken = await self._track(plan, started)
        if broken is None:
            return self._finish(dep, "SUCCEEDED", "SUCCESSFUL")
        cause = f"Service {broken} in broken state after deployment"
        stack = ["DEPLOYMENT_FAILURE", "COMPONENT_UPDATE_ERROR", "COMPONENT_BROKEN"]
        if (request.get("failureHandlingPolicy") or "DO_NOTHING") == "ROLLBACK":
            self.groups[group] = previous_roots
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
            shutil.copytree(source, self.path("packages", "artifacts"), dirs_exist_ok=True)
        roots = {n: v for n, v in self.groups.get(group, {}).items()
                 if n not in (request.get("rootComponentsToRemove") or [])}
        roots.update(request.get("rootComponentVersionsToAdd") or {})
        # the other groups' roots stay deployed, pinned to what runs (DependencyResolver)
        constraints = {n: v for g, members in self.groups.items() if g != group for n, v in members.items()}
        running = {n: s.version for n, s in self.specs.items()}
        builtin_versions = {n: b.version for n, b in self.builtins.items()}
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
            current = self.config.value(name) if (name in self.specs or name in self.builtins) else None
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
                if posix_user and self.run_policy.default is not None:
                    try:
                        runwith.lookup(str(posix_user))
                    except runwith.RunWithError as exc:
                        raise DeploymentError(f"{name}: {exc}") from exc
                plan[name].run_with = {"posixUser": str(posix_user)} if posix_user else None
            elif name in self.specs:
                plan[name].run_with = self.specs[name].run_with
        for name, recipe in recipes.items():
            selected = recipe.select(self.platform)
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
            "work:path": str(self.path("work", name)),
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
        removed = [n for n in self.specs if n not in plan]
        await asyncio.gather(*(self._remove(n) for n in removed if n in self.components))
        for name in removed:
            self.specs.pop(name, None)
            if name not in BUILTINS:
                self.builtins.pop(name, None)
                self.config.remove_component(name)
        for name, spec in plan.items():
            self.config.replace(name, spec.configuration, timestamp)
            if spec.builtin:
                if name not in self.builtins:
                    state = AVAILABLE[name][1] if name in AVAILABLE else lc.RUNNING
                    self.builtins[name] = Builtin(name, spec.version, state)
                self.specs[name] = spec
                continue
            old = self.specs.get(name)
            self.specs[name] = spec
            comp = self.components.get(name)
            if comp is None:
                comp = self.components[name] = self._new_component(spec)
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
        for comp in self.components.values():
            comp.dependency_changed()
        self.save()

    async def _remove(self, name: str) -> None:
        comp = self.components.pop(name)
        await comp.close()
        self._forget_token(name)
        self.server.disconnect(name)

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
                comp = self.components.get(name)
                if (comp is not None and comp.state == lc.BROKEN and comp.state_since >= since
                        and not comp.reinstall_pending):
                    return name
            if loop.time() >= next_look:
                if all(self.components[n].settled for n in tracked if n in self.components):
                    return None
                next_look = loop.time() + TRACK_INTERVAL
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, next_look - loop.time()))
            except asyncio.TimeoutError:
                pass
        return None


class _NucleusFormatter(logging.Formatter):
    """The nucleus's text format; an exception's traceback follows its line, as the nucleus's
    stack traces do."""

    def format(self, record: logging.LogRecord) -> str:
        level = {"WARNING": "WARN"}.get(record.levelname, record.levelname)
        line = log_line(level, f"({record.threadName}) {record.name}", record.getMessage()).rstrip("\n")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _log_unhandled(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """An exception nobody awaited (a callback, a forgotten task): into greengrass.log, with its
    traceback, as well as where asyncio puts it (stderr)."""
    exc = context.get("exception")
    log.error("unhandled error: %s", context.get("message") or "no message",
              exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)
    loop.default_exception_handler(context)


def _safe_extract(archive: zipfile.ZipFile, target: Path) -> None:
    base = target.resolve()
    for member in archive.infolist():
        extracted = Path(archive.extract(member, target)).resolve()  # zipfile sanitizes the name
        if not extracted.is_relative_to(base):
            raise DeploymentError(f"ZIP entry {member.filename} escapes the extraction directory")
        mode = member.external_attr >> 16
        if mode and not member.is_dir():
            extracted.chmod(mode & 0o777)


def write_private(path: Path, text: str) -> None:
    """Create or replace a file only its owner can read, with no moment of wider access."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _write_json(path: Path, data: object) -> None:
    text = json.dumps(data, indent=1, sort_keys=True)  # before touching the file: a failure leaves it whole
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _group_alive(pgid: int) -> bool:
    """Any process left in the group (a daemon outlives its leader)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
