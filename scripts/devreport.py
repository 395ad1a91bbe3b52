"""A scenario's report, read from the cloud recorder (what IoT Core received, when), not from
the components' own counters: `python3 scripts/dev.py run --scenario ...` ends with it.

    arrivals = read_arrivals(Path(".localgg/iot-core-received.db"), since=started)
    report = summarize(arrivals, seen_locally, started, fault_end, evicted)
    print(render(report)); plot(arrivals, events, Path("report.png"), title)

Definitions (pure, in summarize), over the readings sampled in the report's window (from the
scenario's start until TAIL_S after its last fault: the pipeline keeps sampling, and the
newest readings are always a batch away from IoT Core):
- produced: the distinct (run, seq) sampled in the window, seen on the device's local
  pub/sub or in the cloud, plus every seq missing between the lowest and the highest of a
  run (the sensor numbers its readings without gaps, so a hole is a reading that was made);
- delivered: of those, the distinct ones IoT Core received; lost: produced - delivered;
- duplicates: copies IoT Core received beyond the first of each reading;
- drain: from the end of the last fault until the first arrival of the last reading sampled
  before it (0 when nothing was held back);
- latency: first arrival - sample time, per delivered reading (p50, p99, max).
"""

from __future__ import annotations

import math
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components" / "io.backfill.StoreAndForward"))
from store_and_forward import packer  # noqa: E402  (the batch format's own decoder)

Key = tuple  # (run, seq)
TAIL_S = 15.0   # the window ends this long after the last fault (the store batches for up to 10 s)
MAX_LABELS = 40  # more faults than this in a picture: their lines without their labels


@dataclass(frozen=True)
class Arrival:
    key: Key
    sampled: float    # epoch seconds (the reading's t)
    arrived: float    # epoch seconds (when the recorder received its batch)


@dataclass
class Report:
    produced: int
    delivered: int
    lost: int
    duplicates: int
    evicted: Optional[int]
    drain_s: Optional[float]
    latency_p50_s: Optional[float]
    latency_p99_s: Optional[float]
    latency_max_s: Optional[float]
    lost_keys: list = field(default_factory=list)     # every lost key, in order


def batch_readings(payload) -> list:
    """The readings of one recorded batch (the store's own decoder), [] for what is not a batch."""
    try:
        return packer.decode(payload if isinstance(payload, (bytes, str)) else bytes(payload))
    except (ValueError, TypeError):
        return []


def read_arrivals(db: Path, since: float = 0.0, topic_like: str = "dt/backfill/%/readings") -> list[Arrival]:
    """Every reading in every batch the recorder has (each copy), sampled at or after `since`."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT payload, received_at FROM messages WHERE topic LIKE ? ORDER BY id",
                            (topic_like,)).fetchall()
    out = []
    for payload, received_at in rows:
        for reading in batch_readings(payload):
            # a batch with a re-timed reading has a t_orig column, null in the rows not re-timed
            original = reading.get("t_orig")
            sampled = (original if original is not None else reading.get("t", 0)) / 1000.0
            if sampled >= since:
                out.append(Arrival((str(reading["run"]), int(reading["seq"])), sampled, float(received_at)))
    return out


def percentile(values: list[float], q: float) -> Optional[float]:
    """The nearest-rank percentile (q in 0..100) of values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def produced_keys(seen: Iterable[Key]) -> set:
    """The keys seen, and every seq between the lowest and the highest of each run."""
    keys = set(seen)
    runs: dict = {}
    for run, seq in keys:
        low, high = runs.get(run, (seq, seq))
        runs[run] = (min(low, seq), max(high, seq))
    for run, (low, high) in runs.items():
        keys.update((run, seq) for seq in range(low, high + 1))
    return keys


def in_window(arrivals: list[Arrival], seen_locally: dict, window_end: Optional[float]):
    """(arrivals, seen) of the readings sampled up to window_end (None: no end)."""
    if window_end is None:
        return arrivals, dict(seen_locally)
    return ([a for a in arrivals if a.sampled <= window_end],
            {k: t for k, t in seen_locally.items() if t <= window_end})


def drained(arrivals: list[Arrival], seen_locally: dict, window_end: float) -> bool:
    """Whether IoT Core has every reading produced in the window."""
    arrivals, seen = in_window(arrivals, seen_locally, window_end)
    arrived = {a.key for a in arrivals}
    return bool(seen) and produced_keys(set(seen) | arrived) <= arrived


