"""One value per location of an intervention, for scalars.csv and heatmaps: each method's
`location_values` (ActivScalar α, SteerVec ‖v‖₂, LoReFT its edit's norm, ...; a method not
tied to positions: one value per (site, layer), at position "" labelled "every position"),
and for a dynamic method (DynScalar) the mean α = gᵀh/‖h‖ over the given prompts' clean
activations, per position (prompts of one length: positions carry their tokens).

Each row also says whether its location received a gradient in training
(`received_gradient`: True, False, or None when unknown: a training-free baseline, or an
export written before it was recorded).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from interventions.io import atomic_write_text
from interventions.methods.base import Method
from interventions.sites import HEAD_SITES

COLUMNS = ("layer", "site", "position", "token", "head", "value", "received_gradient")


@torch.no_grad()
def dynamic_alpha(method, model, batch: dict, chunk: int = 64) -> dict[tuple[str, int], torch.Tensor]:
    """Mean α over a batch's clean activations (padding excluded), computed `chunk` prompts
    at a time: {(site, layer): [pos] or [pos, heads]}."""
    sums: dict[tuple[str, int], torch.Tensor] = {}
    counts: dict[tuple[str, int], torch.Tensor] = {}

    def capture(site, layer, mask):
        def hook(h, hook=None):
            alpha = method.alpha(site, layer, h)  # [batch, pos(, heads)]
            m = mask.to(alpha.dtype).view(*mask.shape, *([1] * (alpha.dim() - 2)))
            sums[(site, layer)] = sums.get((site, layer), 0) + (alpha * m).sum(0)
            counts[(site, layer)] = counts.get((site, layer), 0) + m.sum(0)
            return h

        return hook

    for start in range(0, batch["input_ids"].shape[0], chunk):
        ids, mask = batch["input_ids"][start : start + chunk], batch["attention_mask"][start : start + chunk]
        hooks = [(method.site_hook(s, l, 0.0)[0], capture(s, l, mask)) for s in method.grid.sites for l in method.grid.layers]
        with model.hooks(fwd_hooks=hooks):
            model(ids, attention_mask=mask)
    return {key: sums[key] / counts[key].clamp_min(1) for key in sums}


def _gradient_flag(method: Method, site: str, layer: int, i: int, j: int | None) -> bool | None:
    """Whether location (site, layer, grid position i[, grid head j]) received a gradient."""
    mask = method.received(site, layer)
    if mask is None:
        return None
    if method.position_tied:
        mask = mask[i]
    return bool(mask if j is None or mask.dim() == 0 else mask[j])


def location_rows(method: Method, model=None, batch: dict | None = None, tokens: list[str] | None = None) -> list[dict]:
    """Rows (layer, site, position, token, head, value); DynScalar needs `model` and `batch`."""
    grid = method.grid
    if method.dynamic:
        if model is None or batch is None:
            raise ValueError("a dynamic method's values need a model and a batch of prompts")
        values = {k: v.cpu() for k, v in dynamic_alpha(method, model, batch).items()}
        positions = list(range(batch["input_ids"].shape[1]))
        labels = tokens or [str(p) for p in positions]
    else:
        values = {}
        for site in grid.sites:
            for layer in grid.layers:
                p = method.location_values(site, layer).detach().cpu()
                values[(site, layer)] = p if method.position_tied else p[None]  # one "position": every one
        if method.position_tied:
            positions = list(grid.positions)
            labels = list(grid.tokens) if grid.tokens else [str(p) for p in positions]
        else:
            positions, labels = [""], ["every position"]
    rows = []
    heads = grid.head_indices
    for (site, layer), v in values.items():
        for i, pos in enumerate(positions):
            if site in HEAD_SITES:
                # dynamic values cover every head; parameter values only the grid's heads
                for j, head in enumerate(heads):
                    value = v[i, head] if v.shape[-1] != len(heads) else v[i, j]
                    rows.append(dict(layer=layer, site=site, position=pos, token=labels[i], head=head, value=float(value),
                                     received_gradient=_gradient_flag(method, site, layer, i, j)))  # fmt: skip
            else:
                rows.append(dict(layer=layer, site=site, position=pos, token=labels[i], head="", value=float(v[i]),
                                 received_gradient=_gradient_flag(method, site, layer, i, None)))  # fmt: skip
    return rows


def write_scalars_csv(path: str | Path, rows: list[dict]) -> None:
    """scalars.csv: one row per location (COLUMNS; an unknown received_gradient is empty)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({**r, "received_gradient": "" if r.get("received_gradient") is None else str(r["received_gradient"]).lower()}
                     for r in rows)  # fmt: skip
    atomic_write_text(path, text.getvalue())
