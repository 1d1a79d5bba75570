"""Numbers that stopped being numbers: the checks that fail a run instead of finishing it.

A run has failed, and is never written as finished, when
- its loss is NaN or infinite at a training step (`check_loss`),
- a parameter is NaN or infinite after an optimizer step (`check_parameters`),
- with the intervention applied, the residual stream of some layer holds a non-finite
  value or a squared norm that overflows the model's dtype (`overflowing_rows`): the next
  LayerNorm / RMSNorm then divides by infinity, and the model's outputs are finite but
  meaningless. This is what a far too large learning rate produces (parameters near 1e30
  scale activations past float32's range while loss and parameters stay finite);
- its metrics are not finite (`check_metrics`).

Each raises `NonFiniteError` with one line naming where (step, tensor, layer) and the
likely cause (`likely_cause`).
"""

from __future__ import annotations

import math

import torch

from interventions.errors import NonFiniteError
from interventions.sites import hook


def likely_cause(lr: float | None, default_lr: float | None, dtype: torch.dtype | None = None) -> str:
    """The most probable reason a training diverged, as advice."""
    if lr is not None and default_lr and lr > 100 * default_lr:
        return (f"likely cause: the learning rate intervention.lr={lr:g} is far above the method's default "
                f"({default_lr:g}); lower it")  # fmt: skip
    if dtype in (torch.float16, torch.bfloat16):
        return "likely cause: half precision overflows sooner; try model.dtype=float32 or a smaller intervention.lr"
    return "likely cause: the parameters grew without bound; try a smaller intervention.lr or objective.lambda_m > 0"


def _where(epoch: int | None, step: int | None) -> str:
    return f"at epoch {epoch}, step {step}" if epoch is not None else f"at step {step}"


def check_loss(loss: torch.Tensor, epoch: int | None, step: int | None, cause: str, label: str = "") -> None:
    """Raise NonFiniteError if the scalar `loss` is NaN or infinite."""
    if not bool(torch.isfinite(loss)):
        raise NonFiniteError(f"training failed {_where(epoch, step)}{label}: the loss is {float(loss.detach())}; {cause}", step)


def check_parameters(flat_params: torch.Tensor, epoch: int | None, step: int | None, cause: str, label: str = "") -> None:
    """Raise NonFiniteError if any parameter of vec(θ) [n] is NaN or infinite."""
    bad = ~torch.isfinite(flat_params.detach())
    if bool(bad.any()):
        raise NonFiniteError(
            f"training failed {_where(epoch, step)}{label}: {int(bad.sum())} of {flat_params.numel()} parameters "
            f"are NaN or infinite after the optimizer step; {cause}",
            step,
        )


def residual_probe(n_layers: int) -> tuple[list, dict]:
    """Hooks on every `blocks.{l}.hook_resid_post` recording, per row of the batch, whether
    the residual holds a non-finite value or an overflowing squared norm.

    Returns (hooks, found): after a forward, found[l] is a bool tensor [rows] per layer.
    """
    found: dict[int, torch.Tensor] = {}

    def probe(layer: int):
        def hook(h: torch.Tensor, hook=None) -> torch.Tensor:
            square_norm = h.detach().pow(2).sum(-1)  # in the model's dtype, as its norms compute
            bad = ~torch.isfinite(h.detach()).flatten(1).all(1) | ~torch.isfinite(square_norm).flatten(1).all(1)
            found[layer] = bad
            return h

        return hook

    return [(hook("resid_post", layer), probe(layer)) for layer in range(n_layers)], found


def first_overflow(found: dict[int, torch.Tensor], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: whether anything overflowed [rows] bool, and the first layer that did
    [rows] (n_layers where only the logits are non-finite, -1 where nothing is)."""
    rows = logits.shape[0]
    layer = torch.full((rows,), -1, dtype=torch.long)
    for l in sorted(found, reverse=True):
        layer = torch.where(found[l].cpu(), l, layer)
    bad_logits = ~torch.isfinite(logits.detach()).all(-1).cpu()
    layer = torch.where((layer < 0) & bad_logits, len(found), layer)
    return layer >= 0, layer


def overflow_message(layer: int, n_layers: int, beta: float, largest: float, epoch, step, cause: str, label: str = "") -> str:
    where = f"the residual stream after layer {layer}" if layer < n_layers else "the logits"
    return (f"training failed {_where(epoch, step)}{label}: with the intervention at β={beta:+g}, {where} "
            f"overflows the model's float range (largest |parameter| {largest:.3g}), so the model computes with "
            f"infinities; {cause}")  # fmt: skip


def check_metrics(metrics: dict, where: str) -> None:
    """Raise NonFiniteError if any number in `metrics` (nested dicts) is NaN or infinite."""
    bad = [key for key, value in _numbers(metrics) if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(
            f"{where}: the metrics are not finite ({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}); "
            "the intervention's parameters or the model's outputs are NaN or infinite, so the run is failed"
        )


def _numbers(metrics: dict, prefix: str = ""):
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", float(value)
