"""Contrastive steering vectors, fitted without training (docs/method.md §12): per (site, layer)
of the residual stream, the activations at the answer's position when the prompt is followed
by the correct answer and when it is followed by the wrong one,

    d_n = h(x_n ⊕ c_n) − h(x_n ⊕ w_n)   (read at the answer token, the sequence's last position),

over the train split; a subclass turns them into one vector v (`direction`: DiffMean's mean,
PCA's first principal component), added as h + β s v at every position, with one scale
s > 0 per run chosen on the train split to minimise E_0 (a line search over `SCALES`, from
0.01 to 10,000 in steps of 10^¼: PCA's v is a unit vector, while the residual stream's
norm is tens; intervention.json records s). Position-free and one vector per
layer: on residPost they are llama.cpp control vectors (`interventions.controlvector`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from interventions.attribution import tune_scale
from interventions.methods.steervec_shared import SharedSteerVec
from interventions.models import model_device
from interventions.sites import RESIDUAL_SITES, hook_name
from interventions.spec import InterventionSpec

SCALES = tuple(round(10 ** (k / 4), 4) for k in range(-8, 17))


@dataclass
class ContrastiveOptions(InterventionSpec):
    sites: Any = ("residPost",)  # the residual stream: llama.cpp's control vectors are added there
    positions: Any = None  # one vector per (site, layer), added at every position


@torch.no_grad()
def answer_differences(model, method, tensors: dict, batch_size: int = 64) -> dict[tuple[str, int], torch.Tensor]:
    """{(site, layer): d [N, D]}: each train prompt's activation at its answer token with the
    correct answer appended, minus with the wrong one (module docstring).

    Args:
        tensors: a split's encoded tensors: input_ids [N, T], attention_mask [N, T],
            last_index [N], correct [N], wrong [N].
    """
    device = model_device(model)
    names = {(s, l): hook_name(s, l) for s in method.grid.sites for l in method.grid.layers}
    out: dict[tuple[str, int], list[torch.Tensor]] = {key: [] for key in names}
    for start in range(0, len(tensors["input_ids"]), batch_size):
        part = {k: tensors[k][start : start + batch_size].to(device) for k in ("input_ids", "attention_mask", "last_index",
                                                                               "correct", "wrong")}  # fmt: skip
        at = part["last_index"] + 1  # where the appended answer stands
        rows = torch.arange(len(at), device=device)
        read = {}
        for answer in ("correct", "wrong"):
            ids = F.pad(part["input_ids"], (0, 1)).index_put((rows, at), part[answer])
            mask = F.pad(part["attention_mask"], (0, 1)).index_put((rows, at), torch.ones_like(at))
            captured = {}

            def keep(key):
                def hook(h, hook=None):
                    captured[key] = h[rows, at].float()
                    return h

                return hook

            with model.hooks(fwd_hooks=[(name, keep(key)) for key, name in names.items()]):
                model(ids, attention_mask=mask)
            read[answer] = captured
        for key in names:
            out[key].append(read["correct"][key] - read["wrong"][key])
    return {key: torch.cat(parts) for key, parts in out.items()}


class ContrastiveVector(SharedSteerVec):
    """One fitted vector per (site, layer) of the residual stream (module docstring)."""

    Options = ContrastiveOptions
    trained = False
    multi_token = False
    supported_sites = RESIDUAL_SITES
    obsprop_form = None
    color = None

    def direction(self, differences: torch.Tensor) -> torch.Tensor:
        """v [D] from the differences d [N, D]."""
        raise NotImplementedError

    def fit(self, model, datamodule, task) -> tuple["ContrastiveVector", dict]:
        differences = answer_differences(model, self, datamodule.datasets["train"].tensors)
        with torch.no_grad():
            for (site, layer), d in differences.items():
                self.param(site, layer).copy_(self.direction(d).to(self.param(site, layer).device))
        norms = {f"{site}_{layer}": round(float(self.param(site, layer).detach().norm()), 6) for site, layer in differences}
        scale, effectiveness = tune_scale(model, self, datamodule.loader("train"), SCALES)
        return self, {"kind": self.name, "scale": scale, "train_effectiveness": effectiveness, "vector_norms": norms,
                      "n": int(len(datamodule.datasets["train"]))}  # fmt: skip
