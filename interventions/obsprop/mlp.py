"""The MLP feature of a residual-stream direction (docs/method.md §9): the gradient of
direction · MLP(x) at the decision point x0 between data points on either side of it, where
the MLP's nonlinearity is least saturated (Dunefsky)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from scipy.optimize import brentq

from interventions.errors import ConfigError
from interventions.obsprop.layernorm import ActivationData

@dataclass
class MLPFeature:
    """The MLP feature of a direction: the gradient of g(x) = direction · MLP(x) at x0.

    Attributes:
        gradient: ∇g(x0) [d_model], a feature of the MLP's input (ln2's output).
        x0: the decision point on the segment x− → x+ (g(x0) ≈ 0), or, with no sign
            change in the data, the point with the smallest |g| (decision_point False).
        t0: x0 = (1 − t0) x− + t0 x+.
        value: g(x0); |value| is what to report.
        g_minus, g_plus: g(x−) < 0 < g(x+).
    """

    gradient: torch.Tensor
    x0: torch.Tensor
    t0: float
    value: float
    g_minus: float
    g_plus: float
    decision_point: bool = True


def mlp_function(model, layer: int, direction: torch.Tensor):
    """g(x) = direction · MLP_layer(x) for x [..., d_model] (the model's own MLP module)."""
    mlp = model.blocks[layer].mlp
    direction = direction.float()

    def g(x: torch.Tensor) -> torch.Tensor:
        return mlp(x.float()) @ direction

    return g


def _sign_change_pair(g, layer: int, data: ActivationData | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """MLP inputs x−, x+ [d_model] from the data with g(x−) < 0 < g(x+): the smallest and
    largest g among the prompts' last positions, else among all sampled positions. Without
    a sign change anywhere, the point with the smallest |g| twice (the same tensor)."""
    if data is None or layer not in data.mlp_inputs:
        raise ConfigError("mlp_feature needs x_minus and x_plus, or data=ActivationData with MLP inputs")
    cands = data.mlp_inputs[layer].to(device)
    with torch.no_grad():
        values = g(cands)
    pools = [data.last.to(device)] if data.last is not None else []
    pools.append(torch.ones_like(values, dtype=torch.bool))
    for pool in pools:
        v = values[pool]
        if len(v) and v.min() < 0 < v.max():
            return cands[torch.where(pool, values, torch.inf).argmin()], cands[torch.where(pool, values, -torch.inf).argmax()]
    warnings.warn(
        f"MLP {layer}: the observable does not change sign on the data (g in "
        f"[{values.min():.3g}, {values.max():.3g}]); using the point with the smallest |g|",
        stacklevel=3,
    )
    x0 = cands[values.abs().argmin()].clone()
    return x0, x0


def mlp_feature(
    model,
    layer: int,
    direction: torch.Tensor,
    x_minus: torch.Tensor | None = None,
    x_plus: torch.Tensor | None = None,
    data: ActivationData | None = None,
    xtol: float = 1e-12,
) -> MLPFeature:
    """The MLP of `layer`'s feature for a residual-stream `direction` (e.g. u).

    x− and x+ are MLP inputs with g(x−) < 0 < g(x+); by default the data points with the
    smallest and largest g (the prompts' last positions first, all sampled positions if
    those do not change sign). The decision point x0 on the segment is found with
    scipy's brentq (g(x0) = 0 to float32 precision) and the feature is ∇g(x0) by
    autograd. Without a sign change anywhere, the point with the smallest |g| is used
    and a warning is issued.
    """
    device = model.W_U.device
    direction = direction.to(device).float()
    g = mlp_function(model, layer, direction)
    decision = True
    if x_minus is None or x_plus is None:
        x_minus, x_plus = _sign_change_pair(g, layer, data, device)
        if x_minus is x_plus:  # no sign change on the data: the point with the smallest |g|
            decision = False
            x0 = x_minus
    x_minus, x_plus = x_minus.to(device).float(), x_plus.to(device).float()
    with torch.no_grad():
        g_minus, g_plus = float(g(x_minus)), float(g(x_plus))
    if decision:
        if not (g_minus < 0 < g_plus):
            if g_plus < 0 < g_minus:
                x_minus, x_plus, g_minus, g_plus = x_plus, x_minus, g_plus, g_minus
            else:
                raise ConfigError(
                    f"mlp_feature: g(x−)={g_minus:.4g} and g(x+)={g_plus:.4g} do not have opposite signs"
                )
        x_m64, x_p64 = x_minus.double(), x_plus.double()

        def phi(t: float) -> float:
            with torch.no_grad():
                return float(g((x_m64 * (1 - t) + x_p64 * t).float()))

        t0 = brentq(phi, 0.0, 1.0, xtol=xtol, maxiter=200)
        x0 = (x_m64 * (1 - t0) + x_p64 * t0).float()
    else:
        t0 = 0.0
    with torch.enable_grad():
        xg = x0.clone().requires_grad_(True)
        value = g(xg)
        (grad,) = torch.autograd.grad(value, xg)
    return MLPFeature(grad.detach(), x0.detach(), float(t0), float(value.detach()), g_minus, g_plus, decision)
