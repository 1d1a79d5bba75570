"""The sweep summary: every run of a sweep collected, its Pareto fronts, a table and a W&B run.

    python evaluate.py sweep=multirun/pgs        # rebuild the summary any time

At the end of a multirun, `SweepSummary.on_multirun_end` (registered in conf/train.yaml)
calls `summarize_sweep`, which reads every run folder of the sweep and writes, at its root:
pareto.json, pareto.md, pareto_faithfulness.png, pareto_minimality.png and a W&B summary
run (when the logger is wandb); an adaptive sweep (`hydra/sweeper=pareto`) also gets its
trial table and hypervolume curves (`sweeps.study`). A run's status is "finished" (metrics.json present),
"failed" (error.txt present; the error line is recorded), "interrupted" (stopped by SIGINT or
SIGTERM: a relaunch runs it again) or "incomplete" (started, never finished: killed without a
chance to say so, or still running). Pareto membership is computed on TEST metrics among
finished runs; see interventions.sweeps.pareto for the conventions. A run whose metrics.json
is there but whose export cannot be read back (a damaged or cut-short
intervention.safetensors) is "damaged": never on a front, named in a warning, and run again
by a relaunch. The callback also sets the sweep's exit status: 1 when any run failed.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import warnings
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from interventions.io import atomic_write_text, read_json, save_figure, write_json
from interventions.loggers import finish, is_wandb, make_logger
from interventions.rundir import ERROR_FILE, METRICS_FILE, error_line, export_problem, timestamp
from interventions.methods.registry import method_label
from interventions.sweeps.jobs import JOB_FILE, check_sweep_folder, run_dirs, sweep_group
from interventions.sweeps.pareto import FRONTS, front_of
from interventions.sweeps.plots import plot_front
from interventions.sweeps.study import write_study_outputs

log = logging.getLogger(__name__)
SUMMARY_FILE = "pareto.json"


TABLE_FILE = "pareto.md"


PLOT_FILES = {name: f"pareto_{name}.png" for name in FRONTS}


# A run's status in pareto.json: metrics.json written; metrics.json but an unreadable export;
# error.txt written; stopped by a signal; none of these
STATUSES = ("finished", "damaged", "failed", "interrupted", "incomplete")


def _overrides_of(run_dir: Path, job: dict | None) -> list[str]:
    if job and job.get("overrides") is not None:
        return list(job["overrides"])
    path = run_dir / ".hydra" / "overrides.yaml"
    if path.exists():
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
        "effectiveness": g("objective", "effectiveness"),  # hinge or preference (None: written before the option)
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
            "val": None,
            "test": None,
        }
        damaged = export_problem(run_dir) if metrics is not None else None
        if damaged:
            record.update(status="damaged", error=damaged, **_splits(metrics))
        elif metrics is not None and isinstance(metrics.get("test"), dict):
            record.update(status="finished", **_splits(metrics))
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


def _splits(metrics: dict) -> dict:
    """A run's metrics per split (val: runs written before it was measured have none)."""
    return {split: metrics.get(split) for split in ("train", "val", "test")}


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
               "test_minimality", "n_params", "test_flip_accuracy", "test_steering_score", "front_faithfulness",
               "front_minimality", "overrides", "error"]  # fmt: skip
    rows = []
    for r in records:
        h, tr, te = r["hparams"], r.get("train") or {}, r.get("test") or {}
        rows.append([
            r["run"], r["status"], h.get("method"), h.get("lambda_f"), h.get("lambda_m"), h.get("margin"),
            h.get("lr"), h.get("seed"), tr.get("effectiveness"), te.get("effectiveness"),
            tr.get("faithfulness"), te.get("faithfulness"), te.get("minimality"), te.get("n_params"),
            te.get("flip_accuracy"), te.get("steering_score"), bool(r.get("pareto", {}).get("faithfulness")),
            bool(r.get("pareto", {}).get("minimality")), " ".join(r["overrides"]), r.get("error"),
        ])  # fmt: skip
    return columns, rows


