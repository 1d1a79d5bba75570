"""Feature vectors of observables: heads, virtual heads / paths, MLPs, LayerNorms (docs/method.md §9).

Conventions (TransformerLens, row vectors):
    logits = LN_f(x) W_U + b_U,  a head writes  LN_1(x) W_V W_O  (W_OV = W_V W_O, [d, d]).
For an observable n the residual-stream direction is u = W_U n, and a head's feature
vector (attention pattern held fixed) is

    y = W_OV u = W_V (W_O u)          [d_model],   so that  n · (x W_OV W_U) = x · y.

Paths (virtual heads) are lists of components, deepest (closest to the logits) first:
y = W_OV^{(l')} (W_OV^{(l)} u) for [head l, head l'] with l' < l; MLPs take the gradient
of yᵀMLP(x) at the decision point (see `mlp_feature`).

LayerNorm. TransformerLens's LayerNorm is LN(x) = w ⊙ (P x) / s(x) + b, with P the
projection onto mean-zero vectors (only for "LN"; RMSNorm does not centre) and
s(x) = sqrt(mean((P x)²) + eps), which is exactly what TransformerLens's `hook_scale`
records (std-like, *not* ‖x‖): ‖P x‖ = √d · s(x) up to eps, so Dunefsky's factor √d/‖x‖
is 1/s(x) here. Its Jacobian, transposed onto a feature y of the LayerNorm's output, is

    J(x)ᵀ y = (1/s) (P − (P x)(P x)ᵀ / (d s²)) (w ⊙ y).

Modes (`ln_mode`):
- "ignore": LayerNorms are the identity (directions only; Dunefsky's data-free ansatz);
  u = W_U n and y = W_OV u.
- "approximate": drop the rank-one term (Theorem 1: it barely turns y in high
  dimension) and replace 1/s by its mean over data, ρ = mean(1/s(x)):
  J ≈ ρ · P (w ⊙ y). ρ comes from `ActivationData` (or `scales={ln name: ρ}`).
  With a *frozen* scale (s fixed at its clean value, as in attribution with frozen
  LayerNorms) this map is exact.
- "exact": J(x)ᵀ y by autograd through the model's own LayerNorm module at the data
  points of `ActivationData`, averaged over them (each LayerNorm over its own points).

Final LayerNorm: ln_final sits between the residual stream and W_U, so the logit
direction *in the residual stream* is the LN-transposed u: in "approximate" mode
u = ρ_f · P (w_f ⊙ W_U n) (w_f is ln_final's weight; ρ_f the mean 1/s at the prompts'
last positions, where the observable is read), in "exact" mode the averaged gradient,
in "ignore" mode plain W_U n. ρ_f is one constant for every component, so rankings do
not depend on it; it puts y · x into logit units. (TransformerLens's `fold_ln`, which
Dunefsky's GPT-Neo numbers used, folds w_f into W_U and centres it: the same as the
approximate mode up to ρ_f.)

Pre-sublayer LayerNorms: a head reads LN_1(x), an MLP reads LN_2(x). `input_space`
says which vector the feature of the path's shallowest component refers to:
- "resid" (default): the residual stream before that LayerNorm (y ← J_1ᵀ y, as for
  any LayerNorm on the path);
- "normalized": the LayerNorm's normalised input x̂ = P x / s(x) (TransformerLens's
  `hook_normalized`, ‖x̂‖ ≈ √d for every layer): y ← P (w_1 ⊙ y), no 1/s. This is
  Dunefsky's convention for ranking by feature norm ("multiply by √d W, not
  √d W/‖x‖", §5.1.1): residual norms differ by layer, x̂'s do not, so E[(x̂ · y)²] ≈ ‖y‖²
  compares heads of different layers fairly;
- "ln_out": the LayerNorm's output, i.e. the head's actual input (nothing applied).
In "ignore" mode all three are the same. Intermediate LayerNorms on a path are always
applied (except in "ignore" mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from interventions.errors import ConfigError
from interventions.obsprop.layernorm import (
    ActivationData, _check_mode, _inv_scale, center, has_norm, input_ln, is_centering, ln_backward, ln_weight,
)  # fmt: skip
from interventions.obsprop.mlp import MLPFeature, mlp_feature
from interventions.obsprop.observables import Observable
from interventions.sites import norm_module


def final_direction(
    model,
    observable: Observable | torch.Tensor,
    ln_mode: str = "ignore",
    data: ActivationData | None = None,
    scales: dict | None = None,
) -> torch.Tensor:
    """The observable's direction in the residual stream before ln_final, [d_model].

    ignore: u = W_U n. approximate: ρ_f · P (w_f ⊙ W_U n). exact: the mean gradient of
    n · (LN_f(x) W_U) over the prompts' last-position residuals.
    """
    if isinstance(observable, Observable):
        u = observable.direction(model)
    else:
        n = torch.as_tensor(observable, dtype=torch.float32, device=model.W_U.device)
        if n.shape != (model.W_U.shape[1],):
            raise ConfigError(f"an observable vector must have shape [d_vocab={model.W_U.shape[1]}], got {tuple(n.shape)}")
        u = model.W_U.detach().float() @ n
    return ln_backward(model, "ln_final", u, ln_mode, data, scales)


# -- heads ------------------------------------------------------------------------------
def _resolve_u(model, observable, u, ln_mode, data, scales) -> torch.Tensor:
    if (observable is None) == (u is None):
        raise ConfigError("pass exactly one of observable= (on the logits) or u= (a residual direction)")
    if u is not None:
        return torch.as_tensor(u, dtype=torch.float32, device=model.W_U.device)
    return final_direction(model, observable, ln_mode, data, scales)


def check_linear_heads(model) -> None:
    """One ConfigError line for a model whose heads do not write to the residual stream
    linearly: Gemma 2, Gemma 3 and OLMo 2 normalise the attention output again before
    adding it (TransformerBridge's `ln1_post`), so no feature vector gives a head's
    contribution to an observable."""
    if model.cfg.n_layers and hasattr(model.blocks[0], "ln1_post"):
        kind = getattr(model.cfg, "architecture", None) or type(getattr(model, "adapter", model)).__name__
        raise ConfigError(f"observable propagation on {kind}: the attention output is normalised again (a post-attention "
                          "norm) before it reaches the residual stream, so a head's contribution is not linear in its "
                          "output and has no feature vector")  # fmt: skip


def value_weights(model) -> torch.Tensor:
    """W_V [n_layers, n_heads, d_model, d_head] per query head: with grouped-query attention
    each key-value head's W_V, repeated for the query heads that share it (as the model's
    attention repeats its values)."""
    W_V = model.W_V.detach().float()
    groups = model.cfg.n_heads // W_V.shape[1]
    return W_V.repeat_interleave(groups, dim=1) if groups > 1 else W_V


def head_features(
    model,
    observable: Observable | torch.Tensor | None = None,
    *,
    u: torch.Tensor | None = None,
    ln_mode: str = "ignore",
    data: ActivationData | None = None,
    scales: dict | None = None,
    input_space: str = "resid",
) -> torch.Tensor:
    """Feature vectors of every attention head, [n_layers, n_heads, d_model], in one batch.

    y[l, h] = W_V[l, h] (W_O[l, h] u), then ln1 of layer l per `input_space` (see the
    module docstring). `u` (a residual-stream direction) replaces the observable.
    """
    _check_mode(ln_mode, input_space)
    check_linear_heads(model)
    u = _resolve_u(model, observable, u, ln_mode, data, scales)
    W_V, W_O = value_weights(model), model.W_O.detach().float()
    w_o_u = torch.einsum("lhem,m->lhe", W_O, u)  # [L, H, d_head]
    y = torch.einsum("lhde,lhe->lhd", W_V, w_o_u)  # [L, H, d_model]
    if input_space == "ln_out" or ln_mode == "ignore" or not has_norm(model):
        return y
    names = [norm_module("ln1", l) for l in range(model.cfg.n_layers)]
    if ln_mode == "approximate" or input_space == "normalized":
        w = torch.stack([ln_weight(model, n) for n in names]).to(y.device)  # [L, d]
        y = center(w[:, None, :] * y, is_centering(model))
        if input_space == "normalized":
            return y
        rho = torch.tensor([float(_inv_scale(n, data, scales)) for n in names], device=y.device)
        return y * rho[:, None, None]
    return torch.stack([ln_backward(model, n, y[l], ln_mode, data, scales) for l, n in enumerate(names)])


def effective_W_V(model, ln_mode: str = "ignore") -> torch.Tensor:
    """W_V [L, H, d, d_head], with P diag(w_1) in front unless ignore: the map from ln1's
    normalised input x̂ (what `input_space="normalized"` features refer to)."""
    check_linear_heads(model)
    W_V = value_weights(model)
    if ln_mode != "ignore" and has_norm(model):
        w = torch.stack([ln_weight(model, norm_module("ln1", l)) for l in range(model.cfg.n_layers)]).to(W_V.device)
        W_V = w[:, None, :, None] * W_V
        if is_centering(model):
            W_V = W_V - W_V.mean(2, keepdim=True)
    return W_V


# -- MLPs -------------------------------------------------------------------------------
def mlp_features(
    model,
    observable: Observable | torch.Tensor | None = None,
    *,
    u: torch.Tensor | None = None,
    ln_mode: str = "ignore",
    data: ActivationData | None = None,
    scales: dict | None = None,
    input_space: str = "resid",
) -> tuple[torch.Tensor, list[MLPFeature]]:
    """Every MLP's feature (its direct path to the logits), [n_layers, d_model], and details."""
    _check_mode(ln_mode, input_space)
    if data is None:
        raise ConfigError("MLP features need data (decision points): pass data=ActivationData.collect(...)")
    u = _resolve_u(model, observable, u, ln_mode, data, scales)
    infos, ys = [], []
    for layer in range(model.cfg.n_layers):
        info = mlp_feature(model, layer, u, data=data)
        infos.append(info)
        ys.append(input_ln(model, norm_module("ln2", layer), info.gradient, ln_mode, input_space, data, scales))
    return torch.stack(ys), infos


