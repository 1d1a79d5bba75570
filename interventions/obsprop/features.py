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
import warnings
from dataclasses import dataclass, field

import torch
from scipy.optimize import brentq

from interventions.errors import ConfigError
from interventions.models import model_device
from interventions.obsprop.observables import Observable
from interventions.sites import hook, norm_module, parse_norm_module

LN_MODES = ("ignore", "approximate", "exact")
INPUT_SPACES = ("resid", "normalized", "ln_out")


# -- LayerNorm access ---------------------------------------------------------------------
def ln_module(model, name: str):
    parsed = parse_norm_module(name)
    if parsed is None:
        raise ConfigError(f"unknown LayerNorm {name!r}; expected blocks.L.ln1, blocks.L.ln2 or ln_final")
    kind, layer = parsed
    return model.ln_final if kind == "ln_final" else getattr(model.blocks[layer], kind)


def has_norm(model) -> bool:
    return getattr(model.cfg, "normalization_type", None) is not None


def is_centering(model) -> bool:
    """LN and LNPre subtract the mean; RMSNorm does not."""
    return str(getattr(model.cfg, "normalization_type", "LN")).upper().startswith("LN")


def ln_weight(model, name: str) -> torch.Tensor:
    """The LayerNorm's elementwise weight w [d_model] (ones for LNPre/RMSPre)."""
    module = ln_module(model, name)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        weight = next((p for n, p in module.named_parameters() if n.split(".")[-1] in ("weight", "w")), None)
    if weight is None:
        return torch.ones(model.cfg.d_model, device=model.W_U.device)
    w = weight.detach().float()
    if getattr(model.cfg, "rmsnorm_uses_offset", False):  # Gemma: x * (1 + w)
        w = 1 + w
    return w


def center(y: torch.Tensor, centering: bool = True) -> torch.Tensor:
    """P y: subtract the mean over the last axis (P is symmetric, so Pᵀ = P)."""
    return y - y.mean(-1, keepdim=True) if centering else y


