"""Entry point on Greengrass: ``python -u -m bme680_sensor``: the runner on the real IPC
adapter and the system clock, until SIGTERM (Greengrass's stop)."""

import sys

from backfill_common.clock import SystemClock
from backfill_common.service import serve

from .runner import Runner


def main() -> int:
    return serve(lambda ipc: Runner(ipc, SystemClock()))


if __name__ == "__main__":
    sys.exit(main())
