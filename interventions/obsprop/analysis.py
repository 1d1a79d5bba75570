"""Data-free analyses of feature vectors (docs/method.md §9): norms, cosines, couplings,
Theorem-2 bounds and the comparison with the singular vectors of W_OV.

- Feature norms rank components: for x ~ N(0, I), E[(x · y)²] = ‖y‖².
- Cosine similarity of two observables' feature vectors, per head.
- Coupling C(y1, y2) = y1 · y2 / ‖y1‖²: the expected x · y2 given x · y1 = 1
  (Theorem 2); C(y1, y2) C(y2, y1) = cos²θ.
- Theorem 2: for ‖x‖ = s and x · y1 = k, x · y2 lies in
  (‖y2‖/‖y1‖)(k cosθ ± |sinθ| √(s²‖y1‖² − k²)), with mean k C(y1, y2).
- SVD. A head maps its input row vector x to x W_OV (TransformerLens's row-vector
  convention). With W_OV = U Σ Vᵀ (torch.linalg.svd: U Σ Vh), x W_OV = Σ_i σ_i (x·U_i) V_i:
  the *input* directions are the columns of U, the **left** singular vectors of
  TransformerLens's W_OV. Dunefsky writes heads as column maps W x with W = W_OVᵀ,
  whose **right** singular vectors are those same columns U_i. The feature
  y = W_OV u = Σ_i σ_i (V_i · u) U_i lies in their span, so Σ_i cos²(y, U_i) = 1 over the
  d_head non-zero singular values; a feature that no single U_i captures (max |cos|
  well below 1) is one SVD would miss.

`analyze` computes all of this for one or two observables and `write_report` writes
JSON and layer × head PNG heatmaps (the CLI: `python -m interventions obsprop analyze`).
"""

from __future__ import annotations

import math

import torch

from interventions.obsprop.features import effective_W_V, final_direction, head_features, mlp_features
from interventions.obsprop.layernorm import ActivationData, center, has_norm, is_centering, ln_weight
from interventions.obsprop.observables import Observable
from interventions.sites import hook

EPS = 1e-12


# -- elementwise analyses ------------------------------------------------------------------
def feature_norms(Y: torch.Tensor) -> torch.Tensor:
    """‖y‖ over the last axis ([L, H, d] -> [L, H])."""
    return Y.norm(dim=-1)


def rank_heads(norms: torch.Tensor, top: int | None = None) -> list[dict]:
    """Heads by decreasing feature norm: [{"layer", "head", "norm", "rank"}, ...]."""
    n_layers, n_heads = norms.shape
    order = torch.argsort(norms.flatten(), descending=True)
    out = []
    for rank, idx in enumerate(order.tolist()[: top or len(order)]):
        out.append({"rank": rank + 1, "layer": idx // n_heads, "head": idx % n_heads,
                    "norm": float(norms.flatten()[idx])})  # fmt: skip
    return out


