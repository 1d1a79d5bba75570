"""Training progress on the console: a progress bar on a terminal, plain lines otherwise.

On a terminal, a tqdm bar redrawn at most every 0.2 s. Lightning's own bar redraws after
every batch; on the toy model at batch 4 a step takes about 10 ms and the redraws add
5–11% to it, the throttled bar 1–4% (`python benchmarks/run.py progress`, docs/benchmarks.md
"Performance"). When the output goes to a file or a pipe (a cluster job, `> log.txt`), a
bar would write a carriage-return update per redraw (hundreds of KB per run); there the
progress is one log line per epoch instead, at most every `LINE_INTERVAL_S` seconds and
always for the last epoch.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

log = logging.getLogger(__name__)
LINE_INTERVAL_S = 5.0


def on_terminal() -> bool:
    """Whether progress bars can redraw in place: stderr, where tqdm writes, is a terminal
    that reports a width (a terminal of 0 columns, as some containers report, would get a
    bar of no width: nothing at all)."""
    if not sys.stderr.isatty():
        return False
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError):
        return False


class ThrottledProgressBar(TQDMProgressBar):
    """TQDMProgressBar whose training bar is redrawn at most every `interval` seconds,
    and always at an epoch's last batch (so it ends on the exact count)."""

    def __init__(self, interval: float = 0.2):
        super().__init__()
        self.interval = interval
        self._last_draw = float("-inf")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        bar = self.train_progress_bar
        last_batch = bar is not None and batch_idx + 1 == bar.total
        if last_batch or now - self._last_draw >= self.interval:
            self._last_draw = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class EpochLines:
    """One progress line per epoch, at most every `interval` seconds and always for the
    last epoch: "<label>: epoch 3/25, loss 0.1234, 12.0 s"."""

    def __init__(self, label: str, epochs: int, interval: float = LINE_INTERVAL_S):
        self.label, self.epochs, self.interval = label, epochs, interval
        self.started = time.monotonic()
        self._last = float("-inf")

    def epoch_end(self, epoch: int, loss: float | None) -> None:
        now = time.monotonic()
        if epoch + 1 == self.epochs or now - self._last >= self.interval:
            self._last = now
            shown = "" if loss is None else f", loss {loss:.4g}"
            log.info(f"{self.label}: epoch {epoch + 1}/{self.epochs}{shown}, {now - self.started:.1f} s")


class EpochLinesCallback(Callback):
    """`EpochLines` for a Lightning Trainer (the loss is the epoch's last `train/loss`)."""

    def __init__(self, label: str = "training", interval: float = LINE_INTERVAL_S):
        self.label, self.interval, self.lines = label, interval, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.lines = EpochLines(self.label, trainer.max_epochs, self.interval)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        self.lines.epoch_end(trainer.current_epoch, None if loss is None else float(loss))


def progress_callback(label: str = "training") -> Callback:
    """The command line's progress: the throttled bar on a terminal, else epoch lines."""
    return ThrottledProgressBar() if on_terminal() else EpochLinesCallback(label)