def ln_scale(model, x: torch.Tensor) -> torch.Tensor:
    """s(x) = sqrt(mean((P x)²) + eps), TransformerLens's hook_scale, [..., 1]."""
    xc = center(x.float(), is_centering(model))
    return (xc.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()


def _check_mode(ln_mode: str, input_space: str = "resid") -> None:
    if ln_mode not in LN_MODES:
        raise ConfigError(f"ln_mode={ln_mode!r}; allowed: {', '.join(LN_MODES)}")
    if input_space not in INPUT_SPACES:
        raise ConfigError(f"input_space={input_space!r}; allowed: {', '.join(INPUT_SPACES)}")


def input_ln(model, name: str, y: torch.Tensor, ln_mode: str, input_space: str, data, scales) -> torch.Tensor:
    """Move the shallowest component's feature through its own LayerNorm per `input_space`."""
    if ln_mode == "ignore" or not has_norm(model) or input_space == "ln_out":
        return y
    if input_space == "normalized":
        return center(ln_weight(model, name).to(y.device) * y, is_centering(model))
    return ln_backward(model, name, y, ln_mode, data, scales)


# -- data -------------------------------------------------------------------------------
@dataclass
class ActivationData:
    """Clean activations where LayerNorm gradients and MLP decision points are taken.

    Attributes:
        ln_inputs: {ln name: [N, d_model]} inputs of each LayerNorm: for ln1/ln2 at a
            sample of real token positions (every prompt's last position included), for
            ln_final at the prompts' last positions (where the observable is read).
        mlp_inputs: {layer: [N, d_model]} the MLP's input (ln2's output) at the same
            positions as ln2's inputs.
        last: [N] bool, which of those positions are a prompt's last one.
        inv_scales: {ln name: ρ = mean over the points of 1/s(x)} (see module docstring).
    """

    ln_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    mlp_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    last: torch.Tensor | None = None
    inv_scales: dict[str, float] = field(default_factory=dict)

    @classmethod
    @torch.no_grad()
    def collect(
        cls,
        model,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        last_index: torch.Tensor | None = None,
        max_positions: int = 4096,
        batch_size: int = 64,
        seed: int = 0,
    ) -> "ActivationData":
        """Run the clean model on prompts ([N, T] token ids, padded) and keep LN/MLP inputs."""
        n_rows, width = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if last_index is None:
            last_index = attention_mask.sum(1) - 1
        n_layers = model.cfg.n_layers
        wanted = {hook(f"{ln}_in", l) for l in range(n_layers) for ln in ("ln1", "ln2")}
        wanted |= {hook("ln2_out", l) for l in range(n_layers)} | {hook("ln_final_in")}
        # Which (row, pos) to keep: all last positions + a deterministic sample of the rest.
        real = attention_mask.bool().clone()
        is_last = torch.zeros_like(real)
        is_last[torch.arange(n_rows), last_index] = True
        others = (real & ~is_last).nonzero()
        budget = max(0, max_positions - n_rows)
        if len(others) > budget:
            pick = torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[:budget]
            others = others[pick.sort().values]
        keep = torch.zeros_like(real)
        keep[others[:, 0], others[:, 1]] = True
        keep |= is_last
        device = model_device(model)
        chunks: dict[str, list[torch.Tensor]] = {k: [] for k in wanted}
        last_flags = []
        for start in range(0, n_rows, batch_size):
            sl = slice(start, start + batch_size)
            ids, mask = input_ids[sl].to(device), attention_mask[sl].to(device)
            kwargs = {} if bool(mask.all()) else {"attention_mask": mask}
            _, cache = model.run_with_cache(ids, names_filter=lambda name: name in wanted, **kwargs)
            k = keep[sl].to(device)
            rows = torch.arange(ids.shape[0], device=device)
            for name in wanted:
                act = cache[name].detach().float()
                if name == hook("ln_final_in"):
                    chunks[name].append(act[rows, last_index[sl].to(device)].cpu())
                else:
                    chunks[name].append(act[k].cpu())
            last_flags.append(is_last[sl][keep[sl]])
        data = cls(last=torch.cat(last_flags))
        for l in range(n_layers):
            for ln in ("ln1", "ln2"):
                data.ln_inputs[norm_module(ln, l)] = torch.cat(chunks[hook(f"{ln}_in", l)])
            data.mlp_inputs[l] = torch.cat(chunks[hook("ln2_out", l)])
        data.ln_inputs[norm_module("ln_final")] = torch.cat(chunks[hook("ln_final_in")])
        for name, x in data.ln_inputs.items():
            data.inv_scales[name] = float((1.0 / ln_scale(model, x.to(device))).mean())
        return data

    @classmethod
    def from_datamodule(cls, model, datamodule, split: str = "train", **kwargs) -> "ActivationData":
        datamodule.setup()
        t = datamodule.datasets[split].tensors
        return cls.collect(model, t["input_ids"], t["attention_mask"], t["last_index"], **kwargs)

    def points(self, name: str) -> torch.Tensor:
        if name not in self.ln_inputs:
            raise ConfigError(f"no data for LayerNorm {name!r}; collect ActivationData from prompts first")
        return self.ln_inputs[name]


def _inv_scale(name: str, data: ActivationData | None, scales: dict | None) -> float | torch.Tensor:
    if scales is not None and name in scales:
        return scales[name]
    if data is not None and name in data.inv_scales:
        return data.inv_scales[name]
    raise ConfigError(
        f"ln_mode='approximate' needs the mean inverse scale of {name}: pass data="
        "ActivationData.collect(model, input_ids, ...) or scales={name: 1/s}"
    )


# -- LayerNorm backward -------------------------------------------------------------------
def ln_backward(
    model,
    name: str,
    y: torch.Tensor,
    ln_mode: str = "approximate",
    data: ActivationData | None = None,
    scales: dict | None = None,
    max_points: int = 1024,
) -> torch.Tensor:
    """A feature y [..., d] of LayerNorm `name`'s output, moved to its input.

    ignore: y. approximate: ρ · P (w ⊙ y). exact: mean over data points x of J(x)ᵀ y
    (autograd through the model's LayerNorm module). See the module docstring.
    """
    _check_mode(ln_mode)
    if ln_mode == "ignore" or not has_norm(model):
        return y
    if ln_mode == "approximate":
        w = ln_weight(model, name).to(y.device)
        rho = _inv_scale(name, data, scales)
        return center(w * y, is_centering(model)) * rho
    if data is None:
        raise ConfigError("ln_mode='exact' needs data=ActivationData.collect(model, input_ids, ...)")
    x = data.points(name)[:max_points].to(y.device)
    module = ln_module(model, name)
    flat = y.reshape(-1, y.shape[-1]).float()
    out = torch.empty_like(flat)
    with torch.enable_grad():
        for start in range(0, len(flat), 16):  # 16 features at a time: [16, N, d]
            ys = flat[start : start + 16]
            xs = x.float().unsqueeze(0).expand(len(ys), -1, -1).clone().requires_grad_(True)
            value = (module(xs) * ys[:, None, :]).sum()
            (grad,) = torch.autograd.grad(value, xs)
            out[start : start + 16] = grad.mean(1)
    return out.reshape(y.shape)


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
