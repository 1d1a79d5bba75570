"""The adaptive multi-objective sweeper (`hydra/sweeper=pareto`): optuna proposes each batch
of runs from the runs so far, instead of a grid's fixed list.

    python train.py -m hydra/sweeper=pareto hydra.sweep.dir=multirun/pareto     # 32 trials, GPSampler
    python train.py -m hydra/sweeper=pareto hydra.sweeper.sampler=tpe hydra.sweeper.n_trials=64
    python train.py -m hydra/sweeper=pareto hydra/launcher=parallel             # 2 trials at a time
    python train.py -m hydra/sweeper=pareto hydra.sweeper.fused=true hydra.sweeper.n_jobs=8

The loop (that of Hydra's optuna sweeper, on current optuna): ask a batch of `n_jobs` trials,
launch them together with whichever launcher is configured (basic, joblib, SLURM), read each
run's objectives from its metrics.json's **val** split, and tell them; until the study holds
`n_trials`. The test split never reaches the sampler.

- Each trial is a run like a grid's (its folder `<trial number>/`, `sweep_job.json`,
  metrics.json, the export); a run that fails is recorded as in any sweep (error.txt, the
  sweep exits 1) and told to the sampler as failed. A job that does not come back (killed,
  interrupted) stops the sweep as it stops a grid, with a non-zero exit status.
- The study lives in the sweep folder (`sweeps.study`): relaunching the same command with
  the same `hydra.sweep.dir` goes on to `n_trials`. Finished trials are not run again; trials
  the killed launch left running are run again in their own folders, where a finished run
  is skipped (`sweeps.grid.unfinished_jobs`, `sweeps.jobs.run_job`), never overwritten.
- With `fused=true` the trials of a batch that differ only in `objective.*` keys train as
  one fused job (`fused=[{...}, ...]`, `runs.fused`): K settings in one pass. Job `<j>`
  (the number of its first trial) writes trial k's run into `<j>/<k>/`.
- Command-line overrides hold for every trial. One on a key of the space takes that key out
  of the search (as a command-line value replaces a grid's axis); a list of values
  (`intervention=activscalar,steervec`) becomes a choice to search.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from interventions.errors import ConfigError, InterventionsError
from interventions.interrupts import signal_first
from interventions.io import read_json
from interventions.rundir import METRICS_FILE, export_problem
from interventions.sweeps.grid import NUMBERED, launch_numbered, numbered_runs, unfinished_jobs
from interventions.sweeps.space import Dimension, SweeperOptions, format_value, override, sweeper_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One launched job: its number (its folder's name), overrides, and the (trial number,
    run folder name) of each trial it trains."""

    num: int
    overrides: list[str]
    runs: list[tuple[int, str]]


def is_objective_key(key: str) -> bool:
    """A key a fused job can vary per setting (`objective.lambda_f`, ...)."""
    return key.startswith("objective.") and key.count(".") == 1


def fused_override(settings: list[dict]) -> str:
    """`fused=[{lambda_f:0.1,margin:1.0},...]` in Hydra's grammar."""
    items = ("{" + ",".join(f"{key}:{format_value(value)}" for key, value in s.items()) + "}" for s in settings)
    return f"fused=[{','.join(items)}]"


def _fused_job(num: int, members: list[tuple[int, dict]], fixed: list[str]) -> Job:
    shared = [override(k, v) for k, v in members[0][1].items() if not is_objective_key(k)]
    settings = [{k.split(".", 1)[1]: v for k, v in params.items() if is_objective_key(k)} for _, params in members]
    return Job(num, [*fixed, *shared, fused_override(settings)], [(n, f"{num}/{k}") for k, (n, _) in enumerate(members)])


def plan_jobs(batch: dict[int, dict], params_of: dict[int, dict], fused_jobs: dict[int, list[int]],
              fixed: list[str], fused: bool) -> list[Job]:  # fmt: skip
    """The jobs that run `batch` ({trial number: its parameters}).

    One job per trial, or with `fused` one per group of trials whose parameters differ only
    in objective keys (numbered by its first trial). A trial of a fused job recorded before
    (`fused_jobs`: {job: trial numbers}, a launch killed midway) gets that job again with all
    its settings (`params_of` has every trial's), so that each keeps its folder: the job
    skips the finished ones.
    """
    job_of = {n: job for job, numbers in fused_jobs.items() for n in numbers}
    jobs = [_fused_job(job, [(n, params_of[n]) for n in fused_jobs[job]], fixed)
            for job in sorted({job_of[n] for n in batch if n in job_of})]  # fmt: skip
    fresh = [(n, params) for n, params in batch.items() if n not in job_of]
    if not fused:
        return jobs + [Job(n, [*fixed, *(override(k, v) for k, v in params.items())], [(n, str(n))])
                       for n, params in fresh]  # fmt: skip
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    for n, params in fresh:
        shared = tuple((k, format_value(v)) for k, v in sorted(params.items()) if not is_objective_key(k))
        groups.setdefault(shared, []).append((n, params))
    return jobs + [_fused_job(members[0][0], members, fixed) for members in groups.values()]


