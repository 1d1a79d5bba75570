"""Experiment loggers: W&B (offline by default, or $WANDB_MODE), CSV, or none.

W&B failing to start (not installed, no permission to write, a bad setting) never stops
training: the run falls back to CSV with a one-line warning. In online mode W&B's server
is tried first (a few seconds at most): if it cannot be reached, the run says so at once
and logs offline instead (`wandb sync` uploads it later), rather than waiting W&B's own
timeout of about 90 s.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from interventions.reach import unreachable

log = logging.getLogger(__name__)


WANDB_SERVER = "https://api.wandb.ai"


def make_logger(kind: str, run_dir: str | Path, project: str = "interventions", mode: str = "offline",
                group: str | None = None, name: str | None = None, config: dict | None = None) -> Logger | None:  # fmt: skip
    """A Lightning logger writing under `run_dir` (None for kind "none")."""
    run_dir = Path(run_dir)
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if mode == "online":
        reason = unreachable(os.environ.get("WANDB_BASE_URL") or WANDB_SERVER)
        if reason is not None:
            warnings.warn(f"W&B online: {reason}; logging this run offline instead in {run_dir / 'wandb'} "
                          "(`wandb sync` uploads it later)", stacklevel=2)  # fmt: skip
            mode = "offline"
    try:
        os.environ.setdefault("WANDB_SILENT", "true")
        logger = WandbLogger(
            project=project, save_dir=str(run_dir), mode=mode, group=group, name=name,
            config=config, reinit="finish_previous",
        )  # fmt: skip
        # Lightning passes anonymous=None, which wandb >= 0.22 answers with a deprecation
        # warning on every run; None is wandb's default anyway.
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        logger.experiment  # start the run now, so a failure shows here and not mid-training
        return logger
    except Exception as error:  # any W&B failure: keep training, log to CSV instead
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"W&B could not start ({first}); logging to CSV in {run_dir / 'csv'} instead", stacklevel=2)
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")


def is_wandb(logger) -> bool:
    return logger is not None and type(logger).__name__ == "WandbLogger"


def log_files(logger, images: dict[str, Path], table_rows: list[dict] | None = None, summary: dict | None = None,
              table_key: str = "scalars") -> None:  # fmt: skip
    """Images, a table (named `table_key`) and summary values to W&B; other loggers get the
    summary values."""
    if logger is None:
        return
    if not is_wandb(logger):
        if summary:
            logger.log_metrics(summary)
            logger.save()
        return
    try:
        for key, path in images.items():
            logger.log_image(key=key, images=[str(path)])
        if table_rows:
            columns = list(table_rows[0])
            logger.log_table(key=table_key, columns=columns, data=[[r[c] for c in columns] for r in table_rows])
        if summary:
            logger.experiment.summary.update(summary)
    except Exception as error:  # never lose a finished run to a logging problem
        warnings.warn(f"W&B logging failed ({error}); the files in the run directory are complete", stacklevel=2)


def finish(logger) -> None:
    if is_wandb(logger):
        try:
            logger.experiment.finish()
        except Exception as error:
            log.warning("W&B finish failed: %s", error)
