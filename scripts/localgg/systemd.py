"""What `systemctl` answers a component about greengrass.service: the model behind localgg's shims.

Usage::

    answer = systemctl(["restart", "greengrass"], privileged=True, service=Service(pid, since, now))
    answer.out, answer.err, answer.code     # what the command prints and its exit status
    answer.action                           # "restart", "stop" or None: what the core must do
    answer.wait                             # the caller waits for the job to end (no --no-block)

On a device the nucleus runs under systemd as greengrass.service (the installer's
`--setup-system-service true`; aws-greengrass-nucleus scripts/greengrass.service.template:
Type=simple, Restart=on-failure, RestartSec=10, KillMode=mixed). `systemctl restart
greengrass.service` stops it (SIGTERM to the loader, which passes it to the JVM; its
shutdown hook logs "Shutting down Nucleus due to external signal" and stops every
service, Kernel.java) and starts it again; `stop` stops it for good. A caller inside the
service (a component's step) is stopped with it, so its `systemctl restart` never returns.

systemctl's texts and exit statuses (systemd src/systemctl/systemctl-start-unit.c
start_unit_one, systemctl-util.c translate_bus_error_to_exit_status, systemctl-show.c):
- a unit that does not exist: "Failed to restart x.service: Unit x.service not found."
  exit 5 (EXIT_NOTINSTALLED); `status`: "Unit x.service could not be found." exit 4;
- an unprivileged caller without a polkit agent: "Failed to restart greengrass.service:
  Interactive authentication required." and "See system logs and 'systemctl status
  greengrass.service' for details.", exit 1;
- `is-active`: "active" exit 0, "inactive" exit 3 for a unit that is not there;
- an unknown verb: "Unknown command verb 'x'." exit 1.
A unit name without a suffix means NAME.service.

Privilege: root, a step with RequiresPrivilege, or a command run through `sudo`
(localgg's stand-in for sudo cannot raise privileges, so it vouches for the caller).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

UNIT = "greengrass.service"
UNIT_FILE = "/etc/systemd/system/greengrass.service"
DESCRIPTION = "Greengrass Core"
JOB_VERBS = ("start", "stop", "restart", "try-restart", "reload-or-restart", "try-reload-or-restart")
# verbs systemctl knows that localgg does not reproduce for greengrass.service
OTHER_VERBS = ("reload", "kill", "enable", "disable", "reenable", "is-enabled", "is-failed", "show", "cat",
               "daemon-reload", "mask", "unmask", "reset-failed", "list-units", "list-unit-files", "edit",
               "set-property", "revert", "preset", "link", "isolate", "reboot", "poweroff", "halt")
NO_ARG_OPTIONS = ("--no-block", "-q", "--quiet", "--no-pager", "-l", "--full", "--no-ask-password", "--now",
                  "--system", "--no-legend", "-a", "--all", "--wait")

EXIT_NOPERMISSION_AUTH = 1     # InteractiveAuthorizationRequired is not AccessDenied: plain failure
EXIT_NOTINSTALLED = 5
EXIT_STATUS_UNKNOWN = 4        # LSB: program or service status is unknown
EXIT_NOT_RUNNING = 3


@dataclass(frozen=True)
class Service:
    """greengrass.service as it runs: the core's pid and since when (epoch seconds), and now."""

    pid: int
    since: float
    now: float
    root: str = ""


@dataclass(frozen=True)
class Answer:
    out: str = ""
    err: str = ""
    code: int = 0
    action: str | None = None
    wait: bool = False


def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def systemctl(argv: list[str], privileged: bool, service: Service) -> Answer:
    options = [a for a in argv if a.startswith("-")]
    unknown = [o for o in options if o not in NO_ARG_OPTIONS and not o.startswith("--job-mode")]
    if unknown:
        return Answer(err=f"localgg's systemctl does not know the option {unknown[0]} (it reproduces "
                          f"restart, stop, start, status and is-active of {UNIT})\n", code=1)
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return _not_reproduced("systemctl with no verb (list-units)")
    verb, units = words[0], [unit_name(u) for u in words[1:]]
    if verb in JOB_VERBS:
        if not units:
            return Answer(err="Too few arguments.\n", code=1)
        for unit in units:
            if unit != UNIT:
                return Answer(err=f"Failed to {_job(verb)} {unit}: Unit {unit} not found.\n", code=EXIT_NOTINSTALLED)
        if not privileged:
            return Answer(err=f"Failed to {_job(verb)} {UNIT}: Interactive authentication required.\n"
                              f"See system logs and 'systemctl status {UNIT}' for details.\n",
                          code=EXIT_NOPERMISSION_AUTH)
        if verb == "start":
            return Answer()   # already active: nothing to do
        action = "stop" if verb == "stop" else "restart"
        return Answer(action=action, wait="--no-block" not in options)
    if verb == "status":
        names = units or [UNIT]
        missing = [u for u in names if u != UNIT]
        if missing:
            return Answer(err="".join(f"Unit {u} could not be found.\n" for u in missing), code=EXIT_STATUS_UNKNOWN,
                          out=status_text(service) if UNIT in names else "")
        return Answer(out=status_text(service))
    if verb == "is-active":
        states = ["active" if u == UNIT else "inactive" for u in units]
        if not states:
            return Answer(err="Too few arguments.\n", code=1)
        quiet = "-q" in options or "--quiet" in options
        return Answer(out="" if quiet else "".join(s + "\n" for s in states),
                      code=0 if all(s == "active" for s in states) else EXIT_NOT_RUNNING)
    if verb in OTHER_VERBS:
        return _not_reproduced(f"systemctl {verb}")
    return Answer(err=f"Unknown command verb '{verb}'.\n", code=1)


def _job(verb: str) -> str:
    return {"reload-or-restart": "reload-or-restart", "try-reload-or-restart": "reload-or-try-restart"}.get(verb, verb)


def _not_reproduced(what: str) -> Answer:
    return Answer(err=f"localgg: `{what}` is not reproduced; localgg's systemctl answers restart, stop, start, "
                      f"status and is-active for {UNIT} (the core)\n", code=1)


def status_text(service: Service) -> str:
    """`systemctl status greengrass.service` of an active service, as systemd prints it (without the journal)."""
    since = _dt.datetime.fromtimestamp(service.since, _dt.timezone.utc)
    return (f"\u25cf {UNIT} - {DESCRIPTION}\n"
            f"     Loaded: loaded ({UNIT_FILE}; enabled; vendor preset: enabled)\n"
            f"     Active: active (running) since {since.strftime('%a %Y-%m-%d %H:%M:%S UTC')}; "
            f"{_ago(service.now - service.since)} ago\n"
            f"   Main PID: {service.pid} (localgg)\n"
            + (f"     CGroup: localgg core under {service.root}\n" if service.root else ""))


def _ago(seconds: float) -> str:
    """systemd's format_timespan at a second's accuracy, two parts at most: "5s", "3min 2s", "1h 4min"."""
    total = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if total >= size or (unit == "s" and not parts):
            parts.append(f"{total // size}{unit}")
            total %= size
    return " ".join(parts[:2])
