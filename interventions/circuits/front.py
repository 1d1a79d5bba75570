"""Localization along the Pareto front: ActivScalar trained with a grid of (λ_F, λ_M) on one
benchmark (all settings of a seed fused into one pass, `train_fused`), each run's node AUROC
next to its test effectiveness, faithfulness and minimality count. Which settings localize
best, and are the most minimal runs also the most correct? (docs/circuits.md)

    python -m interventions circuits front --benchmark planted_ioi --out DIR
"""

from __future__ import annotations

from itertools import product

from scipy import stats

from interventions.circuits.benchmarks import Benchmark
from interventions.circuits.granularity import GRANULARITIES, node_scores
from interventions.circuits.localization import localization
from interventions.circuits.study import Settings
from interventions.errors import NonFiniteError
from interventions.methods.registry import intervention_spec
from interventions.objective import Objective
from interventions.spec import ObjectiveSpec, RunSpec
from interventions.training.fused import train_fused
from interventions.training.module import InterventionModule
from interventions.training.setup import prepare
from interventions.training.train import TrainedIntervention

LAMBDA_F = (0.0, 0.1, 1.0)
LAMBDA_M = (0.0, 0.001, 0.01, 0.1)


def front_rows(bench: Benchmark, levels: list[str], lambda_f=LAMBDA_F, lambda_m=LAMBDA_M,
               settings: Settings | None = None) -> list[dict]:  # fmt: skip
    """One row per (seed, λ_F, λ_M): the objective, test metrics and each granularity's
    localization metrics; a setting that diverged has `failed` instead."""
    settings = settings or Settings()
    grid = list(product(lambda_f, lambda_m))
    objectives = [ObjectiveSpec(lambda_f=f, lambda_m=m, margin=settings.margin) for f, m in grid]
    by_sites: dict[tuple, list[str]] = {}
    for level in levels:
        by_sites.setdefault(GRANULARITIES[level].sites, []).append(level)
    rows = {}
    for seed in settings.seeds:
        run = RunSpec(epochs=settings.epochs_for.get(bench.name, settings.epochs), batch_size=settings.batch_size, seed=seed)
        for sites, group in by_sites.items():
            spec = intervention_spec("activscalar", sites=list(sites))
            methods = train_fused(bench.model, bench.splits["train"], objectives, spec, run)
            dm, _ = prepare(bench.model, bench.splits["train"], None, bench.splits["test"], spec, run)
            for (f, m), objective, method in zip(grid, objectives, methods):
                row = rows.setdefault((seed, f, m), {"seed": seed, "lambda_f": f, "lambda_m": m})
                if isinstance(method, NonFiniteError):
                    row["failed"] = str(method)
                    continue
                module = InterventionModule(bench.model, method, Objective(lambda_f=f, lambda_m=m, margin=objective.margin))
                metrics = TrainedIntervention(module, dm).evaluate("test")
                row.setdefault("test", {})[",".join(sites)] = {k: metrics[k] for k in ("effectiveness", "faithfulness",
                                                                                      "minimality", "flip_accuracy")}  # fmt: skip
                for level in group:
                    row[level] = localization(node_scores(method, GRANULARITIES[level]), bench.truth[level])
    return list(rows.values())


def front_summary(rows: list[dict], levels: list[str]) -> dict:
    """Per granularity: the setting with the best mean AUROC over seeds, and the Spearman
    correlation over runs between the minimality count (fewer: more minimal) and AUROC
    (negative: the more minimal runs localize better)."""
    summary = {}
    ok = [r for r in rows if "failed" not in r]
    for level in levels:
        by_setting: dict[tuple, list[float]] = {}
        for r in ok:
            by_setting.setdefault((r["lambda_f"], r["lambda_m"]), []).append(r[level]["auroc"])
        means = {k: sum(v) / len(v) for k, v in by_setting.items()}
        best = max(means, key=means.get)
        counts = [r["test"][",".join(GRANULARITIES[level].sites)]["minimality"] for r in ok]
        aurocs = [r[level]["auroc"] for r in ok]
        varied = len(set(counts)) > 1 and len(set(aurocs)) > 1  # a constant has no rank correlation
        rho = stats.spearmanr(counts, aurocs).statistic if varied else float("nan")
        summary[level] = {"best": {"lambda_f": best[0], "lambda_m": best[1], "auroc_mean": means[best]},
                          "mean_auroc": {f"{f},{m}": v for (f, m), v in means.items()},
                          "spearman_minimality_auroc": float(rho)}  # fmt: skip
    return summary
