"""scripts/bench: the store's benchmark runs end to end in its smallest mode (localgg,
mosquitto, the store component's own process, the naive publisher) and prints its table.
Only the table's shape is checked, never a timing."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS_PER_PART = {"ingest": 3, "footprint": 4, "drain": 7, "slow-link": 2, "flood": 3, "startup": 1}
HEADER = ["part", "measure", "ours", "naive/baseline", "ratio", "aim", "verdict"]
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?( ?[a-zA-Z%]+)?$")


def columns(dashes: str) -> list[slice]:
    return [slice(m.start(), m.end()) for m in re.finditer(r"-+", dashes)]


def test_help_lists_every_part():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for part in ("pubsub", "store", "drain", "ingest", "footprint", "flood", "startup", "slow-link", "online", "--quick"):
        assert part in out.stdout


def test_the_smallest_store_run_prints_every_row_with_its_verdict():
    paths = [ROOT / "scripts", ROOT / "components" / "_common", ROOT / "components" / "io.backfill.StoreAndForward"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in paths))
    out = subprocess.run([sys.executable, "-m", "storebench", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    lines = out.stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("part "))
    spans = columns(lines[top + 1])
    assert [lines[top][s].strip() for s in spans] == HEADER
    rows = []
    for line in lines[top + 2:]:
        if not line.strip():
            break
        rows.append([line.ljust(spans[-1].stop)[s].strip() for s in spans[:-1]] + [line[spans[-1].start:].strip()])
    assert {part: sum(r[0] == part for r in rows) for part in ROWS_PER_PART} == ROWS_PER_PART
    for part, measure, ours, other, ratio, aim, verdict in rows:
        assert measure and NUMBER.match(ours), (measure, ours)
        assert other == "-" or NUMBER.match(other), (measure, other)
        assert ratio == "" or re.match(r"^[\d,.]+x$", ratio), (measure, ratio)
        assert (aim == "") == (verdict == ""), measure
        assert verdict == "" or verdict == "met" or verdict.startswith("MISSED by "), (measure, verdict)
    notes = "\n".join(lines)
    assert "ceiling = min(100 publishes/s" in notes and "naive: ran" in notes and "baseline" in notes
    assert "dropped" in notes and "at its bounded inbox" in notes
    assert "to its first batch recorded by the cloud" in notes and "write_bytes: pages dirtied" in notes


def test_the_ceiling_the_verdicts_and_the_readings():
    sys.path.insert(0, str(ROOT / "scripts"))
    from backfill_common import contracts
    from storebench.figures import Aim, ceiling
    from storebench.readings import daily
    assert ceiling(2000, 64) == 8192 and ceiling(10, 64) == 1000       # bytes-bound, publishes-bound
    assert Aim(">=", 80, " %").verdict(90) == "met"
    assert Aim(">=", 80, " %").verdict(60) == "MISSED by 20 % (25%)"
    assert Aim("<", 30, " s").verdict(45.5) == "MISSED by 15.5 s (52%)"
    readings = list(daily(300, device="pi-1", run="1a2b3c4d", t0_ms=1_764_338_400_000))
    assert all(contracts.check("reading-corrected", r) == [] for r in readings)
    for name in ("temperature", "humidity", "pressure", "gas_resistance", "cpu_temperature"):
        changes = sum(a[name] != b[name] for a, b in zip(readings, readings[1:]))
        assert changes > 0.8 * len(readings), name                         # values change from reading to reading
