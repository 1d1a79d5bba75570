"""Head-level last-position study (paper Fig. 7/8): ActivScalar on each head's output o at
the last position, next to direct logit attribution on the same o.

    python -m interventions heads --task ioi --out DIR [--epochs 25]

Writes heads.json (α and DLA per layer × head, their Spearman and Kendall rank
correlations) and heads.png (the two layer × head heatmaps side by side).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from interventions.attribution import dla_scores
from interventions.reports.plots import plt
from interventions.methods.registry import intervention_spec
from interventions.spec import RunSpec
from interventions.training.train import train_intervention


def head_study(model, train, test, run: RunSpec | None = None) -> dict:
    """Train ActivScalar on o at the last position and compare it with DLA on o.

    Returns {"alpha": [L][H], "dla": [L][H], "spearman": ρ, "kendall": τ, "test": metrics}.
    """
    spec = intervention_spec("activscalar", sites=["o"], positions=[-1])
    trained = train_intervention(model, train, test, intervention=spec, run=run)
    method = trained.method
    grid = method.grid
    alpha = np.stack([method.param("o", layer).detach().cpu().numpy()[0] for layer in grid.layers])
    batch = trained.datamodule.datasets["train"].tensors
    dla = dla_scores(model, grid, batch)
    dla_grid = np.stack([dla[("o", layer)].numpy()[0] for layer in grid.layers])
    rho = stats.spearmanr(alpha.ravel(), dla_grid.ravel()).statistic
    tau = stats.kendalltau(alpha.ravel(), dla_grid.ravel()).statistic
    return {
        "layers": list(grid.layers),
        "heads": list(grid.head_indices),
        "alpha": alpha.tolist(),
        "dla": dla_grid.tolist(),
        "spearman": float(rho),
        "kendall": float(tau),
        "test": trained.evaluate("test"),
    }


def plot(result: dict, title: str = ""):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in zip(axes, ("alpha", "dla"), ("ActivScalar α on o (last position)", "DLA of o (last position)")):
        values = np.array(result[key])
        limit = float(np.abs(values).max()) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(result["heads"])), [f"H{h}" for h in result["heads"]])
        ax.set_yticks(range(len(result["layers"])), [f"L{l}" for l in result["layers"]])
        ax.set_title(label, fontsize=9)
        fig.colorbar(image, ax=ax)
    fig.suptitle(title or f"Spearman ρ = {result['spearman']:.2f}, Kendall τ = {result['kendall']:.2f}")
    fig.tight_layout()
    return fig
