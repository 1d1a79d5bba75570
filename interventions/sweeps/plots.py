"""The sweep's Pareto plots, in the paper's Fig. 2 style, and an adaptive sweep's
hypervolume curves (`plot_hypervolume`).

Each test point carries its run's name; runs whose test points coincide share one label
("0, 3"), so none hides another. The minimality axis is logarithmic (counts span decades),
with plain-number ticks inside the data wherever they fall, also when every count lies
within one decade.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import matplotlib

if "ipykernel" not in sys.modules:  # headless on the command line and clusters; a notebook keeps its inline figures
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter  # noqa: E402

from interventions.methods.registry import method_color, method_label  # noqa: E402
from interventions.sweeps.pareto import FRONTS, front_order  # noqa: E402


def plot_front(records: list[dict], front: str, title: str | None = None):
    """The paper's Fig. 2 style: train crosses, test points, one colour per method; each
    method's test front drawn as a line, runs on the overall test front ringed in black."""
    x_key, y_key, y_dir = FRONTS[front]
    finished = [r for r in records if r["status"] == "finished"]
    methods = sorted({r["hparams"].get("method") for r in finished}, key=str)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    taken = {to_hex(c) for c in map(method_color, methods) if c}  # a method without a colour of its own takes a free one
    spare = iter(c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if to_hex(c) not in taken)
    for m in methods:
        color = method_color(m) or next(spare, "black")
        rs = [r for r in finished if r["hparams"].get("method") == m]
        pts = {s: [(r[s][x_key], r[s][y_key]) for r in rs if _finite(r[s], x_key, y_key)] for s in ("train", "test")}
        if pts["train"]:
            ax.scatter(*zip(*pts["train"]), marker="x", color=color, alpha=0.5, s=28, label=f"{method_label(m)} train")
        if pts["test"]:
            ax.scatter(*zip(*pts["test"]), marker="o", color=color, s=28, label=f"{method_label(m)} test")
        front_pts = [
            (r["test"][x_key], r["test"][y_key]) for r in rs
            if r.get("pareto_within_method", {}).get(front) and _finite(r["test"], x_key, y_key)
        ]  # fmt: skip
        if len(front_pts) > 1:
            ax.plot(*zip(*front_order(front_pts, y_dir)), color=color, lw=1.5, alpha=0.9)
    overall = [(r["test"][x_key], r["test"][y_key]) for r in finished if r.get("pareto", {}).get(front)
               and _finite(r["test"], x_key, y_key)]  # fmt: skip
    if overall:
        ax.scatter(*zip(*overall), marker="o", s=110, facecolors="none", edgecolors="black", lw=1.2,
                   label="Pareto front (test, all methods)")  # fmt: skip
    _label_runs(ax, finished, x_key, y_key)
    if y_key == "minimality":
        ax.set_yscale("symlog", linthresh=1)
        counts = [r[s][y_key] for r in finished for s in ("train", "test") if _finite(r[s], x_key, y_key)]
        if counts:
            ax.yaxis.set_major_locator(FixedLocator(count_ticks(min(counts), max(counts))))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_ylabel("minimality: # |θ| ≥ 0.01 (lower is better)")
    else:
        ax.set_ylabel("faithfulness −F (higher is better)")
    ax.set_xlabel("effectiveness −E₀ (higher is better)")
    ax.set_title(title or f"Effectiveness vs {y_key} ({len(finished)} runs)")
    ax.grid(alpha=0.3)
    if finished:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def count_ticks(low: float, high: float) -> list[float]:
    """Ticks for counts from `low` to `high` on a log axis: 0 (if in range), then 1, 2, 5, 10,
    20, 50, ... within the range, and both ends of the data when fewer than three fall inside."""
    ticks = [0.0] if low <= 0 <= high else []
    value = 1.0
    while value <= max(high, 1.0):
        for step in (1, 2, 5):
            if low <= value * step <= high:
                ticks.append(value * step)
        value *= 10
    if len(ticks) < 3:
        ticks += [float(low), float(high)]
    return sorted(set(ticks))


def _label_runs(ax, finished: list[dict], x_key: str, y_key: str) -> None:
    """Each test point's run name beside it; coinciding points share one label."""
    at = defaultdict(list)
    for r in finished:
        if _finite(r["test"], x_key, y_key):
            at[(r["test"][x_key], r["test"][y_key])].append(str(r["run"]))
    for (x, y), names in at.items():
        ax.annotate(", ".join(names), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, alpha=0.8)


def _finite(values: dict | None, *keys) -> bool:
    if not values:
        return False
    return all(isinstance(values.get(k), (int, float)) and math.isfinite(values[k]) for k in keys)


def plot_hypervolume(curves: dict[str, list[float]], title: str):
    """The hypervolume after each trial, one line per split ({"val": [...], "test": [...]})."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for split, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, lw=1.5,
                label=f"{split}{' (told to the sampler)' if split == 'val' else ''}")  # fmt: skip
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (normalised over the sweep's runs)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