# -- paths -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """A head (kind "head", layer, head) or an MLP (kind "mlp", layer, head None)."""

    kind: str
    layer: int
    head: int | None = None

    @property
    def order(self) -> int:
        """Position in the forward pass: attn l before mlp l before attn l+1."""
        return 2 * self.layer + (1 if self.kind == "mlp" else 0)

    @property
    def ln(self) -> str:
        return norm_module("ln2" if self.kind == "mlp" else "ln1", self.layer)

    def __str__(self) -> str:
        return f"mlp{self.layer}" if self.kind == "mlp" else f"L{self.layer}H{self.head}"


def parse_component(spec, model=None) -> Component:
    """("head", l, h) | ("mlp", l) | "L3H1" | "3.1" | "mlp2" | "M2" | a Component."""
    if isinstance(spec, Component):
        comp = spec
    elif isinstance(spec, (tuple, list)):
        comp = Component(spec[0], int(spec[1]), None if spec[0] == "mlp" else int(spec[2]))
    else:
        text = str(spec).strip()
        if m := re.fullmatch(r"[Ll](\d+)[Hh](\d+)", text) or re.fullmatch(r"(\d+)\.(\d+)", text):
            comp = Component("head", int(m.group(1)), int(m.group(2)))
        elif m := re.fullmatch(r"(?:mlp|MLP|[Mm])(\d+)", text):
            comp = Component("mlp", int(m.group(1)))
        else:
            raise ConfigError(f"unknown path component {spec!r}; write 'L3H1', '3.1' or 'mlp2'")
    if comp.kind not in ("head", "mlp"):
        raise ConfigError(f"unknown component kind {comp.kind!r}; allowed: head, mlp")
    if model is not None:
        if not 0 <= comp.layer < model.cfg.n_layers:
            raise ConfigError(f"{comp}: the model has layers 0..{model.cfg.n_layers - 1}")
        if comp.kind == "head" and not 0 <= comp.head < model.cfg.n_heads:
            raise ConfigError(f"{comp}: the model has heads 0..{model.cfg.n_heads - 1}")
    return comp


