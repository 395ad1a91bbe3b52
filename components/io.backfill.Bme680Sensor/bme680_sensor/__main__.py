"""Entry point on Greengrass: ``python -u -m bme680_sensor``: the runner on the real IPC
adapter and the system clock, until SIGTERM (Greengrass's stop)."""

import sys
from pathlib import Path

from backfill_common.clock import SystemClock
from backfill_common.service import serve

from .journal import Journal
from .runner import Runner


def main() -> int:
    # Greengrass runs the component in its work folder: the held readings survive there
    return serve(lambda ipc: Runner(ipc, SystemClock(), journal=Journal(Path.cwd() / "unacked.jsonl"),
                                    settings_path=Path.cwd() / "settings.json"))


if __name__ == "__main__":
    sys.exit(main())
