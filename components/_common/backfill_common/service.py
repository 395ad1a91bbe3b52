"""A component's process on Greengrass: logging to stdout (the core keeps it in
logs/<Component>.log), the real IPC adapter, and a clean stop on SIGTERM.

    def main() -> int:
        return serve(lambda ipc: Runner(ipc, SystemClock()))

`build(ipc)` returns a runner with `start()`, `run(stop_event)` and, optionally, an
`inbox` (woken at once by a "stop" message on SIGTERM) and `close()` (called on the way out).
Greengrass sends SIGTERM to stop a component and SIGKILL 5 s later."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Callable

from .ipc import Ipc, Message


def serve(build: Callable[[Ipc], object]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    ipc = Ipc()
    try:
        runner = build(ipc)

        def on_signal(signum, frame) -> None:
            # Only the Event here: queue.Queue.put is not reentrant, and the handler runs in
            # the main thread, which may be inside the inbox's own put or get (a deadlock).
            stop.set()

        inbox = getattr(runner, "inbox", None)
        if inbox is not None:       # a thread wakes the loop at once when the signal came
            threading.Thread(target=lambda: stop.wait() or inbox.put(Message("stop", "", {})),
                             name="stop", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            runner.start()
            runner.run(stop)
        finally:
            close = getattr(runner, "close", None)
            if close is not None:
                close()
    finally:
        ipc.close()
    return 0
