"""DynScalar: α_{l,i} = gᵀ h_{l,i} / ‖h_{l,i}‖, then h̃ = h · (1 + β α) (docs/method.md §3).

One probe vector g per (site, layer) (per head for head sites), shared by all positions,
so it applies to prompts of any length and template. For `o`, α is computed from the
head's output o_h = z_h W_O^h and applied to z_h (equivalent, see sites.py).

Padding: α at a position depends only on that position's activation, and causal
attention keeps padded positions from reaching real ones, so a padded batch gives every
prompt the same result as running it alone.

Parameters per (site, layer): [D] for residual sites, [H', D] for head sites.

α is computed as (h·g) / ‖h‖ rather than (h/‖h‖)·g: the same function, with the rounding of
another order of operations (relative differences about 1e-7), and two passes over the
activation fewer (no unit vector is formed). Steered generation runs the hooks at every
step, where those passes were most of their cost (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from interventions.methods.base import BetaViews, Hook, Method
from interventions.sites import HEAD_SITES, hook_name
from interventions.spec import TrainedInterventionSpec

EPS = 1e-6
ONE = torch.tensor(1.0)  # addcmul's input: 1 + β α in one kernel


@dataclass
class DynScalarOptions(TrainedInterventionSpec):
    positions: Any = None  # one probe per (site, layer) acts at every position: no positions to choose


class DynScalar(Method):
    name = "dynscalar"
    Options = DynScalarOptions
    label = "DynScalar"
    vector_param = True
    position_tied = False
    dynamic = True
    value_label, color = "mean α", "tab:green"
    obsprop_form = "probe"

    def param_shape(self, site, cfg):
        return self.units_width(site, cfg)  # one vector per (site, layer): [D], or [H', D] for head sites

    def localization_scores(self, site: str, layer: int) -> torch.Tensor:
        """‖g‖ of (site, layer): [] or [H'] (its α is gᵀh/‖h‖, at most ‖g‖ in size)."""
        return self.param(site, layer).detach().norm(dim=-1)

    def alpha(self, site: str, layer: int, h: torch.Tensor) -> torch.Tensor:
        """α for every position: [batch, pos] or [batch, pos, heads] (head sites)."""
        return self._alpha(self.param(site, layer), site, layer, h)[..., 0]

    def _alpha(self, g: torch.Tensor, site: str, layer: int, h: torch.Tensor) -> torch.Tensor:
        """α = (h·g) / ‖h‖ [..., 1] for h [batch, pos, D] or [batch, pos, heads, D]."""
        if site == "o":
            h = self.o_from_z(h, layer)
        if h.dtype != g.dtype:  # a half-precision model: α in the parameters' float32
            h = h.to(g.dtype)
        norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp_min(EPS)  # h.norm's kernel, without its wrapper
        if site in HEAD_SITES:
            dot = (h * self.full_heads(g, h.shape[2], -2)).sum(-1, keepdim=True)  # [batch, pos, heads, 1]
        else:
            dot = torch.mv(h.reshape(-1, h.shape[-1]), g).view(*h.shape[:-1], 1)  # [batch, pos, 1]; mv: half matmul's cost
        return dot / norm

    def site_hook(self, site: str, layer: int, beta) -> Hook:
        beta_of = BetaViews(beta)
        g = self.param(site, layer)  # looked up once: a hook runs at every forward

        def hook(h, hook=None):
            out = h * torch.addcmul(ONE, beta_of(h), self._alpha(g, site, layer, h))  # h · (1 + β α)
            return out if out.dtype == h.dtype else out.to(h.dtype)  # parameters stay float32

        return hook_name(site, layer), hook

    def decoding_hooks(self, beta) -> list[Hook]:
        """Steered generation's hooks: at residual sites, β·g is formed once per generation
        ([D], or [rows, D] for β per row) and 1 + βα = 1 + (h·βg)/‖h‖ takes one `addcdiv`: five
        tensor operations per call instead of `site_hook`'s six, the norm's floor in place; a
        decoding step pays them at every hook (docs/benchmarks.md). The same function, rounded in another order
        (relative differences about 1e-7). No gradient reaches g. Head sites keep `site_hook`."""
        return [
            self.site_hook(site, layer, beta) if site in HEAD_SITES else self._decoding_hook(site, layer, beta)
            for site in self.grid.sites
            for layer in self.grid.layers
        ]

    def _decoding_hook(self, site: str, layer: int, beta) -> Hook:
        g = self.param(site, layer).detach()
        beta = torch.as_tensor(beta, dtype=g.dtype, device=g.device)
        steered_g = (beta.view(-1, 1) * g).unsqueeze(1) if beta.dim() else beta * g  # [rows, 1, D] or [D]

        def hook(h, hook=None):
            x = h if h.dtype == g.dtype else h.to(g.dtype)  # a half-precision model: α in float32
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(EPS)  # [batch, pos, 1]
            dot = torch.linalg.vecdot(x, steered_g).unsqueeze(-1)  # [batch, pos, 1]: h·βg
            out = x * torch.addcdiv(ONE, dot, norm)  # h · (1 + (h·βg)/‖h‖)
            return out if out.dtype == h.dtype else out.to(h.dtype)

        return hook_name(site, layer), hook
