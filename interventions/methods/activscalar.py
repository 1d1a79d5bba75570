"""ActivScalar: h̃ = h · (1 + β α), one scalar α per location (docs/method.md §3).

Parameters per (site, layer): [P] for residual sites, [P, H'] for head sites (P grid
positions, H' grid heads). |θ| = |K|.
"""

from __future__ import annotations

import torch

from interventions.methods.base import BetaViews, Hook, Method
from interventions.sites import HEAD_SITES, hook_name


class ActivScalar(Method):
    name = "activscalar"
    label = "ActivScalar"
    position_tied = True
    color = "tab:blue"
    obsprop_form = "projection"

    def param_shape(self, site, cfg):
        n_pos = len(self.grid.positions)
        return (n_pos, len(self.grid.head_indices)) if site in HEAD_SITES else (n_pos,)

    def scale_factor(self, site: str, layer: int, beta: torch.Tensor, h: torch.Tensor,
                     length: int | None = None) -> torch.Tensor:  # fmt: skip
        """1 + β α broadcast to h ([batch, pos, D] or [batch, pos, heads, d_head]); β is already
        shaped for h (`beta_view`). `length`: over that many positions (`Positions.per_session`)."""
        alpha = self.positions.spread(self.param(site, layer), h, length)  # [(rows,) pos(, H')]
        if site in HEAD_SITES:
            alpha = self.full_heads(alpha, h.shape[2], -1)
        alpha = alpha[..., None]  # [(rows,) pos(, heads), 1]
        return 1 + beta * alpha

    def site_hook(self, site: str, layer: int, beta) -> Hook:
        beta_of, positions, cache = BetaViews(beta), self.positions, {}
        pos_dim = -3 if site in HEAD_SITES else -2  # the factor's position axis

        def hook(h, hook=None):
            if not positions.active:  # generated tokens past the prompt: nothing to scale
                return h
            factor = positions.per_session(cache, lambda length: self.scale_factor(site, layer, beta_of(h), h, length),
                                           pos_dim)  # fmt: skip
            out = h * factor
            return out if out.dtype == h.dtype else out.to(h.dtype)  # parameters stay float32

        return hook_name(site, layer), hook
