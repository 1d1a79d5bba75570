"""Attribution scores per location, the baselines that use them as ActivScalar's α (paper
§6.1, Fig. 9), and corrupted prompts.

For a location (site, layer, position[, head]) with clean activation h and corrupted
activation h' (the same prompt with its key entity swapped), and LD = f_c - f_w the clean
logit difference at the last position (each data point's own answers):

    activation patching   s = LD(clean) - LD(clean run with h replaced by h')
    attribution patching  s = ∇_h LD · (h - h')          (first-order estimate of the same)
    direct logit attr.    s = (w_f ⊙ (h - mean(h)) / σ_f) · (W_U[:, c] - W_U[:, w])
                          at the last position only (no other position writes to the
                          last position's logits directly); w_f, σ_f: the final
                          LayerNorm's weight and its clean scale at that position.
Scores are averaged over the data points. Positive s: the location carries the correct
answer. As α = c · s / max|s| in h·(1 + βα), β = +1 amplifies the locations that carry
the behaviour and β = -1 suppresses them; the one global scale c is tuned on the train
split to maximise effectiveness (-E_0).
"""

from __future__ import annotations

import math

import torch

from interventions.errors import ConfigError, TaskError
from interventions.forward import last_position_logits, steered_logits
from interventions.models import model_device
from interventions.objective import hinge_terms, logit_diff
from interventions.obsprop.layernorm import has_norm
from interventions.sites import HEAD_SITES, hook, hook_name
from interventions.tasks.datamodule import encode
from interventions.tasks.corruption import corrupted_task
from interventions.tasks.datapoint import Task

DLA_SITES = ("attnOut", "mlpOut", "residPost", "o")
DEFAULT_SCALES = tuple(round(10 ** (k / 4), 4) for k in range(-8, 9))  # 0.01 ... 100


# -- activations at every location ----------------------------------------------------
def _capture(model, batch: dict, names: list[str], grad: bool = False):
    """Activations at hook `names` ({name: tensor}) and the last-position logit diffs [B]."""
    store: dict[str, torch.Tensor] = {}

    def keeper(name):  # keyed by the requested name: hook.name may be the canonical alias
        def keep(act, hook):
            if grad:
                act.requires_grad_(True)
                act.retain_grad()
            store[name] = act
            return act

        return keep

    with torch.set_grad_enabled(grad):
        logits = last_position_logits(
            model, batch["input_ids"], batch["attention_mask"], batch["last_index"],
            fwd_hooks=[(n, keeper(n)) for n in names],
        )  # fmt: skip
        ld = logit_diff(logits, batch["correct"], batch["wrong"])
    return store, ld


def _o_from_z(model, z: torch.Tensor, layer: int) -> torch.Tensor:
    return torch.einsum("bphd,hdm->bphm", z, model.W_O[layer])


def dla_scores(model, grid, batch: dict) -> dict[tuple[str, int], torch.Tensor]:
    """Direct logit attribution per location, averaged over the batch.

    Returns {(site, layer): [P] or [P, H']} over the grid's positions (and heads).
    """
    bad = [s for s in grid.sites if s not in DLA_SITES]
    if bad:
        raise ConfigError(f"dla is defined for sites that write to the residual stream ({', '.join(DLA_SITES)}), not {bad[0]!r}")
    normed = has_norm(model)  # a model without normalisation (compiled programs) unembeds the residual as it is
    names = sorted({hook_name(s, l) for s in grid.sites for l in grid.layers} | ({hook("ln_final_scale")} if normed else set()))
    acts, _ = _capture(model, batch, names)
    rows = torch.arange(batch["input_ids"].shape[0])
    last = batch["last_index"]
    scale = acts[hook("ln_final_scale")][rows, last] if normed else torch.ones(len(rows), 1)  # [B, 1]
    direction = model.W_U[:, batch["correct"]] - model.W_U[:, batch["wrong"]]  # [D, B]
    w = model.ln_final.weight if normed else 1.0
    center = normed and "RMS" not in str(getattr(model.cfg, "normalization_type", "LN")).upper()
    out = {}
    for site in grid.sites:
        for layer in grid.layers:
            h = acts[hook_name(site, layer)][rows, last]  # [B, D] or [B, H, d_head]
            if site == "o":
                h = _o_from_z(model, h[:, None], layer)[:, 0]  # [B, H, D]
            if center:
                h = h - h.mean(-1, keepdim=True)
            if h.dim() == 2:  # [B, D]
                value = (h * w / scale * direction.T).sum(-1).mean(0)  # scalar
            else:  # per head [B, H, D]
                value = (h * w / scale[:, None] * direction.T[:, None]).sum(-1).mean(0)  # [H]
                value = value[list(grid.head_indices)]
            scores = torch.zeros((len(grid.positions), *value.shape))
            if grid.seq_len - 1 in grid.positions:  # only the last position writes directly
                scores[grid.positions.index(grid.seq_len - 1)] = value
            out[(site, layer)] = scores
    return out


