"""Entry point on Greengrass: ``python -u -m temperature_correction``: the runner on the
real IPC adapter, until SIGTERM (Greengrass's stop)."""

import sys

from backfill_common.service import serve

from .runner import Runner


def main() -> int:
    return serve(Runner)


if __name__ == "__main__":
    sys.exit(main())
