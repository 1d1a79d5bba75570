"""LayerNorms on the way of a feature vector (docs/method.md §9; the conventions and the three
`ln_mode`s are in `obsprop.features`): access to a model's LayerNorms, their scales measured
on data (`ActivationData`), and the transposed Jacobian applied to a feature (`ln_backward`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interventions.errors import ConfigError
from interventions.models import model_device
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
