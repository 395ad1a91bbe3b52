"""The local core: one object that owns the root directory, the IPC server and every component.

Usage::

    kernel = Kernel(Path("/tmp/gg"), thing_name="backfill-dev")
    await kernel.start()                       # restores what was deployed, runs Install again
    deployment_id = kernel.deployer.submit({...CreateLocalDeploymentRequest...})   # deployer.py
    await kernel.stop()

Layout under the root, as the nucleus's (docs/lifecycle-recipes.md 3.5):
`ipc.socket`, `config/` (what is deployed, its configuration, `effectiveConfig.yaml`), `packages/recipes`,
`packages/artifacts/<C>/<v>/`, `packages/artifacts-unarchived/<C>/<v>/<zip>/`,
`work/<C>/`, `logs/greengrass.log`, `logs/<C>.log`, `deployments/`, `cli_ipc_info/`.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import secrets
import shutil
import string
import time
from pathlib import Path

from . import effectiveconfig, runwith
from . import lifecycle as lc
from .authz import CLI, Authorizer
from .configstore import ConfigStore
from .deployer import (AVAILABLE, BUILTINS, NUCLEUS, NUCLEUS_VERSION, Builtin, Deployer, ServiceSpec,
                       write_json)
from .deployment import RecipeStore
from .ipc.cli import CLI_CLIENT_ACCESS, CliHandlers
from .ipc.config import ConfigHandlers, Validation
from .ipc.lifecycle import LifecycleHandlers
from .ipc.mqttproxy import MqttProxyHandlers
from .iotcore.bridge import DISK_SPOOLER, CloudSettings, IoTCoreBridge
from .control import ControlServer
from .ipc.shadow import ShadowHandlers
from .shadow.manager import NAME as SHADOW_MANAGER, ShadowManager
from .ipc.pubsub import PubSubHandlers
from .processes import Reaper, kill_leftover_groups, log_line
from .pubsub import PubSub
from .recipe import ci_get, device_platform
from .server import Dispatcher, IpcServer
from .shims import Caller, ShimServer
from .systemd import Service

log = logging.getLogger("localgg")


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
        self._tokens: dict[str, str] = {}       # token -> component
        self._token_of: dict[str, str] = {}     # component -> token
        self._save_pending = False
        self._pgids: set[int] = set()
        self._reaper: Reaper | None = None
        self.dispatcher = Dispatcher()
        self.dispatcher.add(*PubSubHandlers(self.bus, self.authz).operations())
        self.validation = Validation()
        self.deployer = Deployer(self, self.root, thing_name, self.config, self.recipes, self.validation,
                                 device_platform(), lambda: self.clock())
        self.dispatcher.add(*ConfigHandlers(self.config, lambda component: self.save_soon(),
                                            self.validation).operations())
        self.dispatcher.add(*LifecycleHandlers(self.report_state).operations())
        self.dispatcher.add(*CliHandlers(self.authz, self, self.deployer,
                                         self.path("packages", "artifacts")).operations())
        self.iotcore = IoTCoreBridge(self.root, thing_name, lambda: self.config.view(NUCLEUS, ["mqtt"], {}),
                                     lambda: self.deployed(DISK_SPOOLER))
        self.dispatcher.add(*MqttProxyHandlers(self.iotcore, self.authz).operations())
        self.shadows = ShadowManager(self.config, self.bus, self.authz, self.iotcore, thing_name,
                                     self.path("work", SHADOW_MANAGER, "shadow.db"), self.deployed,
                                     lambda: self.clock())
        self.dispatcher.add(*ShadowHandlers(self.shadows).operations())
        self.server = IpcServer(self.socket_path, self.authenticate, self.dispatcher)
        self.control = ControlServer(self.path("control.sock"), self, self.iotcore)
        self.shims = ShimServer(self.path("localgg-shims"), self)   # components' systemctl and sudo
        self.started_at = time.time()
        self.exit_requested: asyncio.Event | None = None
        self.restart_requested = False
        self.run_policy = runwith.Policy(None, "not started")
        self._owned: set[tuple[str, str, runwith.Account]] = set()   # work dirs given to their user

    @property
    def validation_timeout(self) -> float:
        """Seconds a deployment waits for the components' configuration validity reports."""
        return self.deployer.validation_timeout

    @validation_timeout.setter
    def validation_timeout(self, seconds: float) -> None:
        self.deployer.validation_timeout = seconds

    # -- paths ----------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def work_dir(self, component: str) -> Path:
        """`work/<C>`; the first time a core uses it for a version, it and what is in the version's
        artifact directories are given to the user the component's steps run as
        (RunWithPathOwnershipHandler: the artifact directories themselves stay the core's).
        Private to that user, as NucleusPaths.workPath makes it (Permissions.setServiceWorkPathPermission:
        owner rwx only; the work root itself is rwxr-xr-x)."""
        path = self.path("work", component)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        account = self.run_as(component, False)
        version = self.version_of(component) or ""
        if account is not None and (component, version, account) not in self._owned:
            runwith.chown_tree(str(path), account)
            for folder in (self.deployer.artifacts_path(component, version),
                           self.deployer.unarchived_path(component, version)):
                runwith.chown_tree(str(folder), account, include_top=False)
            self._owned.add((component, version, account))
        return path

    def log_dir(self) -> Path:
        return self.path("logs")

    # -- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        for sub in ("config", "packages/recipes", "packages/artifacts", "packages/artifacts-unarchived",
                    "work", "logs", "deployments", "cli_ipc_info"):
            self.path(sub).mkdir(parents=True, exist_ok=True)
        self._setup_logging()
        asyncio.get_running_loop().set_exception_handler(_log_unhandled)
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
        await self.shims.start()
        self.started_at = time.time()
        self._write_cli_info()
        self.deployer.start()
        for comp in self.components.values():
            comp.request_start()
        self.write_effective_config()
        log.info("localgg %s started at %s (thing %s)", NUCLEUS_VERSION, self.root, self.thing_name)

    async def stop(self) -> None:
        await self.deployer.stop()
        await asyncio.gather(*(c.close() for c in self.components.values()), return_exceptions=True)
        await self.shims.stop()
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

    def forget(self, component: str) -> None:
        """A component removed: its token no longer valid, its IPC connections closed."""
        token = self._token_of.pop(component, None)
        self._tokens.pop(token, None)
        self.server.disconnect(component)

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
        path = f"{self.shims.directory}:{self._path()}"   # systemctl and sudo reach this core (shims.py)
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
        spec = self.specs.get(component)
        if spec is not None and "AWS_GREENGRASS_LAMBDA_ARN" in (ci_get(spec.lifecycle, "Setenv") or {}):
            # a Lambda component: the user its function runs as, for the launcher (lambdas/launcher.py);
            # on a device the Lambda's process sees the same variable
            account = self.run_as(component, False)
            if account is not None:
                env["AWS_GREENGRASS_LAMBDA_LINUX_PROCESS_PARAMS"] = json.dumps(
                    {"user": account.user, "group": grp.getgrgid(account.gid).gr_name})
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
        self.deployer.state_changed()

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

    def caller(self, pid: int, token: str) -> Caller | None:
        """The component, and whether its step is privileged, that process `pid` runs for: the
        step whose session or process group it is in, else whoever `token` (its SVCUID) names."""
        try:
            groups = {os.getsid(pid), os.getpgid(pid)}
        except OSError:
            groups = set()
        for comp in self.components.values():
            script = comp.script_in(groups)
            if script is not None:
                return Caller(comp.name, script.privileged)
        name = self.authenticate(token)
        return Caller(name, False) if name else None

    def service(self) -> Service:
        """greengrass.service as `systemctl status` shows it."""
        return Service(os.getpid(), self.started_at, time.time(), str(self.root))

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
                write_json(self.path("config", name), data())
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
                self.components[name] = self.new_component(spec)

    def new_component(self, spec: ServiceSpec) -> lc.Component:
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


def write_private(path: Path, text: str) -> None:
    """Create or replace a file only its owner can read, with no moment of wider access."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
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
