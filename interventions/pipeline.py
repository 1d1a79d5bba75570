"""From a composed config to the files of a run: what `train.py` and `evaluate.py` do.

A training run leaves in its directory (PRODUCT.md): intervention.safetensors,
intervention.json, metrics.json, scalars.csv, heatmap.png, beta_curve.png, and a W&B run
(offline by default) or CSV logs. metrics.json is written last and atomically: its
presence marks a finished run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from interventions.analysis.illusion import diagnose_illusion, format_illusion, write_illusion
from interventions.analysis.locations import location_rows, write_scalars_csv
from interventions.analysis.plots import beta_curve, heatmap
from interventions.export import load_intervention, save_intervention
from interventions.interrupts import deferred
from interventions.io import save_figure, write_json
from interventions.loggers import finish, log_files, make_logger
from interventions.methods import METHODS
from interventions.metrics import flatten
from interventions.models import load_model
from interventions.numerics import check_metrics
from interventions.errors import EmptySplitError, NonFiniteError
from interventions.rundir import ERROR_FILE, METRICS_FILE, link_latest, record_error
from interventions.sweep import is_multirun
from interventions.module import InterventionModule
from interventions.objective import Objective
from interventions.progress import ThrottledProgressBar, progress_callback
from interventions.tasks import load_task
from interventions.tasks.datamodule import TaskDataModule
from interventions.training import train_intervention

log = logging.getLogger(__name__)
BETAS = tuple(round(-1 + 0.2 * i, 1) for i in range(11))


def model_options(model_cfg: DictConfig) -> dict:
    """`load_model`'s keywords from the `model` config group, its name aside; `fused_gelu`
    defaults to true for configs written before it existed."""
    return {"device": model_cfg.device, "dtype": model_cfg.dtype, "fused_gelu": model_cfg.get("fused_gelu", True)}


def configured_model(model_cfg: DictConfig, name: str | None = None, device: str | None = None):
    """The frozen model of the `model` config group (`load_model`); `name` and `device`
    override the group's."""
    options = model_options(model_cfg)
    return load_model(name or model_cfg.name, **{**options, "device": device or options["device"]})[0]


def load_splits(task_cfg, model, seed: int, fixed_length: bool, splits=("train", "val", "test")) -> dict:
    """The task's splits as validated `Task`s (None where a split is empty and optional)."""
    out = {}
    for split in splits:
        n = task_cfg.get(f"n_{split}")
        try:
            out[split] = load_task(
                task_cfg.name, model=model, split=split, template=task_cfg.template, n=n, seed=seed,
                path=task_cfg.path, bias_pair=task_cfg.bias_pair, fixed_length=fixed_length,
                hold_pair=task_cfg.get("hold_pair"),
            )  # fmt: skip
        except EmptySplitError:
            if split != "val":
                raise
            out[split] = None  # validation is optional
    return out


@torch.no_grad()
def beta_curve_values(module: InterventionModule, loader, betas=BETAS) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's logit of its correct and of its wrong answer at each β: two [n, len(betas)]."""
    correct, wrong = [], []
    for batch in loader:
        batch = {k: v.to(module.device) for k, v in batch.items()}
        rows = torch.arange(len(batch["correct"]), device=module.device)
        logits = module.steered_logits(batch, betas=betas)
        correct.append(torch.stack([l[rows, batch["correct"]] for l in logits], 1).double().cpu())
        wrong.append(torch.stack([l[rows, batch["wrong"]] for l in logits], 1).double().cpu())
    return torch.cat(correct).numpy(), torch.cat(wrong).numpy()


def position_labels(model, batch: dict) -> list[str]:
    """One token label per position of a padded batch: the tokens of its longest prompt."""
    row = int(batch["attention_mask"].sum(1).argmax())
    return model.to_str_tokens(batch["input_ids"][row][batch["attention_mask"][row].bool()])


DYNAMIC_PROMPTS = 256  # DynScalar's heatmap: mean α over at most this many prompts


