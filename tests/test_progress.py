"""The throttled progress bar redraws at most every `interval` seconds and always at an
epoch's last batch."""

from types import SimpleNamespace

from lightning.pytorch.callbacks import TQDMProgressBar

from interventions.training.progress import ThrottledProgressBar


def drawn_batches(monkeypatch, interval: float, total: int = 5) -> list[int]:
    drawn = []
    monkeypatch.setattr(TQDMProgressBar, "on_train_batch_end", lambda self, *args: drawn.append(args[-1]))
    monkeypatch.setattr(ThrottledProgressBar, "train_progress_bar", SimpleNamespace(total=total))
    bar = ThrottledProgressBar(interval=interval)
    for i in range(total):
        bar.on_train_batch_end(None, None, None, None, i)
    return drawn


def test_a_long_interval_draws_the_first_and_the_last_batch(monkeypatch):
    assert drawn_batches(monkeypatch, interval=3600) == [0, 4]


def test_no_interval_draws_every_batch(monkeypatch):
    assert drawn_batches(monkeypatch, interval=0) == [0, 1, 2, 3, 4]
