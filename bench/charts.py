"""PNG charts for ``herald bench report`` (matplotlib, Agg backend: no display needed).

Each function draws one chart from bench results and writes it to ``path``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt

SIZE = (7.0, 4.0)
DPI = 100


def throughput_vs_concurrency(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Messages/s against smtp-source sessions, one line per MTA (compare-postfix rows)."""
    figure, axes = plt.subplots(figsize=SIZE)
    for kind in dict.fromkeys(row["mta"] for row in rows):
        points = sorted((row["sessions"], row["messages_per_s"]) for row in rows
                        if row["mta"] == kind)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=kind)
    axes.set_xlabel("concurrent SMTP sessions (smtp-source)")
    axes.set_ylabel("messages/s, end to end")
    axes.set_title("Throughput against concurrency")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)


def latency_percentiles(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Event-to-250 p50/p95/p99 of each e2e run, grouped by run."""
    figure, axes = plt.subplots(figsize=SIZE)
    names = ("p50", "p95", "p99")
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        values = [run["latency_ms"][name] or 0.0 for run in runs]
        axes.bar([i + index * width for i in range(len(runs))], values, width, label=name)
    axes.set_xticks([i + width for i in range(len(runs))],
                    [f"{run['offered_events_per_s']:g} events/s\nrun {i + 1}"
                     for i, run in enumerate(runs)])
    axes.set_ylabel("event -> 250 latency, ms")
    axes.set_title("Latency from intended send time (retries included)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    _save(figure, path)


def per_part(values: Mapping[str, float], ylabel: str, title: str, path: Path) -> None:
    """One bar per part (CPU per send, or memory)."""
    figure, axes = plt.subplots(figsize=SIZE)
    names = list(values)
    axes.bar(names, [values[name] for name in names], color="tab:blue")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.tick_params(axis="x", labelrotation=20)
    axes.grid(axis="y", alpha=0.3)
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)
    plt.close(figure)
