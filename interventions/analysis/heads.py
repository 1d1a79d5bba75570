"""Head-level last-position study (paper Fig. 7/8): ActivScalar on each head's output o at
the last position, next to direct logit attribution on the same o.

    python -m interventions.analysis.heads --task ioi --out DIR [--epochs 25]

Writes heads.json (α and DLA per layer × head, their Spearman and Kendall rank
correlations) and heads.png (the two layer × head heatmaps side by side).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from interventions.io import save_figure, write_json
from interventions.attribution import dla_scores


def head_study(model, train, test, epochs: int = 25, seed: int = 0, **train_kwargs) -> dict:
    """Train ActivScalar on o at the last position and compare it with DLA on o.

    Returns {"alpha": [L][H], "dla": [L][H], "spearman": ρ, "kendall": τ, "test": metrics}.
    """
    from interventions.training import train_intervention

    trained = train_intervention(
        model, train, test, method="activscalar", sites=["o"], positions=[-1], epochs=epochs, seed=seed,
        **train_kwargs,
    )  # fmt: skip
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
    from interventions.analysis.plots import plt

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


def main(argv=None) -> int:
    from interventions.models import load_model
    from interventions.tasks import load_task

    parser = argparse.ArgumentParser(prog="python -m interventions.analysis.heads")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--template", default=0, type=int)
    parser.add_argument("--epochs", default=25, type=int)
    parser.add_argument("--n-train", default=256, type=int)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model, _ = load_model(args.model)
    common = dict(model=model, template=args.template, fixed_length=True, seed=args.seed)
    train = load_task(args.task, split="train", n=args.n_train, **common)
    test = load_task(args.task, split="test", n=256, **common)
    result = head_study(model, train, test, epochs=args.epochs, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "heads.json", result)
    save_figure(plot(result, f"{args.task}: ActivScalar on o vs DLA (ρ = {result['spearman']:.2f})"), out / "heads.png")
    print(f"Spearman ρ = {result['spearman']:.3f}, Kendall τ = {result['kendall']:.3f}; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
