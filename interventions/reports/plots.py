"""A run's two figures, each saying what it shows: the heatmap of per-location values and
the β curve.

- heatmap: one panel per site, layers (× heads) down, token positions across, all panels on
  one colour scale (one colour is one value everywhere); a caption says which prompt the
  token labels come from, and locations that received no gradient in training (their value
  is their initialisation, not something learned) are crossed out.
- β curve: the mean logit of the correct and of the wrong answer over every prompt of a
  named split as β goes from -1 to +1, with the spread across prompts (±1 standard
  deviation) shaded; the legend speaks of the mean, not of one data point's answers.
"""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # headless on the command line and clusters; a notebook keeps its inline figures
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

NO_GRADIENT_MARK = "×"
NO_GRADIENT_NOTE = f"{NO_GRADIENT_MARK}: no gradient reached this location in training; its value is its initialisation"


def _panel_grid(rows: list[dict], site: str, positions: list[int]) -> tuple[list, np.ndarray, np.ndarray]:
    """(row keys (layer, head), values [keys, positions], no-gradient mask [keys, positions])."""
    site_rows = [r for r in rows if r["site"] == site]
    keys = sorted({(r["layer"], r["head"]) for r in site_rows}, key=lambda k: (k[0], str(k[1])))
    values = np.full((len(keys), len(positions)), np.nan)
    untrained = np.zeros_like(values, dtype=bool)
    for r in site_rows:
        i, j = keys.index((r["layer"], r["head"])), positions.index(r["position"])
        values[i, j] = r["value"]
        untrained[i, j] = r.get("received_gradient") is False
    return keys, values, untrained


def heatmap(rows: list[dict], method, title: str = "", caption: str = "") -> plt.Figure:
    """One panel per site on one shared colour scale; `caption` says where the token labels
    come from. Rows: dicts with layer, site, position, token, head, value and, when known,
    received_gradient (False: crossed out). `method`: the method (its class declares what its
    values are, `value_label`, and whether they are signed: a diverging colour map)."""
    sites = list(dict.fromkeys(r["site"] for r in rows))
    positions = sorted({r["position"] for r in rows})
    labels = {r["position"]: r["token"] for r in rows}
    panels = [_panel_grid(rows, site, positions) for site in sites]
    limit = max((float(np.nanmax(np.abs(v))) for _, v, _ in panels if np.isfinite(v).any()), default=0.0) or 1.0
    cmap, vmin = ("RdBu_r", -limit) if method.signed_values else ("viridis", 0.0)
    width = max(4.0, 0.45 * len(positions) + 2) * len(sites)
    fig, axes = plt.subplots(1, len(sites), figsize=(width, 4.6), squeeze=False)
    any_untrained = False
    for ax, site, (keys, values, untrained) in zip(axes[0], sites, panels):
        image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=vmin, vmax=limit)
        for i, j in zip(*np.nonzero(untrained)):
            ax.text(j, i, NO_GRADIENT_MARK, ha="center", va="center", fontsize=9, color="black")
        any_untrained |= bool(untrained.any())
        ax.set_xticks(range(len(positions)), [labels[p] for p in positions], rotation=90, fontsize=8)
        ax.set_yticks(range(len(keys)), [f"L{l}" if h == "" else f"L{l}H{h}" for l, h in keys], fontsize=8)
        ax.set_title(site)
    fig.suptitle(title or f"{method.name}: values per location")
    notes = [caption] if caption else []
    if any_untrained:
        notes.append(NO_GRADIENT_NOTE)
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, ha="left", va="bottom")
    bottom = 0.3 + 0.04 * len(notes)
    fig.subplots_adjust(left=0.06, right=0.9, bottom=bottom, top=0.85, wspace=0.25)
    colorbar_axis = fig.add_axes((0.92, bottom, 0.012, 0.85 - bottom))
    fig.colorbar(image, cax=colorbar_axis, label=f"{method.value_label} (one scale, all panels)")
    return fig


def beta_curve(betas, correct: np.ndarray, wrong: np.ndarray, split: str, title: str = "") -> plt.Figure:
    """Mean logits of the correct and the wrong answer over a split's prompts per β.

    Args:
        betas: [k] steering strengths.
        correct, wrong: [n, k] each prompt's logit of its own correct / wrong answer at each β.
        split: the split the n prompts come from (named in the legend and the axis).
    """
    correct, wrong = np.asarray(correct, dtype=float), np.asarray(wrong, dtype=float)
    n = correct.shape[0]
    fig, ax = plt.subplots(figsize=(5.6, 3.9))
    for values, marker, name in ((correct, "o-", "correct answer"), (wrong, "s-", "wrong answer")):
        mean, spread = values.mean(0), values.std(0)
        line = ax.plot(betas, mean, marker, label=f"{name}: mean over the {n} {split} prompts")[0]
        ax.fill_between(betas, mean - spread, mean + spread, color=line.get_color(), alpha=0.15,
                        label=f"{name}: ±1 s.d. across prompts")  # fmt: skip
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("β (0: the clean model)")
    ax.set_ylabel(f"logit ({split} split)")
    ax.set_title(title or "β curve", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
