"""SteerVec: h̃ = h + β v, one vector v ∈ R^D per location (docs/method.md §3; the baseline),
and SharedSteerVec: one vector per (site, layer) added at every position.

SteerVec's parameters per (site, layer): [P, D] for residual sites, [P, H', d_head] for z
and v, [P, H', d_model] for o (added to the attention output: the sum of the heads'
outputs). |θ| = |K| · D. SharedSteerVec drops the position axis: [D], [H', d_head] or
[H', d_model].
"""

from __future__ import annotations

import torch

from interventions.methods.base import BetaViews, Hook, Method
from interventions.sites import HEAD_SITES, additive_hook, site_width


class SteerVec(Method):
    name = "steervec"
    vector_param = True
    position_tied = True
    scalar = False
    # At 1e-2 the 128-dim vectors oscillate: toy IOI β = −1 train flips wandered 0.76–0.96
    # across λ_F; at 5e-3 they rise steadily to ≥ 0.96 (README, "Defaults").
    default_lr = 5e-3

    def param_shape(self, site, cfg):
        n_pos = len(self.grid.positions)
        width = site_width(site, cfg)
        if site in HEAD_SITES:
            return (n_pos, len(self.grid.head_indices), width)
        return (n_pos, width)

    def delta(self, site: str, layer: int, h: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """v over all positions of h: [(rows,) pos, D], or [(rows,) pos, heads, d_head] for z and v
        (`length`: over that many positions, `Positions.per_session`)."""
        v = self.positions.spread(self.param(site, layer), h, length)
        if site == "o":
            return v.sum(-2)  # the heads' vectors add up in the attention output
        if site in HEAD_SITES:
            return self.full_heads(v, h.shape[2], -2)
        return v

    def site_hook(self, site: str, layer: int, beta) -> Hook:
        beta_of, positions, cache = BetaViews(beta), self.positions, {}
        pos_dim = -3 if site in ("z", "v") else -2  # the added tensor's position axis (o adds [.., pos, D])

        def hook(h, hook=None):
            if positions is None:  # one vector per (site, layer), at every position
                return (h + beta_of(h) * self.delta(site, layer, h)).to(h.dtype)
            if not positions.active:  # generated tokens past the prompt: nothing to add
                return h
            added = positions.per_session(cache, lambda length: beta_of(h) * self.delta(site, layer, h, length), pos_dim)
            out = h + added
            return out if out.dtype == h.dtype else out.to(h.dtype)  # parameters stay float32

        return additive_hook(site, layer), hook


class SharedSteerVec(SteerVec):
    """h̃_{l,i} = h_{l,i} + β v_l at every position i: one vector per (site, layer), as
    contrastive activation addition and llama.cpp's control vectors add them. Not tied to
    positions, so it applies to prompts of any length and to generated tokens, and its
    residPost vectors export to a llama.cpp control vector (`interventions.controlvector`)."""

    name = "steervec_shared"
    position_tied = False

    def param_shape(self, site, cfg):
        return self.units_width(site, cfg)  # one vector per (site, layer): [D], or [H', D] for head sites

    def delta(self, site: str, layer: int, h: torch.Tensor) -> torch.Tensor:
        """v, broadcast over h's batch and positions: [D], or [heads, d_head] for z and v."""
        v = self.param(site, layer)
        if site == "o":
            return v.sum(-2)
        if site in HEAD_SITES:
            return self.full_heads(v, h.shape[2], -2)
        return v
