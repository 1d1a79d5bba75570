"""The adaptive sweeper against grids (issue 31): runs needed to reach a grid's test-front
hypervolume, wall times, and each trial's overhead over a grid run.

    OMP_NUM_THREADS=1 python benchmarks/sweeper.py [--seeds 0,1,2] [--trials 32] [--work DIR] [--quick]

On the toy world's CCC with ActivScalar (attnOut+mlpOut, all layers and positions, as
`experiment=paper_grid_small`), at reduced sizes so that the whole benchmark fits in about
half an hour on 2 CPU cores: 64 train / 32 val / 64 test prompts and 5 epochs per run
(`SIZES`). Every sweep is the real command line (`python train.py -m ...`, basic launcher,
one run at a time, one thread), timed from start to exit:

- grid_small: paper_grid_small's ActivScalar grid, lambda_f in {0, 0.1, 1} x lambda_m in
  {0, 0.01}, margin 1 (6 runs);
- grid_large: lambda_f in {0, 0.1, 0.3, 1} x lambda_m in {0, 0.001, 0.003, 0.01} x margin in
  {0.5, 1, 1.5, 2} (64 runs; grid_small's runs are among them);
- adaptive (`hydra/sweeper=pareto`, GPSampler, one trial at a time) on the box both grids
  span, lambda_f uniform(0, 1), lambda_m uniform(0, 0.01), margin uniform(0.5, 2), for
  `--trials` trials, with three objectives (effectiveness, faithfulness, minimality) and
  with two (effectiveness, faithfulness), once per sampler seed.

The training seed is the same for every run (the grids run once); the seeds are the
sampler's. Hypervolume (docs/sweeps.md): over the union U of all runs of one seed (both grids,
both adaptive sweeps), each objective normalised to [0, 1] (worst 0, best 1), reference point
the origin; on the test split (what "reaching the grid" is judged on) and on val. "Runs to
reach" a grid: the fewest adaptive trials, in order, whose test hypervolume is at least the
grid's (null: not within `--trials`).

Overhead per trial (`overhead`), from the sweeps' own log lines (millisecond stamps): within
an adaptive sweep, (run + driver) / run, where a run is a trial's start to its result told and
the driver's time is from there to the next trial's start (the sampler's ask, planning, the
launcher's set-up), medians; and, across sweeps, the median time between run starts over
the largest grid's (noisier: the shared machine's load changes between sweeps). Also the seconds of
running (from the first run's start) each adaptive sweep took to reach each grid, against
the grid's own. Writes `<--out>/sweeper.json` (benchmarks/results by default; `--quick`: tiny
sizes, one 2-run grid, 2 trials, one seed, `sweeper_quick.json`, numbers meaningless: each
sweep is a fresh process of about 5 s of imports, so every sweep left out saves that).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import write_results  # noqa: E402
from interventions.sweeps.pareto import DIRECTION, bounds, hypervolume, hypervolume_curve, normalize  # noqa: E402

SIZES = ["task.n_train=64", "task.n_val=32", "task.n_test=64", "trainer.max_epochs=5"]
QUICK_SIZES = ["task.n_train=16", "task.n_val=16", "task.n_test=16", "trainer.max_epochs=1"]
BASE = ["-m", "experiment=paper_grid_small", "intervention=activscalar", "logger=none",
        "trainer.enable_progress_bar=false"]  # fmt: skip
GRIDS = {
    "grid_small": [],  # the preset's own axes: lambda_f 0,0.1,1 x lambda_m 0,0.01
    "grid_large": ["objective.lambda_f=0,0.1,0.3,1", "objective.lambda_m=0,0.001,0.003,0.01",
                   "objective.margin=0.5,1,1.5,2"],
}  # fmt: skip
SPACE = ['hydra/sweeper=pareto', 'hydra.sweeper.space.objective.lambda_f="uniform(0,1)"',
         'hydra.sweeper.space.objective.lambda_m="uniform(0,0.01)"',
         'hydra.sweeper.space.objective.margin="uniform(0.5,2)"']  # fmt: skip
QUICK_GRIDS = {"grid_small": ["objective.lambda_f=0,1", "objective.lambda_m=0"]}
OBJECTIVES = {3: ("effectiveness", "faithfulness", "minimality"), 2: ("effectiveness", "faithfulness")}
# Hydra's line as each run starts, the sweeper's as it has told a trial's result, and the
# summary's once the runs are done (ms stamps)
EVENT = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[HYDRA\] (\t#\d+ : |trial \d+ \(run |sweep summary)")
KINDS = {"\t": "start", "t": "told", "s": "end"}


def run_sweep(name: str, args: list[str], work: Path) -> dict:
    """Run one sweep (unless `work/<name>` already holds its finished record): its folder,
    wall seconds and the start time of each of its runs."""
    folder, record, log = work / name, work / f"{name}.json", work / f"{name}.log"
    if record.exists():
        return {**json.loads(record.read_text()), "events": events(log.read_text())}
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true")
    argv = [sys.executable, "train.py", *args, f"hydra.sweep.dir={folder}"]
    print(f"== {name}: {' '.join(argv[1:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"error: {name} exited {result.returncode}; see {log}")
    out = {"folder": str(folder), "wall_s": round(seconds, 2)}
    record.write_text(json.dumps(out))
    print(f"   {seconds:.1f} s", flush=True)
    return {**out, "events": events(result.stdout)}


def events(log: str) -> list[tuple[float, str]]:
    """(time, "start" / "told" / "end") of each run's start, each trial's result told and the
    summary, in order."""
    found = []
    for match in filter(None, map(EVENT.match, log.splitlines())):
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        found.append((stamp, KINDS[match.group(2)[0]]))
    return found


def points(sweep: dict, split: str, names: tuple[str, ...]) -> list[tuple]:
    """Each run's objectives on `split`, in run order (trial order for an adaptive sweep;
    None for a run that did not finish)."""
    folder = Path(sweep["folder"])
    records = {r["run"]: r for r in json.loads((folder / "pareto.json").read_text())["runs"]}
    trials = folder / "trials.json"
    order = [row["run"] for row in json.loads(trials.read_text())["trials"]] if trials.exists() else list(records)
    out = []
    for run in order:
        record = records.get(run) or {}
        values = record.get(split) if record.get("status") == "finished" else None
        out.append(tuple(values.get(n) for n in names) if values else tuple(None for _ in names))
    return out


def compare(grids: dict, adaptive: dict[int, dict], split: str) -> dict:
    """Per objective count: each grid's hypervolume, the adaptive sweep's curve, and the runs it
    needed to reach each grid, normalised over the union of all of them."""
    out = {}
    for count, names in OBJECTIVES.items():
        directions = [DIRECTION[n] for n in names]
        sets = {**{g: points(s, split, names) for g, s in grids.items()},
                **{f"adaptive{c}": points(s, split, names) for c, s in adaptive.items()}}  # fmt: skip
        limits = bounds([p for values in sets.values() for p in values], directions)
        curve = hypervolume_curve(sets[f"adaptive{count}"], limits)
        hv = {g: hypervolume([normalize(p, limits) for p in sets[g]]) for g in grids}
        out[f"{count}_objectives"] = {
            "grid_hypervolume": {g: round(v, 4) for g, v in hv.items()},
            "adaptive_final": round(curve[-1], 4),
            "runs_to_reach": {g: next((n + 1 for n, v in enumerate(curve) if v >= hv[g]), None) for g in grids},
            "curve": [round(v, 4) for v in curve],
        }
    return out


def gaps(sweep: dict, first: str, then: str) -> list[float]:
    """Seconds from each event `first` to the next event `then` ("start" to "start": between
    consecutive run starts)."""
    found = [(t, k) for t, k in sweep["events"] if k in (first, then)]
    return [b - a for (a, k), (b, j) in zip(found, found[1:]) if k == first and j == then]


def overhead(grid: dict, adaptive: dict) -> dict:
    """Each trial's time over a run's, two ways. Within the adaptive sweep (the same machine
    load on both sides): a trial is its run (start to result told) plus the driver's time to
    the next run's start (the sampler's ask, planning, the launcher's set-up); `ratio` =
    (run + driver) / run, medians. Across sweeps (as noisy as the shared machine's load
    between them): the median seconds between run starts over the grid's, `ratio_to_grid`."""
    runs, drivers = gaps(adaptive, "start", "told"), gaps(adaptive, "told", "start")
    run_s, driver_s = statistics.median(runs), statistics.median(drivers)
    trial_s, grid_run_s = statistics.median(gaps(adaptive, "start", "start")), statistics.median(gaps(grid, "start", "start"))
    rows = json.loads((Path(adaptive["folder"]) / "trials.json").read_text())["trials"]
    asks = [r["ask_seconds"] for r in rows if r["ask_seconds"] is not None]
    return {"run_s": round(run_s, 3), "driver_s": round(driver_s, 3), "ratio": round((run_s + driver_s) / run_s, 4),
            "trial_s": round(trial_s, 3), "grid_run_s": round(grid_run_s, 3),
            "ratio_to_grid": round(trial_s / grid_run_s, 4), "median_ask_s": round(statistics.median(asks), 4),
            "ask_share": round(sum(asks) / (sum(runs) + sum(drivers)), 4)}  # fmt: skip