def activation_patching_scores(model, grid, batch: dict, corrupted: dict) -> dict:
    """Per location: mean over the batch of LD(clean) - LD(clean with that location patched)."""
    names = sorted({hook_name(s, l) for s in grid.sites for l in grid.layers})
    corrupt_acts, _ = _capture(model, corrupted, names)
    _, clean_ld = _capture(model, batch, [])
    out = {}
    for site in grid.sites:
        for layer in grid.layers:
            name = hook_name(site, layer)
            units = list(grid.head_indices) if site in HEAD_SITES else [None]
            scores = torch.zeros(len(grid.positions), len(units))
            for i, pos in enumerate(grid.positions):
                for j, head in enumerate(units):

                    def patch(act, hook, pos=pos, head=head):
                        act = act.clone()
                        if head is None:
                            act[:, pos] = corrupt_acts[name][:, pos]
                        else:  # o and z share hook_z: patching z_h patches o_h exactly
                            act[:, pos, head] = corrupt_acts[name][:, pos, head]
                        return act

                    with torch.no_grad():
                        logits = last_position_logits(
                            model, batch["input_ids"], batch["attention_mask"], batch["last_index"],
                            fwd_hooks=[(name, patch)],
                        )  # fmt: skip
                    patched = logit_diff(logits, batch["correct"], batch["wrong"])
                    scores[i, j] = (clean_ld - patched).mean()
            out[(site, layer)] = scores[:, 0] if site not in HEAD_SITES else scores
    return out


def attribution_patching_scores(model, grid, batch: dict, corrupted: dict) -> dict:
    """Per location: mean over the batch of ∇_h LD · (h_clean - h_corrupt) (one backward)."""
    names = sorted({hook_name(s, l) for s in grid.sites for l in grid.layers})
    corrupt_acts, _ = _capture(model, corrupted, names)
    clean_acts, ld = _capture(model, batch, names, grad=True)
    ld.sum().backward()
    out = {}
    for site in grid.sites:
        for layer in grid.layers:
            name = hook_name(site, layer)
            h = clean_acts[name]
            per = (h.grad * (h.detach() - corrupt_acts[name])).sum(-1).mean(0)  # [T] or [T, H]
            per = per[list(grid.positions)]
            if site in HEAD_SITES:
                per = per[:, list(grid.head_indices)]
            out[(site, layer)] = per.detach()
    return out


def tune_scale(model, method, loader, scales=DEFAULT_SCALES) -> tuple[float, float]:
    """The global scale c maximising effectiveness (-E_0) on `loader`; returns (c, effectiveness).

    The method's parameters hold the normalised scores; they are left multiplied by c.
    """
    device = model_device(model)
    base = {k: p.detach().clone() for k, p in method.params.items()}
    best = (None, -math.inf)
    for c in scales:
        with torch.no_grad():
            for k, p in method.params.items():
                p.copy_(base[k] * c)
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                lp, ln = steered_logits(model, method, batch)
                pos, neg = hinge_terms(lp, ln, batch["correct"], batch["wrong"], 0.0)
                total += float((pos + neg).sum())
                n += len(pos)
        effectiveness = -total / n
        if effectiveness > best[1]:
            best = (c, effectiveness)
    with torch.no_grad():
        for k, p in method.params.items():
            p.copy_(base[k] * best[0])
    return best


def fit_scores(method, model, datamodule, task: Task, scales=DEFAULT_SCALES) -> dict:
    """Set a scored baseline's α (`method`'s parameters) from its scores on the train split
    (`method.scores`, with the train prompts' corrupted versions where `method.corrupted`)
    and tune its scale.

    Returns {"scale": c, "train_effectiveness": ..., "max_abs_score": ...}.
    """
    device = model_device(model)
    batch = {k: v.to(device) for k, v in datamodule.datasets["train"].tensors.items()}
    corrupted = None
    if method.corrupted:
        corrupted = encode(model, corrupted_task(task), fixed_length=True)
        if corrupted["input_ids"].shape != batch["input_ids"].shape:
            raise TaskError("corrupted prompts must have the clean prompts' token length")
        corrupted = {k: v.to(device) for k, v in corrupted.items()}
    scores = method.scores(model, batch, corrupted)
    largest = max(float(v.abs().max()) for v in scores.values()) or 1.0
    with torch.no_grad():
        for (site, layer), value in scores.items():
            method.param(site, layer).copy_(value.to(device) / largest)
    scale, effectiveness = tune_scale(model, method, datamodule.loader("train"), scales)
    return {"scale": scale, "train_effectiveness": effectiveness, "max_abs_score": largest}
