"""Heatmaps of per-location values and the β curve, as matplotlib figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

VALUE_LABEL = {"activscalar": "α", "steervec": "‖v‖", "dynscalar": "mean α"}


def heatmap(rows: list[dict], method: str, title: str = "") -> plt.Figure:
    """One panel per site: layers (x heads for head sites) down, token positions across."""
    sites = list(dict.fromkeys(r["site"] for r in rows))
    positions = sorted({r["position"] for r in rows})
    labels = {r["position"]: r["token"] for r in rows}
    fig, axes = plt.subplots(
        1, len(sites), figsize=(max(4, 0.45 * len(positions) + 2) * len(sites), 4), squeeze=False
    )
    for ax, site in zip(axes[0], sites):
        site_rows = [r for r in rows if r["site"] == site]
        keys = sorted({(r["layer"], r["head"]) for r in site_rows}, key=lambda k: (k[0], str(k[1])))
        grid = np.full((len(keys), len(positions)), np.nan)
        for r in site_rows:
            grid[keys.index((r["layer"], r["head"])), positions.index(r["position"])] = r["value"]
        limit = np.nanmax(np.abs(grid)) or 1.0
        cmap, vmin = ("RdBu_r", -limit) if method != "steervec" else ("viridis", 0)
        image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=limit)
        ax.set_xticks(range(len(positions)), [labels[p] for p in positions], rotation=90, fontsize=8)
        ylabels = [f"L{l}" if h == "" else f"L{l}H{h}" for l, h in keys]
        ax.set_yticks(range(len(keys)), ylabels, fontsize=8)
        ax.set_title(site)
        fig.colorbar(image, ax=ax, label=VALUE_LABEL.get(method, "value"))
    fig.suptitle(title or f"{method}: learned values per location")
    fig.tight_layout()
    return fig


def beta_curve(betas, mean_correct, mean_wrong, correct_label="correct", wrong_label="wrong", title="") -> plt.Figure:
    """Mean logits of the correct and the wrong answer as β goes from -1 to +1."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(betas, mean_correct, "o-", label=f"correct ({correct_label})")
    ax.plot(betas, mean_wrong, "s-", label=f"wrong ({wrong_label})")
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("β")
    ax.set_ylabel("mean logit")
    ax.set_title(title or "β curve")
    ax.legend()
    fig.tight_layout()
    return fig
