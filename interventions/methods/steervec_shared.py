"""SharedSteerVec (`steervec_shared`): h̃_{l,i} = h_{l,i} + β v_l at every position i, one
vector per (site, layer), as contrastive activation addition and llama.cpp's control vectors
add them. Not tied to positions, so it applies to prompts of any length and to generated
tokens, and its residPost vectors export to a llama.cpp control vector
(`interventions.controlvector`).

Parameters per (site, layer): [D], [H', d_head] for z and v, or [H', d_model] for o.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from interventions.methods.steervec import SteerVec
from interventions.sites import HEAD_SITES
from interventions.spec import TrainedInterventionSpec


@dataclass
class SharedSteerVecOptions(TrainedInterventionSpec):
    positions: Any = None  # one vector per (site, layer), added at every position


class SharedSteerVec(SteerVec):
    name = "steervec_shared"
    Options = SharedSteerVecOptions
    label = "SteerVec (shared by all positions)"
    position_tied = False
    additive_per_layer = True
    color = "tab:red"
    illusion = None

    def param_shape(self, site, cfg):
        return self.units_width(site, cfg)  # one vector per (site, layer): [D], or [H', D] for head sites

    def delta(self, site: str, layer: int, h: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """v, broadcast over h's batch and positions: [D], or [heads, d_head] for z and v."""
        v = self.param(site, layer)
        if site == "o":
            return v.sum(-2)
        if site in HEAD_SITES:
            return self.full_heads(v, h.shape[2], -2)
        return v