def command_line(arguments: list[str], options: SweeperOptions) -> tuple[SweeperOptions, list[str]]:
    """(the options with the command line's lists of values as choices and its fixed keys
    taken out of the space, the fixed overrides every trial gets)."""
    dimensions, fixed = {d.key: d for d in options.space}, []
    for text, parsed in zip(arguments, OverridesParser.create().parse_overrides(arguments)):
        key = parsed.key_or_group
        if key == "fused":
            raise ConfigError(f"{text!r}: with hydra/sweeper=pareto, fuse a batch's trials with hydra.sweeper.fused=true")
        if not parsed.is_sweep_override():
            fixed.append(text)
            dimensions.pop(key, None)
        elif isinstance(parsed.value(), ChoiceSweep):
            dimensions[key] = Dimension(key, "choice", choices=tuple(parsed.sweep_string_iterator()))
        else:
            raise ConfigError(f"{text!r}: hydra/sweeper=pareto takes a list of values (a,b,c) on the command line; "
                              f"give a range in its space, e.g. '+hydra.sweeper.space.{key}=\"uniform(0,1)\"'")  # fmt: skip
    if not dimensions:
        raise ConfigError("the command line fixes every key of hydra.sweeper.space: nothing is left to search")
    return replace(options, space=tuple(dimensions.values())), fixed


def trial_values(run_dir: Path, objectives: tuple[str, ...]) -> list[float] | None:
    """The objectives a finished run scored on the val split; None for a run that failed or
    did not finish (or whose objectives are not finite)."""
    metrics = read_json(run_dir / METRICS_FILE)
    if metrics is None or export_problem(run_dir) is not None:
        return None
    val = metrics.get("val")
    if not isinstance(val, dict):
        raise ConfigError(f"{run_dir / METRICS_FILE} has no val metrics: the adaptive sweeper is guided by the val "
                          "split, never by test; give the task one (task.n_val, or a val file)")  # fmt: skip
    values = [val.get(name) for name in objectives]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def launcher_jobs(config: DictConfig) -> int:
    """How many jobs the launcher runs at once, where it says (joblib's n_jobs), else 1."""
    jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    return jobs if isinstance(jobs, int) and jobs > 0 else 1


class AdaptiveSweeper(Sweeper):
    """Hydra's Sweeper interface around an optuna study (module docstring)."""

    def __init__(self, **config) -> None:
        config = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in config.items()}
        self.grid_axes = config.pop("params", None)  # an experiment preset's grid: not this sweeper's space
        self.options = sweeper_options(**config)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function,
                                                                config=config)  # fmt: skip

    def sweep(self, arguments: list[str]) -> list:
        # here: optuna and the summary's matplotlib (about 0.5 s) load for an adaptive sweep only,
        # not on every command line's start, where Hydra imports each sweeper plugin
        from interventions.sweeps import study as studies

        with signal_first(sweep_dir=Path(str(self.config.hydra.sweep.dir))):  # the entry point summarises it
            try:
                return self._sweep(studies, arguments)
            except InterventionsError as error:  # a mistake in the options or the data: one line, not a traceback
                log.error(f"error: {error}")
                raise SystemExit(error.exit_code) from None

    def _sweep(self, studies, arguments: list[str]) -> list:
        options, fixed = command_line(list(arguments), self.options)
        if not numbered_runs(self.config):
            raise ConfigError(f"hydra/sweeper=pareto names each run's folder by its trial: leave hydra.sweep.subdir at "
                              f"{NUMBERED}")  # fmt: skip
        if self.grid_axes:
            log.info("note: hydra.sweeper.params (a grid's axes, from an experiment preset) is not searched by "
                     "hydra/sweeper=pareto; its search space is hydra.sweeper.space")  # fmt: skip
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study = studies.open_study(sweep_dir, options)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        n_jobs = options.n_jobs or launcher_jobs(self.config)
        batch = studies.stale_trials(study)  # first, those a killed launch left running
        if batch:
            log.info(f"relaunch: running again the trials a killed launch left running: "
                     f"{', '.join(str(t.number) for t in batch)}")  # fmt: skip
        left = lambda: options.n_trials - len(study.get_trials(deepcopy=False))  # noqa: E731
        log.info(f"adaptive sweep: {options.sampler} sampler, {', '.join(options.objectives)} on val, "
                 f"{options.n_trials - left()} of {options.n_trials} trials so far, {n_jobs} at a time, in {sweep_dir}")  # fmt: skip
        returns = []
        while batch or left() > 0:
            batch = batch or studies.ask(study, options.space, min(n_jobs, left()))
            returns.append(self._run_batch(studies, study, batch, fixed, options, sweep_dir))
            batch = []
        return returns

    def _run_batch(self, studies, study, batch: list, fixed: list[str], options: SweeperOptions, sweep_dir: Path):
        """Launch `batch`'s trials as one batch of jobs and tell each its run's val objectives."""
        params_of = {t.number: t.params for t in study.get_trials(deepcopy=False)}
        known = studies.fused_jobs(study)
        jobs = plan_jobs({t.number: t.params for t in batch}, params_of, known, fixed, options.fused)
        if options.fused:
            studies.record_fused_jobs(study, {j.num: [n for n, _ in j.runs] for j in jobs if j.num not in known})
        pending = unfinished_jobs(self.hydra_context.config_loader, self.config, [(j.num, j.overrides) for j in jobs])
        results = launch_numbered(self.launcher, pending)
        for result in results:
            # a job that did not come back (killed, interrupted) stops the sweep as in the grid
            # sweeper: its trials stay running in the study, and a relaunch runs them again
            _ = result.return_value
        for job in jobs:
            for number, run in job.runs:
                values = trial_values(sweep_dir / run, options.objectives)
                studies.tell(study, number, values)
                if values is None:
                    log.info(f"trial {number} (run {run}) failed; told the sampler so (the run's error.txt says why)")
                else:
                    scores = ", ".join(f"{name} {value:.4g}" for name, value in zip(options.objectives, values))
                    log.info(f"trial {number} (run {run}): val {scores}")
        return results
