"""PNG report of a bench run (matplotlib, Agg): one panel per section plus the baseline comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edge_runtime.bench.results import Comparison, Section  # noqa: E402


def _unavailable(ax: Any, section: Section) -> None:
    ax.axis("off")
    ax.set_title(section.name)
    ax.text(0.5, 0.5, f"not available:\n{section.reason}", ha="center", va="center", wrap=True, fontsize=9,
            transform=ax.transAxes, color="dimgray")


def _bars(ax: Any, section: Section, title: str, unit: str) -> None:
    labels = [m.label or name for name, m in section.metrics.items()]
    values = [m.value for m in section.metrics.values()]
    bars = ax.barh(labels, values, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.3g}", va="center", fontsize=8)
    ax.margins(x=0.2)


def _slm(ax: Any, section: Section) -> None:
    keys = sorted({name.split("[", 1)[1].rstrip("]") for name in section.metrics})
    prefill = [section.metrics[f"prefill_ms_per_token[{k}]"].value for k in keys]
    decode = [section.metrics[f"decode_ms_per_token[{k}]"].value for k in keys]
    ys = range(len(keys))
    ax.barh([y - 0.2 for y in ys], decode, height=0.4, label="decode", color="tab:orange")
    ax.barh([y + 0.2 for y in ys], prefill, height=0.4, label="prefill", color="tab:green")
    ax.set_yticks(list(ys), [k.replace(".t", " ") + "T" for k in keys])
    ax.invert_yaxis()
    ax.set_xlabel("ms per token")
    ax.set_title("SLM (onnxruntime) per token")
    ax.legend(fontsize=8)


def _mqtt(ax: Any, section: Section) -> None:
    rtts = section.details.get("rtt_ms", [])
    ax.hist(rtts, bins=min(30, max(5, len(rtts) // 3)), color="tab:purple")
    p50, p95 = section.metrics["rtt_ms_p50"].value, section.metrics["rtt_ms_p95"].value
    ax.axvline(p50, color="k", linestyle="-", label=f"p50 {p50:.2f} ms")
    ax.axvline(p95, color="k", linestyle="--", label=f"p95 {p95:.2f} ms")
    ax.set_xlabel("publish → echo round trip (ms)")
    ax.set_ylabel("messages")
    ax.set_title(f"MQTT RTT to {section.details.get('broker', '?')} (n={len(rtts)})")
    ax.legend(fontsize=8)


def _remote(ax: Any, section: Section) -> None:
    """Mixed units (tokens/s, tokens, ms): a table, not bars on one axis."""
    d = section.details
    ax.axis("off")
    ax.set_title(f"end to end through the broker ({d.get('variant')}, {d.get('threads')}T, L={d.get('L')}, "
                 f"ℓ={d.get('ell')}, worker {d.get('worker')})")
    rows = [[m.label or name, f"{m.value:.3g} {m.unit}"] for name, m in section.metrics.items()]
    rows += [["tokens / rounds", f"{d.get('tokens')} / {d.get('rounds')}"],
             ["uplink bytes per round", f"{d.get('uplink_bytes', 0) / max(1, d.get('rounds') or 1):.0f}"],
             ["resends / resyncs", f"{d.get('resends')} / {d.get('resyncs')}"]]
    table = ax.table(cellText=rows, colLabels=["metric", "value"], loc="center", cellLoc="left")
    table.scale(1, 1.3)


def _baseline(ax: Any, rows: list[Comparison], threshold: float) -> None:
    if not rows:
        ax.axis("off")
        ax.set_title("baseline comparison")
        ax.text(0.5, 0.5, "no baseline given (or no common metrics)", ha="center", va="center",
                transform=ax.transAxes, color="dimgray")
        return
    changes = [c.change * 100 for c in rows]
    colors = ["tab:red" if c.regression else "tab:green" for c in rows]
    ax.barh([c.name for c in rows], changes, color=colors)
    ax.axvline(threshold * 100, color="tab:red", linestyle="--", label=f"threshold {threshold * 100:.0f}%")
    ax.axvline(0, color="k", linewidth=0.8)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("worse than baseline (%)  [red: regression]")
    ax.set_title(f"vs baseline: {sum(c.regression for c in rows)} regressions of {len(rows)} metrics")
    ax.legend(fontsize=8)


def write_png(path: Path, sections: list[Section], meta: dict[str, Any], rows: list[Comparison] | None,
              threshold: float) -> None:
    by_name = {s.name: s for s in sections}
    panels = [name for name in ("core", "slm", "mqtt", "e2e", "remote") if name in by_name]
    n = len(panels) + 1
    heights = [1.3 if name == "e2e" or not by_name[name].available else 2.0 if name == "remote" else 3.0
               for name in panels] + [3.0 if rows else 1.0]
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.1 * sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, name in zip(axes[:, 0], panels, strict=False):
        section = by_name[name]
        if not section.available:
            _unavailable(ax, section)
        elif name == "core":
            _bars(ax, section, f"C core per token (V={section.details.get('vocab_size')})", "µs per token")
        elif name == "slm":
            _slm(ax, section)
        elif name == "mqtt":
            _mqtt(ax, section)
        elif name == "remote":
            _remote(ax, section)
        else:
            d = section.details
            _bars(ax, section, f"edge drafting ({d.get('variant')}, {d.get('threads')}T, L={d.get('L')}, "
                               f"ℓ={d.get('ell')})", "tokens per second")
    _baseline(axes[-1, 0], rows or [], threshold)
    fig.suptitle(f"qsv bench: {meta.get('device_id')} ({meta.get('board')}) on {meta.get('host')}, "
                 f"{meta.get('time')}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
