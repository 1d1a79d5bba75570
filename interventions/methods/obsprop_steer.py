"""obsprop_steer: the training-free steering baseline of observable propagation (docs/method.md §9).

For the task's answer pair n = e_c - e_w, take one attention head's feature vector y (in
the residual stream that enters the head, LayerNorm approximated on the train data) and
add c·y at one token position; the hook is SteerVec's (h + βv) on `residPost` of the
layer before the head, so β = ±1 steers both ways and the run lands on the same fronts.

- head: the one with the largest ‖y‖ among layers ≥ 1 (layer 0 reads the embeddings,
  where no site exists), or the one given by `intervention.layers=[l] intervention.heads=[h]`;
- position: the source token whose attention-weighted direct contribution ranks first:
  argmax_j |mean_prompts pattern[last, j] · (x_j · y)| with x_j the residual stream at j;
- c: v = y/‖y‖ · (mean ‖x_j‖), then one global scale from interventions.attribution's grid,
  chosen on the train split to maximise effectiveness (-E_0).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from interventions.attribution import DEFAULT_SCALES, tune_scale
from interventions.errors import ConfigError
from interventions.methods.steervec import SteerVec
from interventions.models import model_device
from interventions.obsprop.features import head_features
from interventions.obsprop.layernorm import ActivationData
from interventions.obsprop.observables import Observable
from interventions.sites import build_grid, hook
from interventions.spec import InterventionSpec


@dataclass
class ObsPropSteerOptions(InterventionSpec):
    sites: Any = field(default_factory=lambda: ["residPost"])  # c·y is added to the residual stream


class ObsPropSteer(SteerVec):
    name = "obsprop_steer"
    label = "obsprop steering"
    Options = ObsPropSteerOptions
    supported_sites = ("residPost",)
    trained = False
    multi_token = False
    color = None
    obsprop_form = None
    illusion = "auto"
    localizes = False  # one location, chosen from the weights: no score for the others

    def fit(self, model, datamodule, task) -> tuple["ObsPropSteer", dict]:
        """Choose head and position within this method's grid (its layers and heads bound the
        choice), set v, tune c: returns a new ObsPropSteer on that one location."""
        return fit_obsprop_steer(model, self.grid, datamodule, task, options=self.options)


def choose_head(norms: torch.Tensor, layers, heads) -> tuple[int, int]:
    """(layer, head) with the largest feature norm among the allowed ones (layers ≥ 1)."""
    n_layers, n_heads = norms.shape
    allowed_layers = [l for l in (range(n_layers) if layers in (None, "all") else layers) if l >= 1]
    allowed_heads = list(range(n_heads)) if heads in (None, "all") else list(heads)
    if not allowed_layers:
        raise ConfigError("obsprop_steer needs a head in layer >= 1 (layer 0 reads the embeddings)")
    best = max(((l, h) for l in allowed_layers for h in allowed_heads), key=lambda lh: float(norms[lh]))
    return best


def fit_obsprop_steer(model, grid_in, datamodule, task, scales=DEFAULT_SCALES,
                      options: InterventionSpec | None = None) -> tuple[ObsPropSteer, dict]:  # fmt: skip
    """The fitted baseline (module docstring) on one location, and what was chosen."""
    correct, wrong = Counter((p.correct, p.wrong) for p in task).most_common(1)[0][0]
    observable = Observable.from_pair(model.tokenizer, correct, wrong)
    data = ActivationData.from_datamodule(model, datamodule, "train")
    y_all = head_features(model, observable, ln_mode="approximate", data=data)  # [L, H, D]
    layer, head = choose_head(y_all.norm(dim=-1), list(grid_in.layers) if len(grid_in.layers) < model.cfg.n_layers else None,
                              grid_in.heads)  # fmt: skip
    y = y_all[layer, head]
    batch = datamodule.datasets["train"].tensors
    device = model_device(model)
    names = [hook("resid_post", layer - 1), hook("pattern", layer)]
    with torch.no_grad():
        _, cache = model.run_with_cache(batch["input_ids"].to(device), names_filter=lambda n: n in names)
    resid = cache[names[0]].float()  # [N, T, D]
    rows = torch.arange(resid.shape[0], device=device)
    pattern = cache[names[1]][rows, head, batch["last_index"].to(device)].float()  # [N, T] from the last position
    contribution = (pattern * (resid @ y.to(device))).mean(0)  # [T]
    position = int(contribution.abs().argmax())
    seq_len = batch["input_ids"].shape[1]
    grid = build_grid(model.cfg, sites=["residPost"], layers=[layer - 1], positions=[position], seq_len=seq_len,
                      tokens=grid_in.tokens and list(model.to_str_tokens(task[0].prompt)))  # fmt: skip
    method = ObsPropSteer(grid, model.cfg, options=options).to(device)
    norm = float(resid[:, position].norm(dim=-1).mean())
    sign = 1.0 if float(contribution[position]) >= 0 else -1.0
    with torch.no_grad():
        method.param("residPost", layer - 1).copy_((sign * y / y.norm() * norm)[None].to(device))
    scale, effectiveness = tune_scale(model, method, datamodule.loader("train"), scales)
    return method, {
        "kind": "obsprop_steer", "observable": f"{correct.strip()}-{wrong.strip()}", "head": f"L{layer}H{head}",
        "feature_norm": float(y.norm()), "position": position, "token": grid.tokens[0] if grid.tokens else None,
        "scale": scale, "train_effectiveness": effectiveness,
    }  # fmt: skip
