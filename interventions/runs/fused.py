"""A fused sweep from its composed config: the `fused` objective settings of train.py trained
together in one process, each written as its own run (`fused_run`)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from interventions.errors import NonFiniteError
from interventions.io import read_json, write_json
from interventions.loggers import finish
from interventions.methods.registry import method_class
from interventions.models import load_model
from interventions.objective import Objective
from interventions.rundir import ERROR_FILE, METRICS_FILE, record_error
from interventions.runs.record import run_logger, write_run
from interventions.spec import TrainConfig, fused_settings
from interventions.sweeps.jobs import JOB_FILE, already_finished, is_multirun, job_context, job_identity, sweep_group
from interventions.sweeps.summary import summarize_sweep
from interventions.tasks import load_splits
from interventions.tasks.datamodule import TaskDataModule
from interventions.training.fused import train_fused
from interventions.training.module import InterventionModule

log = logging.getLogger(__name__)


def fused_device(config: TrainConfig) -> str:
    """Where the fused loop runs: `trainer.accelerator` as Lightning would read it
    (gpu/cuda: the GPU; auto: the GPU when there is one), else `model.device`."""
    accelerator = config.trainer.get("accelerator", "cpu")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return config.model.device


def fused_setting_configs(cfg: DictConfig, config: TrainConfig) -> list[tuple[DictConfig, TrainConfig]]:
    """Each fused setting as the config a separate run of it would have (Hydra's, for its
    identity and logger, and the spec)."""
    return [(OmegaConf.merge(cfg, {"objective": asdict(objective), "fused": None}),
             replace(config, objective=objective, fused=None)) for objective in config.fused_objectives()]  # fmt: skip


def train_settings(config: TrainConfig, pending: list) -> tuple[list, TaskDataModule, object, float]:
    """Train the pending fused settings (`fused_chunk` at a time): (methods or errors, the
    evaluation data (train, val, test), the model, training seconds)."""
    model = load_model(config.model.name, **{**config.model.load_options(), "device": fused_device(config)})[0]
    position_tied = method_class(config.intervention.method).tied_to_positions(config.intervention)
    tasks = load_splits(config.task, model, config.seed, fixed_length=position_tied)
    objectives = [setting.objective for _, (_, setting) in pending]
    chunk = config.fused_chunk or len(objectives)
    started = time.perf_counter()
    methods = [m for start in range(0, len(objectives), chunk)
               for m in train_fused(model, tasks["train"], objectives[start : start + chunk], config.intervention,
                                    config.run(), progress=config.trainer.get("enable_progress_bar", True))]  # fmt: skip
    seconds = time.perf_counter() - started  # all settings together
    dm = TaskDataModule(model, tasks["train"], tasks["val"], tasks["test"], batch_size=config.task.batch_size,
                        padding_side=config.task.padding_side, fixed_length=position_tied)  # fmt: skip
    dm.setup()
    return methods, dm, model, seconds


def write_setting(run_dir: Path, job: dict, setting: tuple[DictConfig, TrainConfig], label: str, method, model,
                  dm: TaskDataModule, seconds: float) -> None:  # fmt: skip
    """The files of one fused setting, or its error.txt when it diverged; its sweep_job.json
    says which."""
    setting_cfg, setting_config = setting
    run_dir.mkdir(exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    write_json(run_dir / JOB_FILE, {**job, "status": "running"})
    try:
        if isinstance(method, NonFiniteError):
            raise method
        logger = run_logger(setting_config.logger, setting_cfg, run_dir, label)
        try:
            module = InterventionModule(model, method, Objective(**asdict(setting_config.objective)))
            write_run(run_dir, setting_config, model, module, dm, seconds, logger)
        finally:
            finish(logger)
    except NonFiniteError as error:  # this setting failed alone; the others are written
        line = record_error(run_dir, label, error)
        write_json(run_dir / JOB_FILE, {**job, "status": "failed", "error": line})
        log.error(f"error: {label} failed: {line}")
    else:
        write_json(run_dir / JOB_FILE, {**job, "status": "finished"})


def fused_run(cfg: DictConfig, config: TrainConfig) -> dict:
    """A fused sweep: the `fused` objective settings trained together in one process.

    Writes one run folder per setting (`<run_dir>/<k>/`, the files of a normal run plus
    sweep_job.json, and its own logger run with the final metrics) and the sweep summary
    (pareto.json, plots) at `<run_dir>`, exactly as a multirun over the same objectives
    would. Relaunched into the same run_dir it trains only the settings without a finished
    run of the same config; a finished run with another config is moved aside first.
    """
    root = Path(config.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    group = config.logger.group or sweep_group(root)
    settings = fused_setting_configs(cfg, config)
    settings = [(OmegaConf.merge(c, {"logger": {"group": group}}), replace(s, logger=replace(s.logger, group=group)))
                for c, s in settings]  # fmt: skip
    identities = [job_identity(setting_cfg) for setting_cfg, _ in settings]
    pending = [(k, settings[k]) for k in range(len(settings))
               if not already_finished(root / str(k), identities[k], f"fused setting {k}")]  # fmt: skip
    in_multirun = is_multirun()
    # in a multirun (e.g. experiment=paper_grid_fused) the job's own overrides head each setting's
    job_overrides = [o for o in job_context()["overrides"] if not o.startswith("fused=")] if in_multirun else []
    given = fused_settings(config.fused)  # each setting's own keys, as the command line gave them
    if pending:
        methods, dm, model, seconds = train_settings(config, pending)
        for (k, setting), method in zip(pending, methods):
            job = {"overrides": [*job_overrides, *(f"objective.{key}={value}" for key, value in given[k].items())],
                   "group": group, "config": identities[k]}  # fmt: skip
            write_setting(root / str(k), job, setting, f"{root.name}-{k}", method, model, dm, seconds)
    if not in_multirun:  # a multirun summarises all its jobs' settings together at its end
        summarize_sweep(root, logger=asdict(config.logger))
    return read_json(root / "0" / METRICS_FILE) or {}