def one_length_prompts(dm: TaskDataModule, split: str, limit: int = DYNAMIC_PROMPTS) -> tuple[dict, int]:
    """The split's prompts of its most common token length (at most `limit`), unpadded,
    so that position i is the same token slot in each: (batch, index of the first prompt)."""
    tensors = dm.datasets[split].tensors
    lengths = tensors["attention_mask"].sum(1)
    length = int(torch.mode(lengths).values)
    rows = (lengths == length).nonzero().flatten()[:limit]
    cut = slice(0, length) if dm.padding_side == "right" else slice(tensors["input_ids"].shape[1] - length, None)
    batch = {"input_ids": tensors["input_ids"][rows, cut], "attention_mask": tensors["attention_mask"][rows, cut]}
    return batch, int(rows[0])


def location_values(module: InterventionModule, dm: TaskDataModule, split: str) -> tuple[list[dict], str]:
    """The rows of scalars.csv and the heatmap, and a caption saying what the labels are."""
    method, model = module.method, module.model
    if method.position_tied:
        caption = (f"token labels: the prompt the intervention's {method.grid.seq_len} positions were trained on "
                   "(train data point 0)")  # fmt: skip
        return location_rows(method), caption
    batch, first = one_length_prompts(dm, split)
    batch = {k: v.to(module.device) for k, v in batch.items()}
    n, length = batch["input_ids"].shape
    caption = (f"values: mean α over the {n} {split} prompts of {length} tokens (of {len(dm.tasks[split])}); "
               f"token labels: {split} data point {first}")  # fmt: skip
    return location_rows(method, model, batch, position_labels(model, batch)), caption


def write_plots(run_dir: Path, module: InterventionModule, dm: TaskDataModule, split: str, title: str) -> dict:
    """scalars.csv, heatmap.png and beta_curve.png; returns {"heatmap": path, ...} and the rows."""
    rows, caption = location_values(module, dm, split)
    write_scalars_csv(run_dir / "scalars.csv", rows)
    save_figure(heatmap(rows, module.method.name, title, caption), run_dir / "heatmap.png")
    correct, wrong = beta_curve_values(module, dm.loader(split))
    save_figure(beta_curve(BETAS, correct, wrong, split, title), run_dir / "beta_curve.png")
    return {"heatmap": run_dir / "heatmap.png", "beta_curve": run_dir / "beta_curve.png"}, rows


def summary_table(metrics: dict) -> str:
    """The printed summary: one row per metric, one column per split."""
    splits = list(metrics)
    lines = [f"{'metric':<22}" + "".join(f"{s:>12}" for s in splits)]
    for key in ("effectiveness", "faithfulness", "flip_accuracy", "flip_accuracy_pos", "flip_accuracy_neg",
                "minimality", "n_params", "clean_accuracy"):  # fmt: skip
        lines.append(f"{key:<22}" + "".join(f"{_fmt(metrics[s].get(key)):>12}" for s in splits))
    for beta in ("-1", "0", "+1"):
        lines.append(f"{'logit_diff β=' + beta:<22}" + "".join(f"{_fmt(metrics[s]['logit_diff'][beta]):>12}" for s in splits))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "-" if value is None else f"{value:.4f}"


VECTOR_METHODS = ("steervec", "obsprop_steer")


def _illusion_report(setting, model, method, dm) -> dict | None:
    """Illusion diagnostics of a vector intervention on the test split, if `setting` asks."""
    if method.name not in VECTOR_METHODS or setting is False or str(setting).lower() == "false":
        return None
    if str(setting).lower() == "auto" and method.name != "obsprop_steer":
        return None
    return diagnose_illusion(model, method, dm.loader("test"))


def _run_extra(cfg: DictConfig, metrics: dict, train_seconds: float) -> dict:
    """The settings and metrics intervention.json records for a run of `cfg`."""
    return {
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "objective": OmegaConf.to_container(cfg.objective, resolve=True),
        "intervention": OmegaConf.to_container(cfg.intervention, resolve=True),
        "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
        "seed": cfg.seed,
        "metrics": metrics,
        "train_seconds": round(train_seconds, 2),
    }


