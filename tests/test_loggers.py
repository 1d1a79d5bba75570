"""make_logger: an offline W&B run by default, CSV when W&B cannot start."""

from __future__ import annotations

import pytest

from interventions.loggers import finish, is_wandb, make_logger


def test_offline_wandb_run_starts_without_lightnings_anonymous_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = make_logger("wandb", tmp_path, mode="offline", name="t", config={"seed": 0})
    try:
        assert is_wandb(logger)
        # Lightning's anonymous=None made wandb >= 0.22 warn on every run
        assert "anonymous" not in logger._wandb_init
        assert logger.experiment.config["seed"] == 0
    finally:
        finish(logger)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_wandb_failing_to_start_falls_back_to_csv(tmp_path):
    with pytest.warns(UserWarning, match="W&B could not start"):
        logger = make_logger("wandb", tmp_path, mode="not-a-mode")
    assert type(logger).__name__ == "CSVLogger"
