"""Entry point on Greengrass: ``python -u -m temperature_correction``: the runner on the
real IPC adapter, until SIGTERM (Greengrass's stop)."""

import sys
from pathlib import Path

from backfill_common.service import serve

from .runner import Runner


def main() -> int:
    # Greengrass runs the component in its work folder: the last good settings are kept there
    return serve(lambda ipc: Runner(ipc, settings_path=Path.cwd() / "settings.json"))


if __name__ == "__main__":
    sys.exit(main())
