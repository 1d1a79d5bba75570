"""evaluate.py's runs: an export evaluated on a task, split and template (`evaluation_run`), a
sweep's summary rebuilt, the generalization table, or steered completions (`runs.generate`),
by the config evaluate.py composed (`evaluate_run`)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from interventions.evaluation import evaluation_module, export_task, exported_model
from interventions.export import load_intervention
from interventions.io import write_json
from interventions.loggers import finish, log_files
from interventions.metrics import flatten
from interventions.reports.generalization import generalization, markdown, write_generalization
from interventions.reports.run import summary_table, write_plots
from interventions.rundir import METRICS_FILE
from interventions.runs.generate import generation_run
from interventions.runs.record import run_logger, steering_run
from interventions.spec import EvaluateConfig, GenerateConfig, GeneralizationConfig, SummarizeConfig, to_spec
from interventions.sweeps.summary import summarize_sweep
from interventions.tasks import load_splits

log = logging.getLogger(__name__)


def evaluate_run(cfg: DictConfig) -> dict:
    """evaluate.py: by the config it composed, an export's evaluation, a sweep's summary, or
    the generalization table."""
    config = to_spec(cfg)
    if isinstance(config, SummarizeConfig):
        return summarize_sweep(config.sweep, logger=asdict(config.logger))
    if isinstance(config, GeneralizationConfig):
        return generalization_run(config)
    if isinstance(config, GenerateConfig):
        return generation_run(cfg, config)
    return evaluation_run(cfg, config)


def generalization_run(config: GeneralizationConfig) -> dict:
    """evaluate.py generalization=<...>: task.template (if set) picks the C templates."""
    runs = config.generalization
    summary = generalization(runs if isinstance(runs, (str, list)) else list(runs), templates=config.task.template,
                             split=config.split, n=config.n, model=config.model, check_model=config.check_model)  # fmt: skip
    json_path, md_path = write_generalization(summary, config.run_dir)
    log.info(f"\n{markdown(summary)}\n{json_path}\n{md_path}")
    return summary


def evaluation_run(cfg: DictConfig, config: EvaluateConfig) -> dict:
    """Evaluate an export on a task/split/template; writes metrics.json and plots."""
    out_dir = Path(config.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iv = load_intervention(config.intervention)
    model = exported_model(iv, config.model, check=config.check_model)
    task = export_task(iv, config.task, config.split, config.n)
    module, dm = evaluation_module(iv, model, task, config.split, config.seed)
    logger = run_logger(config.logger, cfg, out_dir, f"eval-{out_dir.name}")
    try:
        metrics = {config.split: module.evaluate(dm.loader(config.split))}
        if config.steering_eval:  # β chosen on the export's task's val split, the score on config.split
            select = load_splits(task, model, config.seed, fixed_length=iv.method.position_tied, splits=("val",))["val"]
            metrics[config.split].update(steering_run(config.steering, module, select or dm.tasks[config.split],
                                                      dm.tasks[config.split], dm.datasets[config.split], config.seed))  # fmt: skip
        title = f"{iv.name} from {Path(iv.path).name}: {task.name} template {task.template}, {config.split}"
        images, rows = write_plots(out_dir, module, dm, config.split, title)
        log_files(logger, images, rows, flatten(metrics, "eval/"))
    finally:
        finish(logger)
    write_json(out_dir / METRICS_FILE, {**metrics, "source": str(iv.path), "task": asdict(task)})
    log.info(f"\n{title}\n{summary_table(metrics)}\noutput directory: {out_dir}")
    return metrics
