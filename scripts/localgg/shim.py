#!/bin/sh
"exec" "$(command -v python3 || echo /usr/bin/python3)" "$0" "$@"
"""`systemctl` and `sudo` for components: localgg copies this file, as it is, to
`<root>/localgg-shims/systemctl` and `.../sudo`, first on the PATH of every lifecycle step.

It is a sh script that runs itself with the step's python3 (the second line is a shell
command and, to Python, a string). Standard library only, Python 3.6+: it runs as the
component's user, who may not be able to read localgg's sources.

- `systemctl ARGS`: asks the core over `<root>/localgg-shims/systemd.sock` (shims.py, whose
  answers are systemd.py's) and prints what it answers. For a restart or a stop, it waits
  as systemctl waits for its job: a step of the core is stopped with the core and never
  sees the end (`--no-block` returns at once).
- `sudo [OPTIONS] [VAR=value ...] COMMAND ...`: `systemctl` is answered as above, as a
  privileged caller. Anything else goes to the system's sudo if there is one (after this
  directory on PATH), else runs as the caller with sudo's SUDO_USER, SUDO_UID, SUDO_GID and
  SUDO_COMMAND set (so a `systemctl` it runs is privileged too): localgg cannot raise
  privileges.
"""

import json
import os
import pwd
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOCKET = os.path.join(HERE, "systemd.sock")
RESTART_WAIT_SECONDS = 90.0     # systemd's DefaultTimeoutStopSec: how long a stop may take
SUDO_WITH_ARGUMENT = set("ugCDhprtTU")
SUDO_LONG_WITH_ARGUMENT = {"--user", "--group", "--close-from", "--chdir", "--host", "--prompt", "--role", "--type",
                           "--command-timeout", "--other-user"}


def parse_sudo(args):
    """(assignments, command) from sudo's arguments: its options skipped, VAR=value taken."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            i += 2 if arg in SUDO_LONG_WITH_ARGUMENT else 1
            continue
        letters, i = arg[1:], i + 1
        for n, letter in enumerate(letters):
            if letter in SUDO_WITH_ARGUMENT:
                if n == len(letters) - 1:
                    i += 1       # its argument is the next word
                break
    rest = args[i:]
    env = {}
    while rest and "=" in rest[0] and not rest[0].startswith("=") and rest[0].split("=", 1)[0].isidentifier():
        key, value = rest[0].split("=", 1)
        env[key] = value
        rest = rest[1:]
    return env, rest


def ask(request):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(SOCKET)
    sock.sendall(json.dumps(request).encode() + b"\n")
    return sock


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def systemctl(args, sudo):
    request = {"argv": args, "sudo": sudo, "token": os.environ.get("SVCUID", "")}
    try:
        sock = ask(request)
    except OSError as exc:
        sys.stderr.write("Failed to connect to bus: %s (the localgg core is not running)\n" % exc.strerror)
        return 1
    with sock:
        reply = json.loads(read_line(sock) or b"{}")
        sys.stdout.write(reply.get("out", ""))
        sys.stderr.write(reply.get("err", ""))
        sys.stdout.flush()
        sys.stderr.flush()
        if not reply.get("wait"):
            return int(reply.get("code", 1))
        read_line(sock)      # the core closes it when it stops (by then it has stopped this step too)
    if reply.get("action") == "restart":
        deadline = time.monotonic() + RESTART_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                ask({"argv": ["is-active", "-q", "greengrass.service"], "sudo": False}).close()
                return 0
            except OSError:
                time.sleep(0.1)
        sys.stderr.write("Job for greengrass.service failed: the core did not start again.\n")
        return 1
    return 0


def sudo(args):
    env, command = parse_sudo(args)
    if not command:
        sys.stderr.write("usage: sudo [options] command (localgg's sudo)\n")
        return 1
    if os.path.basename(command[0]) == "systemctl":
        return systemctl(command[1:], sudo=True)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != HERE]
    for folder in path:
        real = os.path.join(folder, "sudo")
        if os.access(real, os.X_OK) and not os.path.isdir(real):
            os.execv(real, [real] + args)
    os.environ.update(env)
    try:                 # what sudo tells its command: a systemctl under it is privileged
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    os.environ.update(SUDO_USER=user, SUDO_UID=str(os.getuid()), SUDO_GID=str(os.getgid()),
                      SUDO_COMMAND=" ".join(command))
    try:
        os.execvp(command[0], command)
    except OSError:
        sys.stderr.write("sudo: %s: command not found\n" % command[0])
        return 1


def main():
    name = os.path.basename(sys.argv[0])
    if name == "sudo":
        return sudo(sys.argv[1:])
    return systemctl(sys.argv[1:], sudo="SUDO_UID" in os.environ)


if __name__ == "__main__":
    sys.exit(main())
