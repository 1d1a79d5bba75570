"""`python benchmarks/run.py steering`: the methods compared by their steering score (docs/method.md
§11) on the toy world's four tasks, hinge against preference objective for the trained ones.

1. Sites: each method's candidate sites are tried on CCC (seed 0, the hinge objective), and
   the one with the best validation score (at its own chosen |β|) is kept for every task.
2. Comparison: for each task, method and seed, the trained methods train the hinge and the
   preference objective together (`train_fused`, K = 2: the same data order and
   initialisation for both), the training-free ones fit; each is scored on test at the |β|
   its validation split chose.

Writes `<out>/steering.json` (every run, the sites chosen, the table's numbers, the goals and
the cost of scoring as a ratio of its generation time), `<out>/steering.md` (the table) and
the figure `docs/steering_comparison.png` (score against parameters). The sizes (`SIZES`:
fewer prompts and epochs than train.py's defaults, so that the whole comparison runs in
about an hour on 2 CPU cores) are recorded with the results. Each finished unit is written
at once, and a rerun with the same sizes skips the units already in the file.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from interventions.errors import NonFiniteError  # noqa: E402
from interventions.io import read_json, save_figure, write_json  # noqa: E402
from interventions.methods.registry import intervention_spec, method_class, method_label  # noqa: E402
from interventions.models import load_model  # noqa: E402
from interventions.objective import Objective  # noqa: E402
from interventions.spec import ObjectiveSpec, RunSpec, SteeringSpec, TaskSpec  # noqa: E402
from interventions.steering import steering_metrics  # noqa: E402
from interventions.tasks import load_splits  # noqa: E402
from interventions.tasks.datamodule import TaskDataModule  # noqa: E402
from interventions.training.fused import train_fused  # noqa: E402
from interventions.training.module import InterventionModule  # noqa: E402
from interventions.training.train import train_intervention  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "docs" / "steering_comparison.png"
# One template per task: position-tied methods need prompts of one length, and every method sees the same data.
# Pronouns' template 2 has the most validation prompts of its four (4; test 12); bias template 0: 4 and 10.
TASKS = {"ccc": 0, "ioi": 0, "pronouns": 2, "bias": 0}
TRAINED = ("activscalar", "dynscalar", "steervec", "steervec_shared", "loreft")
FITTED = ("obsprop_steer", "diffmean", "pca")
OBJECTIVES = {"hinge": ObjectiveSpec(), "preference": ObjectiveSpec(effectiveness="preference")}
# (sites, layers) tried per method in step 1
BLOCK_OUTPUTS, HEADS, RESIDUAL = (["attnOut", "mlpOut"], "all"), (["z"], "all"), (["residPost"], "all")
CANDIDATES = {
    **{name: [BLOCK_OUTPUTS, HEADS, RESIDUAL] for name in ("activscalar", "dynscalar", "steervec", "steervec_shared")},
    "loreft": [BLOCK_OUTPUTS, RESIDUAL],
    "obsprop_steer": [RESIDUAL],
    "diffmean": [RESIDUAL, (["residPost"], [1]), (["residPost"], [2])],
    "pca": [RESIDUAL, (["residPost"], [1]), (["residPost"], [2])],
}


@dataclass(frozen=True)
class Sizes:
    """How much the comparison runs (recorded with its results)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    n_train: int = 128
    n_val: int = 32
    n_test: int = 64
    # 600-800 optimizer steps per run (train.py's default: 1,600): 128 prompts × 25 epochs (CCC, IOI), 24-26 × 100
    epochs: dict = field(default_factory=lambda: {"ccc": 25, "ioi": 25, "pronouns": 100, "bias": 100})
    # |β| from 0.001: DiffMean's and PCA's scales are fitted to minimise E_0, which grows them to the grid's 10,000
    steering: dict = field(default_factory=lambda: dict(max_new_tokens=4, n_off_target=16,
                                                        betas=[0.001, 0.01, 0.1, 0.25, 0.5, 1.0, 2.0]))
    tasks: tuple[str, ...] = tuple(TASKS)
    methods: tuple[str, ...] = TRAINED + FITTED
    pilot: bool = True  # step 1; False: each method's first candidate sites


