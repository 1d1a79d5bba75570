"""SteerVec: h̃ = h + β v, one vector v ∈ R^D per location (docs/method.md §3; the baseline).

Parameters per (site, layer): [P, D] for residual sites, [P, H', d_head] for z and v,
[P, H', d_model] for o (added to the attention output: the sum of the heads' outputs).
|θ| = |K| · D.
"""

from __future__ import annotations

import torch

from interventions.methods.base import BetaViews, Hook, Method
from interventions.sites import HEAD_SITES, additive_hook, site_width


class SteerVec(Method):
    name = "steervec"
    label = "SteerVec"
    vector_param = True
    position_tied = True
    scalar = False
    value_label, signed_values, color = "‖v‖", False, "tab:orange"
    obsprop_form = "direction"
    illusion = "on request"
    # At 1e-2 the 128-dim vectors oscillate: toy IOI β = −1 train flips wandered 0.76–0.96
    # across λ_F; at 5e-3 they rise steadily to ≥ 0.96 (docs/concepts.md, "Defaults").
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
