"""Entry point on Greengrass: ``python -u -m store_and_forward [--work DIR]``.

The database is `<work>/store.db` (default: the current directory, which Greengrass
sets to the component's {work:path}). Runs until SIGTERM (Greengrass's stop): then it
commits what it holds, acknowledges it and exits."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backfill_common.clock import SystemClock
from backfill_common.service import serve

from .runner import Runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="store_and_forward")
    parser.add_argument("--work", default=os.environ.get("BACKFILL_STORE_WORK") or os.getcwd(),
                        help="directory of store.db (default: the current directory)")
    args = parser.parse_args(argv)
    os.umask(0o077)
    return serve(lambda ipc: Runner(ipc, SystemClock(), Path(args.work)))


if __name__ == "__main__":
    sys.exit(main())
