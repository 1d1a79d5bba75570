"""What reaches the console and a run's log file, and what does not.

- Command line (`configure_cli`): Hydra's job logging (conf/hydra/job_logging/
  interventions.yaml) sends the package's log lines to stdout and to the run's
  `train.log` / `evaluate.log`, warnings and errors to stderr and the log file; Python
  warnings become one `warning: ...` line each; third-party chatter (Lightning's
  start-up banners, W&B) is kept below the console.
- Python API (`quiet_lightning`): a `train_intervention` call prints nothing of
  Lightning's (`GPU available: ...`, its logger tip, its deprecation warnings) unless the
  caller asks for it with `verbose=True`.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager

# Loggers of libraries whose INFO lines are start-up banners, not information about a run.
CHATTY = (
    "lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed",
    "lightning.pytorch.trainer.connectors.signal_connector", "transformer_lens",
)  # fmt: skip
# Warnings raised inside libraries for their own code (nothing a user of this project can act on),
# and Lightning's advice to prepend `srun`, given on every run of a machine where SLURM is
# installed (this project's SLURM jobs are started by submitit, which uses srun).
LIBRARY_WARNINGS = (".*does not have many workers.*", ".*litlogger.*", ".*LeafSpec.*",
                    ".*The `srun` command is available on your system but is not used.*")  # fmt: skip


class BelowWarning(logging.Filter):
    """Passes records below WARNING (the console's stdout handler; stderr gets the rest)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}"


def configure_cli() -> None:
    """Console settings of the entry points (train.py, evaluate.py, benchmarks)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.formatwarning = _one_line_warning
    logging.captureWarnings(True)  # warnings reach train.log too


@contextmanager
def quiet_lightning(verbose: bool = False):
    """Within the block, Lightning's banners and library warnings stay off the console
    (unless `verbose`); the loggers' levels and the warning filters are restored after."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in CHATTY]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in LIBRARY_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
