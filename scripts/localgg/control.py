"""The core's fault and status socket: `<root>/control.sock`, one JSON request per connection.

    {"cmd": "status"}
    {"cmd": "link", "action": "down" | "up" | "clear" | "flap" | "limit", "down": s, "up": s,
     "bandwidth": bytes_per_s, "latency": s}
    {"cmd": "kill", "component": NAME}          SIGKILL every process of a component
    {"cmd": "restart"}                          stop everything and start again (memory spool lost)

localgg's own channel for `localgg fault ...` and `localgg status`; components never see it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Protocol

log = logging.getLogger("localgg.control")


class Core(Protocol):
    """What the control socket acts on (the kernel is one)."""

    def status(self) -> dict: ...
    def kill_component(self, name: str) -> int | None: ...
    def request_exit(self, restart: bool = False) -> None: ...


class ControlServer:
    def __init__(self, path: Path, core: Core, iotcore) -> None:
        self.path = path
        self.core = core
        self.iotcore = iotcore      # iotcore.bridge.IoTCoreBridge: its link takes the faults
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._handle, str(self.path))
        self.path.chmod(0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline() or b"{}")
            reply = await self.execute(request)
        except Exception as exc:  # a bad request must not hurt the core
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def execute(self, request: dict) -> dict:
        cmd = request.get("cmd")
        if cmd == "status":
            return self.core.status()
        if cmd == "link":
            link = self.iotcore.link
            if link is None:
                return {"error": "this core has no IoT Core connection (start it with --cloud DIR)"}
            action = request.get("action")
            if action == "down":
                link.down()
            elif action == "up":
                link.up()
            elif action == "clear":
                link.clear()
            elif action == "flap":
                link.flap(float(request.get("down", 2)), float(request.get("up", 5)))
            elif action == "limit":
                link.limit(request.get("bandwidth"), request.get("latency"))
            elif action != "status":
                return {"error": f"unknown link action {action!r}"}
            log.warning("fault: link %s %s", action, {k: v for k, v in request.items() if k not in ("cmd", "action")})
            return {"link": link.status()}
        if cmd == "kill":
            name = request.get("component")
            killed = self.core.kill_component(name)
            if killed is None:
                return {"error": f"no component {name!r}"}
            log.warning("fault: SIGKILL %s (%d process groups)", name, killed)
            return {"killed": killed}
        if cmd == "restart":
            log.warning("fault: core restart requested")
            self.core.request_exit(restart=True)
            return {"restarting": True, "pid": os.getpid()}
        return {"error": f"unknown command {cmd!r}"}
