"""Ablating sets of nodes, and the check every benchmark's truth must pass (docs/method.md §13).

A node (`circuits.granularity`) is one or several activations: "attnOut_2" the attention
output of layer 2 at every position, "L1H3" head 3's z of layer 1 at every position,
"L0P4" layer 0's attention and MLP outputs at position 4. Ablating it replaces them with
zero, or with their mean over the benchmark's prompts (per position: the prompts have one
length).

The truth check: with every node of the truth set G ablated the mean logit difference
f_c − f_w keeps at most `DESTROYED` (10%) of the clean one, and with every node outside G
ablated it keeps at least `KEPT` (90%), for both kinds of ablation.
"""

from __future__ import annotations

import torch

from interventions.circuits.granularity import GRANULARITIES, Granularity
from interventions.forward import last_position_logits
from interventions.objective import logit_diff
from interventions.sites import hook_name

KINDS = ("zero", "mean")
DESTROYED, KEPT = 0.10, 0.90


def targets(node: str, level: Granularity) -> list[tuple[str, int | None, int | None]]:
    """The (hook name, position or None for all, head or None) a node stands for."""
    if level.name == "site":
        site, layer = node.rsplit("_", 1)
        return [(hook_name(site, int(layer)), None, None)]
    layer, rest = node[1:].split("H" if level.name == "head" else "P")
    if level.name == "head":
        return [(hook_name("z", int(layer)), None, int(rest))]
    return [(hook_name(site, int(layer)), int(rest), None) for site in level.sites]


@torch.no_grad()
def mean_activations(model, batch: dict, names: list[str]) -> dict[str, torch.Tensor]:
    """{hook name: the mean activation over the batch's prompts, [pos, ...]} (one prompt length)."""
    means = {}

    def keep(name):
        def hook(h, hook=None):
            means[name] = h.mean(0)
            return h

        return hook

    with model.hooks(fwd_hooks=[(name, keep(name)) for name in names]):
        model(batch["input_ids"])
    return means


def ablation_hooks(nodes, level: Granularity, kind: str, means: dict[str, torch.Tensor] | None = None,
                   order: torch.Tensor | None = None) -> list:  # fmt: skip
    """Forward hooks replacing every node of `nodes`: with zero ("zero"), with its mean
    ("mean": `means` from `mean_activations` over the same hook names, or, without them, the
    batch's own mean, held constant), or with another prompt's activation ("resample": row
    `order[i]` of the batch for row i)."""
    by_hook: dict[str, list[tuple[int | None, int | None]]] = {}
    for node in nodes:
        for name, position, head in targets(node, level):
            by_hook.setdefault(name, []).append((position, head))

    def replace(name, places):
        def hook(h, hook=None):
            source = {"zero": lambda: torch.zeros_like(h), "resample": lambda: h[order].detach(),
                      "mean": lambda: (means[name].to(h.dtype) if means is not None else h.mean(0).detach()).expand_as(h)}[kind]()  # fmt: skip
            h = h.clone()
            for position, head in places:
                index = (slice(None), slice(None) if position is None else position, *(() if head is None else (head,)))
                h[index] = source[index]
            return h

        return hook

    return [(name, replace(name, places)) for name, places in by_hook.items()]


@torch.no_grad()
def mean_logit_difference(model, batch: dict, fwd_hooks=()) -> float:
    """Mean f_c − f_w at the last position over the batch, with `fwd_hooks` active."""
    logits = last_position_logits(model, batch["input_ids"], batch.get("attention_mask"), batch["last_index"],
                                  fwd_hooks=list(fwd_hooks))  # fmt: skip
    return float(logit_diff(logits, batch["correct"], batch["wrong"]).mean())


def check_truth(model, batch: dict, truth: list[str], nodes: list[str], level: str) -> dict:
    """The ablation check of one truth set (module docstring) on `batch` (encoded prompts of one
    length): {"clean": LD, kind: {"truth_ablated": fraction of clean LD, "rest_ablated":
    fraction, "passed": bool}, "passed": all kinds passed, "alone": {node: {kind: fraction
    with that node alone ablated}}}."""
    level = GRANULARITIES[level]
    rest = [n for n in nodes if n not in set(truth)]
    names = sorted({name for node in nodes for name, _, _ in targets(node, level)})
    means = mean_activations(model, batch, names)
    clean = mean_logit_difference(model, batch)
    if not clean > 0:
        raise ValueError(f"the clean mean logit difference is {clean:.4g}: the model does not do the task on this data")
    report: dict = {"clean": clean, "n_prompts": int(len(batch["input_ids"])), "truth": list(truth)}
    for kind in KINDS:
        ablated = mean_logit_difference(model, batch, ablation_hooks(truth, level, kind, means)) / clean
        kept = mean_logit_difference(model, batch, ablation_hooks(rest, level, kind, means)) / clean
        report[kind] = {"truth_ablated": ablated, "rest_ablated": kept, "passed": bool(ablated <= DESTROYED and kept >= KEPT)}
    report["passed"] = all(report[kind]["passed"] for kind in KINDS)
    # each truth node alone: a node whose ablation alone changes nothing is still in the truth
    # when the set needs it (a constant the circuit computes, which mean ablation restores)
    report["alone"] = {node: {kind: mean_logit_difference(model, batch, ablation_hooks([node], level, kind, means)) / clean
                              for kind in KINDS} for node in truth}  # fmt: skip
    return report


def unneeded(model, batch: dict, truth: list[str], nodes: list[str], level: str) -> list[str]:
    """The truth nodes the data never need: taken out one at a time (in order), a node is
    dropped when ablating it together with every node outside the truth still keeps at least
    `KEPT` of the clean logit difference, under zero and under mean ablation."""
    level = GRANULARITIES[level]
    names = sorted({name for node in nodes for name, _, _ in targets(node, level)})
    means = mean_activations(model, batch, names)
    clean = mean_logit_difference(model, batch)
    kept, dropped = list(truth), []
    for node in truth:
        rest = [n for n in nodes if n not in set(kept) or n == node]
        if all(mean_logit_difference(model, batch, ablation_hooks(rest, level, kind, means)) / clean >= KEPT for kind in KINDS):
            kept.remove(node)
            dropped.append(node)
    return dropped