def write_run(run_dir: Path, cfg: DictConfig, model, module: InterventionModule, dm: TaskDataModule,
              train_seconds: float, logger=None, info: dict | None = None) -> dict:  # fmt: skip
    """Evaluate a trained module and write every file of its run; metrics.json last.

    Metrics that are not finite fail the run (NonFiniteError) before any file is written.
    The export and metrics.json are written with SIGINT and SIGTERM held back, so a killed
    run is either finished or has no export.
    """
    method = module.method
    metrics = {split: module.evaluate(dm.loader(split)) for split in ("train", "test")}
    check_metrics(metrics, f"the run in {run_dir}")
    title = f"{method.name} on {cfg.task.name} (template {cfg.task.template})"
    images, rows = write_plots(run_dir, module, dm, "test", title)
    extra = _run_extra(cfg, metrics, train_seconds)
    if info is not None:  # a training-free baseline: its tuned scale
        extra["attribution"] = info
        log.info(f"{method.name}: tuned scale {info['scale']} (train effectiveness {info['train_effectiveness']:.4f})")
    illusion = _illusion_report(cfg.get("illusion", "auto"), model, method, dm)
    if illusion is not None:
        write_illusion(run_dir / "illusion.json", illusion)
        extra["illusion"] = illusion["summary"]
    with deferred():
        save_intervention(run_dir, method, model, cfg.model.name, extra)
        write_json(run_dir / METRICS_FILE, metrics)  # last: marks the run as finished
    log_files(logger, images, rows, flatten(metrics))
    log.info(f"\n{title}: {method.n_params} parameters, trained in {train_seconds:.1f} s\n{summary_table(metrics)}")
    if illusion is not None:
        log.info(format_illusion(illusion, top=5))
    log.info(f"run directory: {run_dir}")
    return metrics


def run_logger(cfg: DictConfig, run_dir: Path, name: str):
    """The run's experiment logger as `cfg.logger` configures it, with the config attached."""
    return make_logger(
        cfg.logger.kind, run_dir, project=cfg.logger.project, mode=cfg.logger.mode, group=cfg.logger.group,
        name=name, config=OmegaConf.to_container(cfg, resolve=True),
    )  # fmt: skip


def train_from_config(cfg: DictConfig) -> dict:
    """Train one intervention as configured and write every file of the run; returns metrics.

    With `fused` (a list of objective settings) it trains them together instead
    (`fused_from_config`).
    """
    if cfg.get("fused"):
        return fused_from_config(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    method_cls = METHODS[cfg.intervention.method]
    model = configured_model(cfg.model)
    tasks = load_splits(cfg.task, model, cfg.seed, fixed_length=method_cls.position_tied)
    icfg = OmegaConf.to_container(cfg.intervention, resolve=True)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs["default_root_dir"] = str(run_dir)
    if trainer_kwargs.get("enable_progress_bar", True):
        progress = progress_callback(f"{cfg.intervention.method} on {cfg.task.name}")
        trainer_kwargs["enable_progress_bar"] = isinstance(progress, ThrottledProgressBar)
        trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), progress]
    logger = run_logger(cfg, run_dir, run_dir.name)
    try:
        started = time.perf_counter()  # after the model, data and logger are ready: training only
        trained = train_intervention(
            model, tasks["train"], tasks["test"], tasks["val"], method=icfg["method"],
            sites=icfg["sites"], layers=icfg["layers"], positions=icfg["positions"], heads=icfg["heads"],
            init=icfg["init"], init_scale=icfg["init_scale"], lr=icfg["lr"],
            objective=Objective(**OmegaConf.to_container(cfg.objective)),
            batch_size=cfg.task.batch_size, padding_side=cfg.task.padding_side, seed=cfg.seed,
            logger=logger, trainer_kwargs=trainer_kwargs, skip_unread=cfg.get("skip_unread", False),
        )  # fmt: skip
        if trained.module.global_rank != 0:  # DDP (conf/trainer/ddp.yaml): only rank 0 writes the files
            return {split: trained.evaluate(split) for split in ("train", "test")}
        train_seconds = time.perf_counter() - started
        metrics = write_run(run_dir, cfg, model, trained.module, trained.datamodule, train_seconds, logger, trained.info)
        if not is_multirun():
            link_latest(run_dir)  # `python evaluate.py intervention=outputs/latest`
        return metrics
    finally:
        finish(logger)


