"""The command line's training progress bar, redrawn at most every 0.2 s.

Lightning's TQDM bar redraws itself (count and logged metrics) after every batch. On the toy
model at batch 4 a step takes about 10 ms and the redraws add 5–11% to it; a bar redrawn
at most every 0.2 s looks the same and adds 1–4%, its per-epoch setup
(`python benchmarks/run.py progress`, README "Performance").
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar


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
