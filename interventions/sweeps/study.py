"""The adaptive sweeper's optuna study: where it lives, its samplers, asking and telling
trials, and what it leaves at the sweep root.

The study is kept in the sweep folder, in optuna's journal file (`optuna.journal`: an
append-only log, no database server), so a relaunch of the same command loads it and goes
on. It records the objectives and the search space it was started with (a relaunch with
others is refused: its trials would mean something else) and, for fused jobs, which trials
each job trained (`fused_jobs`): trial n's run folder is `<n>/`, or `<job>/<k>/` for the
k-th setting of a fused job.

At the sweep root (`write_study_outputs`, from the sweep summary):
- `trials.json`: every trial (number, state, run, parameters, val and test objectives,
  seconds the sampler took to propose it) and the hypervolume after each trial, on val and
  on test (`sweeps.pareto`: normalised over this sweep's finished runs, docs/sweeps.md);
- `trials.md`: the same as a table;
- `hypervolume.png`: both curves.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from interventions.errors import ConfigError
from interventions.interrupts import deferred
from interventions.io import atomic_write_text, save_figure, write_json
from interventions.sweeps.jobs import run_dirs
from interventions.sweeps.pareto import DIRECTION, bounds, hypervolume_curve
from interventions.sweeps.plots import plot_hypervolume
from interventions.sweeps.space import SAMPLERS, Dimension, SweeperOptions

log = logging.getLogger(__name__)
JOURNAL_FILE = "optuna.journal"
STUDY_NAME = "pareto"
TRIALS_FILE = "trials.json"
TRIALS_TABLE = "trials.md"
HYPERVOLUME_PLOT = "hypervolume.png"
SPLITS = ("val", "test")  # the curves: val guided the search, test is what it is judged on

# optuna logs a line per trial and warns that multi-objective GPSampler and the journal file
# are experimental; the sweeper says what happened in its own lines.
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _storage(sweep_dir: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL_FILE)))


def distribution(dimension: Dimension):
    """The optuna distribution of one search dimension."""
    if dimension.kind == "choice":
        return CategoricalDistribution(dimension.choices)
    if dimension.kind == "int":
        return IntDistribution(dimension.low, dimension.high)
    return FloatDistribution(float(dimension.low), float(dimension.high), log=dimension.log)


def make_sampler(options: SweeperOptions, seed: int):
    """optuna's sampler by `options.sampler` (checked by `space.sweeper_options`), seeded with
    `seed` and given `sampler_options`."""
    return getattr(optuna.samplers, SAMPLERS[options.sampler])(seed=seed, **options.sampler_options)


def recorded(options: SweeperOptions) -> dict:
    """What a study records of the options it was started with (and a relaunch must match)."""
    return {"objectives": list(options.objectives), "space": {d.key: d.text() for d in options.space}}


def open_study(sweep_dir: Path, options: SweeperOptions) -> optuna.Study:
    """The sweep's study: loaded from `sweep_dir`'s journal, or created there.

    Raises ConfigError when the folder holds runs but no study (another sweep's: its folders
    would be taken by new trials), or a study of other objectives or another space.
    """
    journal = sweep_dir / JOURNAL_FILE
    if not journal.exists() and sweep_dir.is_dir() and run_dirs(sweep_dir):
        raise ConfigError(f"hydra.sweep.dir={sweep_dir} holds runs of a sweep without an adaptive study "
                          f"({JOURNAL_FILE}); choose another folder for hydra/sweeper=pareto")  # fmt: skip
    with deferred():  # a signal waits until the journal's lines are whole (and its lock released)
        study = optuna.create_study(storage=_storage(sweep_dir), study_name=STUDY_NAME, directions=options.directions,
                                    load_if_exists=True)  # fmt: skip
        wanted, found = recorded(options), study.user_attrs
        if not found.get("objectives"):
            for key, value in wanted.items():
                study.set_user_attr(key, value)
    if found.get("objectives"):
        for key in wanted:
            if found.get(key) != wanted[key]:
                raise ConfigError(f"hydra.sweep.dir={sweep_dir} holds a study of {key} {found.get(key)}, not "
                                  f"{wanted[key]}; relaunch it with the same hydra.sweeper.{key}, or choose "
                                  "another folder")  # fmt: skip
    # a relaunch draws other random points than the first launch did: seeded by the trials so far
    study.sampler = make_sampler(options, options.seed + len(study.get_trials(deepcopy=False)))
    return study


def load_study(sweep_dir: Path) -> optuna.Study | None:
    """The study of an adaptive sweep's folder (None for any other sweep)."""
    if not (sweep_dir / JOURNAL_FILE).exists():
        return None
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=_storage(sweep_dir))
    except KeyError:  # a journal written before its study was (a launch killed at once)
        return None


def ask(study: optuna.Study, space: tuple[Dimension, ...], count: int) -> list[optuna.trial.Trial]:
    """`count` new trials, each with the seconds the sampler took to propose it."""
    distributions = {d.key: distribution(d) for d in space}
    trials = []
    for _ in range(count):
        with deferred():  # the journal's lines whole; a signal stops the sweep after this trial is asked
            started = time.perf_counter()
            trial = study.ask(distributions)
            trial.set_user_attr("ask_seconds", round(time.perf_counter() - started, 4))
        trials.append(trial)
    return trials


