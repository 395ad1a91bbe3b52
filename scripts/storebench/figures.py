"""The benchmark's arithmetic and its table. Pure.

    ceiling(readings_per_batch=2200, wire_bytes_per_reading=59.0)     # readings/s IoT Core allows
    row = Row("drain", "seconds to drain", ours=12.1, other=864.0, ratio=71.4, aim=Aim("<", 30, " s"))
    print(render([row], notes=["..."]))

An Aim says whether a figure is met, and when it is not, by how much (absolute and relative).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Optional

PUBLISHES_PER_S = 100            # IoT Core: publishes per second per connection
BYTES_PER_S = 512 * 1024         # IoT Core: throughput per connection
BILLING_UNIT = 5120

_OPS: dict[str, Callable] = {"<": operator.lt, "<=": operator.le, ">=": operator.ge, ">": operator.gt}


def ceiling(readings_per_batch: float, wire_bytes_per_reading: float, publishes_per_s: float = PUBLISHES_PER_S,
            bytes_per_s: float = BYTES_PER_S) -> float:
    """Readings/s the connection's quotas allow: min(publishes/s x readings per batch,
    bytes/s / bytes per reading)."""
    return min(publishes_per_s * readings_per_batch, bytes_per_s / wire_bytes_per_reading)


def units(payload_len: int, topic_len: int, unit: int = BILLING_UNIT) -> int:
    """Billed messages of one publish: ceil((payload + topic) / 5 KB)."""
    return max(1, -(-(payload_len + topic_len) // unit))


@dataclass(frozen=True)
class Aim:
    op: str
    target: float
    unit: str = ""

    def text(self) -> str:
        return f"{self.op} {number(self.target)}{self.unit}"

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.target)

    def verdict(self, value: Optional[float]) -> str:
        if value is None:
            return "not measured"
        if self.met(value):
            return "met"
        gap = abs(value - self.target)
        relative = f" ({gap / abs(self.target):.0%})" if self.target else ""
        return f"MISSED by {number(gap)}{self.unit}{relative}"


@dataclass
class Row:
    part: str
    measure: str
    ours: Optional[float]
    other: Optional[float] = None
    ratio: Optional[float] = None          # how many times better ours is (say which way in measure)
    aim: Optional[Aim] = None
    aim_on_ratio: bool = False
    unit: str = ""

    def cells(self) -> list[str]:
        value = self.ratio if self.aim_on_ratio else self.ours
        return [self.part, self.measure, number(self.ours, self.unit), number(self.other, self.unit),
                f"{number(self.ratio)}x" if self.ratio is not None else "",
                self.aim.text() if self.aim else "", self.aim.verdict(value) if self.aim else ""]


HEADER = ["part", "measure", "ours", "naive/baseline", "ratio", "aim", "verdict"]


def number(value: Optional[float], unit: str = "") -> str:
    """1234567 -> '1,234,567'; 12.345 -> '12.3'; 0.567 -> '0.57'; None -> '-'."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text + unit


def render(rows: list[Row], notes: list[str] = ()) -> str:
    """The table, columns aligned, then the notes."""
    table = [HEADER] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    right = {2, 3, 4}
    lines = []
    for index, line in enumerate(table):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines)
