"""One training run from its composed config: train.py (`train_run`; with `fused`, the settings
are trained together by `runs.fused`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from interventions.loggers import finish
from interventions.methods.registry import configured, method_class
from interventions.models import load_model
from interventions.rundir import link_latest
from interventions.runs.fused import fused_run
from interventions.runs.record import run_logger, write_run
from interventions.spec import TrainConfig, to_spec
from interventions.sweeps.jobs import is_multirun
from interventions.tasks import load_splits
from interventions.threads import use_threads
from interventions.training.progress import ThrottledProgressBar, progress_callback
from interventions.training.train import train_intervention

log = logging.getLogger(__name__)


def trainer_arguments(config: TrainConfig, run_dir: Path) -> dict:
    """`lightning.Trainer`'s arguments: the config's trainer group, the run folder, and the
    command line's progress (a bar on a terminal, else a line per epoch)."""
    kwargs = dict(config.trainer)
    kwargs["default_root_dir"] = str(run_dir)
    if kwargs.get("enable_progress_bar", True):
        progress = progress_callback(f"{config.intervention.method} on {config.task.name}")
        kwargs["enable_progress_bar"] = isinstance(progress, ThrottledProgressBar)
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), progress]
    return kwargs


def train_run(cfg: DictConfig) -> dict:
    """Train one intervention as configured and write every file of the run; returns metrics.

    With `fused` (a list of objective settings) it trains them together instead
    (`runs.fused.fused_run`).
    """
    config = configured(to_spec(cfg))
    log.info("threads: %(threads)s (%(source)s)", use_threads(config.threads))
    if config.fused is not None:
        return fused_run(cfg, config)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(config.model.name, **config.model.load_options())[0]
    tied = method_class(config.intervention.method).tied_to_positions(config.intervention)
    tasks = load_splits(config.task, model, config.seed, fixed_length=tied)
    logger = run_logger(config.logger, cfg, run_dir, run_dir.name)
    try:
        started = time.perf_counter()  # after the model, data and logger are ready: training only
        trained = train_intervention(model, tasks["train"], tasks["test"], tasks["val"], intervention=config.intervention,
                                     objective=config.objective, run=config.run(), logger=logger,
                                     trainer_kwargs=trainer_arguments(config, run_dir))  # fmt: skip
        if trained.module.global_rank != 0:  # DDP (conf/trainer/ddp.yaml): only rank 0 writes the files
            return {split: trained.evaluate(split) for split in ("train", "test")}
        train_seconds = time.perf_counter() - started
        metrics = write_run(run_dir, config, model, trained.module, trained.datamodule, train_seconds, logger,
                            trained.info)  # fmt: skip
        if not is_multirun():
            link_latest(run_dir)  # `python evaluate.py intervention=outputs/latest`
        return metrics
    finally:
        finish(logger)
