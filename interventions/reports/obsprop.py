"""The files of an observable-propagation analysis (`obsprop.analysis.analyze`): report.json
and layer × head heatmaps of feature norms, SVD alignment, cosines, couplings and direct
attributions. Written by `python -m interventions obsprop analyze`."""

from __future__ import annotations

from pathlib import Path

import torch

from interventions.io import save_figure, write_json
from interventions.reports.plots import plt


def heatmap(grid, path: Path, title: str, cmap: str = "viridis", symmetric: bool = False) -> Path:
    """A layer × head heatmap PNG with the values written in the cells."""
    t = torch.as_tensor(grid, dtype=torch.float32)
    n_layers, n_heads = t.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n_heads, 1.0 + 0.55 * n_layers))
    kwargs = {}
    if symmetric:
        lim = float(t.abs().max()) or 1.0
        kwargs = {"vmin": -lim, "vmax": lim}
    im = ax.imshow(t.numpy(), cmap=cmap, aspect="auto", **kwargs)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_title(title, fontsize=9)
    if n_layers * n_heads <= 400:
        for i in range(n_layers):
            for j in range(n_heads):
                ax.text(j, i, f"{float(t[i, j]):.2g}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_") or "obs"


def write_report(report: dict, out_dir) -> list[Path]:
    """report.json and PNG heatmaps (layer × head) into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for label, rep in report["observables"].items():
        for mode, grid in rep["norm"].items():
            written.append(heatmap(grid, out / f"norm_{_slug(label)}_{mode}.png", f"‖y‖ of {label} ({mode} LN)", "viridis"))
        written.append(heatmap(rep["svd"]["best_abs_cos"], out / f"svd_best_cos_{_slug(label)}.png",
                               f"max |cos(y, U_i)| over W_OV singular vectors: {label}", "magma"))  # fmt: skip
    pair = report.get("pair")
    if pair:
        a, b = pair["first"], pair["second"]
        tag = f"{_slug(a)}__{_slug(b)}"
        for mode, grid in pair["cosine"].items():
            written.append(heatmap(grid, out / f"cosine_{tag}_{mode}.png", f"cos(y[{a}], y[{b}]) ({mode} LN)", "RdBu_r", True))
        main = report["main_mode"]
        written.append(heatmap(pair[f"coupling {a} -> {b}"][main], out / f"coupling_{_slug(a)}_to_{_slug(b)}.png",
                               f"C({a} -> {b}) ({main} LN)", "RdBu_r", True))  # fmt: skip
        written.append(heatmap(pair[f"coupling {b} -> {a}"][main], out / f"coupling_{_slug(b)}_to_{_slug(a)}.png",
                               f"C({b} -> {a}) ({main} LN)", "RdBu_r", True))  # fmt: skip
    for label, rep in report["observables"].items():
        if "attribution" in rep:
            written.append(heatmap(rep["attribution"]["rms"], out / f"attribution_rms_{_slug(label)}.png",
                                   f"RMS direct contribution to {label} (data)", "viridis"))  # fmt: skip
    data = {k: v for k, v in report.items() if not k.startswith("_")}
    path = out / "report.json"
    write_json(path, data)
    written.insert(0, path)
    return written
