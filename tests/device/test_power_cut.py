"""Power cuts, simulated faithfully (issue 17, item 1): the store's database, its WAL and
-shm on cutfs (scripts/cutfs: writes not yet fsynced live in memory and are lost, or partly
kept with a torn page, when the power fails), the store SIGKILLed at the same moment, at
random moments (seeded) while it ingests, forwards, deletes what IoT Core confirmed and
re-times a run whose clock stepped. After the cuts the store opens what is on the disk and
drains it. Then, from the witnesses kept off the mount (what the sensor was acknowledged,
what IoT Core received):

- synchronous FULL: every acknowledged reading reached IoT Core;
- synchronous NORMAL: what is lost was acknowledged at most checkpoint_interval_s before a
  cut (the README's bound) and nothing else;
- either way the database opens after every cut: never one the store must set aside.

    BACKFILL_POWERCUT_CUTS=100 BACKFILL_POWERCUT_SEED=7 python3 scripts/dev.py test tests/device/test_power_cut.py

replays or lengthens it (the suite runs 4 cuts per mode).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from cutfs.mount import CutMount, available  # noqa: E402
from store_and_forward import packer  # noqa: E402

DEVICE = Path(__file__).resolve().parent / "powercut_device.py"
CUTS = int(os.environ.get("BACKFILL_POWERCUT_CUTS", "4"))
SEED = int(os.environ.get("BACKFILL_POWERCUT_SEED", random.randrange(1 << 30)))
CHECKPOINT_S = 1.0          # the device's checkpoint_interval_s
SLACK_MS = 1500             # a checkpoint takes time; the cut is noted after the kill


@pytest.fixture(scope="module", autouse=True)
def fuse():
    why = available()
    assert why is None, f"cutfs cannot mount here: {why} (scripts/dev.py test installs fuse3)"


def acknowledged(path: Path) -> dict[str, list[tuple[int, int]]]:
    """run -> [(seq, wall ms)] of every acknowledgement, in order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for line in path.read_text().splitlines():
        run, seq, at = line.split()
        out.setdefault(run, []).append((int(seq), int(at)))
    return out


def delivered(path: Path) -> set[tuple[str, int]]:
    got = set()
    for line in path.read_text().splitlines():
        doc = json.loads(line)
        if "dead_letter" not in doc:
            got.update((r["run"], r["seq"]) for r in packer.decode(doc))
    return got


def first_acked_at(acks: list[tuple[int, int]], seq: int) -> int:
    return next(at for top, at in acks if top >= seq)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_power_cuts_lose_no_acknowledged_reading_with_full_and_only_the_last_checkpoint_with_normal(
        tmp_path, synchronous):
    rng = random.Random(f"{SEED}-{synchronous}")
    mount = CutMount(tmp_path / "disk", tmp_path / "mnt", seed=SEED)
    acks, cloud = tmp_path / "acks.log", tmp_path / "cloud.log"
    acks.touch()
    cloud.touch()
    db = tmp_path / "mnt" / "store.db"
    cuts: dict[str, tuple[int, float]] = {}            # run -> (wall ms of the cut, share kept)

    def device(*extra: str) -> subprocess.Popen:
        log = open(tmp_path / "device.log", "ab")
        return subprocess.Popen([sys.executable, str(DEVICE), "--db", str(db), "--acks", str(acks), "--cloud",
                                 str(cloud), "--synchronous", synchronous, *extra], stdout=log, stderr=log)
    try:
        for i in range(CUTS):
            mount.start()
            run = f"{SEED % 0xFFFF:04x}{i:04x}"
            process = device("--run", run, "--seed", str(rng.randrange(1 << 30)))
            wait_for(lambda: process.poll() is not None or run in acknowledged(acks), 60,
                     message=f"the device to acknowledge readings of run {run}")
            assert process.poll() is None, f"the device exited: {(tmp_path / 'device.log').read_text()[-2000:]}"
            time.sleep(rng.uniform(0.1, 1.5))          # the cut's random moment (not a synchronisation)
            process.kill()                             # the power fails for the store ...
            process.wait()
            keep = rng.choice([0.0, 0.3, 0.7, 1.0])
            cuts[run] = (int(time.time() * 1000), keep)
            mount.cut(keep)                            # ... and for what the disk had not yet
        mount.start()
        process = device("--drain-only", "--seed", "0")
        try:
            assert process.wait(120) == 0, (tmp_path / "device.log").read_text()[-3000:]
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"the store did not drain after the cuts: {(tmp_path / 'device.log').read_text()[-3000:]}")
        aside = [p.name for p in (tmp_path / "disk").iterdir() if ".corrupt-" in p.name]
    finally:
        mount.stop()
    assert not aside, f"a power cut left a database the store had to set aside: {aside} (seed {SEED})"
    acked, got = acknowledged(acks), delivered(cloud)
    lost = {(run, seq) for run, marks in acked.items() for seq in range(marks[-1][0] + 1) if (run, seq) not in got}
    total = sum(marks[-1][0] + 1 for marks in acked.values())
    print(f"{synchronous} seed {SEED}: {CUTS} cuts {cuts}; {total} readings acknowledged, "
          f"{len(got)} delivered, {len(lost)} acknowledged and lost")
    assert total > 0
    if synchronous == "FULL":
        assert not lost, f"acknowledged readings lost at a power cut (seed {SEED}): {sorted(lost)[:10]}"
        return
    late = {(run, seq) for run, seq in lost
            if first_acked_at(acked[run], seq) < cuts[run][0] - CHECKPOINT_S * 1000 - SLACK_MS}
    assert not late, (f"readings lost that were acknowledged more than checkpoint_interval_s before the cut "
                      f"(seed {SEED}): {sorted(late)[:10]}")