def markdown_table(records: list[dict]) -> str:
    head = ["run", "status", "method", "λ_F", "λ_M", "m", "eff. train", "eff. test", "faith. test",
            "minimality", "params", "steering", "front E–F", "front E–M"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        h, tr, te = r["hparams"], r.get("train") or {}, r.get("test") or {}
        p = r.get("pareto", {})
        status = f"{r['status']}: {r.get('error')}" if r["status"] in ("failed", "damaged") else r["status"]
        cells = [r["run"], status.replace("|", "/"), method_label(h.get("method")), _hp(h.get("lambda_f")),
                 _hp(h.get("lambda_m")), _hp(h.get("margin")), _fmt(tr.get("effectiveness")),
                 _fmt(te.get("effectiveness")), _fmt(te.get("faithfulness")), _fmt(te.get("minimality")),
                 _fmt(te.get("n_params")), _fmt(te.get("steering_score")), "●" if p.get("faithfulness") else "",
                 "●" if p.get("minimality") else ""]  # fmt: skip
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
    check_sweep_folder(sweep_dir)
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
        "updated": timestamp(),
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
    study = write_study_outputs(sweep_dir, records)  # None unless the sweep was adaptive
    if study is not None:
        images.update(study["images"])
    if logger.get("kind") == "wandb":
        _wandb_summary(sweep_dir, logger, group, records, images, counts, study)
    for r in records:
        if r["status"] == "damaged":
            log.warning(f"warning: run {r['run']} finished, but {r['error']}; it is left out of the fronts, and "
                        f"relaunching the sweep runs it again ({r['run_dir']})")  # fmt: skip
    if verbose:
        log.info(f"sweep summary: {counts['finished']} finished, {counts['damaged']} damaged, {counts['failed']} failed, "
              f"{counts['interrupted']} interrupted, {counts['incomplete']} incomplete of {counts['runs']} runs; "
              f"front E-F: {', '.join(fronts['faithfulness']) or '-'}; "
              f"front E-M: {', '.join(fronts['minimality']) or '-'}; {sweep_dir / SUMMARY_FILE}")  # fmt: skip
    return summary


def summary_counts(counts: dict) -> dict:
    """The W&B summary run's counts: runs_total, runs_finished, runs_failed, ..."""
    return {("runs_total" if status == "runs" else f"runs_{status}"): value for status, value in counts.items()}


def _wandb_summary(sweep_dir: Path, logger_cfg: dict, group: str, records, images, counts, study=None) -> None:
    """A W&B run (offline by default) in the sweep's group with the table and both plots; for an
    adaptive sweep also its trial table and the hypervolume after each trial (val, test)."""
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
        if study is not None:
            _wandb_study(logger, study)
        logger.experiment.summary.update(summary_counts(counts))
    except Exception as error:  # the files at the sweep root are complete either way
        warnings.warn(f"W&B sweep summary failed ({error}); pareto.json and the plots are written", stacklevel=2)
    finally:
        finish(logger)
        if logger is not None and not is_wandb(logger):
            shutil.rmtree(sweep_dir / "csv", ignore_errors=True)  # make_logger's fallback, unused here


def _wandb_study(logger, study: dict) -> None:
    """The trial table, and the hypervolume after each trial as a curve (step = trial count)."""
    rows = study["rows"]
    columns = ["trial", "run", "state", "params", "val", "test", "ask_seconds"]
    logger.log_table(key="trials", columns=columns, data=[[_cell(row[c]) for c in columns] for row in rows])
    for i in range(len(rows)):
        logger.log_metrics({f"hypervolume/{split}": values[i] for split, values in study["curves"].items()}, step=i + 1)


def _cell(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


class SweepSummary(Callback):
    """Hydra callback: write the sweep summary when a multirun ends (conf/train.yaml)."""

    def on_multirun_end(self, config, **kwargs) -> None:
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
