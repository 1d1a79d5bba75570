"""DynScalar: α_{l,i} = gᵀ h_{l,i} / ‖h_{l,i}‖, then h̃ = h · (1 + β α) (docs/method.md §3).

One probe vector g per (site, layer) (per head for head sites), shared by all positions,
so it applies to prompts of any length and template. For `o`, α is computed from the
head's output o_h = z_h W_O^h and applied to z_h (equivalent, see sites.py).

Padding: α at a position depends only on that position's activation, and causal
attention keeps padded positions from reaching real ones, so a padded batch gives every
prompt the same result as running it alone.

Parameters per (site, layer): [D] for residual sites, [H', D] for head sites.
"""

from __future__ import annotations

import torch

from interventions.methods.base import BetaViews, Hook, Method
from interventions.sites import HEAD_SITES, hook_name

EPS = 1e-6


class DynScalar(Method):
    name = "dynscalar"
    vector_param = True
    position_tied = False
    dynamic = True

    def param_shape(self, site, cfg):
        return self.units_width(site, cfg)  # one vector per (site, layer): [D], or [H', D] for head sites

    def alpha(self, site: str, layer: int, h: torch.Tensor) -> torch.Tensor:
        """α for every position: [batch, pos] or [batch, pos, heads] (head sites)."""
        g = self.param(site, layer)
        if site == "o":
            h = self.o_from_z(h, layer)
        if site in HEAD_SITES:
            g = self.full_heads(g, h.shape[2], -2)  # [heads, D]
        unit = h / torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp_min(EPS)  # h.norm's kernel, without its wrapper
        return (unit * g).sum(-1)  # not linalg.vecdot: it refuses a half-precision h with a float32 g

    def site_hook(self, site: str, layer: int, beta) -> Hook:
        beta_of = BetaViews(beta)

        def hook(h, hook=None):
            out = h * (1 + beta_of(h) * self.alpha(site, layer, h)[..., None])
            return out if out.dtype == h.dtype else out.to(h.dtype)  # parameters stay float32

        return hook_name(site, layer), hook
