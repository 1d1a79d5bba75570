"""From a composed config to the files of a run: what `train.py` and `evaluate.py` do.

    config (Hydra) -> spec (interventions.spec) -> model and task splits -> training
    -> metrics -> files: intervention.safetensors, intervention.json, scalars.csv,
       heatmap.png, beta_curve.png, a W&B run (offline by default) or CSV logs, and
       metrics.json, written last and atomically: its presence marks a finished run.

`train_run(cfg)` trains one intervention (`fused_run` when `fused` lists several objective
settings); `evaluate_run(cfg)` evaluates an export, rebuilds a sweep's summary, or writes the
generalization table, by which config evaluate.py composed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM

from interventions.errors import NonFiniteError
from interventions.evaluation import evaluation_module, export_task, exported_model
from interventions.export import load_intervention, save_intervention
from interventions.interrupts import deferred
from interventions.io import read_json, write_json
from interventions.loggers import finish, log_files, make_logger
from interventions.methods import METHODS
from interventions.metrics import flatten
from interventions.models import load_model
from interventions.numerics import check_metrics
from interventions.objective import Objective
from interventions.generation import generate, generation_flip_accuracy
from interventions.hf import generate as hf_generate
from interventions.reports.completions import markdown as markdown_completions
from interventions.reports.completions import side_by_side, write_completions
from interventions.reports.generalization import generalization, markdown, write_generalization
from interventions.reports.illusion import format_illusion, write_illusion
from interventions.reports.run import illusion_report, summary_table, write_plots
from interventions.rundir import ERROR_FILE, METRICS_FILE, link_latest, record_error
from interventions.spec import (
    EvaluateConfig, GenerateConfig, GeneralizationConfig, LoggerSpec, SummarizeConfig, TrainConfig, fused_settings,
    to_spec,
)  # fmt: skip
from interventions.sweeps.jobs import JOB_FILE, already_finished, is_multirun, job_context, job_identity, sweep_group
from interventions.sweeps.summary import summarize_sweep
from interventions.threads import launcher_jobs, resolve_threads, use_threads
from interventions.tasks import load_splits
from interventions.tasks.datamodule import TaskDataModule
from interventions.tokenizer import model_tokenizer
from interventions.toyworld import is_native_model
from interventions.toyworld.hf_form import hf_form
from interventions.training.fused import train_fused
from interventions.training.module import InterventionModule
from interventions.training.progress import ThrottledProgressBar, progress_callback
from interventions.training.train import train_intervention

log = logging.getLogger(__name__)


def run_logger(spec: LoggerSpec, cfg: DictConfig, run_dir: Path, name: str):
    """The run's experiment logger as `spec` configures it, with the whole config attached."""
    return make_logger(spec.kind, run_dir, project=spec.project, mode=spec.mode, group=spec.group, name=name,
                       config=OmegaConf.to_container(cfg, resolve=True))  # fmt: skip


def run_record(config: TrainConfig, metrics: dict, train_seconds: float) -> dict:
    """The settings and metrics intervention.json records for a run of `config` (with the
    threads torch used and where that number came from, `threads.use_threads`)."""
    threads, source = resolve_threads(config.threads, jobs=launcher_jobs())
    return {
        "task": asdict(config.task), "objective": asdict(config.objective), "intervention": asdict(config.intervention),
        "trainer": dict(config.trainer), "seed": config.seed, "metrics": metrics,
        "train_seconds": round(train_seconds, 2), "threads": {"threads": threads, "source": source},
    }  # fmt: skip


