"""PCA (repeng's form): v = the first principal component u of the train split's differences
d_n = h(x_n ⊕ c_n) − h(x_n ⊕ w_n) at the answer token, uncentred as repeng takes them, signed
so that mean_n uᵀd_n > 0 (a unit vector); added as h + β s v at every position, s fitted on
the train split (`methods.contrastive`; docs/method.md §12)."""

from __future__ import annotations

import torch

from interventions.methods.contrastive import ContrastiveVector


class PCA(ContrastiveVector):
    name = "pca"
    label = "PCA"
    color = "tab:pink"

    def direction(self, differences: torch.Tensor) -> torch.Tensor:
        u = torch.linalg.svd(differences.double(), full_matrices=False).Vh[0]  # the top right singular vector
        return (u if float((differences.double() @ u).mean()) > 0 else -u).float()
