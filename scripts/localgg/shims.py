"""The core's side of `systemctl` and `sudo` for components: `<root>/localgg-shims/`.

Usage::

    shims = ShimServer(root / "localgg-shims", host)     # host: see Host (the kernel is one)
    await shims.start()        # writes systemctl and sudo (shim.py), listens on systemd.sock
    env["PATH"] = f"{shims.directory}:{path}"            # first on every lifecycle step's PATH
    await shims.stop()

On a device many components end with `sudo systemctl restart greengrass.service`
(certificate rotators, device-management components); systemd restarts the nucleus
(systemd.py). Here the shims ask this socket, one JSON line each way, and the answers
are systemd.py's: a restart is the core's own restart (what `localgg fault core restart`
does: every component shut down as the nucleus shuts them down, then a fresh start with
what is deployed), a stop stops the core.

Who asks: the lifecycle step whose session or process group the caller is in (every
step runs in its own session, processes.py), so the core knows whether that step has
RequiresPrivilege; failing that, the component's SVCUID token. The caller is privileged
if it is root, its step has RequiresPrivilege, or it came through `sudo`. localgg is a
development tool: a component that writes to the socket itself can claim sudo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import systemd

log = logging.getLogger("localgg.systemd")

PROGRAM = Path(__file__).with_name("shim.py")
COMMANDS = ("systemctl", "sudo")
SOCKET_NAME = "systemd.sock"   # shim.py finds it beside itself


@dataclass(frozen=True)
class Caller:
    component: str
    privileged: bool          # the step it runs in has RequiresPrivilege


class Host(Protocol):
    def caller(self, pid: int, token: str) -> Caller | None: ...
    def service(self) -> systemd.Service: ...
    def request_exit(self, restart: bool = False) -> None: ...


def write_shims(directory: Path) -> None:
    """`systemctl` and `sudo`, readable and runnable by every component user."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    text = PROGRAM.read_text()
    for name in COMMANDS:
        path = directory / name
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)


def peer(sock: socket.socket) -> tuple[int, int]:
    """The (pid, uid) of the process at the other end of a unix socket (SO_PEERCRED)."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    return pid, uid


class ShimServer:
    def __init__(self, directory: Path, host: Host) -> None:
        self.directory = directory
        self.host = host
        self._server: asyncio.AbstractServer | None = None
        self._waiting: list[asyncio.StreamWriter] = []   # callers waiting for their job to end

    async def start(self) -> None:
        write_shims(self.directory)
        path = self.directory / SOCKET_NAME
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._handle, str(path))
        path.chmod(0o666)      # any component user; the caller is identified by its process (peer)

    async def stop(self) -> None:
        for writer in self._waiting:   # their job is done: the core has stopped
            writer.close()
        self._waiting.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        (self.directory / SOCKET_NAME).unlink(missing_ok=True)

    def answer(self, request: dict, pid: int, uid: int) -> tuple[systemd.Answer, Caller | None]:
        argv = [str(a) for a in request.get("argv") or []]
        caller = self.host.caller(pid, str(request.get("token") or ""))
        if caller is None:
            return systemd.Answer(err="Failed to connect to bus: Permission denied (localgg's systemctl answers "
                                      "the lifecycle steps of the core's components)\n", code=1), None
        privileged = bool(request.get("sudo")) or uid == 0 or caller.privileged
        return systemd.systemctl(argv, privileged, self.host.service()), caller

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        caller = None
        try:
            request = json.loads(await reader.readline() or b"{}")
            pid, uid = peer(writer.get_extra_info("socket"))
            answer, caller = self.answer(request if isinstance(request, dict) else {}, pid, uid)
        except Exception as exc:  # noqa: BLE001 - a bad request must not hurt the core
            answer = systemd.Answer(err=f"localgg: {type(exc).__name__}: {exc}\n", code=1)
        try:
            writer.write(json.dumps({"out": answer.out, "err": answer.err, "code": answer.code,
                                     "action": answer.action, "wait": answer.wait}).encode() + b"\n")
            await writer.drain()
        except OSError:
            pass
        if answer.action is None:
            writer.close()
            return
        if answer.wait:
            self._waiting.append(writer)
        else:
            writer.close()
        log.warning("systemctl %s %s from %s: Shutting down Nucleus due to external signal", answer.action,
                    systemd.UNIT, caller.component if caller else "?")
        self.host.request_exit(restart=answer.action == "restart")