def fused_device(cfg: DictConfig) -> str:
    """Where the fused loop runs: `trainer.accelerator` as Lightning would read it
    (gpu/cuda: the GPU; auto: the GPU when there is one), else `model.device`."""
    accelerator = cfg.trainer.get("accelerator", "cpu")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return cfg.model.device


def fused_from_config(cfg: DictConfig) -> dict:
    """A fused sweep: the `fused` objective settings trained together in one process.

    Writes one run folder per setting (`<run_dir>/<k>/`, the files of a normal run plus
    sweep_job.json, and its own logger run with the final metrics) and the sweep summary
    (pareto.json, plots) at `<run_dir>`, exactly as a multirun over the same objectives
    would. Relaunched into the same run_dir it trains only the settings without a finished
    run of the same config; a finished run with another config is moved aside first.
    """
    from interventions.fused import train_fused
    from interventions.config import fused_settings
    from interventions.sweep import (
        JOB_FILE, already_finished, job_context, job_identity, read_json, summarize_sweep, sweep_group,
    )

    root = Path(cfg.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    if cfg.logger.get("group") is None:
        OmegaConf.update(cfg, "logger.group", sweep_group(root))
    icfg = OmegaConf.to_container(cfg.intervention, resolve=True)
    base = OmegaConf.to_container(cfg.objective)
    given = fused_settings(OmegaConf.to_container(cfg.fused, resolve=True))
    settings = [dict(base, **s) for s in given]
    runs = [OmegaConf.merge(cfg, {"objective": setting, "fused": None}) for setting in settings]
    identities = [job_identity(run_cfg) for run_cfg in runs]
    pending = [(k, runs[k]) for k in range(len(runs))
               if not already_finished(root / str(k), identities[k], f"fused setting {k}")]  # fmt: skip
    in_multirun = is_multirun()
    # in a multirun (e.g. experiment=paper_grid_fused) the job's own overrides head each setting's
    job_overrides = [o for o in job_context()["overrides"] if not o.startswith("fused=")] if in_multirun else []
    if pending:
        method_cls = METHODS[icfg["method"]]
        model = configured_model(cfg.model, device=fused_device(cfg))
        tasks = load_splits(cfg.task, model, cfg.seed, fixed_length=method_cls.position_tied)
        objectives = [Objective(**OmegaConf.to_container(run_cfg.objective)) for _, run_cfg in pending]
        chunk = cfg.get("fused_chunk") or len(objectives)
        started = time.perf_counter()
        methods = [
            method
            for start in range(0, len(objectives), chunk)
            for method in train_fused(
                model, tasks["train"], objectives[start : start + chunk], method=icfg["method"], sites=icfg["sites"],
                layers=icfg["layers"], positions=icfg["positions"], heads=icfg["heads"], init=icfg["init"],
                init_scale=icfg["init_scale"], lr=icfg["lr"], epochs=cfg.trainer.max_epochs,
                batch_size=cfg.task.batch_size, padding_side=cfg.task.padding_side, seed=cfg.seed,
                skip_unread=cfg.get("skip_unread", False), progress=cfg.trainer.get("enable_progress_bar", True),
            )
        ]  # fmt: skip
        train_seconds = time.perf_counter() - started  # all settings together
        dm = TaskDataModule(model, tasks["train"], None, tasks["test"], batch_size=cfg.task.batch_size,
                            padding_side=cfg.task.padding_side, fixed_length=method_cls.position_tied)  # fmt: skip
        dm.setup()
        for (k, run_cfg), method, objective in zip(pending, methods, objectives):
            run_dir = root / str(k)
            run_dir.mkdir(exist_ok=True)
            (run_dir / ERROR_FILE).unlink(missing_ok=True)
            overrides = [*job_overrides, *(f"objective.{key}={value}" for key, value in given[k].items())]
            job = {"overrides": overrides, "group": cfg.logger.group, "config": identities[k]}
            write_json(run_dir / JOB_FILE, {**job, "status": "running"})
            try:
                if isinstance(method, NonFiniteError):
                    raise method
                logger = run_logger(run_cfg, run_dir, f"{root.name}-{k}")
                try:
                    module = InterventionModule(model, method, objective, lr=icfg["lr"])
                    write_run(run_dir, run_cfg, model, module, dm, train_seconds, logger)
                finally:
                    finish(logger)
            except NonFiniteError as error:  # this setting failed alone; the others are written
                line = record_error(run_dir, f"fused setting {k}", error)
                write_json(run_dir / JOB_FILE, {**job, "status": "failed", "error": line})
                log.error(f"error: fused setting {k} failed: {line}")
            else:
                write_json(run_dir / JOB_FILE, {**job, "status": "finished"})
    if not in_multirun:  # a multirun summarises all its jobs' settings together at its end
        summarize_sweep(root, logger=OmegaConf.to_container(cfg.logger, resolve=True))
    return read_json(root / "0" / METRICS_FILE) or {}


def export_module(iv, model, task_cfg, split: str, seed: int) -> tuple[InterventionModule, TaskDataModule]:
    """A loaded export wrapped for evaluation on one split of a task, with its tokenized data.

    Position-tied exports refuse prompts of another length (one ExportError line).
    """
    tasks = load_splits(task_cfg, model, seed, fixed_length=iv.method.position_tied, splits=(split,))
    dm = TaskDataModule(
        model, None, None, None, batch_size=task_cfg.batch_size, padding_side=task_cfg.padding_side,
        fixed_length=iv.method.position_tied,
    )  # fmt: skip
    dm.tasks[split] = tasks[split]
    dm.setup()
    iv.method.check_length(dm.datasets[split].tensors["input_ids"].shape[1])
    return InterventionModule(model, iv.method, Objective(**iv.meta["objective"])), dm


def evaluate_from_config(cfg: DictConfig) -> dict:
    """Evaluate an export on a task/split/template; writes metrics.json and plots."""
    out_dir = Path(cfg.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iv = load_intervention(cfg.export)
    meta = iv.meta
    model_name = cfg.model.name or meta["model"]["name"]
    model = configured_model(cfg.model, name=model_name)
    if cfg.check_model:
        iv.check_model(model)
    iv.to(model)
    task_cfg = OmegaConf.create(meta["task"])
    for key in ("name", "template", "path", "bias_pair"):
        if cfg.task.get(key) is not None:
            task_cfg[key] = cfg.task[key]
    split = cfg.split
    if cfg.n is not None:
        task_cfg[f"n_{split}"] = cfg.n
    module, dm = export_module(iv, model, task_cfg, split, cfg.seed)
    logger = run_logger(cfg, out_dir, f"eval-{out_dir.name}")
    try:
        metrics = {split: module.evaluate(dm.loader(split))}
        title = f"{iv.name} from {Path(iv.path).name}: {task_cfg.name} template {task_cfg.template}, {split}"
        images, rows = write_plots(out_dir, module, dm, split, title)
        log_files(logger, images, rows, flatten(metrics, "eval/"))
    finally:
        finish(logger)
    write_json(out_dir / METRICS_FILE, {**metrics, "source": str(iv.path), "task": OmegaConf.to_container(task_cfg)})
    log.info(f"\n{title}\n{summary_table(metrics)}\noutput directory: {out_dir}")
    return metrics
