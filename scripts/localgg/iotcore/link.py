"""The network between the core and IoT Core: a TCP proxy whose faults you can script.

Usage::

    link = Link("127.0.0.1", broker_port)
    await link.start()               # the core connects to 127.0.0.1:link.port instead
    link.down()                      # cut every connection now, refuse new ones
    link.up()
    link.flap(down_seconds=2, up_seconds=5)
    link.limit(bandwidth=10_000, latency=0.2)   # bytes/s each way, seconds each way
    link.clear()                     # up, no limits, no flapping

Connections are real TCP connections that really break (the TLS session inside is
end to end between the core and the broker; this proxy only moves bytes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

log = logging.getLogger("localgg.link")


class Link:
    def __init__(self, upstream_host: str, upstream_port: int, state_file: Path | None = None) -> None:
        """`state_file` keeps the faults across core restarts: an outage outlives the core."""
        self.upstream = (upstream_host, upstream_port)
        self._state_file = state_file
        self.port = 0
        self.is_up = True
        self.bandwidth: float | None = None   # bytes per second, each direction
        self.latency = 0.0                    # seconds, each direction
        self.cuts = 0                         # how many times connections were cut
        self._server: asyncio.AbstractServer | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flapper: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self, port: int = 0) -> None:
        self._load()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _load(self) -> None:
        if self._state_file is None or not self._state_file.exists():
            return
        state = json.loads(self._state_file.read_text())
        self.is_up, self.bandwidth, self.latency = state["up"], state["bandwidth"], state["latency"]
        if state.get("flap"):
            self.flap(*state["flap"])
        log.info("link state restored: %s", state)

    def _save(self, flap: tuple[float, float] | None = None) -> None:
        if self._state_file is not None:
            self._state_file.write_text(json.dumps({"up": self.is_up or bool(flap), "bandwidth": self.bandwidth,
                                                    "latency": self.latency, "flap": flap}))

    async def stop(self) -> None:
        self._stop_flapping()
        self._cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            try:  # an accept that is still connecting upstream can hold wait_closed()
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                log.warning("the link proxy closed with connections still opening")

    def status(self) -> dict:
        return {"up": self.is_up, "bandwidth": self.bandwidth, "latency": self.latency,
                "flapping": self._flapper is not None, "connections": len(self._pairs), "cuts": self.cuts,
                "port": self.port, "upstream": list(self.upstream)}

    # -- faults -------------------------------------------------------------------------

    def down(self) -> None:
        self._stop_flapping()
        self._down()
        self._save()

    def up(self) -> None:
        self._stop_flapping()
        self.is_up = True
        self._save()
        log.info("link up")

    def flap(self, down_seconds: float, up_seconds: float) -> None:
        self._stop_flapping()
        self._flapper = asyncio.ensure_future(self._flap(down_seconds, up_seconds))
        self._save((down_seconds, up_seconds))

    def limit(self, bandwidth: float | None = None, latency: float | None = None) -> None:
        if bandwidth is not None:
            self.bandwidth = bandwidth if bandwidth > 0 else None
        if latency is not None:
            self.latency = max(0.0, latency)
        self._save()

    def clear(self) -> None:
        self.bandwidth, self.latency = None, 0.0
        self.up()

    def _down(self) -> None:
        self.is_up = False
        self._cut()
        log.info("link down")

    def _cut(self) -> None:
        if self._pairs:
            self.cuts += 1
        for a, b in list(self._pairs):
            for writer in (a, b):
                transport = writer.transport
                if transport is not None and not transport.is_closing():
                    transport.abort()  # RST, not a polite FIN
        self._pairs.clear()

    def _stop_flapping(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
            self._flapper = None

    async def _flap(self, down_seconds: float, up_seconds: float) -> None:
        while True:
            self._down()
            await asyncio.sleep(down_seconds)
            self.is_up = True
            await asyncio.sleep(up_seconds)

    # -- moving bytes ---------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if not self.is_up:
            writer.transport.abort()
            up_writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        tasks = [asyncio.ensure_future(self._pipe(reader, up_writer, pair)),
                 asyncio.ensure_future(self._pipe(up_reader, writer, pair))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        self._pairs.discard(pair)
        for w in pair:
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair) -> None:
        """Copy one direction. Each chunk is delivered `latency` after it arrived (pipelined),
        and no faster than `bandwidth` allows."""
        queue: asyncio.Queue = asyncio.Queue()
        sender = asyncio.ensure_future(self._deliver(queue, writer, pair))
        try:
            while True:
                data = await reader.read(16384)
                queue.put_nowait((time.monotonic() + self.latency, data))
                if not data or pair not in self._pairs:
                    break
            await sender
        finally:
            sender.cancel()

    async def _deliver(self, queue: asyncio.Queue, writer: asyncio.StreamWriter, pair) -> None:
        budget_time = time.monotonic()
        while True:
            due, data = await queue.get()
            if not data or pair not in self._pairs:
                writer.close()
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.bandwidth:
                budget_time = max(budget_time, time.monotonic()) + len(data) / self.bandwidth
                await asyncio.sleep(max(0.0, budget_time - time.monotonic()))
            if pair not in self._pairs:
                return
            writer.write(data)
            await writer.drain()
