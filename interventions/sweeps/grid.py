"""The grid sweeper (`hydra/sweeper=grid`, the default of train.py): Hydra's basic sweeper
(every combination of the values given, `hydra.sweeper.params`, batches of
`max_batch_size`) that leaves finished runs out before launching a batch.

Relaunched into the same `hydra.sweep.dir`, a sweep's finished runs (the same config and a
readable export: `sweeps.jobs.finished_as`) are skipped here, on the driver, with one line
each, instead of each getting a job of its own (a SLURM job, about 30 s of a CPU) only to
say so in that job's log. The runs that remain keep their numbers and folders: a job whose
number differs from its place in the launched batch gets `hydra.sweep.subdir=<number>`.
Each job still checks for itself (`sweeps.jobs.run_job`), so a sweep whose folders are not
numbered runs (a custom `hydra.sweep.subdir`) works as before.

Hydra finds sweepers only in its `hydra_plugins` namespace: `hydra_plugins/
interventions_sweepers` holds the class Hydra instantiates, a subclass of this one.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from interventions.interrupts import signal_first
from interventions.rundir import METRICS_FILE
from interventions.sweeps.jobs import finished_as, job_identity

log = logging.getLogger(__name__)
NUMBERED = "${hydra.job.num}"  # the default hydra.sweep.subdir: run folders named by their number


def numbered_runs(config: DictConfig) -> bool:
    """Whether a sweep's run folders are named by their job numbers (Hydra's default)."""
    return OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") == NUMBERED


def job_config(config_loader, master: DictConfig, overrides: Sequence[str], num: int) -> tuple[Path, dict | None]:
    """(run folder, config identity) of job `num` with `overrides`, composed as a launcher
    composes it (`load_sweep_config`) and resolved as the job will resolve it."""
    sweep_config = config_loader.load_sweep_config(master, list(overrides))
    run_dir = Path(str(master.hydra.sweep.dir)) / str(num)
    with open_dict(sweep_config):
        sweep_config.hydra.job.num = num
        sweep_config.hydra.job.id = f"job_id_for_{num}"
        sweep_config.hydra.runtime.output_dir = str(run_dir.absolute())
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(sweep_config)  # `${hydra:...}` in the job's keys resolves as in the job
    try:
        task = copy.deepcopy(sweep_config)
        with open_dict(task):
            del task["hydra"]
        if "run_dir" in task:
            run_dir = Path(str(task.run_dir))
        return run_dir, job_identity(task)
    except Exception:  # a key that does not resolve: the job itself records the failure
        return run_dir, None
    finally:
        HydraConfig.instance().cfg = previous


def pending_jobs(config_loader, master: DictConfig, batch: Sequence[Sequence[str]], first: int) -> list[tuple[int, list[str]]]:
    """(number, overrides) of each job of `batch` (numbered from `first`) that is not a
    finished run in its folder; each finished one is named in a log line."""
    return unfinished_jobs(config_loader, master, [(first + offset, list(o)) for offset, o in enumerate(batch)])


def unfinished_jobs(config_loader, master: DictConfig, jobs: Sequence[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
    """The jobs ((number, overrides)) that are not a finished run in their numbered folders;
    each finished one is named in a log line."""
    sweep_dir = Path(str(master.hydra.sweep.dir))
    pending = []
    for num, overrides in jobs:
        if (sweep_dir / str(num) / METRICS_FILE).exists():  # composing every job of a fresh sweep costs time
            run_dir, identity = job_config(config_loader, master, overrides, num)
            if finished_as(run_dir, identity):
                log.info(f"skipping run {num} ({' '.join(overrides) or 'defaults'}): already finished in {run_dir}")
                continue
        pending.append((num, list(overrides)))
    return pending


def launch_numbered(launcher, jobs: list[tuple[int, list[str]]]) -> list:
    """Launch `jobs` ((number, overrides)) as one batch, each in the folder of its own number."""
    if not jobs:
        return []
    first = jobs[0][0]
    batch = [overrides + ([f"hydra.sweep.subdir={num}"] if num != first + place else [])
             for place, (num, overrides) in enumerate(jobs)]  # fmt: skip
    return launcher.launch(batch, initial_job_idx=first)


class PendingOnly:
    """A launcher that launches only a batch's unfinished jobs (module docstring)."""

    def __init__(self, launcher, config_loader, config: DictConfig):
        self.launcher, self.config_loader, self.config = launcher, config_loader, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        pending = pending_jobs(self.config_loader, self.config, job_overrides, initial_job_idx)
        if len(pending) < len(job_overrides):
            log.info(f"launching {len(pending)} of {len(job_overrides)} runs; the others are finished")
        return launch_numbered(self.launcher, pending)


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper, finished runs left out on the driver (module docstring)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if numbered_runs(config):
            self.launcher = PendingOnly(self.launcher, hydra_context.config_loader, config)

    def sweep(self, arguments: list[str]) -> Any:
        with signal_first(sweep_dir=Path(str(self.config.hydra.sweep.dir))):  # the entry point summarises it
            return super().sweep(arguments)
