"""Illusion diagnostics for vector interventions (docs/method.md §10; Makelov et al., seed 003).

A steering vector v at a site can change the output through a *dormant* direction: one
the downstream computation reads but that the site's activations never move along on the
data. Adding v then takes the activation off its data distribution, and the end-to-end
effect says little about what the component does on the task (the "MLP-in-the-middle"
illusion: the subspace intervention works although the whole component barely matters).

For every location (site, layer, position[, head]) where v ≠ 0 this module measures:

1. The activation span on the data. The clean activations X [n, D] at the location are
   collected; the span is  span{μ} + span{top principal components of X − μ}, where μ
   is the mean activation and the components are the fewest right singular vectors of
   the centered X (torch.linalg.svd) that cover `variance` (default 0.99) of its
   variance. Why mean + centered PCs rather than the top components of the uncentered X:
   without truncation both are exactly the linear span of the data (μ ∈ span X and
   span X ⊆ span{μ} + span(X − μ)), which is the subspace that matters here because
   ActivScalar's h(1+α) and every direction the data moves along stay inside it. With
   truncation, however, the uncentered SVD spends its 99% budget on the second moment,
   which a large constant offset dominates (residual streams, the BOS position): real
   data directions holding < 1% of ‖X‖² would be cut and a faithful v would look dormant.
   Keeping μ explicitly and truncating only the *variance* makes the threshold blind to
   the offset's size. μ is kept when its part outside the kept components holds more
   than 1 − variance of E‖x‖² (the budget the dropped components get), so a mean that is
   zero up to rounding does not add a random direction. A location where the data never
   varies (e.g. the first token) has span{μ} only: any other direction there is dormant
   by definition.
2. The fraction of ‖v‖² outside that span: ‖v_out‖² / ‖v‖², v_out = v − P_span v, next
   to what a random direction would give, 1 − dim(span)/D. With fewer prompts than
   dimensions the span is limited by the sample (the summary then carries a note).
3. The effect of v, of its in-span part v_in and of its out-of-span part v_out, each
   added alone as β·part at that location (β = ±1, every other location clean):
   effectiveness −E_0 and the mean logit difference f_c − f_w at β = ±1, and the
   steering effect S = mean over prompts of (LD(β=+1) − LD(β=−1)) / 2.
4. Component mean-ablation: the whole activation at the location replaced by μ (its mean
   over the same data); reported as the mean signed and the mean absolute per-prompt
   change of the logit difference. The absolute change is the one compared, so that a
   component that matters in both directions across prompts is not taken for unused.
5. The flag. A location is flagged when
       out_share = S(v_out) / S(v) ≥ out_share_threshold           (default 0.5)
   and
       ablation_ratio = mean |ΔLD under mean-ablation| / |S(v)| < ablation_fraction
                                                                    (default 0.25)
   i.e. at least half of the effect comes from outside the data's span, while the whole
   component matters little compared with the steering. Locations whose own steering
   effect is below `min_share` (default 0.1) of the whole intervention's effect are
   reported but never flagged (noise). The same test is applied to the whole
   intervention at once ("global": every location's parts together, every location
   mean-ablated together). The summary flag is raised if the global test or any
   location is flagged.

Inputs: a SteerVec (or a TrainedIntervention holding one), or a plain dict
{(site, layer): v} with v [seq_len, D] (residual sites) or [seq_len, n_heads, d_head]
(z, v), or [len(positions), ...] with `positions=` given, so that other vector
interventions (observable-propagation vectors, differences of means) can use it.
Sites: attnOut, mlpOut, residPost, z, v. Not o (its vectors are added to the attention
output; diagnose them at attnOut).

    report = diagnose_illusion(model, trained.method, trained.datamodule.loader("test"))
    print(format_illusion(report)); write_illusion("illusion.json", report)   # reports.illusion_files
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from interventions.forward import last_position_logits

from interventions.models import model_device
from interventions.objective import hinge_terms, logit_diff
from interventions.reports.span import activation_span, split_vector
from interventions.sites import HEAD_SITES, RESIDUAL_SITES, hook_name

SUPPORTED_SITES = (*RESIDUAL_SITES, "z", "v")
_NEEDED = ("input_ids", "correct", "wrong")


@dataclass
class _Loc:
    site: str
    layer: int
    position: int
    head: int | None
    v: torch.Tensor  # [D]
    token: str = ""

    @property
    def label(self) -> str:
        head = "" if self.head is None else f" H{self.head}"
        tok = f" ({self.token})" if self.token else ""
        return f"{self.site} L{self.layer}{head} pos {self.position}{tok}"

    def index(self):
        """Index of this location in an activation [batch, pos, ...] of its site."""
        return (slice(None), self.position) if self.head is None else (slice(None), self.position, self.head)


# -- inputs -----------------------------------------------------------------------------
def _merge_data(data, max_prompts: int | None) -> dict:
    """One batch dict from a batch dict or a loader; adds attention_mask / last_index."""
    batches = [data] if isinstance(data, dict) else list(data)
    if not batches:
        raise ValueError("no data given")
    for key in _NEEDED:
        if key not in batches[0]:
            raise ValueError(f"the data must carry {key!r} (batches from TaskDataModule / encode do)")
    widths = {b["input_ids"].shape[1] for b in batches}
    if len(widths) != 1:
        raise ValueError(f"prompts of several padded lengths {sorted(widths)}; give one length")
    keys = [k for k in ("input_ids", "attention_mask", "last_index", "correct", "wrong") if k in batches[0]]
    merged = {k: torch.cat([b[k] for b in batches]) for k in keys}
    if "attention_mask" not in merged:
        merged["attention_mask"] = torch.ones_like(merged["input_ids"])
    if "last_index" not in merged:
        merged["last_index"] = merged["attention_mask"].sum(1) - 1
    if max_prompts is not None:
        merged = {k: v[:max_prompts] for k, v in merged.items()}
    return merged


def _locations(method_or_vectors, seq_len: int, n_heads: int, positions=None, tokens=None) -> list[_Loc]:
    """Every (site, layer, position[, head]) with a non-zero vector."""
    obj = getattr(method_or_vectors, "method", method_or_vectors)  # TrainedIntervention
    if isinstance(obj, dict):
        items = []
        for key, v in obj.items():
            site, layer = key if isinstance(key, tuple) else (key.rsplit("_", 1)[0], int(key.rsplit("_", 1)[1]))
            v = torch.as_tensor(v).detach()
            pos = list(positions) if positions is not None else list(range(v.shape[0]))
            if len(pos) != v.shape[0]:
                raise ValueError(f"{site} L{layer}: {v.shape[0]} vectors for {len(pos)} positions")
            heads = list(range(n_heads)) if site in HEAD_SITES else None
            items.append((site, int(layer), pos, heads, v))
    else:
        if getattr(obj, "scalar", True) or not getattr(obj, "position_tied", False):
            raise TypeError(
                f"{getattr(obj, 'name', type(obj).__name__)!r} is not a position-tied vector "
                "intervention; pass a SteerVec or a dict {(site, layer): v [positions, D]}"
            )
        obj.check_length(seq_len)
        grid = obj.grid
        items = [
            (site, layer, list(grid.positions), list(grid.head_indices) if site in HEAD_SITES else None,
             obj.param(site, layer).detach())
            for site in grid.sites for layer in grid.layers
        ]  # fmt: skip
    locs = []
    for site, layer, pos, heads, v in items:
        if site not in SUPPORTED_SITES:
            raise ValueError(
                f"site {site!r} is not supported by the illusion diagnostic (supported: "
                f"{', '.join(SUPPORTED_SITES)}; o vectors act on the attention output: use attnOut)"
            )
        for i, p in enumerate(pos):
            if not 0 <= p < seq_len:
                raise ValueError(f"{site} L{layer}: position {p} outside the prompts' {seq_len} tokens")
            for j, head in enumerate(heads if heads is not None else [None]):
                vec = (v[i] if head is None else v[i, j]).float().cpu()
                if vec.dim() != 1:
                    raise ValueError(f"{site} L{layer}: expected one vector per location, got shape {tuple(vec.shape)}")
                if float(vec.norm()) == 0.0:
                    continue  # nothing is added here
                tok = tokens[p] if tokens is not None and p < len(tokens) else ""
                locs.append(_Loc(site, int(layer), int(p), head, vec, tok))
    if not locs:
        raise ValueError("every vector is zero: nothing to diagnose")
    return locs


# -- forwards ---------------------------------------------------------------------------
def _chunks(data: dict, size: int):
    n = data["input_ids"].shape[0]
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in data.items()}


@torch.no_grad()
def _collect(model, data: dict, names: list[tuple[str, int]], chunk: int):
    """Clean activations {(site, layer): [N, pos, ...]} (CPU) and clean logit diffs [N]."""
    acts = {key: [] for key in names}
    lds = []
    device = model_device(model)
    for batch in _chunks(data, chunk):
        batch = {k: v.to(device) for k, v in batch.items()}

        def capture(key):
            def hook(h, hook=None):
                acts[key].append(h.detach().float().cpu())
                return h

            return hook

        hooks = [(hook_name(s, l), capture((s, l))) for s, l in names]
        logits = last_position_logits(model, batch["input_ids"], batch["attention_mask"], batch["last_index"], hooks)
        lds.append(logit_diff(logits, batch["correct"], batch["wrong"]).double().cpu())
    return {k: torch.cat(v) for k, v in acts.items()}, torch.cat(lds)


def _add_hooks(parts: list[tuple[_Loc, torch.Tensor]], beta: torch.Tensor) -> list:
    """Hooks adding β·part at each location (β [batch])."""
    by_name: dict[str, list] = {}
    for loc, part in parts:
        by_name.setdefault(hook_name(loc.site, loc.layer), []).append((loc, part))
    hooks = []
    for name, items in by_name.items():

        def hook(h, hook=None, items=items):
            h = h.clone()
            b = beta.to(h.dtype).view(-1, *([1] * (h.dim() - 1)))
            delta = torch.zeros_like(h[:1])
            for loc, part in items:
                delta[loc.index()] += part.to(h.device, h.dtype)
            return h + b * delta

        hooks.append((name, hook))
    return hooks


def _ablate_hooks(locs: list[_Loc], means: list[torch.Tensor]) -> list:
    """Hooks replacing the activation at each location by its mean over the data."""
    by_name: dict[str, list] = {}
    for loc, mu in zip(locs, means):
        by_name.setdefault(hook_name(loc.site, loc.layer), []).append((loc, mu))
    hooks = []
    for name, items in by_name.items():

        def hook(h, hook=None, items=items):
            h = h.clone()
            for loc, mu in items:
                h[loc.index()] = mu.to(h.device, h.dtype)
            return h

        hooks.append((name, hook))
    return hooks


@torch.no_grad()
def _steering(model, data: dict, parts: list[tuple[_Loc, torch.Tensor]], chunk: int) -> dict:
    """−E_0, mean LD at β = ±1 and S = mean (LD⁺ − LD⁻)/2 with `parts` added (β = ±1)."""
    device = model_device(model)
    hinge, ld_pos, ld_neg = [], [], []
    for batch in _chunks(data, chunk):
        batch = {k: v.to(device) for k, v in batch.items()}
        b = batch["input_ids"].shape[0]
        beta = torch.tensor([1.0, -1.0], device=device).repeat_interleave(b)
        logits = last_position_logits(
            model, batch["input_ids"].repeat(2, 1), batch["attention_mask"].repeat(2, 1),
            batch["last_index"].repeat(2), _add_hooks(parts, beta),
        )  # fmt: skip
        lp, ln = logits.split(b)
        pos, neg = hinge_terms(lp, ln, batch["correct"], batch["wrong"], margin=0.0)
        hinge.append((pos + neg).double().cpu())
        ld_pos.append(logit_diff(lp, batch["correct"], batch["wrong"]).double().cpu())
        ld_neg.append(logit_diff(ln, batch["correct"], batch["wrong"]).double().cpu())
    ld_pos, ld_neg = torch.cat(ld_pos), torch.cat(ld_neg)
    return {
        "effectiveness": -float(torch.cat(hinge).mean()),
        "logit_diff": {"-1": float(ld_neg.mean()), "+1": float(ld_pos.mean())},
        "steering_effect": float(((ld_pos - ld_neg) / 2).mean()),
    }


@torch.no_grad()
def _ablation(model, data: dict, locs: list[_Loc], means: list[torch.Tensor], clean_ld: torch.Tensor, chunk: int) -> dict:
    device = model_device(model)
    lds = []
    for batch in _chunks(data, chunk):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = last_position_logits(
            model, batch["input_ids"], batch["attention_mask"], batch["last_index"], _ablate_hooks(locs, means)
        )
        lds.append(logit_diff(logits, batch["correct"], batch["wrong"]).double().cpu())
    change = torch.cat(lds) - clean_ld
    return {"mean_change": float(change.mean()), "mean_abs_change": float(change.abs().mean())}


# -- the diagnostic -----------------------------------------------------------------------
def _judge(entry: dict, out_share_threshold: float, ablation_fraction: float, considered: bool) -> None:
    s_full = entry["effect"]["full"]["steering_effect"]
    s_out = entry["effect"]["out_of_span"]["steering_effect"]
    tiny = abs(s_full) <= 1e-9
    entry["out_of_span_share"] = None if tiny else s_out / s_full
    entry["ablation_ratio"] = None if tiny else entry["ablation"]["mean_abs_change"] / abs(s_full)
    entry["considered"] = bool(considered and not tiny)
    entry["flag"] = bool(
        entry["considered"]
        and entry["out_of_span_share"] >= out_share_threshold
        and entry["ablation_ratio"] < ablation_fraction
    )


def diagnose_illusion(
    model,
    method_or_vectors,
    loader_or_batch,
    *,
    positions=None,
    variance: float = 0.99,
    out_share_threshold: float = 0.5,
    ablation_fraction: float = 0.25,
    min_share: float = 0.1,
    per_location: bool = True,
    max_prompts: int | None = None,
    chunk_size: int = 128,
) -> dict:
    """Span, steering and ablation diagnostics of a vector intervention (module docstring).

    Args:
        model: the frozen TransformerBridge.
        method_or_vectors: a SteerVec, a TrainedIntervention, or {(site, layer): v}.
        loader_or_batch: a batch dict or a loader of them (input_ids, correct, wrong;
            attention_mask and last_index when there is padding): the "data" whose
            activations define the span and the mean, and on which effects are measured.
        positions: with a dict, the positions its vectors' first axis refers to (default:
            every position of the prompts).
        variance: fraction of the centered activations' variance the PCs keep.
        out_share_threshold: flag when S(v_out)/S(v) is at least this...
        ablation_fraction: ...and mean |ΔLD| under mean-ablation is below this × |S(v)|.
        min_share: locations whose own |S(v)| is below this × |S| of the whole
            intervention are never flagged.
        per_location: also measure each location alone (4 forwards per location).
        max_prompts: use at most this many prompts.
        chunk_size: prompts per forward.

    Returns:
        A JSON-serialisable dict: "locations" (one entry per location, largest |S| first),
        "global" (the whole intervention), "summary" {flag, message, ...}, "thresholds".
    """
    data = _merge_data(loader_or_batch, max_prompts)
    locs = _labelled_locations(model, method_or_vectors, data, positions)
    names = list(dict.fromkeys((loc.site, loc.layer) for loc in locs))
    acts, clean_ld = _collect(model, data, names, chunk_size)
    entries, parts, means = _span_entries(locs, acts, data["attention_mask"].bool(), variance)

    def effect(indices: list[int]) -> dict:
        return {kind: _steering(model, data, [parts[kind][i] for i in indices], chunk_size) for kind in parts}

    everything = list(range(len(locs)))
    v_sqs = [float(loc.v.double().pow(2).sum()) for loc in locs]
    glob = {
        "n_locations": len(locs),
        "chance_out_of_span_fraction": sum(w * e["chance_out_of_span_fraction"] for w, e in zip(v_sqs, entries))
        / sum(v_sqs),
        "out_of_span_fraction": sum(float(p.double().pow(2).sum()) for _, p in parts["out_of_span"]) / sum(v_sqs),
        "effect": effect(everything),
        "ablation": _ablation(model, data, locs, means, clean_ld, chunk_size),
    }
    _judge(glob, out_share_threshold, ablation_fraction, considered=True)
    s_global = abs(glob["effect"]["full"]["steering_effect"])

    if per_location:
        for i, loc in enumerate(locs):
            e = entries[i]
            e["effect"] = effect([i])
            e["ablation"] = _ablation(model, data, [loc], [means[i]], clean_ld, chunk_size)
            own = abs(e["effect"]["full"]["steering_effect"])
            _judge(e, out_share_threshold, ablation_fraction, considered=own >= min_share * s_global)
        entries.sort(key=lambda e: -abs(e["effect"]["full"]["steering_effect"]))

    summary = _summary(locs, entries, glob, data, clean_ld)
    summary["message"] = _message(summary, glob, entries, out_share_threshold, ablation_fraction)
    return {
        "summary": summary,
        "global": glob,
        "locations": entries,
        "thresholds": {
            "variance": variance, "out_share_threshold": out_share_threshold,
            "ablation_fraction": ablation_fraction, "min_share": min_share,
        },  # fmt: skip
        "span": "span{mean} + top centered principal components covering `variance` of the variance",
    }


def _labelled_locations(model, method_or_vectors, data: dict, positions) -> list:
    """The intervention's locations, labelled with the grid's tokens when it has them,
    else with the first prompt's tokens."""
    try:
        tokens = [str(t) for t in model.to_str_tokens(data["input_ids"][0])]
    except Exception:  # noqa: BLE001  (labels only)
        tokens = None
    locs = _locations(method_or_vectors, data["input_ids"].shape[1], model.cfg.n_heads, positions, tokens)
    grid = getattr(getattr(method_or_vectors, "method", method_or_vectors), "grid", None)
    if getattr(grid, "tokens", None) is not None:
        labels = dict(zip(grid.positions, grid.tokens))
        for loc in locs:
            loc.token = labels.get(loc.position, loc.token)
    return locs


