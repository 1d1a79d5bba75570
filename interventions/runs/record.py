"""The files every trained run leaves (`write_run`), with its logger (`run_logger`) and what
intervention.json records of its config (`run_record`): one run of train.py, and each setting
of a fused sweep."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from interventions.export import save_intervention
from interventions.generation import generation_flip_accuracy
from interventions.interrupts import deferred
from interventions.io import write_json
from interventions.loggers import log_files, make_logger
from interventions.metrics import flatten
from interventions.numerics import check_metrics
from interventions.reports.illusion_files import format_illusion, write_illusion
from interventions.reports.run import illusion_report, summary_table, write_plots
from interventions.rundir import METRICS_FILE
from interventions.spec import LoggerSpec, SteeringSpec, TrainConfig
from interventions.steering import steering_metrics
from interventions.tasks.datamodule import TaskDataModule
from interventions.tasks.datapoint import Task
from interventions.threads import launcher_jobs, resolve_threads
from interventions.training.module import InterventionModule

log = logging.getLogger(__name__)


def run_logger(spec: LoggerSpec, cfg: DictConfig, run_dir: Path, name: str):
    """The run's experiment logger as `spec` configures it, with the whole config attached."""
    return make_logger(spec.kind, run_dir, project=spec.project, mode=spec.mode, group=spec.group, name=name,
                       config=OmegaConf.to_container(cfg, resolve=True))  # fmt: skip


def run_record(config: TrainConfig, metrics: dict, train_seconds: float, forward: str = "bridge") -> dict:
    """The settings and metrics intervention.json records for a run of `config` (with the
    threads torch used and where that number came from, `threads.use_threads`, and the
    model `forward` the steered forwards went through: "plain" or "bridge", `interventions.plain`;
    both change only float rounding)."""
    threads, source = resolve_threads(config.threads, jobs=launcher_jobs())
    return {
        "task": asdict(config.task), "objective": asdict(config.objective), "intervention": asdict(config.intervention),
        "trainer": dict(config.trainer), "seed": config.seed, "metrics": metrics,
        "train_seconds": round(train_seconds, 2), "threads": {"threads": threads, "source": source},
        "forward": forward,
    }  # fmt: skip


def steering_run(spec: SteeringSpec, module: InterventionModule, select: Task, report: Task, report_data,
                 seed: int) -> dict:  # fmt: skip
    """The steering score on `report` (`report_data`: it encoded), its β chosen on `select`,
    with a line saying what it found (`steering.steering_metrics`)."""
    clock: dict = {}
    found = steering_metrics(module, select, report, report_data, spec, seed, clock=clock)
    parts = found["steering"]
    log.info(f"steering score {found['steering_score']:.4f} on {report.split} at |β| = {parts['beta']:g} (chosen on "
             f"{select.split}): success {parts['success_pos']:.3f} / {parts['success_neg']:.3f}, fluency "
             f"{parts['fluency_pos']:.3f} / {parts['fluency_neg']:.3f}, off-target {parts['off_target_pos']:.3f} / "
             f"{parts['off_target_neg']:.3f} (β > 0 / β < 0), wrong way {parts['wrong_way']:.3f}; "
             f"{clock['total']:.1f} s, {clock['generation']:.1f} s of it generating")  # fmt: skip
    return found


def write_run(run_dir: Path, config: TrainConfig, model, module: InterventionModule, dm: TaskDataModule,
              train_seconds: float, logger=None, info: dict | None = None) -> dict:  # fmt: skip
    """Evaluate a trained module and write every file of its run; metrics.json last.

    Metrics that are not finite fail the run (NonFiniteError) before any file is written.
    The export and metrics.json are written with SIGINT and SIGTERM held back, so a killed
    run is either finished or has no export.
    """
    method = module.method
    # val (when the task has one) is the split an adaptive sweep is guided by (sweeps.adaptive): test never is
    metrics = {split: module.evaluate(dm.loader(split)) for split in ("train", "val", "test")
               if dm.tasks.get(split) is not None}  # fmt: skip
    if config.generation_eval:
        for split, values in metrics.items():
            found = generation_flip_accuracy(model, method, dm.tasks[split], batch_size=config.task.batch_size * 4)
            values.update({k: v for k, v in found.items() if k != "n"})
    if config.steering_eval:
        select = dm.tasks.get("val") or dm.tasks["train"]  # a task file may have no val split: β chosen on train
        metrics["test"].update(steering_run(config.steering, module, select, dm.tasks["test"], dm.datasets["test"],
                                            config.seed))  # fmt: skip
    check_metrics(metrics, f"the run in {run_dir}")
    title = f"{method.name} on {config.task.name} (template {config.task.template})"
    images, rows = write_plots(run_dir, module, dm, "test", title)
    record = run_record(config, metrics, train_seconds, module.forward_kind)
    if info is not None:  # a training-free baseline: its tuned scale
        record["attribution"] = info
        log.info(f"{method.name}: tuned scale {info['scale']} (train effectiveness {info['train_effectiveness']:.4f})")
    illusion = illusion_report(config.illusion, model, method, dm)
    if illusion is not None:
        write_illusion(run_dir / "illusion.json", illusion)
        record["illusion"] = illusion["summary"]
    with deferred():
        save_intervention(run_dir, method, model, config.model.name, record)
        write_json(run_dir / METRICS_FILE, metrics)  # last: marks the run as finished
    log_files(logger, images, rows, flatten(metrics))
    log.info(f"\n{title}: {method.n_params} parameters, trained in {train_seconds:.1f} s\n{summary_table(metrics)}")
    if illusion is not None:
        log.info(format_illusion(illusion, top=5))
    log.info(f"run directory: {run_dir}")
    return metrics