def running(sweep: dict, runs: int) -> float:
    """Seconds from the sweep's first run start to the end of its `runs`-th run (its result told
    for an adaptive sweep; the next run's start, or the summary, for a grid)."""
    found = sweep["events"]
    first = next(t for t, k in found if k == "start")
    ends = [t for t, k in found if k == "told"] or [t for t, k in found if k in ("start", "end")][1:]
    return ends[runs - 1] - first


def median_reach(values: list[int | None], trials: int) -> float | None:
    """The median over seeds, a seed that never reached counting as more than `trials`."""
    ranked = sorted(v if v is not None else trials + 1 for v in values)
    middle = statistics.median(ranked)
    return None if middle > trials else middle


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/sweeper.py")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--work", default=str(ROOT / "multirun" / "bench_sweeper"),
                        help="the sweeps' folders; a sweep already recorded there is not run again")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 trials, one seed: checks the command works")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")][:1 if args.quick else None]
    trials = 2 if args.quick else args.trials
    base = BASE + (QUICK_SIZES if args.quick else SIZES)
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    grids = {name: run_sweep(name, base + axes, work) for name, axes in (QUICK_GRIDS if args.quick else GRIDS).items()}
    largest = max(grids.values(), key=lambda sweep: len(gaps(sweep, "start", "start")))
    results, adaptive_sweeps = [], {}
    for seed in seeds:
        adaptive = {count: run_sweep(f"adaptive{count}_seed{seed}", base + SPACE + [
            f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.seed={seed}",
            f"hydra.sweeper.objectives=[{','.join(names)}]"], work) for count, names in OBJECTIVES.items()}  # fmt: skip
        adaptive_sweeps[seed] = adaptive
        results.append({"seed": seed, "test": compare(grids, adaptive, "test"), "val": compare(grids, adaptive, "val"),
                        "wall_s": {f"adaptive{c}": s["wall_s"] for c, s in adaptive.items()},
                        "overhead": {f"adaptive{c}": overhead(largest, s) for c, s in adaptive.items()}})  # fmt: skip
        print(json.dumps(results[-1]["test"], indent=None)[:600], flush=True)
    summary = {}
    for count in OBJECTIVES:
        key, name = f"{count}_objectives", f"adaptive{count}"
        summary[key] = {g: {"runs": len(gaps(grids[g], "start", "start")) + 1,
                            "median_runs_to_reach": median_reach([r["test"][key]["runs_to_reach"][g] for r in results], trials),
                            "per_seed": [r["test"][key]["runs_to_reach"][g] for r in results]} for g in grids}  # fmt: skip
        summary[key]["adaptive_wall_s"] = [r["wall_s"][name] for r in results]
        for measure, field in (("overhead_ratio", "ratio"), ("overhead_ratio_to_grid", "ratio_to_grid"),
                               ("ask_s", "median_ask_s")):  # fmt: skip
            summary[key][measure] = statistics.median(r["overhead"][name][field] for r in results)
        for g in grids:  # seconds of running (first run's start to the summary) until the grid's hypervolume
            summary[key][g]["grid_runs_s"] = round(running(grids[g], len(gaps(grids[g], "start", "start")) + 1), 1)
            summary[key][g]["adaptive_s_to_reach"] = [round(running(adaptive_sweeps[r["seed"]][count], n), 1) if n else None
                                                      for r in results for n in [r["test"][key]["runs_to_reach"][g]]]
    out = {"sizes": base, "trials": trials, "seeds": seeds, "space": SPACE[1:],
           "grids": QUICK_GRIDS if args.quick else GRIDS,
           "grid_wall_s": {g: s["wall_s"] for g, s in grids.items()}, "summary": summary, "per_seed": results}  # fmt: skip
    path = write_results(args.out, "sweeper_quick" if args.quick else "sweeper", out)
    print(json.dumps({"summary": summary, "grid_wall_s": out["grid_wall_s"]}, indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
