"""One value per location of an intervention, for scalars.csv and heatmaps.

    ActivScalar  α
    SteerVec     ‖v‖₂ (the vector's norm)
    DynScalar    the mean α = gᵀh/‖h‖ over the given prompts' clean activations, per
                 position (prompts of one length: positions carry their tokens)
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from interventions.methods import Method
from interventions.sites import HEAD_SITES

COLUMNS = ("layer", "site", "position", "token", "head", "value")


@torch.no_grad()
def dynamic_alpha(method, model, batch: dict) -> dict[tuple[str, int], torch.Tensor]:
    """Mean α over a batch's clean activations: {(site, layer): [pos] or [pos, heads]}."""
    captured = {}

    def capture(site, layer):
        def hook(h, hook=None):
            alpha = method.alpha(site, layer, h)  # [batch, pos(, heads)]
            mask = batch["attention_mask"].to(alpha.dtype)
            mask = mask.view(*mask.shape, *([1] * (alpha.dim() - 2)))
            captured[(site, layer)] = (alpha * mask).sum(0) / mask.sum(0).clamp_min(1)
            return h

        return hook

    hooks = [(method.site_hook(s, l, 0.0)[0], capture(s, l)) for s in method.grid.sites for l in method.grid.layers]
    with model.hooks(fwd_hooks=hooks):
        model(batch["input_ids"], attention_mask=batch["attention_mask"])
    return captured


def location_rows(method: Method, model=None, batch: dict | None = None, tokens: list[str] | None = None) -> list[dict]:
    """Rows (layer, site, position, token, head, value); DynScalar needs `model` and `batch`."""
    grid = method.grid
    if method.name == "dynscalar" or not method.position_tied:
        if model is None or batch is None:
            raise ValueError("a dynamic method's values need a model and a batch of prompts")
        values = {k: v.cpu() for k, v in dynamic_alpha(method, model, batch).items()}
        positions = list(range(batch["input_ids"].shape[1]))
        labels = tokens or [str(p) for p in positions]
    else:
        values = {}
        for site in grid.sites:
            for layer in grid.layers:
                p = method.param(site, layer).detach().cpu()
                values[(site, layer)] = p if method.scalar else p.norm(dim=-1)
        positions = list(grid.positions)
        labels = list(grid.tokens) if grid.tokens else [str(p) for p in positions]
    rows = []
    heads = grid.head_indices
    for (site, layer), v in values.items():
        for i, pos in enumerate(positions):
            if site in HEAD_SITES:
                # dynamic values cover every head; parameter values only the grid's heads
                for j, head in enumerate(heads):
                    value = v[i, head] if v.shape[-1] != len(heads) else v[i, j]
                    rows.append(dict(layer=layer, site=site, position=pos, token=labels[i], head=head, value=float(value)))
            else:
                rows.append(dict(layer=layer, site=site, position=pos, token=labels[i], head="", value=float(v[i])))
    return rows


def write_scalars_csv(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