def summarize(arrivals: list[Arrival], seen_locally: dict, fault_end: Optional[float],
              evicted: Optional[int] = None, window_end: Optional[float] = None,
              latency_from: Optional[dict] = None) -> Report:
    """`seen_locally`: {key: sample time} of the readings the device published in the scenario;
    only readings sampled up to `window_end` count (None: all). `latency_from` ({key: epoch
    seconds}, the soak's: when the reading was seen on local pub/sub) measures the latency from
    there, for the readings it has, instead of from the sample time (which a stepped clock
    moves)."""
    arrivals, seen_locally = in_window(arrivals, seen_locally, window_end)
    first: dict = {}
    for arrival in arrivals:
        if arrival.key not in first or arrival.arrived < first[arrival.key].arrived:
            first[arrival.key] = arrival
    produced = produced_keys(set(seen_locally) | set(first))
    delivered = produced & set(first)
    latencies = ([first[k].arrived - first[k].sampled for k in delivered] if latency_from is None else
                 [first[k].arrived - latency_from[k] for k in delivered if k in latency_from])
    drain = None
    if fault_end is not None:
        held = [first[k].arrived for k in delivered if first[k].sampled <= fault_end]
        drain = max(0.0, max(held) - fault_end) if held else 0.0
    lost = sorted(produced - delivered)
    return Report(produced=len(produced), delivered=len(delivered), lost=len(lost),
                  duplicates=sum(1 for a in arrivals if a.key in produced) - len(delivered),
                  evicted=evicted, drain_s=drain,
                  latency_p50_s=percentile(latencies, 50), latency_p99_s=percentile(latencies, 99),
                  latency_max_s=max(latencies) if latencies else None, lost_keys=lost)


def _seconds(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def render(report: Report, scenario: str = "") -> list[str]:
    """The report as lines of text (the numbers are the cloud recorder's)."""
    rows = [("produced", f"{report.produced} readings"),
            ("delivered to IoT Core", f"{report.delivered} distinct"),
            ("lost", f"{report.lost}" + (f"  e.g. {report.lost_keys[:5]}" if report.lost else "")),
            ("duplicates", f"{report.duplicates} extra copies (a resend; counted once above)"),
            ("evicted", "n/a (no store report in the cloud shadow yet)" if report.evicted is None
             else f"{report.evicted} (the store's counter, from the cloud shadow)"),
            ("time to drain", _seconds(report.drain_s)),
            ("latency p50 / p99 / max", f"{_seconds(report.latency_p50_s)} / {_seconds(report.latency_p99_s)} / "
                                         f"{_seconds(report.latency_max_s)}")]
    width = max(len(name) for name, _ in rows)
    head = f"report{f' ({scenario})' if scenario else ''}, from the cloud recorder:"
    return [head] + [f"  {name:<{width}}  {value}" for name, value in rows]


def grouped(events: list[tuple[float, str]], within: float = 3.0) -> list[tuple[float, str]]:
    """Events closer than `within` seconds to the previous one share its line: "a; b"."""
    out: list[tuple[float, str]] = []
    for at, label in sorted(events):
        if out and at - out[-1][0] < within:
            out[-1] = (out[-1][0], f"{out[-1][1]}; {label}")
        else:
            out.append((at, label))
    return out


def plot(arrivals: list[Arrival], events: list[tuple[float, str]], path: Path, title: str) -> Path:
    """Sample time against arrival time (seconds from the first sample): during an outage the
    points stack up at the moment the link returns; the back-fill is that column filling in."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first: dict = {}
    copies: list[Arrival] = []
    for arrival in sorted(arrivals, key=lambda a: a.arrived):
        if arrival.key in first:
            copies.append(arrival)
        else:
            first[arrival.key] = arrival
    zero = min((a.sampled for a in first.values()), default=0.0)
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    points = list(first.values())
    axes.scatter([a.sampled - zero for a in points], [a.arrived - zero for a in points], s=6,
                 label="a reading's first arrival at IoT Core", color="tab:blue")
    if copies:
        axes.scatter([a.sampled - zero for a in copies], [a.arrived - zero for a in copies], s=14, marker="x",
                     label="a duplicate copy", color="tab:orange")
    top = max([a.arrived - zero for a in arrivals] + [1.0])
    axes.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle="--", label="arrival = sample time")
    marks = grouped(events)
    for at, label in marks:          # a soak's hundreds of faults: thin lines, no labels
        axes.axvline(at - zero, color="tab:red", linewidth=0.8 if len(marks) <= MAX_LABELS else 0.3, alpha=0.6)
        if len(marks) <= MAX_LABELS:
            axes.annotate(label, (at - zero, top), rotation=90, va="top", ha="right", fontsize=7, color="tab:red")
    axes.set_xlabel("sample time (s since the first reading)")
    axes.set_ylabel("arrival at IoT Core (s)")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
