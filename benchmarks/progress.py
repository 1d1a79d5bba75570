"""`python benchmarks/run.py progress`: a toy training step inside `Trainer.fit` with no
progress bar, with Lightning's bar (redrawn every batch) and with the command line's
throttled bar."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

from benchmarks.harness import build, fit_epoch, make_batch, make_module, side_by_side
from interventions.training.progress import ThrottledProgressBar

def bench_progress(batch_size: int = 4, steps: int = 64, rounds: int = 7) -> dict:
    """Seconds per step inside `Trainer.fit` on the toy model without a progress bar, with
    Lightning's TQDM bar (redrawn every batch) and with the CLI's throttled bar."""
    model, d_vocab = build("toy")
    batch = make_batch(model, d_vocab, batch_size, 17)
    module = make_module(model, 17)
    t = side_by_side({
        "no_bar": lambda: fit_epoch(module, batch, steps),
        "lightning_bar": lambda: fit_epoch(module, batch, steps, TQDMProgressBar()),
        "throttled_bar": lambda: fit_epoch(module, batch, steps, ThrottledProgressBar()),
    }, rounds)  # fmt: skip
    return {"batch": batch_size, "steps": steps, "rounds": rounds, **{f"{k}_ms": round(v * 1e3, 2) for k, v in t.items()},
            "lightning_bar_over_no_bar": round(t["lightning_bar"] / t["no_bar"], 3),
            "throttled_bar_over_no_bar": round(t["throttled_bar"] / t["no_bar"], 3)}  # fmt: skip
