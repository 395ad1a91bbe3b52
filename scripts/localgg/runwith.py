"""Which user runs each lifecycle step: RequiresPrivilege and runWith, as the nucleus does on Linux.

Usage::

    policy = decide(os.geteuid(), os.environ.get(ENV), posix_user, probe=lambda acct: reason_or_None)
    account = policy.account(run_with, requires_privilege)   # None: the core's own user
    for command in accounts_to_create(posix_user, user_exists, group_exists): subprocess.run(command)

The nucleus's rules (UnixRunWithGenerator.java, UnixPlatform.java, GreengrassSetup.java,
docs/lifecycle-recipes.md 2.1):
- a step runs as the component's `runWith.posixUser` (from the deployment), else the
  Nucleus's `runWithDefault.posixUser`; "user:group", the group defaulting to the user's
  primary group. `RequiresPrivilege: true` runs the step as root;
- the installer run as root sets `runWithDefault.posixUser` to `ggc_user:ggc_group` when
  none is given, and creates `ggc_user` (`useradd -r -m`) and `ggc_group` (`groupadd -r`)
  if they are missing, adding the user to the group (`usermod -a -G`);
- a nucleus run by an ordinary user runs every step as that user;
- the component's work directory, and what is inside its artifact directories, belong to
  the user its steps run as (RunWithPathOwnershipHandler).

localgg run as root does the same, with one safeguard of its own: before it lets the
default user run steps it checks that this user can reach the core's root directory and
run the `python3` first on the core's PATH (a Python installed under /root, as pyenv does,
is out of its reach). If it cannot, every step runs as root and the reason is logged
once. The environment variable `LOCALGG_RUN_AS` chooses instead: `default` always runs
as the default user (as a device does, whatever breaks), `current` always runs every
step as the user running localgg.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from dataclasses import dataclass
from typing import Callable

DEFAULT_POSIX_USER = "ggc_user:ggc_group"   # GreengrassSetup.DEFAULT_POSIX_USER
GGC_USER, GGC_GROUP = "ggc_user", "ggc_group"
ENV = "LOCALGG_RUN_AS"
MODES = ("auto", "default", "current")


class RunWithError(ValueError):
    pass


@dataclass(frozen=True)
class Account:
    """A user to run scripts as."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @property
    def name(self) -> str:
        return f"{self.user}:{_name(grp.getgrgid, self.gid)}"

    def environment(self) -> dict[str, str]:
        """What `sudo -H -u <user>` changes in the environment."""
        return {"HOME": self.home, "USER": self.user, "LOGNAME": self.user}


def split_user(posix_user: str) -> tuple[str, str | None]:
    user, sep, group = str(posix_user).partition(":")
    return user, (group if sep and group else None)


def lookup(posix_user: str) -> Account:
    """The account "user[:group]" names (names or numeric ids), its group defaulting to the user's primary one."""
    user, group = split_user(posix_user)
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError) as exc:
        raise RunWithError(f"posixUser {posix_user!r}: no user {user!r} on this system") from exc
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError as exc:
            raise RunWithError(f"posixUser {posix_user!r}: no group {group!r} on this system") from exc
    groups = tuple(sorted({g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem} | {gid}))
    return Account(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)


def accounts_to_create(posix_user: str, user_exists: bool, group_exists: bool) -> list[list[str]]:
    """The installer's commands for a missing ggc_user / ggc_group (only those two are ever created)."""
    user, group = split_user(posix_user)
    commands: list[list[str]] = []
    make_user, make_group = user == GGC_USER, group == GGC_GROUP
    if make_user and not user_exists:
        commands.append(["useradd", "-r", "-m", GGC_USER])
    if make_user and make_group and not group_exists:
        commands.append(["groupadd", "-r", GGC_GROUP])
    if commands and make_user and make_group:
        commands.append(["usermod", "-a", "-G", GGC_GROUP, GGC_USER])
    return commands


