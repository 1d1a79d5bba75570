"""Sweeps: robust multirun jobs, and the sweep-level summary (pareto.json, plots, W&B).

    python train.py -m experiment=paper_grid_small             # a sweep; summary at the end
    python train.py -m experiment=paper_grid_small hydra.sweep.dir=multirun/pgs   # relaunch: same dir
    python evaluate.py sweep=multirun/pgs                       # rebuild the summary any time

Every job of a multirun goes through `run_job` (via `interventions.cli.report_errors`):

- Its W&B group is set to the sweep (`sweep_group`) unless `logger.group` is given, so every
  run of a sweep, and its summary run, share one group.
- It writes `sweep_job.json` (its overrides and resolved config) before it starts.
- A run whose folder already holds a finished `metrics.json` written with the same model,
  task, intervention, objective, trainer settings (but the progress bar) and seed is skipped
  with one printed line. A finished run with a different one is moved to
  `<run>/superseded/<time>/` and the job runs again.
- Any exception is caught: the full traceback goes to `<run>/error.txt`, one line to
  stderr, and the sweep continues (Hydra's basic launcher would otherwise stop).

At the end, `SweepSummary.on_multirun_end` (registered in conf/train.yaml) calls
`summarize_sweep`, which reads every run folder of the sweep and writes, at its root:
pareto.json, pareto.md, pareto_faithfulness.png, pareto_minimality.png and a W&B summary
run (when the logger is wandb). A run's status is "finished" (metrics.json present),
"failed" (error.txt present; the error line is recorded), "interrupted" (stopped by SIGINT or
SIGTERM: a relaunch runs it again) or "incomplete" (started, never finished: killed without a
chance to say so, or still running). Pareto membership is computed on TEST metrics among
finished runs; see interventions.pareto for the conventions.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import shutil
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from interventions.errors import RunInterrupted
from interventions.io import atomic_write_text, read_json, save_figure, write_json
from interventions.pareto import FRONTS, front_of, front_order
from interventions.rundir import ERROR_FILE, METRICS_FILE, SUPERSEDED, error_line, record_error, supersede

log = logging.getLogger(__name__)
JOB_FILE = "sweep_job.json"
SUMMARY_FILE = "pareto.json"
TABLE_FILE = "pareto.md"
PLOT_FILES = {name: f"pareto_{name}.png" for name in FRONTS}
# Hydra writes these into a job's folder before the job starts: they belong to the new run.
HYDRA_JOB_FILES = (".hydra", "train.log", "evaluate.log")
# A run's status in pareto.json: metrics.json written; error.txt written; stopped by a signal; none of these
STATUSES = ("finished", "failed", "interrupted", "incomplete")
# Config keys that do not change a run's results (not recorded in the job's identity);
# model.fused_gelu changes only float rounding, and runs finished before it existed lack it.
IGNORED_KEYS = ("run_dir", "logger", "trainer.enable_progress_bar", "model.fused_gelu")
# What decides a training run's results: a finished run is skipped when these are unchanged
# (other keys, e.g. diagnostics added later, do not make finished runs stale; nor does
# skip_unread, which like the thread count changes only float rounding).
RESULT_KEYS = ("model", "task", "intervention", "objective", "trainer", "seed")
METHOD_LABELS = {"activscalar": "ActivScalar", "steervec": "SteerVec", "dynscalar": "DynScalar"}
METHOD_COLORS = {"activscalar": "tab:blue", "steervec": "tab:orange", "dynscalar": "tab:green"}


# -- the jobs of a multirun ---------------------------------------------------------------------


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep: its directory, relative to the working directory if inside it."""
    path = Path(sweep_dir)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            pass
    text = path.as_posix()
    return text if len(text) <= 128 else text[-128:]  # W&B's limit on group names