def stale_trials(study: optuna.Study) -> list:
    """Trials a killed launch left running: a relaunch runs them again in their own folders."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def fused_jobs(study: optuna.Study) -> dict[int, list[int]]:
    """{job number: the trial numbers it trains, in setting order} of the fused jobs so far."""
    return {int(job): list(numbers) for job, numbers in (study.user_attrs.get("fused_jobs") or {}).items()}


def record_fused_jobs(study: optuna.Study, jobs: dict[int, list[int]]) -> None:
    with deferred():
        study.set_user_attr("fused_jobs", {str(job): numbers for job, numbers in {**fused_jobs(study), **jobs}.items()})


def run_names(study: optuna.Study) -> dict[int, str]:
    """Each trial's run folder name: "<n>", or "<job>/<k>" for a fused job's setting."""
    names = {t.number: str(t.number) for t in study.get_trials(deepcopy=False)}
    for job, numbers in fused_jobs(study).items():
        names.update({number: f"{job}/{k}" for k, number in enumerate(numbers)})
    return names


def tell(study: optuna.Study, number: int, values: list[float] | None) -> None:
    """Trial `number` complete with `values`, or failed (None)."""
    with deferred():
        if values is None:
            study.tell(number, state=TrialState.FAIL)
        else:
            study.tell(number, values)


# -- the study's files at the sweep root ---------------------------------------------------------


def _objectives(record: dict | None, split: str, objectives: list[str]) -> tuple | None:
    if not record or record.get("status") != "finished":
        return None
    values = record.get(split) or {}
    return tuple(values.get(name) for name in objectives)


def trial_rows(study: optuna.Study, records: list[dict]) -> list[dict]:
    """One row per trial, in trial order, joined with its run's record (`summary.collect_runs`)."""
    by_run, names = {r["run"]: r for r in records}, run_names(study)
    objectives = study.user_attrs.get("objectives") or []
    rows = []
    for trial in study.get_trials(deepcopy=False):
        record = by_run.get(names[trial.number])
        rows.append({
            "trial": trial.number, "state": trial.state.name, "run": names[trial.number], "params": trial.params,
            **{split: dict(zip(objectives, _objectives(record, split, objectives) or ())) or None for split in SPLITS},
            "status": (record or {}).get("status"), "error": (record or {}).get("error"),
            "ask_seconds": trial.user_attrs.get("ask_seconds"),
        })  # fmt: skip
    return rows


def curves(rows: list[dict], objectives: list[str]) -> dict[str, list[float]]:
    """The hypervolume after each trial, per split, normalised over the finished trials' runs."""
    directions = [DIRECTION[name] for name in objectives]
    out = {}
    for split in SPLITS:
        points = [tuple((row[split] or {}).get(name) for name in objectives) for row in rows]
        out[split] = [round(v, 6) for v in hypervolume_curve(points, bounds(points, directions))]
    return out


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("-" if value is None else str(value))


def markdown(rows: list[dict], objectives: list[str], hv: dict[str, list[float]]) -> str:
    keys = sorted({key for row in rows for key in row["params"]})
    head = ["trial", "run", "state", *keys, *(f"{s} {o}" for s in SPLITS for o in objectives), "HV val", "HV test",
            "ask s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows):
        cells = [row["trial"], row["run"], row["state"] if not row["error"] else f"{row['state']}: {row['error']}",
                 *(_short(row["params"].get(k)) for k in keys),
                 *(_short((row[s] or {}).get(o)) for s in SPLITS for o in objectives),
                 f"{hv['val'][i]:.4f}", f"{hv['test'][i]:.4f}", _short(row["ask_seconds"])]  # fmt: skip
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_study_outputs(sweep_dir: Path, records: list[dict]) -> dict | None:
    """trials.json, trials.md and hypervolume.png of an adaptive sweep (None for others):
    {"rows", "curves", "images"} for the summary's W&B run."""
    study = load_study(sweep_dir)
    if study is None:
        return None
    objectives = study.user_attrs.get("objectives") or []
    rows = trial_rows(study, records)
    hv = curves(rows, objectives)
    write_json(sweep_dir / TRIALS_FILE, {
        "objectives": objectives, "directions": [DIRECTION[o] for o in objectives],
        "space": study.user_attrs.get("space"), "hypervolume": hv, "trials": rows,
        "conventions": {"hypervolume": "after each trial (in trial order), of the finished runs so far; each "
                                       "objective normalised to [0, 1] over all finished runs of the sweep on that "
                                       "split (worst 0, best 1), reference point the origin",
                        "val": "the objectives the sampler was told", "test": "never shown to the sampler"},
    })  # fmt: skip
    atomic_write_text(sweep_dir / TRIALS_TABLE, f"# Trials ({', '.join(objectives)})\n\n{markdown(rows, objectives, hv)}")
    save_figure(plot_hypervolume(hv, f"Hypervolume after each trial ({', '.join(objectives)})"),
                sweep_dir / HYPERVOLUME_PLOT)  # fmt: skip
    return {"rows": rows, "curves": hv, "images": {"hypervolume": sweep_dir / HYPERVOLUME_PLOT}}