QUICK = Sizes(seeds=(0,), n_train=8, n_val=4, n_test=4, epochs={"ccc": 1}, steering=dict(max_new_tokens=2, n_off_target=2, betas=[1.0],
              curve=[-1.0, 0.0, 1.0]), tasks=("ccc",), methods=("activscalar", "diffmean"), pilot=False)  # fmt: skip


def unit_key(task: str, method: str, sites, layers, seed: int) -> str:
    return f"{task}|{method}|{','.join(sites)}|{layers}|{seed}"


def scored_unit(model, task: str, method: str, sites, layers, seed: int, size: Sizes) -> list[dict]:
    """Train (both objectives) or fit `method` on `task` and score each result: one record per
    objective (training-free: one, objective "fitted")."""
    cls = method_class(method)
    tied = cls.tied_to_positions(intervention_spec(method, sites=sites, layers=layers))
    spec = TaskSpec(name=task, template=TASKS[task], n_train=size.n_train, n_val=size.n_val, n_test=size.n_test)
    tasks = load_splits(spec, model, seed, fixed_length=tied)
    options = intervention_spec(method, sites=sites, layers=layers)
    run = RunSpec(epochs=size.epochs[task], seed=seed)
    started = time.perf_counter()
    if cls.trained:
        results = dict(zip(OBJECTIVES, train_fused(model, tasks["train"], list(OBJECTIVES.values()), options, run)))
    else:
        results = {"fitted": train_intervention(model, tasks["train"], intervention=options, run=run).method}
    train_seconds = time.perf_counter() - started
    dm = TaskDataModule(model, None, None, tasks["test"], fixed_length=tied)  # the logit differences read test only
    dm.setup()
    steering = SteeringSpec(**size.steering)
    records = []
    for objective, method_or_error in results.items():
        record = {"task": task, "template": TASKS[task], "method": method, "sites": list(sites), "layers": layers,
                  "seed": seed, "objective": objective, "train_seconds": round(train_seconds, 2)}  # fmt: skip
        if isinstance(method_or_error, NonFiniteError):
            records.append({**record, "error": str(method_or_error)})
            continue
        module = InterventionModule(model, method_or_error, Objective())
        clock: dict = {}
        found = steering_metrics(module, tasks["val"], tasks["test"], dm.datasets["test"], steering, seed, clock=clock)
        records.append({**record, "n_params": method_or_error.n_params, "score": found["steering_score"],
                        **found["steering"], "clock": clock})  # fmt: skip
    return records


