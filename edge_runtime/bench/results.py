"""Bench results: metrics with a direction, sections that may be unavailable (with the reason), JSON, and the
comparison against a stored baseline (ratio per metric, regressions beyond a threshold)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOWER, HIGHER = "lower", "higher"  # which direction is better


@dataclass(frozen=True)
class Metric:
    value: float
    unit: str
    better: str  # LOWER | HIGHER
    label: str = ""  # human-readable name for the report

    def __post_init__(self) -> None:
        if self.better not in (LOWER, HIGHER):
            raise ValueError(f"better must be {LOWER!r} or {HIGHER!r}, got {self.better!r}")


@dataclass
class Section:
    name: str
    available: bool = True
    reason: str = ""  # why the section is not available
    metrics: dict[str, Metric] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # raw samples, settings (not compared)

    @classmethod
    def unavailable(cls, name: str, reason: str) -> Section:
        return cls(name, available=False, reason=reason)

    def summary_line(self) -> str:
        if not self.available:
            return f"[{self.name}] not available: {self.reason}"
        return f"[{self.name}] {len(self.metrics)} metrics"


@dataclass(frozen=True)
class Comparison:
    name: str
    baseline: float
    current: float
    ratio: float  # current / baseline
    better: str
    regression: bool
    change: float  # relative worsening (positive = worse), e.g. 0.25 = 25 % worse

    def line(self) -> str:
        flag = "REGRESSION" if self.regression else "ok"
        return (f"{self.name}: {self.baseline:.4g} -> {self.current:.4g} (ratio {self.ratio:.3f}, "
                f"{'worse' if self.change > 0 else 'better'} by {abs(self.change) * 100:.1f}%) {flag}")


def all_metrics(sections: list[Section]) -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    for section in sections:
        for name, metric in section.metrics.items():
            out[f"{section.name}.{name}"] = metric
    return out


def compare(current: dict[str, Metric], baseline: dict[str, Metric], threshold: float) -> tuple[list[Comparison],
                                                                                                 list[str]]:
    """Compare metrics present in both; a regression is a worsening by more than ``threshold`` (0.1 = 10 %):
    lower-is-better metrics: current > baseline·(1+t); higher-is-better: current < baseline/(1+t).
    Returns (comparisons, names present in only one of the two)."""
    if threshold < 0:
        raise ValueError("threshold must be >= 0")
    rows: list[Comparison] = []
    for name in sorted(set(current) & set(baseline)):
        cur, base = current[name], baseline[name]
        if base.value <= 0 or cur.value <= 0:
            continue  # ratios of non-positive values mean nothing
        ratio = cur.value / base.value
        change = ratio - 1.0 if cur.better == LOWER else 1.0 / ratio - 1.0
        rows.append(Comparison(name, base.value, cur.value, ratio, cur.better, change > threshold, change))
    unmatched = sorted(set(current) ^ set(baseline))
    return rows, unmatched


def to_json(sections: list[Section], meta: dict[str, Any], comparisons: list[Comparison] | None = None,
            unmatched: list[str] | None = None, threshold: float | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "meta": meta,
        "sections": {s.name: {"available": s.available, "reason": s.reason, "details": s.details} for s in sections},
        "metrics": {name: asdict(m) for name, m in all_metrics(sections).items()},
    }
    if comparisons is not None:
        doc["baseline"] = {
            "threshold": threshold,
            "comparisons": [asdict(c) for c in comparisons],
            "regressions": [c.name for c in comparisons if c.regression],
            "unmatched": unmatched or [],
        }
    return doc


def load_metrics(path: Path) -> dict[str, Metric]:
    """Metrics of a bench JSON written earlier (the baseline)."""
    doc = json.loads(Path(path).read_text())
    if "metrics" not in doc:
        raise ValueError(f"{path} is not a qsv bench result (no 'metrics')")
    return {name: Metric(**m) for name, m in doc["metrics"].items()}