def ensure_accounts(posix_user: str) -> None:
    """Create ggc_user and ggc_group if `posix_user` names them and they are missing."""
    user, group = split_user(posix_user)
    for command in accounts_to_create(posix_user, _exists(pwd.getpwnam, user), _exists(grp.getgrnam, group)):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RunWithError(f"{' '.join(command)} failed: {done.stderr.strip() or done.returncode}")


@dataclass
class Policy:
    """Who runs the steps: `default` runs the non-privileged ones (None: the core's own user
    runs every step, and runWith and RequiresPrivilege change nothing)."""

    default: Account | None
    note: str

    def account(self, run_with: dict | None, requires_privilege: bool) -> Account | None:
        if self.default is None or requires_privilege:
            return None   # the core's user: root, or everyone's user
        posix_user = (run_with or {}).get("posixUser")
        return lookup(posix_user) if posix_user else self.default


def decide(euid: int, mode: str | None, posix_user: str | None, core_user: str,
           prepare: Callable[[str], Account], probe: Callable[[Account], str | None]) -> Policy:
    """`prepare(posix_user)` creates what is missing and returns the account; `probe(account)`
    says why that account cannot run the components (None if it can)."""
    mode = (mode or "auto").strip().lower()
    if mode not in MODES:
        raise RunWithError(f"{ENV}={mode!r}: use one of {', '.join(MODES)}")
    if euid != 0:
        return Policy(None, f"localgg runs as {core_user}, not as root: every lifecycle step runs as {core_user}, "
                            f"and RequiresPrivilege and runWith change nothing (as for a nucleus run by {core_user})")
    if mode == "current":
        return Policy(None, f"{ENV}=current: every lifecycle step runs as {core_user}, the user running localgg; "
                            f"RequiresPrivilege and runWith change nothing")
    account = prepare(posix_user or DEFAULT_POSIX_USER)
    reason = probe(account) if mode == "auto" else None
    if reason is not None:
        return Policy(None, f"every lifecycle step runs as {core_user}, not as {account.name} as on a device: "
                            f"{reason}. Give {account.user} access to them, or set {ENV}=default to run the "
                            f"non-privileged steps as {account.user} anyway ({ENV}=current: as {core_user}, "
                            f"without this check)")
    return Policy(account, f"non-privileged lifecycle steps run as {account.name}, privileged ones "
                           f"(RequiresPrivilege) as {core_user}")


IDENTIFY = "import sys; print(sys.base_prefix, sys.version)"


def probe(account: Account, root: str, python: str | None) -> str | None:
    """Why `account` cannot reach `root` or run `python` as the core does, or None.

    The Python must be the same one for both users: a copy of an interpreter whose standard
    library it cannot read (a venv made with --copies from a Python under /root) may still
    start, on another installation's library, and then build venvs it cannot run."""
    if run_as(account, ["test", "-x", root]).returncode != 0:
        return f"{account.user} cannot reach {root}"
    if python:
        ours = subprocess.run([python, "-c", IDENTIFY], capture_output=True, timeout=30)
        theirs = run_as(account, [python, "-c", IDENTIFY])
        if theirs.returncode != 0 or theirs.stdout != ours.stdout:
            return f"{account.user} cannot run {python} (the python3 first on the core's PATH) as the core does"
    return None


def run_as(account: Account, command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, user=account.uid, group=account.gid, extra_groups=list(account.groups),
                              capture_output=True, cwd="/", env={"PATH": os.defpath, **account.environment()},
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:   # not executable for it, or hangs
        return subprocess.CompletedProcess(command, 126, b"", str(exc).encode())


def chown_tree(path: str, account: Account, include_top: bool = True) -> None:
    """Give `path` and what is under it to `account` (symbolic links themselves, not their targets)."""
    if not os.path.lexists(path):
        return
    if include_top:
        os.lchown(path, account.uid, account.gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(top, name), account.uid, account.gid)


def _exists(find: Callable[[str], object], name: str | None) -> bool:
    if not name:
        return True
    try:
        find(name)
        return True
    except KeyError:
        return False


def user_name(uid: int) -> str:
    return _name(pwd.getpwuid, uid)


def _name(find: Callable[[int], tuple], number: int) -> str:
    try:
        return find(number)[0]
    except KeyError:
        return str(number)