def best_sites(records: list[dict]) -> dict[str, tuple]:
    """{method: (sites, layers)} with the best validation score of step 1 (its chosen |β|'s)."""
    best = {}
    for r in records:
        value = max(r["selection"].values()) if "selection" in r else -1.0
        if r["method"] not in best or value > best[r["method"]][0]:
            best[r["method"]] = (value, (r["sites"], r["layers"]))
    return {method: sites for method, (_, sites) in best.items()}


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: list[dict]) -> list[dict]:
    """One row per (method, objective, task): mean ± sd over seeds of the score and its parts."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if "score" in r:
            groups.setdefault((r["method"], r["objective"], r["task"]), []).append(r)
    rows = []
    for (method, objective, task), runs in groups.items():
        row = {"method": method, "objective": objective, "task": task, "seeds": len(runs), "n_params": runs[0]["n_params"],
               "sites": runs[0]["sites"], "layers": runs[0]["layers"]}  # fmt: skip
        for key in ("score", "score_pos", "score_neg", "wrong_way", "wrong_way_pos", "wrong_way_neg", "beta",
                    "success_pos", "success_neg", "fluency_pos", "fluency_neg", "off_target_pos", "off_target_neg",
                    "distinct_2_neg"):  # fmt: skip
            row[key], row[f"{key}_sd"] = mean_sd([r[key] for r in runs])
        rows.append(row)
    return rows


def goals(rows: list[dict], records: list[dict]) -> dict:
    """The issue's goals, measured: best learned / DiffMean on CCC, the best preference / hinge
    ratio (of the score, and of its direction towards w alone), the best method's wrong-way
    fraction on CCC, and scoring / generation time."""
    at = {(r["method"], r["objective"], r["task"]): r for r in rows}
    ccc = [r for r in rows if r["task"] == "ccc"]
    learned = max((r for r in ccc if r["objective"] != "fitted"), key=lambda r: r["score"], default=None)
    diffmean = at.get(("diffmean", "fitted", "ccc"))
    def over_hinge(key: str) -> list[tuple]:
        return [(at[(m, "preference", t)][key] / at[(m, "hinge", t)][key], m, t) for (m, o, t) in at
                if o == "hinge" and (m, "preference", t) in at and at[(m, "hinge", t)][key] > 0]  # fmt: skip

    best = max(ccc, key=lambda r: r["score"], default=None)
    clocks = [r["clock"] for r in records if "clock" in r]
    costs = [c["total"] / c["generation"] for c in clocks]  # each scoring's
    return {
        "best_learned_ccc": learned and {k: learned[k] for k in ("method", "objective", "score")},
        "diffmean_ccc": diffmean and diffmean["score"],
        "learned_over_diffmean_ccc": learned["score"] / diffmean["score"] if learned and diffmean and diffmean["score"] > 0 else None,
        "best_preference_over_hinge": max(over_hinge("score"), default=None),
        "best_preference_over_hinge_towards_w": max(over_hinge("score_neg"), default=None),  # β < 0 alone
        "best_ccc": best and {k: best[k] for k in ("method", "objective", "score", "wrong_way")},
        "scoring_over_generation": sum(c["total"] for c in clocks) / sum(c["generation"] for c in clocks) if clocks else None,
        "scoring_over_generation_range": [min(costs), statistics.median(costs), max(costs)] if clocks else None,
    }  # fmt: skip


def markdown(rows: list[dict], tasks) -> str:
    """Rows: method and objective; columns: the sites, parameters and each task's score, mean ± sd."""
    order = {name: k for k, name in enumerate(TRAINED + FITTED)}
    keys = sorted({(r["method"], r["objective"]) for r in rows}, key=lambda k: (order.get(k[0], 99), k[1]))
    at = {(r["method"], r["objective"], r["task"]): r for r in rows}
    head = ["method", "objective", "sites", "parameters (CCC)", *(f"{t}" for t in tasks), "CCC towards w (β < 0)",
            "CCC wrong way", "CCC β chosen (magnitude)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, objective in keys:
        first = next(at[(method, objective, t)] for t in tasks if (method, objective, t) in at)
        ccc = at.get((method, objective, "ccc"))
        cells = [method_label(method), objective, f"{'+'.join(first['sites'])} ({first['layers']})",
                 f"{ccc['n_params']:,}" if ccc else "-",
                 *(f"{at[(method, objective, t)]['score']:.3f} ± {at[(method, objective, t)]['score_sd']:.3f}"
                   if (method, objective, t) in at else "-" for t in tasks),
                 f"{ccc['score_neg']:.3f} ± {ccc['score_neg_sd']:.3f}" if ccc else "-",
                 f"{ccc['wrong_way']:.3f}" if ccc else "-", f"{ccc['beta']:.2g}" if ccc else "-"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], tasks, path: Path) -> None:
    """Score (mean ± sd over seeds) against the parameter count, one panel per task."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.8), sharey=True, squeeze=False)
    markers = {"hinge": "o", "preference": "s", "fitted": "^"}
    colours = {name: f"C{k}" for k, name in enumerate(TRAINED + FITTED)}
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            filled = r["objective"] != "preference"
            ax.errorbar(r["n_params"], r["score"], yerr=r["score_sd"], fmt=markers[r["objective"]], capsize=2,
                        color=colours.get(r["method"], "k"), mfc=colours.get(r["method"], "k") if filled else "white",
                        label=f"{method_label(r['method'])}, {r['objective']}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("parameters")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("steering score (test)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle("Steering score against parameters (toy world, mean ± sd over seeds; filled: hinge or fitted, open: "
                 "preference)")  # fmt: skip
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    save_figure(fig, path)


def bench_cost(model, rounds: int = 3, quick: bool = False) -> dict:
    """Scoring one run at steering_eval's defaults (SteeringSpec()) over the time it spends
    generating: ActivScalar on CCC's default sites, data and splits (val 42 prompts, test
    114), trained for one epoch; the median of `rounds` scorings (`quick`: tiny sizes)."""
    spec = TaskSpec(name="ccc", **(dict(n_train=8, n_val=4, n_test=4) if quick else {}))
    steering = SteeringSpec(**(dict(QUICK.steering) if quick else {}))
    tasks = load_splits(spec, model, 0, fixed_length=True)
    method = train_intervention(model, tasks["train"], intervention="activscalar", run=RunSpec(epochs=1)).method
    dm = TaskDataModule(model, None, None, tasks["test"], fixed_length=True)
    dm.setup()
    module, ratios, clocks = InterventionModule(model, method, Objective()), [], []
    for _ in range(rounds):
        clock: dict = {}
        steering_metrics(module, tasks["val"], tasks["test"], dm.datasets["test"], steering, clock=clock)
        clocks.append(clock)
        ratios.append(clock["total"] / clock["generation"])
    return {"case": f"ActivScalar on CCC (attnOut, mlpOut), val {len(tasks['val'])} and test {len(tasks['test'])} prompts, "
                    f"{'tiny sizes' if quick else 'steering_eval defaults'}", "scoring_over_generation": statistics.median(ratios),
            "per_round": ratios, "seconds": clocks}  # fmt: skip


def run_comparison(path: Path, size: Sizes = Sizes(), figure_path: Path = FIGURE, device: str = "cpu") -> dict:
    """Steps 1 and 2 of the module docstring; writes `path` (what it returns), the table beside
    it (.md) and the figure. Units already in `path` with the same sizes are not run again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_json(path) or {}
    done = previous.get("runs", {}) if previous.get("sizes") == json.loads(json.dumps(asdict(size))) else {}
    model = load_model("toy", device=device)[0]
    state = {"sizes": asdict(size), "runs": done}

    def unit(task, method, sites, layers, seed):
        key = unit_key(task, method, sites, layers, seed)
        if key not in state["runs"]:
            started = time.perf_counter()
            state["runs"][key] = scored_unit(model, task, method, sites, layers, seed, size)
            print(f"{key}: {[round(r.get('score', -1), 3) for r in state['runs'][key]]} ({time.perf_counter() - started:.1f} s)",
                  flush=True)  # fmt: skip
            write_json(path, state)
        return state["runs"][key]

    pilot = [r for method in size.methods for sites, layers in CANDIDATES[method][: None if size.pilot else 1]
             for r in unit("ccc", method, sites, layers, size.seeds[0]) if r["objective"] in ("hinge", "fitted")]  # fmt: skip
    chosen = best_sites(pilot)
    records = [r for task in size.tasks for method in size.methods for seed in size.seeds
               for r in unit(task, method, *chosen[method], seed)]  # fmt: skip
    rows = aggregate(records)
    state.update(sites={m: {"sites": s, "layers": l} for m, (s, l) in chosen.items()}, rows=rows,
                 goals=goals(rows, records), table=markdown(rows, size.tasks),
                 cost=bench_cost(model, rounds=1, quick=True) if size == QUICK else bench_cost(model))  # fmt: skip
    write_json(path, state)
    path.with_suffix(".md").write_text(state["table"])
    figure(rows, size.tasks, figure_path)
    return state
