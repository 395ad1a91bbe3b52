"""python -m cutfs BACKING MOUNTPOINT [--seed N] [--control-fd FD]: mount (foreground) until
unmounted or cut. A line "cut KEEP" on the control fd is the power failing: a KEEP share of
the unsynced pages reaches the disk (seeded), the rest is lost, and the process exits at
once. SIGKILL is a cut that keeps nothing."""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading

import mfusepy

from .fs import CutFS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cutfs", description=__doc__)
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--control-fd", type=int, default=None)
    args = parser.parse_args(argv)
    fs = CutFS(args.backing)
    rng = random.Random(args.seed)

    if args.control_fd is not None:
        def control() -> None:
            with os.fdopen(args.control_fd, "r") as commands:
                for line in commands:
                    words = line.split()
                    if words[:1] == ["cut"]:
                        written = fs.cut(rng, float(words[1]) if len(words) > 1 else 0.0)
                        print(f"cutfs: power cut, unsynced pages that reached the disk: {written}",
                              file=sys.stderr, flush=True)
                        os._exit(0)
        threading.Thread(target=control, name="control", daemon=True).start()
    mfusepy.FUSE(fs, args.mountpoint, foreground=True, nothreads=True, default_permissions=True,
                 allow_other=os.geteuid() == 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
