"""Score every method's per-location map against every benchmark's truth (docs/circuits.md):

    python -m interventions circuits score --out DIR [--benchmarks ...] [--methods ...] [--seeds 5] [--quick]

For each benchmark and method, and each site set its granularities need (attnOut + mlpOut
for "site" and "position", z for "head"), the method is trained (or fitted) on the
benchmark's train split with each seed; its `localization_scores` become node scores
(`granularity.node_scores`) and are compared with the truth (`localization`). Training-free
methods that draw nothing at random (the patching baselines, DLA, DiffMean, PCA) are fitted
once: their seeds would repeat the same numbers. "random" draws i.i.d. uniform scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from interventions.circuits.benchmarks import Benchmark
from interventions.circuits.granularity import (GRANULARITIES, granularity, method_problem, node_scores, random_scores,
                                                 unreached_nodes)
from interventions.circuits.localization import METRICS, localization, mean_sd, roc_curve
from interventions.errors import ConfigError
from interventions.methods.registry import intervention_spec, method_class
from interventions.objective import Objective
from interventions.spec import RunSpec
from interventions.training.train import train_intervention

log = logging.getLogger(__name__)

RANDOM = "random"
METHODS = ("activscalar", "dynscalar", "steervec", "steervec_shared", "loreft", "activpatch", "attrpatch", "dla",
           "diffmean", "pca", "obsprop_steer", RANDOM)  # fmt: skip
QUICK = {"seeds": 2, "epochs": 4}


@dataclass
class Settings:
    """How each method is trained, the same for all: epochs, batch size, objective weights
    (the project's defaults: λ_F 0.1, λ_M 0, margin 1) and seeds. The compiled programs'
    few prompts (22 to 58 in train) get 50 epochs; the planted model's 256 get 10."""

    epochs: int = 50
    batch_size: int = 16
    lambda_f: float = 0.1
    lambda_m: float = 0.0
    margin: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs_for: dict = field(default_factory=lambda: {"planted_ioi": 10})  # per benchmark: its own epochs


def check_methods(names: list[str]) -> list[str]:
    """The names, each a method with a location score or "random"; else one ConfigError."""
    for name in names:
        if name != RANDOM and not method_class(name).localizes:
            allowed = ", ".join(n for n in METHODS if n == RANDOM or method_class(n).localizes)
            raise ConfigError(f"{name} has no score per location (it is fitted at one location it chooses); "
                              f"methods with one: {allowed}")  # fmt: skip
    return names


def check_granularities(names: list[str], methods: list[str]) -> list[str]:
    """The granularity names, each one that every named method has (before any model loads)."""
    for name in names:
        level = granularity(name)
        for method in methods:
            problem = None if method == RANDOM else method_problem(method, level)
            if problem:
                raise ConfigError(f"granularity {name!r}: {problem}; leave it out with --methods, or choose "
                                  f"--granularities from {', '.join(GRANULARITIES)}")  # fmt: skip
    return names


def _site_sets(levels: list[str], method: str) -> dict[tuple[str, ...], list[str]]:
    """Granularities grouped by the sites `method` is trained on for them: one training serves a group."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in levels:
        level = GRANULARITIES[name]
        groups.setdefault(level.sites if method == RANDOM else level.sites_for(method), []).append(name)
    return groups


def deterministic(name: str) -> bool:
    """A training-free method draws nothing at random: one fit stands for every seed."""
    return name != RANDOM and not method_class(name).trained


def fit_method(bench: Benchmark, name: str, sites: tuple[str, ...], seed: int, settings: Settings):
    """A method trained or fitted on the benchmark's train split on `sites` (all layers and positions)."""
    options = intervention_spec(name, sites=list(sites))
    objective = Objective(lambda_f=settings.lambda_f, lambda_m=settings.lambda_m, margin=settings.margin)
    run = RunSpec(epochs=settings.epochs_for.get(bench.name, settings.epochs), batch_size=settings.batch_size, seed=seed)
    trained = train_intervention(bench.model, bench.splits["train"], intervention=options, objective=objective, run=run)
    return trained.method


def score_benchmark(bench: Benchmark, methods: list[str], levels: list[str], settings: Settings) -> list[dict]:
    """One row per (method, granularity, seed): the node scores' localization metrics; a
    method without a granularity's scores gets a row with `skipped` (its reason)."""
    rows = []
    for name in methods:
        for sites, group in _site_sets([lv for lv in levels if lv in bench.truth], name).items():
            usable = []
            for level in group:
                problem = None if name == RANDOM else method_problem(name, GRANULARITIES[level])
                if problem:
                    rows.append({"benchmark": bench.name, "method": name, "granularity": level, "skipped": problem})
                else:
                    usable.append(level)
            if not usable:
                continue
            for seed in settings.seeds[:1] if deterministic(name) else settings.seeds:
                method = None if name == RANDOM else fit_method(bench, name, sites, seed, settings)
                for level in usable:
                    nodes = bench.nodes[level]
                    scores = random_scores(nodes, seed) if method is None else node_scores(method, GRANULARITIES[level])
                    truth = bench.truth[level]
                    row = {"benchmark": bench.name, "method": name, "granularity": level, "seed": seed,
                           **localization(scores, truth), "scores": scores}  # fmt: skip
                    row["roc"] = roc_curve(scores, truth)
                    if method is not None and (unreached := unreached_nodes(method, GRANULARITIES[level])) is not None:
                        row["unreached"] = unreached  # no gradient reached them: their score is their initial value
                        row["truth_unreached"] = [n for n in unreached if n in truth]
                    rows.append(row)
                    log.info("%s %s %s seed %d: AUROC %.3f", bench.name, name, level, seed, row["auroc"])
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean ± sd of each metric over seeds per (benchmark, method, granularity), in row order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["benchmark"], row["method"], row["granularity"]), []).append(row)
    summary = []
    for (bench, method, level), members in groups.items():
        entry = {"benchmark": bench, "method": method, "granularity": level}
        if "skipped" in members[0]:
            summary.append({**entry, "skipped": members[0]["skipped"]})
            continue
        entry["n_seeds"] = len(members)
        entry["deterministic"] = deterministic(method)
        for metric in METRICS:
            entry[f"{metric}_mean"], entry[f"{metric}_sd"] = mean_sd([m[metric] for m in members])
        if "truth_unreached" in members[0]:  # truth nodes no gradient reached, in any seed
            entry["truth_unreached"] = sorted({n for m in members for n in m["truth_unreached"]})
        summary.append(entry)
    return summary
