"""LoReFT (Wu et al. 2024, pyreft's low-rank representation finetuning) as an intervention
(docs/method.md §12):

    h̃ = h + β Rᵀ(W h + b − R h),   R ∈ ℝ^{r×d} with orthonormal rows (R Rᵀ = I), W ∈ ℝ^{r×d}, b ∈ ℝ^r

per (site, layer) on the residual-stream sites; β = 0 is the clean model. R is kept
orthonormal by `torch.nn.utils.parametrizations.orthogonal`. The rank r is an option
(`intervention.rank`, 4). With `intervention.positions=null` (the default) the edit acts at
every position, prompt and generated alike; with positions (`all`, or a list) it acts only
at those positions of prompts of the trained length, one edit shared by them (pyreft's
form), and at none past the prompt.

Minimality's L1 and its count are taken over the edit, W − R and b (`minimality_vector`); a
location's value is ‖W − R‖_F + ‖b‖ (docs/method.md §13). At initialisation R is a random
orthonormal matrix, W = R + noise and b = noise (of scale init_scale), so the edit starts
near zero, as the other methods' parameters do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.parametrizations import orthogonal

from interventions.methods.base import BetaViews, Hook, Method, param_key
from interventions.sites import RESIDUAL_SITES, hook_name
from interventions.spec import TrainedInterventionSpec, bounded, check_bounds


@dataclass
class LoReFTOptions(TrainedInterventionSpec):
    rank: int = bounded(4, 1, integer=True)  # r: the rows of R and W
    positions: Any = None  # null: every position; all or a list: those of the trained prompt

    def __post_init__(self):
        super().__post_init__()
        check_bounds(self, "intervention.")


class LoReFT(Method):
    name = "loreft"
    label = "LoReFT"
    Options = LoReFTOptions
    position_tied = False
    supported_sites = RESIDUAL_SITES
    scalar = False
    value_label, signed_values, color = "‖W − R‖ + ‖b‖", False, "tab:purple"

    @classmethod
    def tied_to_positions(cls, options) -> bool:
        return options.positions is not None

    def __init__(self, grid, cfg, W_O=None, options=None):
        super().__init__(grid, cfg, W_O, options)
        if self.options.rank > cfg.d_model:
            raise ValueError(f"intervention.rank={self.options.rank} is larger than the model's width {cfg.d_model}")
        for site in grid.sites:
            for layer in grid.layers:
                orthogonal(self.params, param_key(site, layer, "R"))
        if self.positions is not None:  # one edit shared by the grid's positions: a mask over them
            self.register_buffer("position_mask", torch.ones(len(grid.positions)), persistent=False)

    def param_shapes(self, site, cfg) -> dict[str, tuple[int, ...]]:
        r, d = self.options.rank, cfg.d_model
        return {"R": (r, d), "W": (r, d), "b": (r,)}

    def edit(self, site: str, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Rᵀ((W − R) h + b): [..., d] for h [..., d]."""
        R, W, b = (self.param(site, layer, t) for t in ("R", "W", "b"))
        if h.dtype != R.dtype:  # a half-precision model: the edit in the parameters' float32
            h = h.to(R.dtype)
        return (h @ (W - R).T + b) @ R

    def site_hook(self, site: str, layer: int, beta) -> Hook:
        beta_of, positions = BetaViews(beta), self.positions

        def hook(h, hook=None):
            if positions is not None and not positions.active:  # generated tokens past the prompt: nothing to edit
                return h
            edit = beta_of(h) * self.edit(site, layer, h)
            if positions is not None:
                edit = edit * positions.spread(self.position_mask, h)[..., None]
            out = h + edit
            return out if out.dtype == h.dtype else out.to(h.dtype)

        return hook_name(site, layer), hook

    def initialize(self, init: str = "normal", scale: float = 1e-5, seed: int = 0, **context) -> None:
        """R random orthonormal, W = R + noise, b = noise ("zeros": W = R, b = 0); module docstring."""
        if init not in ("normal", "zeros"):
            super().initialize(init, scale, seed, **context)  # refused in one line (no obsprop form)
            return
        generator = torch.Generator().manual_seed(seed)
        noise = scale if init == "normal" else 0.0
        with torch.no_grad():
            for site in self.grid.sites:
                for layer in self.grid.layers:
                    r, d = self.param(site, layer, "W").shape
                    R = torch.linalg.qr(torch.randn(d, r, generator=generator)).Q.T.contiguous()
                    # assigning R completes it to a d × d orthogonal basis with the global generator
                    # (the parametrization's `base`, which training moves R within): seeded from ours
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
                        setattr(self.params, param_key(site, layer, "R"), R.to(self.param(site, layer, "W").device))
                    R = self.param(site, layer, "R")
                    self.param(site, layer, "W").copy_(R + noise * torch.randn(r, d, generator=generator).to(R.device))
                    self.param(site, layer, "b").copy_(noise * torch.randn(r, generator=generator).to(R.device))

    def minimality_vector(self) -> torch.Tensor:
        """The edit, W − R and b, of every (site, layer) in one vector."""
        return torch.cat([torch.cat([(self.param(s, l, "W") - self.param(s, l, "R")).reshape(-1), self.param(s, l, "b")])
                          for s in self.grid.sites for l in self.grid.layers])  # fmt: skip

    def location_values(self, site: str, layer: int) -> torch.Tensor:
        """‖W − R‖_F + ‖b‖ of (site, layer), at each of its positions where it is tied to them."""
        with torch.no_grad():
            value = (self.param(site, layer, "W") - self.param(site, layer, "R")).norm() + self.param(site, layer, "b").norm()
        return value.expand(len(self.grid.positions)) if self.positions is not None else value

    def received(self, site: str, layer: int) -> torch.Tensor | None:
        """Whether any of (site, layer)'s tensors received a gradient in training."""
        if self.received_gradient is None:
            return None
        flags = [self.received_gradient[key].any() for key in self.received_gradient if key.startswith(f"{site}_{layer}__")]
        value = torch.stack(flags).any() if flags else torch.tensor(False)
        return value.expand(len(self.grid.positions)) if self.positions is not None else value

    def note_gradients(self) -> None:
        """Per tensor: whether it received a non-zero gradient (R's through its parametrization)."""
        grads = {name.split(".")[-2] if name.endswith(".original") else name.split(".")[-1]: p.grad
                 for name, p in self.named_parameters()}  # fmt: skip
        if self.received_gradient is None:
            self.received_gradient = {key: torch.tensor(False) for key in grads}
        for key, grad in grads.items():
            if grad is not None:
                self.received_gradient[key] = self.received_gradient[key] | (grad != 0).any().cpu()

    @torch.no_grad()
    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """R through its parametrization (an orthonormal R sets it exactly), W and b as they are."""
        for key, value in tensors.items():
            if key.endswith("__R"):
                setattr(self.params, key, value.to(self.param_device()))
            else:
                self.params[key].copy_(value)

    def param_device(self) -> torch.device:
        return next(self.parameters()).device