def _span_entries(locs: list, acts: dict, mask: torch.Tensor, variance: float) -> tuple[list, dict, list]:
    """Per location: the span of its activations (over the prompts where its position is
    real), its vector split into the in-span and out-of-span parts, and the mean activation.

    Returns (entries, {"full"|"in_span"|"out_of_span": [(loc, vector)]}, means [D] each).
    """
    entries, means = [], []
    parts = {"full": [], "in_span": [], "out_of_span": []}
    for loc in locs:
        x = acts[(loc.site, loc.layer)][loc.index()][mask[:, loc.position]]  # [n, D]
        basis = activation_span(x, variance)
        v_in, v_out = split_vector(loc.v, basis)
        means.append(x.double().mean(0).float())
        parts["full"].append((loc, loc.v))
        parts["in_span"].append((loc, v_in))
        parts["out_of_span"].append((loc, v_out))
        v_sq = float(loc.v.double().pow(2).sum())
        entries.append({
            "site": loc.site, "layer": loc.layer, "position": loc.position, "token": loc.token,
            "head": loc.head, "label": loc.label, "n_samples": int(x.shape[0]),
            "span_dim": int(basis.shape[0]), "v_norm": math.sqrt(v_sq),
            "out_of_span_fraction": float(v_out.double().pow(2).sum()) / v_sq,
            # what a random direction would score: E‖v_out‖²/‖v‖² = 1 − dim/D for isotropic v
            "chance_out_of_span_fraction": 1 - basis.shape[0] / loc.v.numel(),
        })  # fmt: skip
    return entries, parts, means


