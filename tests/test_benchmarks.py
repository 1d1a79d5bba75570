"""The benchmark runner's plumbing (no timing assertions): alternated timing and one tiny
`step` run, so that `python benchmarks/run.py step` keeps working."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import bench_fused, bench_progress, bench_step, side_by_side  # noqa: E402


def test_side_by_side_alternates_and_takes_reported_seconds():
    calls = []
    medians = side_by_side({"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or 0.25}, rounds=3)
    assert calls == ["a", "b"] * 4  # a warm-up call of each, then one of each per round
    assert medians["b"] == 0.25 and 0 <= medians["a"] < 0.25


def test_step_benchmark_runs_every_variant(toy_model):
    result = bench_step("toy", batch_size=2, pos=17, repeats=1)
    for name in ("bare", "ours", "skip_unread", "naive", "fit"):
        assert result[f"{name}_ms"] > 0
    assert {"ours_over_bare", "naive_over_ours", "skip_unread_over_ours", "fit_over_ours"} <= set(result)


def test_progress_benchmark_runs_every_bar(toy_model):
    result = bench_progress(batch_size=2, steps=2, rounds=1)
    assert all(result[f"{name}_ms"] > 0 for name in ("no_bar", "lightning_bar", "throttled_bar"))


def test_fused_benchmark_trains_both_sides_to_the_same_parameters(toy_model):
    result = bench_fused(k=2, epochs=1, n_train=8, rounds=1, layers=[3])
    assert result["fused_s"] > 0 and result["separate_s"] > 0
    assert result["max_abs_param_diff"] <= 1e-5
