"""Entry point on Greengrass: ``python -u -m bme680_sensor``.

Wires the real IPC adapter and the system clock to the runner and runs until SIGTERM
(Greengrass's stop)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from backfill_common.clock import SystemClock
from backfill_common.ipc import Ipc

from .runner import Runner


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    ipc = Ipc()
    try:
        runner = Runner(ipc, SystemClock())
        runner.start()
        runner.run(stop)
    finally:
        ipc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