def _summary(locs: list, entries: list[dict], glob: dict, data: dict, clean_ld: torch.Tensor) -> dict:
    flagged = [e["label"] for e in entries if e.get("flag")]
    summary = {
        "flag": bool(glob["flag"] or flagged),
        "global_flag": glob["flag"],
        "n_locations": len(locs),
        "n_flagged": len(flagged),
        "flagged": flagged,
        "n_prompts": int(data["input_ids"].shape[0]),
        "clean_logit_diff": float(clean_ld.mean()),
    }
    dims = {loc.v.numel() for loc in locs}
    n_min = min(e["n_samples"] for e in entries)
    if n_min <= max(dims):
        summary["note"] = (
            f"only {n_min} prompts for {max(dims)}-dimensional activations: the span is limited by the "
            "sample, so out-of-span fractions are upper bounds (compare chance_out_of_span_fraction); "
            "give more prompts for a tighter span"
        )
    return summary


def fmt_number(x, spec=".2f") -> str:
    """A number for the report's lines, or n/a."""
    return "n/a" if x is None else format(x, spec)


def _message(summary, glob, entries, share_t, abl_t) -> str:
    if summary["flag"]:
        if summary["n_flagged"]:
            worst = next(e for e in entries if e.get("flag"))
            where = (
                f"{summary['n_flagged']} of {summary['n_locations']} locations (e.g. {worst['label']}: "
                f"{fmt_number(worst['out_of_span_share'], '.0%')} of its effect from outside the activation span, "
                f"mean-ablating the component moves the logit diff by {fmt_number(worst['ablation_ratio'])}x the steering effect)"
            )
        else:
            where = "the intervention as a whole"
        glob_part = (
            f"; whole intervention: {fmt_number(glob['out_of_span_share'], '.0%')} of the effect out of span, "
            f"ablation/steering {fmt_number(glob['ablation_ratio'])}"
        )
        return (
            f"ILLUSION WARNING: {where} steer mostly through directions the data never activates "
            f"(out-of-span share >= {share_t:g}) while the component itself matters little "
            f"(ablation < {abl_t:g}x the steering effect){glob_part}."
        )
    return (
        f"no illusion flagged: {fmt_number(glob['out_of_span_fraction'], '.0%')} of ‖v‖² lies outside the activation span, "
        f"its out-of-span part carries {fmt_number(glob['out_of_span_share'], '.0%')} of the steering effect, and "
        f"mean-ablating the components moves the logit diff by {fmt_number(glob['ablation_ratio'])}x the steering effect."
    )
