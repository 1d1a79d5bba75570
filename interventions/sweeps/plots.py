"""The sweep's Pareto plots, in the paper's Fig. 2 style."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from interventions.spec import method_label  # noqa: E402
from interventions.sweeps.pareto import FRONTS, front_order  # noqa: E402

METHOD_COLORS = {"activscalar": "tab:blue", "steervec": "tab:orange", "steervec_shared": "tab:red", "dynscalar": "tab:green"}


def plot_front(records: list[dict], front: str, title: str | None = None):
    """The paper's Fig. 2 style: train crosses, test points, one colour per method; each
    method's test front drawn as a line, runs on the overall test front ringed in black."""
    x_key, y_key, y_dir = FRONTS[front]
    finished = [r for r in records if r["status"] == "finished"]
    methods = sorted({r["hparams"].get("method") for r in finished}, key=str)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for m in methods:
        color = METHOD_COLORS.get(m)
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
    if y_key == "minimality":
        ax.set_yscale("symlog", linthresh=1)
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


def _finite(values: dict | None, *keys) -> bool:
    if not values:
        return False
    return all(isinstance(values.get(k), (int, float)) and math.isfinite(values[k]) for k in keys)
