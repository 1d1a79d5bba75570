"""SteerVec geometry (paper Fig. 4, docs/method.md §5): how a learned vector changes the
activations it is added to, in norm and in direction, and how stable that is across seeds.

For a location (site, layer, position[, head]) with clean activation h (the frozen model,
no intervention anywhere) and learned vector v (β = +1):

    norm change       Δ‖·‖ = ‖h + v‖₂ − ‖h‖₂            mean over the prompts
    cosine distance   1 − cos(h, h + v)                  mean over the prompts

Seed consistency: train the same SteerVec with seeds 0..n−1, order the locations by each
quantity in every run, and average Kendall's τ (scipy.stats.kendalltau, τ-b) over all
pairs of runs. The paper (GPT2-XL, residPost, 5 runs) reports τ = 0.979 for the change
in norm and τ = 0.350 for the cosine distance: the runs agree on *where* the norm changes
but not on the direction the vectors take.

The paper's figure is titled "Abs. change in norm", so locations are ordered by the
magnitude |mean Δ‖·‖| for the norm τ (the signed ordering is reported too, as
`norm_signed`); the cosine distance is non-negative and is ordered as it is.

Head sites: for z and v every head is a location (norms over d_head); for o the vectors
of the heads add up in the attention output (see methods/steervec.py), so o locations are
(layer, position) of `hook_attn_out`, head "".

    python -m interventions geometry --task ccc --n-seeds 5 --epochs 25 --out DIR
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau

from interventions.io import save_figure, write_json
from interventions.reports.plots import plt
from interventions.models import model_device
from interventions.sites import HEAD_SITES
from interventions.methods.registry import intervention_spec
from interventions.spec import ObjectiveSpec, RunSpec, TrainedInterventionSpec
from interventions.training.train import train_intervention

QUANTITIES = ("norm_change", "cosine_distance")
PAPER_TAU = {"norm": 0.979, "direction": 0.350}
_LABELS = {"norm_change": "‖h+v‖ − ‖h‖", "cosine_distance": "1 − cos(h, h+v)"}


# -- data -----------------------------------------------------------------------------
def iter_batches(data):
    """A batch dict (input_ids [B, T], attention_mask [B, T], ...) or an iterable of them."""
    if isinstance(data, dict):
        yield data
    else:
        yield from data


def _forward(model, batch: dict, hooks: list) -> None:
    device = model_device(model)
    ids = batch["input_ids"].to(device)
    mask = batch.get("attention_mask")
    kwargs = {}
    if mask is not None and not bool(mask.all()):
        kwargs["attention_mask"] = mask.to(device)
    with model.hooks(fwd_hooks=hooks):
        model(ids, **kwargs)


# -- per-location geometry ------------------------------------------------------------
def location_list(method) -> list[dict]:
    """The locations of a SteerVec grid, in the order every per-location array uses:
    sites, then layers, then positions, then heads (z and v only)."""
    grid = method.grid
    tokens = grid.tokens or tuple(str(p) for p in grid.positions)
    rows = []
    for site in grid.sites:
        for layer in grid.layers:
            for i, pos in enumerate(grid.positions):
                heads = grid.head_indices if site in HEAD_SITES and site != "o" else ("",)
                for head in heads:
                    rows.append(dict(site=site, layer=layer, position=pos, token=tokens[i], head=head))
    return rows


@torch.no_grad()
def location_vectors(method) -> list[torch.Tensor]:
    """The learned vector of every location, in `location_list` order (o: the heads' sum)."""
    grid = method.grid
    vectors = []
    for site in grid.sites:
        for layer in grid.layers:
            p = method.param(site, layer).detach().float().cpu()
            if site == "o":
                p = p.sum(1)
            for i in range(len(grid.positions)):
                if site in HEAD_SITES and site != "o":
                    vectors.extend(p[i, j] for j in range(p.shape[1]))
                else:
                    vectors.append(p[i])
    return vectors


def vector_agreement(runs: list[list[torch.Tensor]]) -> list[float]:
    """Per location, the mean pairwise cosine similarity of the runs' vectors v."""
    out = []
    for vs in zip(*runs):
        cos = [float(F.cosine_similarity(a, b, dim=0, eps=1e-12)) for a, b in itertools.combinations(vs, 2)]
        out.append(float(np.mean(cos)))
    return out


@torch.no_grad()
def steervec_geometry(model, method, data) -> dict:
    """Mean norm change and cosine distance per location of a (trained) SteerVec.

    Args:
        model: the frozen TransformerBridge the vectors were trained on.
        method: a SteerVec (anything with `grid`, `delta(site, layer, h)`, `site_hook`).
        data: a batch dict or a loader of them (prompts of the trained length).

    Returns:
        {"locations": [{site, layer, position, token, head}], "norm_change": [float],
         "cosine_distance": [float], "n_prompts": int}; the lists follow `location_list`.
    """
    if getattr(method, "scalar", True) or not getattr(method, "position_tied", False):
        raise TypeError(f"SteerVec geometry needs a position-tied vector method, got {getattr(method, 'name', method)!r}")
    grid = method.grid
    sums: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    count = {"n": None}

    def capture(site, layer):
        def hook(h, hook=None):
            hv = h + method.delta(site, layer, h)  # β = +1
            d_norm = hv.norm(dim=-1) - h.norm(dim=-1)  # [B, pos(, heads)]
            cos_d = 1 - F.cosine_similarity(hv.double(), h.double(), dim=-1, eps=1e-12).to(h.dtype)
            mask = count["mask"].to(h.dtype).view(*count["mask"].shape, *([1] * (d_norm.dim() - 2)))
            acc = sums.setdefault((site, layer), {"norm_change": 0.0, "cosine_distance": 0.0})
            acc["norm_change"] = acc["norm_change"] + (d_norm * mask).sum(0).double()
            acc["cosine_distance"] = acc["cosine_distance"] + (cos_d * mask).sum(0).double()
            return h

        return hook

    n_prompts, mask_total = 0, None
    for batch in iter_batches(data):
        method.check_length(batch["input_ids"].shape[1])
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(batch["input_ids"])
        count["mask"] = mask.to(model_device(model))
        mask_total = count["mask"].sum(0).double() + (0 if mask_total is None else mask_total)
        n_prompts += batch["input_ids"].shape[0]
        hooks = [(method.site_hook(s, l, 0.0)[0], capture(s, l)) for s in grid.sites for l in grid.layers]
        _forward(model, batch, hooks)
    if n_prompts == 0:
        raise ValueError("no prompts given")

    pos_idx = torch.tensor(grid.positions)
    head_idx = torch.tensor(grid.head_indices)
    out = {q: [] for q in QUANTITIES}
    for site in grid.sites:
        for layer in grid.layers:
            for q in QUANTITIES:
                total = sums[(site, layer)][q]
                denom = mask_total.clamp_min(1).view(-1, *([1] * (total.dim() - 1)))
                mean = (total / denom).cpu()[pos_idx]  # [P(, heads)]
                if site in HEAD_SITES and site != "o":
                    mean = mean[:, head_idx]
                out[q].extend(float(x) for x in mean.reshape(-1))
    vector_norm = [float(v.norm()) for v in location_vectors(method)]
    return {"locations": location_list(method), **out, "vector_norm": vector_norm, "n_prompts": n_prompts}


# -- seed consistency -----------------------------------------------------------------
def pairwise_kendall(orderings) -> list[float]:
    """Kendall's τ-b of every pair of runs (i < j)."""
    arrays = [np.asarray(o, dtype=float) for o in orderings]
    if len(arrays) < 2:
        raise ValueError("seed consistency needs at least two runs")
    if len({len(a) for a in arrays}) != 1:
        raise ValueError("every run must score the same locations")
    taus = []
    for a, b in itertools.combinations(arrays, 2):
        tau = kendalltau(a, b).statistic
        taus.append(float("nan") if tau is None else float(tau))
    return taus


def seed_consistency(orderings) -> float:
    """Mean pairwise Kendall τ between the runs' orderings of the locations.

    Args:
        orderings: one sequence per run, all over the same locations in the same order:
            a score per location (the ordering is the one the scores induce; Kendall's τ
            only sees the order) or the ranks themselves.
    """
    taus = pairwise_kendall(orderings)
    finite = [t for t in taus if not math.isnan(t)]
    return float(np.mean(finite)) if finite else float("nan")


# -- the study ------------------------------------------------------------------------
def geometry_study(model, train, test=None, n_seeds: int = 5, data_split: str | None = None,
                   intervention: TrainedInterventionSpec | None = None, objective: ObjectiveSpec | None = None,
                   run: RunSpec | None = None) -> dict:  # fmt: skip
    """Train `n_seeds` SteerVecs (seeds 0..n−1) and compare their geometry.

    Args:
        model: a frozen TransformerBridge.
        train, test: `Task`s (`load_task`), prompts of one token length.
        n_seeds: number of runs.
        data_split: the split whose prompts the geometry averages over ("test" if a test
            task is given, else "train").
        intervention, objective, run: as for `train_intervention`; the method is always
            SteerVec and the seed the run index.

    Returns:
        {"locations": [...], "seeds": [...],
         "norm_change": {"per_seed": [[...]], "mean": [...], "std": [...]},
         "cosine_distance": {same},
         "vector_norm": {same, ‖v‖ per location},
         "kendall_tau": {"norm": τ (by |Δ‖·‖|), "direction": τ (cosine distance),
                         "norm_signed": τ (by signed Δ‖·‖), "pairs": {...}},
         "vector_cosine": {"per_location": mean pairwise cos(v_seed_i, v_seed_j), "mean"}
             (do the runs' vectors point the same way? the paper says they do not),
         "metrics": [per-seed effectiveness / flip accuracy on the data split],
         "data_split": str, "n_prompts": int}
    """
    if n_seeds < 2:
        raise ValueError("n_seeds must be at least 2 to compare runs")
    spec, run = replace(intervention or intervention_spec("steervec"), method="steervec"), run or RunSpec()
    split = data_split or ("test" if test is not None else "train")
    per_seed = {q: [] for q in (*QUANTITIES, "vector_norm")}
    vectors, metrics, locations, n_prompts = [], [], None, 0
    for seed in range(n_seeds):
        trained = train_intervention(model, train, test, intervention=spec, objective=objective, run=replace(run, seed=seed))
        loader = trained.datamodule.loader(split)
        geo = steervec_geometry(model, trained.method, loader)
        locations, n_prompts = geo["locations"], geo["n_prompts"]
        for q in per_seed:
            per_seed[q].append(geo[q])
        vectors.append(location_vectors(trained.method))
        m = trained.evaluate(split)
        metrics.append(
            {"seed": seed, "effectiveness": m["effectiveness"], "flip_accuracy": m["flip_accuracy"],
             "faithfulness": m["faithfulness"], "logit_diff": m["logit_diff"]}
        )  # fmt: skip
    result = {"locations": locations, "seeds": list(range(n_seeds)), "data_split": split, "n_prompts": n_prompts}
    for q in per_seed:
        arr = np.asarray(per_seed[q])
        result[q] = {"per_seed": arr.tolist(), "mean": arr.mean(0).tolist(), "std": arr.std(0).tolist()}
    agreement = vector_agreement(vectors)
    result["vector_cosine"] = {"per_location": agreement, "mean": float(np.mean(agreement))}
    norm_abs = [np.abs(np.asarray(v)) for v in per_seed["norm_change"]]
    result["kendall_tau"] = {
        "norm": seed_consistency(norm_abs),
        "direction": seed_consistency(per_seed["cosine_distance"]),
        "norm_signed": seed_consistency(per_seed["norm_change"]),
        "pairs": {
            "norm": pairwise_kendall(norm_abs),
            "direction": pairwise_kendall(per_seed["cosine_distance"]),
        },
    }
    result["metrics"] = metrics
    return result


# -- plots ----------------------------------------------------------------------------
def geometry_heatmap(locations: list[dict], values, quantity: str, title: str = ""):
    """Layer (x head) down, token position across, one panel per site."""
    values = np.asarray(values, dtype=float)
    sites = list(dict.fromkeys(r["site"] for r in locations))
    positions = sorted({r["position"] for r in locations})
    labels = {r["position"]: f"{r['position']}:{r['token']}" for r in locations}
    fig, axes = plt.subplots(
        1, len(sites), figsize=(max(4, 0.45 * len(positions) + 2) * len(sites), 4), squeeze=False
    )
    for ax, site in zip(axes[0], sites):
        idx = [i for i, r in enumerate(locations) if r["site"] == site]
        keys = sorted({(locations[i]["layer"], str(locations[i]["head"])) for i in idx})
        grid = np.full((len(keys), len(positions)), np.nan)
        for i in idx:
            r = locations[i]
            grid[keys.index((r["layer"], str(r["head"]))), positions.index(r["position"])] = values[i]
        finite = grid[np.isfinite(grid)]
        if quantity == "norm_change":
            limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
            cmap, vmin, vmax = "RdBu_r", -limit, limit
        else:
            vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            cmap, vmin = "viridis", 0.0
        image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(positions)), [labels[p] for p in positions], rotation=90, fontsize=8)
        ax.set_yticks(range(len(keys)), [f"L{l}" if h == "" else f"L{l}H{h}" for l, h in keys], fontsize=8)
        ax.set_title(site)
        fig.colorbar(image, ax=ax, label=_LABELS.get(quantity, quantity))
    fig.suptitle(title or quantity)
    fig.tight_layout()
    return fig


def write_geometry(out: str | Path, result: dict) -> list[Path]:
    """geometry.json and heatmaps (mean over seeds, and seed 0) of both quantities."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "geometry.json"]
    write_json(written[0], result)
    tau = result["kendall_tau"]
    n = len(result["seeds"])
    for q in QUANTITIES:
        which = "norm" if q == "norm_change" else "direction"
        for name, values, what in (
            (f"{q}.png", result[q]["mean"], f"mean over {n} seeds"),
            (f"{q}_seed{result['seeds'][0]}.png", result[q]["per_seed"][0], f"seed {result['seeds'][0]}"),
        ):
            title = f"SteerVec {_LABELS[q]} ({what}); Kendall τ over {n} seeds = {tau[which]:.3f}"
            save_figure(geometry_heatmap(result["locations"], values, q, title), out / name)
            written.append(out / name)
    return written


def tau_line(result: dict) -> str:
    tau = result["kendall_tau"]
    return f"norm τ = {tau['norm']:.3f}, direction τ = {tau['direction']:.3f}"
