"""Entry point on Greengrass: ``python -u -m store_and_forward [--work DIR]``.

The database is `<work>/store.db` (default: the current directory, which Greengrass
sets to the component's {work:path}). Runs until SIGTERM (Greengrass's stop): then it
commits what it holds, acknowledges it and exits."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from backfill_common.clock import SystemClock
from backfill_common.ipc import Ipc, Message

from .runner import Runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="store_and_forward")
    parser.add_argument("--work", default=os.environ.get("BACKFILL_STORE_WORK") or os.getcwd(),
                        help="directory of store.db (default: the current directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)
    stop = threading.Event()
    ipc = Ipc()
    runner = Runner(ipc, SystemClock(), Path(args.work))

    def on_signal(signum, frame) -> None:
        stop.set()
        runner.inbox.put(Message("stop", "", {}))        # wake the loop at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        runner.start()
        runner.run(stop)
    finally:
        try:
            runner.close()
        finally:
            ipc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
