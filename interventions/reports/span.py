"""The span of a site's activations on data, and a vector's parts in and outside it: the
subspace the illusion diagnostic (`reports.illusion`) measures a steering vector against
(Makelov et al.; docs/method.md §10)."""

from __future__ import annotations

import torch

def activation_span(acts: torch.Tensor, variance: float = 0.99) -> torch.Tensor:
    """Orthonormal basis [k, D] of span{μ} + span{top PCs of acts − μ}.

    Args:
        acts: [n, D] activations.
        variance: the principal components kept are the fewest covering this fraction of
            the centered activations' variance (0 < variance ≤ 1).
    """
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    x = acts.double()
    mu = x.mean(0)
    centered = x - mu
    scale = max(float(x.pow(2).sum(1).mean()), 1e-30)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    var = s.pow(2)
    total = float(var.sum())
    if total <= 1e-12 * scale * x.shape[0]:  # the data never varies here
        basis = vh[:0]
    else:
        cum = torch.cumsum(var, 0) / total
        k = int((cum < variance - 1e-12).sum()) + 1
        basis = vh[: min(k, len(s))]
    # The mean direction joins the span when its part outside the kept components holds
    # more of the mean squared norm E‖x‖² than the dropped components may (1 − variance);
    # a mean that is zero up to rounding adds nothing.
    mu_perp = mu - basis.T @ (basis @ mu)
    if float(mu_perp.pow(2).sum()) > max(1 - variance, 1e-12) * scale:
        basis = torch.cat([basis, (mu_perp / mu_perp.norm()).unsqueeze(0)])
    return basis


def split_vector(v: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_in, v_out): the orthogonal projection of v onto span(basis rows) and the rest."""
    vd = v.double()
    v_in = basis.T @ (basis @ vd) if basis.numel() else torch.zeros_like(vd)
    return v_in.to(v.dtype), (vd - v_in).to(v.dtype)


def out_of_span_fraction(v: torch.Tensor, acts: torch.Tensor, variance: float = 0.99) -> float:
    """‖v_out‖² / ‖v‖² for the span of `acts` [n, D] (see `activation_span`)."""
    _, v_out = split_vector(v, activation_span(acts, variance))
    return float(v_out.double().pow(2).sum() / v.double().pow(2).sum())