@dataclass
class PathFeature:
    """The feature vector of a path and what was computed on the way."""

    vector: torch.Tensor
    components: tuple[Component, ...]
    mlp: dict[str, MLPFeature] = field(default_factory=dict)


def path_feature(
    model,
    path,
    observable: Observable | torch.Tensor | None = None,
    *,
    u: torch.Tensor | None = None,
    ln_mode: str = "ignore",
    data: ActivationData | None = None,
    scales: dict | None = None,
    input_space: str = "resid",
) -> PathFeature:
    """The feature vector of a path of components, deepest (closest to the logits) first.

    [L3H1, L1H0] is the virtual head L1H0 → L3H1: y = W_OV^{1,0} (W_OV^{3,1} u), with
    ln1 of layer 3 between them (unless ignore). An MLP on the path contributes the
    gradient at its decision point for the feature arriving at it (`mlp_feature`).
    """
    _check_mode(ln_mode, input_space)
    comps = tuple(parse_component(c, model) for c in path)
    if not comps:
        raise ConfigError("a path needs at least one component")
    for deeper, shallower in zip(comps, comps[1:]):
        if shallower.order >= deeper.order:
            raise ConfigError(
                f"path {[str(c) for c in comps]}: list components deepest first; {shallower} does not "
                f"come before {deeper} in the forward pass"
            )
    if any(c.kind == "head" for c in comps):
        check_linear_heads(model)
    y = _resolve_u(model, observable, u, ln_mode, data, scales)
    W_V, W_O = value_weights(model), model.W_O.detach().float()
    mlps = {}
    for i, comp in enumerate(comps):
        if comp.kind == "head":
            y = W_V[comp.layer, comp.head] @ (W_O[comp.layer, comp.head] @ y)
        else:
            info = mlp_feature(model, comp.layer, y, data=data)
            mlps[str(comp)] = info
            y = info.gradient
        if i < len(comps) - 1:
            y = ln_backward(model, comp.ln, y, ln_mode, data, scales)
        else:
            y = input_ln(model, comp.ln, y, ln_mode, input_space, data, scales)
    return PathFeature(y, comps, mlps)
