"""One row per measured figure, and the three ways `python -m benchmarks` shows them: a text table, a JSON
document and a PNG chart of every row's ratio to its reference."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Ratio:
    """Forge's figure over a reference's (`of`: "raw COPY", "limit", "pgqueuer k=10 4w"), median and
    range over the repeats (paired repeat by repeat when both were measured in the same rounds)."""

    of: str
    median: float
    low: float
    high: float

    @classmethod
    def paired(cls, of: str, ours: list[float], theirs: list[float]) -> Ratio:
        values = [a / b for a, b in zip(ours, theirs, strict=True) if b]
        return cls(of, statistics.median(values), min(values), max(values))

    @classmethod
    def unpaired(cls, of: str, ours: list[float], theirs: list[float]) -> Ratio:
        """Median over median; the range is the widest the two spreads allow."""
        return cls(of, statistics.median(ours) / statistics.median(theirs), min(ours) / max(theirs),
                   max(ours) / min(theirs))

    @classmethod
    def to_constant(cls, of: str, ours: list[float], reference: float) -> Ratio:
        return cls(of, statistics.median(ours) / reference, min(ours) / reference, max(ours) / reference)

    def text(self) -> str:
        spread = f" ({self.low:.2f}-{self.high:.2f})" if self.high - self.low >= 0.005 else ""
        return f"{self.median:.2f}x {self.of}{spread}"

    def as_dict(self) -> dict[str, Any]:
        return {"of": self.of, "median": round(self.median, 3), "min": round(self.low, 3),
                "max": round(self.high, 3)}


@dataclass
class Row:
    """One line of the table: what was measured (`measures`), in `unit`, one sample per repeat."""

    section: str  # "intake", "lease store", ...
    label: str  # who or what: "forge submit", "raw COPY", "pgqueuer"
    measures: str
    unit: str
    samples: list[float]
    ratios: list[Ratio] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # further figures (CPU per request, WAL per job)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def spread(self) -> str:
        """min-max over the repeats ("n=1" when there was one run)."""
        if len(self.samples) < 2:
            return "n=1"
        return f"{_number(min(self.samples))}-{_number(max(self.samples))}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section, "label": self.label, "measures": self.measures, "unit": self.unit,
            "median": round(self.median, 4), "min": round(min(self.samples), 4), "max": round(max(self.samples), 4),
            "samples": [round(s, 4) for s in self.samples], "ratios": [r.as_dict() for r in self.ratios],
            "details": self.details, "note": self.note,
        }


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _details_text(details: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_number(v) if isinstance(v, float) else v}" for k, v in details.items())


def render_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table; `measures` and the details go on a second, indented line."""
    head = ("section", "row", "median", "unit", "spread (min-max)", "n", "compared with")
    cells = [(r.section, r.label, _number(r.median), r.unit, r.spread(), str(len(r.samples)),
              "; ".join(x.text() for x in r.ratios) or "-") for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    right = {2, 4, 5}

    def line(values) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    for row, values in zip(rows, cells, strict=True):
        out.append(line(values))
        more = "; ".join(x for x in (_details_text(row.details), row.note) if x)
        out.append(f"    measures: {row.measures}" + (f" | {more}" if more else ""))
    return "\n".join(out)


_TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500]


def write_chart(rows: list[Row], path: Path, title: str) -> None:
    """A horizontal bar per row with a ratio: the first ratio's median, whiskers at its range, a line at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    shown = [r for r in rows if r.ratios]
    labels = [f"{r.section}: {r.label}\nvs {r.ratios[0].of}" for r in shown]
    medians = [r.ratios[0].median for r in shown]
    errors = [[m - r.ratios[0].low for m, r in zip(medians, shown, strict=True)],
              [r.ratios[0].high - m for m, r in zip(medians, shown, strict=True)]]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(shown) + 1.5))
    positions = list(range(len(shown)))[::-1]
    ax.barh(positions, medians, xerr=errors, color="#4c78a8", ecolor="#333333", capsize=3, height=0.6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    highs = [r.ratios[0].high for r in shown]
    low, high = min(0.5, *(0.7 * r.ratios[0].low for r in shown)), max(2.0, *(2.5 * h for h in highs))
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(FixedLocator([t for t in _TICKS if low <= t <= high]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yticks(positions, labels, fontsize=7)
    for y, m, h in zip(positions, medians, highs, strict=True):
        ax.annotate(f"{m:.2f}x", (max(m, h), y), xytext=(5, -3), textcoords="offset points", fontsize=7)
    ax.set_xlabel("ratio (median over repeats; whiskers: min-max)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
