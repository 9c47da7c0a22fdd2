"""Small statistics helpers and the result types every scenario returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["low", "high", ""]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_ms(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of latencies given in seconds."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50) * 1000,
        "p90": percentile(ordered, 90) * 1000,
        "p99": percentile(ordered, 99) * 1000,
        "max": ordered[-1] * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
    }


@dataclass
class Row:
    label: str
    value: float | int | str | None
    unit: str = ""
    better: Better = ""


@dataclass
class ScenarioResult:
    scenario: str
    target: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    levels: list[dict[str, Any]] = field(default_factory=list)  # idle sweep points
    client: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)  # per-run figures (leak)
    gc: dict[str, Any] = field(default_factory=dict)  # GC pauses over the measured phase (gcstats)
    failed: str | None = None

    def add(self, label: str, value: float | int | str | None, unit: str = "", better: Better = "") -> None:
        self.rows.append(Row(label, value, unit, better))

    def add_latency(self, label: str, values: list[float]) -> dict[str, float]:
        """Rows `label p50` .. `label max` (ms, lower is better)."""
        summary = latency_ms(values)
        for name in ("p50", "p90", "p99", "max"):
            self.add(f"{label} {name}", summary[name], "ms", "low")
        return summary

    def value(self, label: str) -> float | int | str | None:
        for row in self.rows:
            if row.label == label:
                return row.value
        return None


def fmt(value: float | int | str | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int):
        text = f"{value:,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip() if unit and unit != "%" else (text + "%" if unit == "%" else text)


def ratio(a: float | int | str | None, b: float | int | str | None) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return "-"
    if math.isnan(a) or math.isnan(b):
        return "-"
    if b == 0:
        return "-" if a == 0 else "∞"
    return f"{a / b:.2f}x"
