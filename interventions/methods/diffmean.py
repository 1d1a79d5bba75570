"""DiffMean (contrastive activation addition, Rimsky et al. 2024; AxBench's DiffMean): v = the
mean over the train split of h(x ⊕ c) − h(x ⊕ w) at the answer token, added as h + β s v at
every position, s fitted on the train split (`methods.contrastive`; docs/method.md §12)."""

from __future__ import annotations

import torch

from interventions.methods.contrastive import ContrastiveVector


class DiffMean(ContrastiveVector):
    name = "diffmean"
    label = "DiffMean"
    color = "tab:brown"

    def direction(self, differences: torch.Tensor) -> torch.Tensor:
        return differences.mean(0)