def job_identity(cfg) -> dict:
    """The resolved config that decides a run's results (without run_dir and logger)."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in IGNORED_KEYS:
        *parents, leaf = key.split(".")
        node = resolved
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return resolved


def same_results(old: dict | None, new: dict) -> bool:
    """Whether a finished run with config `old` is the run `new` asks for.

    Training configs (with intervention and objective) compare RESULT_KEYS only; any other
    config compares in full (without IGNORED_KEYS).
    """
    if not isinstance(old, dict):
        return False
    if all(k in new for k in ("intervention", "objective")):
        return all(old.get(k) == new.get(k) for k in RESULT_KEYS)
    return old == new


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def already_finished(run_dir: Path, identity: dict | None, label: str) -> bool:
    """True if `run_dir` holds a finished run of config `identity` (print that it is skipped);
    a finished run of another config is moved aside (`supersede`) and False returned."""
    if not (run_dir / METRICS_FILE).exists():
        return False
    previous = read_json(run_dir / JOB_FILE)
    if previous is not None and identity is not None and same_results(previous.get("config"), identity):
        log.info(f"skipping {label}: already finished in {run_dir}")
        return True
    dest = supersede(run_dir, keep=HYDRA_JOB_FILES)
    log.info(f"{label}: {run_dir} held a finished run with another config; moved it to {dest}")
    return False


def job_context() -> dict:
    """The current Hydra job: its sweep dir, number, overrides and output dir."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return {"sweep_dir": hc.sweep.dir, "num": hc.job.num, "overrides": list(hc.overrides.task),
            "output_dir": hc.runtime.output_dir}  # fmt: skip