def write_run(run_dir: Path, config: TrainConfig, model, module: InterventionModule, dm: TaskDataModule,
              train_seconds: float, logger=None, info: dict | None = None) -> dict:  # fmt: skip
    """Evaluate a trained module and write every file of its run; metrics.json last.

    Metrics that are not finite fail the run (NonFiniteError) before any file is written.
    The export and metrics.json are written with SIGINT and SIGTERM held back, so a killed
    run is either finished or has no export.
    """
    method = module.method
    metrics = {split: module.evaluate(dm.loader(split)) for split in ("train", "test")}
    if config.generation_eval:
        for split, values in metrics.items():
            found = generation_flip_accuracy(model, method, dm.tasks[split], batch_size=config.task.batch_size * 4)
            values.update({k: v for k, v in found.items() if k != "n"})
    check_metrics(metrics, f"the run in {run_dir}")
    title = f"{method.name} on {config.task.name} (template {config.task.template})"
    images, rows = write_plots(run_dir, module, dm, "test", title)
    record = run_record(config, metrics, train_seconds)
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

    With `fused` (a list of objective settings) it trains them together instead (`fused_run`).
    """
    config = to_spec(cfg)
    log.info("threads: %(threads)s (%(source)s)", use_threads(config.threads))
    if config.fused is not None:
        return fused_run(cfg, config)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(config.model.name, **config.model.load_options())[0]
    tasks = load_splits(config.task, model, config.seed, fixed_length=METHODS[config.intervention.method].position_tied)
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
    test data, the model, training seconds)."""
    model = load_model(config.model.name, **{**config.model.load_options(), "device": fused_device(config)})[0]
    position_tied = METHODS[config.intervention.method].position_tied
    tasks = load_splits(config.task, model, config.seed, fixed_length=position_tied)
    objectives = [setting.objective for _, (_, setting) in pending]
    chunk = config.fused_chunk or len(objectives)
    started = time.perf_counter()
    methods = [m for start in range(0, len(objectives), chunk)
               for m in train_fused(model, tasks["train"], objectives[start : start + chunk], config.intervention,
                                    config.run(), progress=config.trainer.get("enable_progress_bar", True))]  # fmt: skip
    seconds = time.perf_counter() - started  # all settings together
    dm = TaskDataModule(model, tasks["train"], None, tasks["test"], batch_size=config.task.batch_size,
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


def hf_generation(iv, model, config: GenerateConfig, prompts: list[str], options: dict) -> list:
    """backend=hf: the completions from the plain Hugging Face model of the export (or
    model.name), with its key-value cache (`interventions.hf.generate`). A TransformerLens-
    native model (the toy world's) generates through its GPT-2 form (`toyworld.hf_form`),
    built from `model`, the bridge already loaded."""
    name = config.model.name or iv.meta["model"]["name"]
    if is_native_model(name):
        plain, tokenizer = hf_form(model), model.tokenizer
    else:
        dtype = getattr(torch, config.model.dtype if config.model.name else iv.meta["model"].get("dtype", "float32"))
        plain = AutoModelForCausalLM.from_pretrained(name, dtype=dtype).to(config.model.device).eval()
        tokenizer = model_tokenizer(name)
    return hf_generate(plain, iv, prompts, tokenizer, config.betas, config.max_new_tokens,
                       check_model=config.check_model, **options)  # fmt: skip


def generation_run(cfg: DictConfig, config: GenerateConfig) -> dict:
    """evaluate.py generate=<...>: completions at each β of `prompts` (or the task split's
    first n prompts) side by side; metrics.json records the settings and, for task prompts,
    the generation flip accuracy."""
    out_dir = Path(config.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iv = load_intervention(config.generate)
    model = exported_model(iv, config.model, check=config.check_model)
    options = {"do_sample": config.do_sample, "temperature": config.temperature, "top_k": config.top_k,
               "seed": config.seed, "positions_beyond": config.positions_beyond, "batch_size": config.batch_size}  # fmt: skip
    record = {"source": str(iv.path), "betas": list(config.betas), "max_new_tokens": config.max_new_tokens, **options}
    if config.prompts is not None:
        prompts, where = list(config.prompts), "given prompts"
    else:
        task_spec = export_task(iv, config.task, config.split, config.n)
        task = load_splits(task_spec, model, config.seed, fixed_length=iv.method.position_tied,
                           splits=(config.split,))[config.split]  # fmt: skip
        prompts, where = task.prompts, f"{task_spec.name} template {task_spec.template}, {config.split}"
        record.update(task=asdict(task_spec), split=config.split)
        record[config.split] = generation_flip_accuracy(model, iv.method, task, config.positions_beyond,
                                                        config.batch_size)  # fmt: skip
    if config.backend == "hf":
        completions = hf_generation(iv, model, config, prompts, options)
    else:
        completions = generate(model, iv.method, prompts, config.betas, config.max_new_tokens, **options)
    title = f"{iv.name} from {Path(iv.path).name}: {where}"
    jsonl, md = write_completions(completions, out_dir, title)
    logger = run_logger(config.logger, cfg, out_dir, f"generate-{out_dir.name}")
    try:
        log_files(logger, {}, side_by_side(completions), flatten({k: v for k, v in record.items() if k == config.split},
                                                                 "generate/"), table_key="completions")  # fmt: skip
    finally:
        finish(logger)
    write_json(out_dir / METRICS_FILE, record)
    log.info(f"\n{markdown_completions(completions, title)}\n{jsonl}\n{md}\noutput directory: {out_dir}")
    return record


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
        title = f"{iv.name} from {Path(iv.path).name}: {task.name} template {task.template}, {config.split}"
        images, rows = write_plots(out_dir, module, dm, config.split, title)
        log_files(logger, images, rows, flatten(metrics, "eval/"))
    finally:
        finish(logger)
    write_json(out_dir / METRICS_FILE, {**metrics, "source": str(iv.path), "task": asdict(task)})
    log.info(f"\n{title}\n{summary_table(metrics)}\noutput directory: {out_dir}")
    return metrics