def cosine(Y1: torch.Tensor, Y2: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last axis."""
    return (Y1 * Y2).sum(-1) / (Y1.norm(dim=-1) * Y2.norm(dim=-1)).clamp_min(EPS)


def coupling(Y1: torch.Tensor, Y2: torch.Tensor) -> torch.Tensor:
    """C(y1, y2) = y1 · y2 / ‖y1‖² over the last axis: E[x · y2 | x · y1 = 1]."""
    return (Y1 * Y2).sum(-1) / Y1.pow(2).sum(-1).clamp_min(EPS)


def theorem2_bounds(y1: torch.Tensor, y2: torch.Tensor, s, k) -> dict[str, torch.Tensor]:
    """Range and mean of x · y2 for x uniform on {‖x‖ = s, x · y1 = k} (Theorem 2).

    Returns {"low", "high", "mean"} (tensors over any leading axes of y1, y2); needs
    |k| ≤ s ‖y1‖ (otherwise the set is empty and a ValueError is raised).
    """
    n1, n2 = y1.norm(dim=-1), y2.norm(dim=-1)
    cos = cosine(y1, y2)
    sin = (1 - cos.pow(2)).clamp_min(0).sqrt()
    s, k = torch.as_tensor(s, dtype=n1.dtype), torch.as_tensor(k, dtype=n1.dtype)
    radicand = s.pow(2) * n1.pow(2) - k.pow(2)
    if bool((radicand < -1e-6 * (s.pow(2) * n1.pow(2)).clamp_min(EPS)).any()):
        raise ValueError("theorem2_bounds: |k| > s‖y1‖, no x has ‖x‖ = s and x · y1 = k")
    spread = sin * radicand.clamp_min(0).sqrt()
    ratio = n2 / n1.clamp_min(EPS)
    return {"low": ratio * (k * cos - spread), "high": ratio * (k * cos + spread), "mean": k * coupling(y1, y2)}


# -- SVD --------------------------------------------------------------------------------
def ov_svd(model, ln_mode: str = "ignore") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of every head's (effective) W_OV, without forming [d, d] matrices.

    The effective matrix is W_OV = W_V W_O in "ignore" mode and P diag(w_1) W_V W_O
    otherwise (the map from the normalised input x̂ that `input_space="normalized"`
    features refer to). Returns U [L, H, d, d_head] (input-side singular vectors, as
    columns: the ones feature vectors are compared with), S [L, H, d_head] (descending),
    Vh [L, H, d_head, d] (output side, rows).
    """
    W_V = effective_W_V(model, ln_mode)
    W_O = model.W_O.detach().float()
    Qa, Ra = torch.linalg.qr(W_V)  # W_V = Qa Ra, Qa [L,H,d,dh]
    Qb, Rb = torch.linalg.qr(W_O.transpose(-1, -2))  # W_Oᵀ = Qb Rb
    Us, S, Vhs = torch.linalg.svd(Ra @ Rb.transpose(-1, -2))
    return Qa @ Us, S, Vhs @ Qb.transpose(-1, -2)


def svd_comparison(model, Y: torch.Tensor, ln_mode: str = "ignore", top: int = 5) -> dict:
    """Cosines of each head's feature y [L, H, d] with its W_OV's input singular vectors.

    Returns {"cos_top": [L, H, top] cosines with the `top` largest singular directions,
    "singular_values": [L, H, top], "best_index", "best_abs_cos": [L, H] (the singular
    direction most aligned with y, by |cos|), "cos_all": [L, H, d_head]}.
    """
    U, S, _ = ov_svd(model, ln_mode)
    cos_all = torch.einsum("lhdk,lhd->lhk", U, Y) / Y.norm(dim=-1, keepdim=True).clamp_min(EPS)
    best = cos_all.abs().max(-1)
    return {
        "cos_all": cos_all,
        "cos_top": cos_all[..., :top],
        "singular_values": S[..., :top],
        "best_index": best.indices,
        "best_abs_cos": best.values,
    }


# -- data: direct attributions -------------------------------------------------------------
@torch.no_grad()
def head_attributions(model, observable: Observable, input_ids, attention_mask=None, last_index=None,
                      batch_size: int = 64) -> torch.Tensor:  # fmt: skip
    """Each head's direct contribution to n · logits at each prompt's last position, [N, L, H].

    o_h = z_h W_O^h (without b_O), through ln_final with its scale frozen at the clean
    value (P o_h / s_f ⊙ w_f), then W_U and n: what the data says, to compare with the
    data-free feature norms.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if last_index is None:
        last_index = attention_mask.sum(1) - 1
    n_layers = model.cfg.n_layers
    names = {hook("z", l) for l in range(n_layers)} | {hook("ln_final_scale")}
    device = model.W_U.device
    u = observable.direction(model)
    w_f = ln_weight(model, "ln_final").to(device) if has_norm(model) else torch.ones_like(u)
    W_O = model.W_O.detach().float()
    out = []
    for start in range(0, len(input_ids), batch_size):
        sl = slice(start, start + batch_size)
        ids, mask = input_ids[sl].to(device), attention_mask[sl].to(device)
        kwargs = {} if bool(mask.all()) else {"attention_mask": mask}
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names, **kwargs)
        rows, last = torch.arange(len(ids), device=device), last_index[sl].to(device)
        z = torch.stack([cache[hook("z", l)][rows, last] for l in range(n_layers)], 1)  # [B,L,H,dh]
        o = torch.einsum("blhe,lhed->blhd", z.float(), W_O)
        if has_norm(model):
            scale = cache[hook("ln_final_scale")][rows, last].float().view(-1, 1, 1, 1)
            o = center(o, is_centering(model)) / scale * w_f
        out.append((o @ u).cpu())
    return torch.cat(out)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equally shaped tensors (no ties expected)."""
    ra = torch.argsort(torch.argsort(a.flatten())).float()
    rb = torch.argsort(torch.argsort(b.flatten())).float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


# -- the whole report -------------------------------------------------------------------
def grid_list(t: torch.Tensor) -> list:
    return [[round(float(v), 6) for v in row] for row in t.detach().cpu()]


def _head_report(model, obs, ln_modes, data, top, svd_top) -> tuple[dict, dict[str, torch.Tensor]]:
    feats, rep = {}, {"observable": obs.to_dict(), "norm": {}, "ranking": {}}
    for mode in ln_modes:
        Y = head_features(model, obs, ln_mode=mode, data=data, input_space="normalized")
        feats[mode] = Y
        norms = feature_norms(Y)
        rep["norm"][mode] = grid_list(norms)
        rep["ranking"][mode] = rank_heads(norms, top)
    main = ln_modes[-1]
    svd = svd_comparison(model, feats[main], main, svd_top)
    rep["svd"] = {
        "ln_mode": main,
        "best_abs_cos": grid_list(svd["best_abs_cos"]),
        "best_index": [[int(v) for v in row] for row in svd["best_index"]],
        "top_heads": [
            {
                "layer": h["layer"], "head": h["head"],
                "singular_values": [round(float(v), 6) for v in svd["singular_values"][h["layer"], h["head"]]],
                "cos_top_singular": [round(float(v), 6) for v in svd["cos_top"][h["layer"], h["head"]]],
                "most_aligned": sorted(
                    ((int(i), round(float(c), 6)) for i, c in enumerate(svd["cos_all"][h["layer"], h["head"]])),
                    key=lambda ic: -abs(ic[1]),
                )[:svd_top],
            }
            for h in rep["ranking"][main]
        ],  # fmt: skip
    }
    rep["residual_direction_norm"] = float(final_direction(model, obs, main, data).norm())
    return rep, feats


def analyze(
    model,
    observable: Observable,
    other: Observable | None = None,
    data: ActivationData | None = None,
    ln_modes: tuple[str, ...] | None = None,
    top: int = 5,
    svd_top: int = 5,
    mlp: bool = True,
) -> dict:
    """Feature norms, rankings, SVD comparison (and, with `other`, cosines, couplings
    and Theorem-2 bounds) for every head; MLP features when `data` is given.

    Head features refer to the normalised input x̂ of ln1 (`input_space="normalized"`,
    Dunefsky's ranking convention, see features.py); the last mode in `ln_modes`
    (default: ("ignore", "approximate") with data, ("ignore",) without) is the main one
    for rankings, pairs and SVD. Returns a JSON-ready dict plus "_tensors" (feature
    vectors, for plotting and tests), which `write_report` drops from the JSON.
    """
    if ln_modes is None:
        ln_modes = ("ignore", "approximate") if data is not None else ("ignore",)
    ln_modes = tuple(ln_modes)
    main = ln_modes[-1]
    report = _report_header(model.cfg, ln_modes)
    if data is not None:
        report["inverse_scales"] = {k: round(v, 6) for k, v in data.inv_scales.items()}
    observables = [observable] + ([other] if other is not None else [])
    if len({o.label for o in observables}) < len(observables):
        raise ValueError("the two observables need different labels")
    tensors: dict = {}
    report["observables"] = {}
    for obs in observables:
        rep, feats = _head_report(model, obs, ln_modes, data, top, svd_top)
        report["observables"][obs.label] = rep
        tensors[obs.label] = feats
        if mlp and data is not None:
            rep["mlp"], tensors[obs.label]["mlp"] = _mlp_report(model, obs, main, data)
    if other is not None:
        report["pair"] = _pair_report(model, observable, other, tensors, ln_modes, data, top)
    report["_tensors"] = tensors
    return report


def _report_header(cfg, ln_modes: tuple[str, ...]) -> dict:
    """The model, the LayerNorm modes and the conventions every number in the report follows."""
    main = ln_modes[-1]
    return {
        "model": {k: getattr(cfg, k) for k in ("model_name", "n_layers", "n_heads", "d_model", "d_head")},
        "ln_modes": list(ln_modes),
        "main_mode": main,
        "input_space": "normalized",
        "conventions": {
            "feature": "y = W_V W_O u with u = W_U n (row vectors: a head writes x W_V W_O); "
            "n · logits = x · y with attention patterns fixed",
            "layernorm": "ignore: LNs as identity; approximate: LN backward ≈ ρ P(w ⊙ y), ρ = mean 1/s over data, "
            "s = TransformerLens hook_scale = sqrt(var + eps); exact: autograd averaged over data",
            "ln_final": "u = ρ_f P(w_f ⊙ W_U n) in approximate mode (ρ_f at last positions); W_U n in ignore mode",
            "input_space": "head features refer to ln1's normalised input x̂ = P x / s (no 1/s of ln1), "
            "so norms compare across layers (Dunefsky §5.1.1)",
            "svd": "input-side singular vectors = columns of U in W_OV = U Σ Vh (left singular vectors of "
            "TransformerLens's row-convention W_OV = right singular vectors of Dunefsky's W_OVᵀ)",
            "coupling": "C(y1, y2) = y1·y2/‖y1‖² = E[x·y2 | x·y1 = 1]",
        },
    }


def _mlp_report(model, obs: Observable, main: str, data: ActivationData) -> tuple[dict, torch.Tensor]:
    """Per-layer MLP feature norms and GELU decision points; the features [n_layers, d_model]."""
    Ym, infos = mlp_features(model, obs, ln_mode=main, data=data, input_space="normalized")
    return {
        "norm": [round(float(v), 6) for v in Ym.norm(dim=-1)],
        "decision_value_abs": [abs(i.value) for i in infos],
        "decision_point": [i.decision_point for i in infos],
        "g_minus": [i.g_minus for i in infos],
        "g_plus": [i.g_plus for i in infos],
    }, Ym


def _pair_report(model, observable: Observable, other: Observable, tensors: dict, ln_modes, data, top: int) -> dict:
    """Cosines, couplings and Theorem-2 bounds between the two observables' head features."""
    main = ln_modes[-1]
    s = math.sqrt(model.cfg.d_model)
    a, b = observable.label, other.label
    pair: dict = {"first": a, "second": b, "cosine": {}, f"coupling {a} -> {b}": {}, f"coupling {b} -> {a}": {}}
    for mode in ln_modes:
        Y1, Y2 = tensors[a][mode], tensors[b][mode]
        pair["cosine"][mode] = grid_list(cosine(Y1, Y2))
        pair[f"coupling {a} -> {b}"][mode] = grid_list(coupling(Y1, Y2))
        pair[f"coupling {b} -> {a}"][mode] = grid_list(coupling(Y2, Y1))
    u1, u2 = observable.direction(model), other.direction(model)
    pair["cosine_of_W_U_n"] = float(cosine(u1, u2))  # is the head cosine more than the observables' own?
    uf1, uf2 = final_direction(model, observable, main, data), final_direction(model, other, main, data)
    pair["cosine_of_residual_directions"] = float(cosine(uf1, uf2))
    Y1, Y2 = tensors[a][main], tensors[b][main]
    # ‖x̂‖ = √d for the normalised input; k = ‖y1‖ is a one-σ value of x · y1 for
    # x ~ N(0, I) (E[(x · y1)²] = ‖y1‖²), a feasible and typical constraint.
    bounds = theorem2_bounds(Y1, Y2, s, Y1.norm(dim=-1))
    ranked = rank_heads(feature_norms(Y1), top)
    pair["top_heads"] = []
    for h in ranked:
        l, hh = h["layer"], h["head"]
        pair["top_heads"].append({
            "layer": l, "head": hh,
            f"norm {a}": round(float(Y1[l, hh].norm()), 6), f"norm {b}": round(float(Y2[l, hh].norm()), 6),
            "cosine": round(float(cosine(Y1[l, hh], Y2[l, hh])), 6),
            f"coupling {a} -> {b}": round(float(coupling(Y1[l, hh], Y2[l, hh])), 6),
            f"coupling {b} -> {a}": round(float(coupling(Y2[l, hh], Y1[l, hh])), 6),
            "theorem2 (s=sqrt(d), k=|y1|)": {key: round(float(v[l, hh]), 6) for key, v in bounds.items()},
        })  # fmt: skip
    return pair