def run_job(fn, cfg, context: dict | None = None):
    """Run one job of a multirun: skip it if finished, record it if it fails (see module doc).

    `context` (tests): {"sweep_dir", "num", "overrides", "output_dir"}; default: Hydra's.
    """
    from omegaconf import OmegaConf

    ctx = context or job_context()
    sweep_dir = Path(ctx["sweep_dir"])
    overrides = list(ctx["overrides"])
    label = f"run {ctx['num']} ({' '.join(overrides) or 'defaults'})"
    run_dir = Path(cfg.run_dir) if "run_dir" in cfg else Path(ctx["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if "logger" in cfg and cfg.logger.get("group") is None:
        OmegaConf.update(cfg, "logger.group", sweep_group(sweep_dir))
    try:
        identity = job_identity(cfg)
    except Exception as error:  # an interpolation that does not resolve: a failing run
        identity = None
        unresolved = error
    else:
        unresolved = None

    if already_finished(run_dir, identity, label):
        metrics = read_json(run_dir / METRICS_FILE) or {}
        return (metrics.get("test") or {}).get("effectiveness")
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    job = {
        "job_num": ctx["num"], "overrides": overrides, "sweep_dir": str(sweep_dir),
        "group": cfg.logger.group if "logger" in cfg else None, "started": _now(),
        "status": "running", "config": identity,
    }  # fmt: skip
    write_json(run_dir / JOB_FILE, job)
    try:
        if unresolved is not None:
            raise unresolved
        _check_ddp(cfg)
        result = fn(cfg)
    except RunInterrupted as interrupted:  # the sweep stops; a relaunch runs this job again
        write_json(run_dir / JOB_FILE, {**job, "status": "interrupted", "error": f"interrupted by {interrupted}",
                                        "ended": _now()})  # fmt: skip
        interrupted.sweep_dir = sweep_dir
        raise
    except Exception as error:  # noqa: BLE001 — one failing run must not stop the sweep
        line = record_error(run_dir, label, error)
        write_json(run_dir / JOB_FILE, {**job, "status": "failed", "error": line, "ended": _now()})
        log.error(f"error: {label} failed: {line} (traceback in {run_dir / ERROR_FILE}); the sweep goes on")
        return None
    write_json(run_dir / JOB_FILE, {**job, "status": "finished", "ended": _now()})
    return result


def _check_ddp(cfg) -> None:
    """Lightning's DDP starts its processes by re-running the command line: in a local
    multirun each of them would run the whole sweep again. Under SLURM (submitit) or
    torchrun the processes already exist and DDP is fine."""
    import os

    from interventions.errors import ConfigError

    strategy = str((cfg.get("trainer") or {}).get("strategy", ""))
    relaunches = strategy == "ddp" or strategy.startswith("ddp_find_unused")
    if relaunches and not any(v in os.environ for v in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID")):
        raise ConfigError(
            f"trainer.strategy={strategy} cannot run inside a local multirun (DDP re-runs the command "
            "for each process); sweep with hydra/launcher=slurm (one SLURM task per GPU), or use "
            "trainer=gpu for the sweep and trainer=ddp for single runs"
        )


# -- the sweep summary --------------------------------------------------------------------------


def _num_key(path: Path):
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def _overrides_of(run_dir: Path, job: dict | None) -> list[str]:
    if job and job.get("overrides") is not None:
        return list(job["overrides"])
    path = run_dir / ".hydra" / "overrides.yaml"
    if path.exists():
        from omegaconf import OmegaConf

        try:
            return [str(o) for o in OmegaConf.load(path)]
        except Exception:
            return []
    return []


def _config_of(run_dir: Path, job: dict | None) -> dict:
    if job and job.get("config"):
        return job["config"]
    path = run_dir / ".hydra" / "config.yaml"
    if path.exists():
        from omegaconf import OmegaConf

        try:
            return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception:
            return {}
    meta = read_json(run_dir / "intervention.json") or {}
    return {k: meta.get(k) for k in ("task", "objective", "intervention", "trainer", "seed")}


def hyperparameters(config: dict) -> dict:
    """The hyperparameters a sweep varies, flattened (missing ones are None)."""
    g = lambda group, key: (config.get(group) or {}).get(key) if isinstance(config.get(group), dict) else None  # noqa: E731
    return {
        "method": g("intervention", "method"),
        "lambda_f": g("objective", "lambda_f"),
        "lambda_m": g("objective", "lambda_m"),
        "margin": g("objective", "margin"),
        "lr": g("intervention", "lr"),
        "seed": config.get("seed"),
        "sites": g("intervention", "sites"),
        "layers": g("intervention", "layers"),
        "positions": g("intervention", "positions"),
        "init": g("intervention", "init"),
        "model": g("model", "name"),
        "task": g("task", "name"),
        "template": g("task", "template"),
        "n_train": g("task", "n_train"),
        "batch_size": g("task", "batch_size"),
        "max_epochs": g("trainer", "max_epochs"),
    }


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and path.name not in (SUPERSEDED, "wandb", "csv") and any(
        (path / name).exists() for name in (".hydra", JOB_FILE, METRICS_FILE, ERROR_FILE)
    )


def _fused_settings_dirs(run_dir: Path) -> list[Path]:
    """The per-setting run folders of a fused job (`<job>/<k>/`), in order; [] for others."""
    if (run_dir / METRICS_FILE).exists():
        return []
    return sorted((p for p in run_dir.iterdir() if p.name.isdigit() and _is_run_dir(p)), key=_num_key)


def run_dirs(sweep_dir: Path) -> list[tuple[str, Path]]:
    """(name, folder) of every run of a sweep; a multirun job that fused several objective
    settings (`fused=...`) contributes one run per setting, named "<job>/<k>"."""
    out = []
    for run_dir in sorted((p for p in sweep_dir.iterdir() if _is_run_dir(p)), key=_num_key):
        settings = _fused_settings_dirs(run_dir)
        out += [(f"{run_dir.name}/{p.name}", p) for p in settings] if settings else [(run_dir.name, run_dir)]
    return out


def collect_runs(sweep_dir: str | Path) -> list[dict]:
    """One record per run folder of a sweep: overrides, hyperparameters, status, metrics."""
    sweep_dir = Path(sweep_dir)
    records = []
    for name, run_dir in run_dirs(sweep_dir):
        job = read_json(run_dir / JOB_FILE)
        metrics = read_json(run_dir / METRICS_FILE)
        record = {
            "run": name,
            "run_dir": str(run_dir.resolve()),
            "overrides": _overrides_of(run_dir, job),
            "hparams": hyperparameters(_config_of(run_dir, job)),
            "status": "incomplete",
            "error": None,
            "train": None,
            "test": None,
        }
        if metrics is not None and isinstance(metrics.get("test"), dict):
            record.update(status="finished", train=metrics.get("train"), test=metrics.get("test"))
        elif (run_dir / ERROR_FILE).exists():
            line = (job or {}).get("error")
            if not line:
                first = (run_dir / ERROR_FILE).read_text().splitlines()[:1]
                line = first[0] if first else "failed"
            record.update(status="failed", error=line, traceback=str((run_dir / ERROR_FILE).resolve()))
        elif (job or {}).get("status") == "interrupted":
            record.update(status="interrupted", error=job.get("error"))
        records.append(record)
    return records


def annotate_fronts(records: list[dict]) -> dict:
    """Add record["pareto"] (all methods) and record["pareto_within_method"]; return the fronts."""
    fronts = {}
    for name, (x, y, _) in FRONTS.items():
        overall = front_of(records, x, y)
        for r, on in zip(records, overall):
            r.setdefault("pareto", {})[name] = on
        fronts[name] = [r["run"] for r, on in zip(records, overall) if on]
        for method in {r["hparams"].get("method") for r in records}:
            members = [r for r in records if r["hparams"].get("method") == method]
            for r, on in zip(members, front_of(members, x, y)):
                r.setdefault("pareto_within_method", {})[name] = on
    return fronts


def _label(method) -> str:
    return METHOD_LABELS.get(method, str(method))


def plot_front(records: list[dict], front: str, title: str | None = None):
    """The paper's Fig. 2 style: train crosses, test points, one colour per method; each
    method's test front drawn as a line, runs on the overall test front ringed in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_key, y_dir = FRONTS[front]
    finished = [r for r in records if r["status"] == "finished"]
    methods = sorted({r["hparams"].get("method") for r in finished}, key=str)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for m in methods:
        color = METHOD_COLORS.get(m)
        rs = [r for r in finished if r["hparams"].get("method") == m]
        pts = {s: [(r[s][x_key], r[s][y_key]) for r in rs if _finite(r[s], x_key, y_key)] for s in ("train", "test")}
        if pts["train"]:
            ax.scatter(*zip(*pts["train"]), marker="x", color=color, alpha=0.5, s=28, label=f"{_label(m)} train")
        if pts["test"]:
            ax.scatter(*zip(*pts["test"]), marker="o", color=color, s=28, label=f"{_label(m)} test")
        front_pts = [
            (r["test"][x_key], r["test"][y_key]) for r in rs
            if r.get("pareto_within_method", {}).get(front) and _finite(r["test"], x_key, y_key)
        ]  # fmt: skip
        if len(front_pts) > 1:
            ax.plot(*zip(*front_order(front_pts, y_dir)), color=color, lw=1.5, alpha=0.9)
    overall = [(r["test"][x_key], r["test"][y_key]) for r in finished if r.get("pareto", {}).get(front)
               and _finite(r["test"], x_key, y_key)]  # fmt: skip
    if overall:
        ax.scatter(*zip(*overall), marker="o", s=110, facecolors="none", edgecolors="black", lw=1.2,
                   label="Pareto front (test, all methods)")  # fmt: skip
    if y_key == "minimality":
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylabel("minimality: # |θ| ≥ 0.01 (lower is better)")
    else:
        ax.set_ylabel("faithfulness −F (higher is better)")
    ax.set_xlabel("effectiveness −E₀ (higher is better)")
    ax.set_title(title or f"Effectiveness vs {y_key} ({len(finished)} runs)")
    ax.grid(alpha=0.3)
    if finished:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _finite(values: dict | None, *keys) -> bool:
    if not values:
        return False
    return all(isinstance(values.get(k), (int, float)) and math.isfinite(values[k]) for k in keys)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _hp(value) -> str:
    return f"{value:g}" if isinstance(value, float) else _fmt(value)


def table_rows(records: list[dict]) -> tuple[list[str], list[list]]:
    """Columns and rows of the sweep table (W&B table and pareto.md)."""
    columns = ["run", "status", "method", "lambda_f", "lambda_m", "margin", "lr", "seed",
               "train_effectiveness", "test_effectiveness", "train_faithfulness", "test_faithfulness",
               "test_minimality", "n_params", "test_flip_accuracy", "front_faithfulness",
               "front_minimality", "overrides", "error"]  # fmt: skip
    rows = []
    for r in records:
        h, tr, te = r["hparams"], r.get("train") or {}, r.get("test") or {}
        rows.append([
            r["run"], r["status"], h.get("method"), h.get("lambda_f"), h.get("lambda_m"), h.get("margin"),
            h.get("lr"), h.get("seed"), tr.get("effectiveness"), te.get("effectiveness"),
            tr.get("faithfulness"), te.get("faithfulness"), te.get("minimality"), te.get("n_params"),
            te.get("flip_accuracy"), bool(r.get("pareto", {}).get("faithfulness")),
            bool(r.get("pareto", {}).get("minimality")), " ".join(r["overrides"]), r.get("error"),
        ])  # fmt: skip
    return columns, rows


def markdown_table(records: list[dict]) -> str:
    head = ["run", "status", "method", "λ_F", "λ_M", "m", "eff. train", "eff. test", "faith. test",
            "minimality", "params", "front E–F", "front E–M"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        h, tr, te = r["hparams"], r.get("train") or {}, r.get("test") or {}
        p = r.get("pareto", {})
        status = r["status"] if r["status"] != "failed" else f"failed: {r.get('error')}"
        cells = [r["run"], status.replace("|", "/"), _label(h.get("method")), _hp(h.get("lambda_f")),
                 _hp(h.get("lambda_m")), _hp(h.get("margin")), _fmt(tr.get("effectiveness")),
                 _fmt(te.get("effectiveness")), _fmt(te.get("faithfulness")), _fmt(te.get("minimality")),
                 _fmt(te.get("n_params")), "●" if p.get("faithfulness") else "", "●" if p.get("minimality") else ""]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def summarize_sweep(sweep_dir: str | Path, logger: dict | None = None, group: str | None = None,
                    verbose: bool = True) -> dict:  # fmt: skip
    """Write pareto.json, pareto.md, the two Pareto plots and a W&B summary run for a sweep.

    Args:
        sweep_dir: the sweep's root (Hydra's hydra.sweep.dir).
        logger: the logger settings {kind, project, mode, group}; None: no W&B run.
        group: the W&B group; default logger["group"], else the group the runs recorded,
            else `sweep_group(sweep_dir)`.

    Returns:
        The summary written to pareto.json.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        from interventions.errors import ConfigError

        raise ConfigError(f"sweep={str(sweep_dir)!r} is not a directory; pass a multirun folder (hydra.sweep.dir)")
    records = collect_runs(sweep_dir)
    fronts = annotate_fronts(records)
    logger = dict(logger or {})
    recorded = next((j.get("group") for r in records if (j := read_json(Path(r["run_dir"]) / JOB_FILE))
                     and j.get("group")), None)  # fmt: skip
    group = group or logger.get("group") or recorded or sweep_group(sweep_dir)
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    counts["runs"] = len(records)
    summary = {
        "sweep_dir": str(sweep_dir.resolve()),
        "group": group,
        "updated": _now(),
        "conventions": {
            "split": "Pareto membership is computed on the test metrics of finished runs",
            "effectiveness": "-E_0 (margin 0), <= 0, higher is better",
            "faithfulness": "-F (KL at beta = +1 and -1), <= 0, higher is better",
            "minimality": "count of parameters with |theta| >= 0.01, LOWER is better",
            "dominance": "a run is on a front when no finished run is at least as good on both axes "
                         "and strictly better on one; identical points are all on the front",
            "pareto": "front over all methods; pareto_within_method: front among the runs of the same method",
        },
        "counts": counts,
        "fronts": fronts,
        "runs": records,
    }
    write_json(sweep_dir / SUMMARY_FILE, summary)
    atomic_write_text(sweep_dir / TABLE_FILE, f"# Sweep {group}\n\n{markdown_table(records)}")
    images = {}
    for name in FRONTS:
        path = sweep_dir / PLOT_FILES[name]
        save_figure(plot_front(records, name), path)
        images[f"pareto_{name}"] = path
    if logger.get("kind") == "wandb":
        _wandb_summary(sweep_dir, logger, group, records, images, counts)
    if verbose:
        log.info(f"sweep summary: {counts['finished']} finished, {counts['failed']} failed, "
              f"{counts['interrupted']} interrupted, {counts['incomplete']} incomplete of {counts['runs']} runs; "
              f"front E-F: {', '.join(fronts['faithfulness']) or '-'}; "
              f"front E-M: {', '.join(fronts['minimality']) or '-'}; {sweep_dir / SUMMARY_FILE}")  # fmt: skip
    return summary


def _wandb_summary(sweep_dir: Path, logger_cfg: dict, group: str, records, images, counts) -> None:
    """A W&B run (offline by default) in the sweep's group with the table and both plots."""
    import warnings

    from interventions.loggers import finish, is_wandb, make_logger

    logger = make_logger(
        "wandb", sweep_dir, project=logger_cfg.get("project") or "interventions",
        mode=logger_cfg.get("mode") or "offline", group=group, name="sweep-summary",
        config={"sweep_dir": str(sweep_dir), "counts": counts},
    )  # fmt: skip
    try:
        if not is_wandb(logger):
            return
        columns, rows = table_rows(records)
        logger.log_table(key="pareto", columns=columns, data=[[_cell(v) for v in row] for row in rows])
        for key, path in images.items():
            logger.log_image(key=key, images=[str(path)])
        logger.experiment.summary.update({f"runs_{k}": v for k, v in counts.items()})
    except Exception as error:  # the files at the sweep root are complete either way
        warnings.warn(f"W&B sweep summary failed ({error}); pareto.json and the plots are written", stacklevel=2)
    finally:
        finish(logger)
        if logger is not None and not is_wandb(logger):
            shutil.rmtree(sweep_dir / "csv", ignore_errors=True)  # make_logger's fallback, unused here


def _cell(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


class SweepSummary(Callback):
    """Hydra callback: write the sweep summary when a multirun ends (conf/train.yaml)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        sweep_dir = Path(str(config.hydra.sweep.dir))
        logger = OmegaConf.to_container(config.logger, resolve=True) if "logger" in config else None
        try:
            summary = summarize_sweep(sweep_dir, logger=logger)
        except Exception as error:  # never hide the runs' results behind a summary problem
            print(f"error: the sweep summary failed ({error_line(error)}); rebuild it with "
                  f"`python evaluate.py sweep={sweep_dir}`", file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(1) from None
        counts = summary["counts"]
        if counts["failed"]:  # the sweep's exit status: a scheduler must not take it as done
            # after the jobs, Hydra's own logging (stdout) is back: the error line goes to stderr itself
            print(f"error: {counts['failed']} of {counts['runs']} runs failed (the others are complete); "
                  f"see {sweep_dir / SUMMARY_FILE} and each failed run's {ERROR_FILE}", file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(1)
