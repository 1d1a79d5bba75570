"""The benchmark runner's plumbing (no timing assertions): alternated timing and one tiny
`step` run, so that `python benchmarks/run.py step` keeps working."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

from benchmarks.run import (  # noqa: E402
    OPTIMIZATIONS, bench_fused, bench_progress, bench_step, make_batch, make_module, side_by_side, step_variant,
)


def test_side_by_side_alternates_and_takes_reported_seconds():
    calls = []
    medians = side_by_side({"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or 0.25}, rounds=3)
    assert calls == ["a", "b"] * 4  # a warm-up call of each, then one of each per round
    assert medians["b"] == 0.25 and 0 <= medians["a"] < 0.25


def test_step_benchmark_runs_every_variant(toy_model):
    result = bench_step("toy", batch_size=2, pos=17, repeats=1)
    variants = ["skip_unread", "naive", "fit", *(f"without_{name}" for name in OPTIMIZATIONS)]
    for name in ("bare", "ours", *variants):
        assert result[f"{name}_ms"] > 0
    assert {"ours_over_bare", *(f"{name}_over_ours" for name in variants)} <= set(result)


@pytest.mark.parametrize("without", [(), *((name,) for name in OPTIMIZATIONS), tuple(OPTIMIZATIONS)])
def test_every_step_variant_computes_the_products_loss_and_update(toy_model, without):
    """Switching an optimization off must change only the cost: the same first-step loss
    and parameters after the step as the product's module."""
    model, _ = toy_model
    batch = make_batch(model, model.cfg.d_vocab, 3, 17)
    ours, variant = make_module(model, 17), make_module(model, 17)
    logits_pos, logits_neg = ours.steered_logits(batch)
    expected, _ = ours.objective(logits_pos, logits_neg, batch["correct"], batch["wrong"],
                                 batch["clean_logprobs"], ours.method.flat_params())  # fmt: skip
    optimizer = ours.configure_optimizers()
    expected.backward()
    optimizer.step()
    loss = step_variant(variant, variant.configure_optimizers(), batch, without)
    assert abs(float(loss) - expected.item()) < 1e-5
    assert (variant.method.flat_params() - ours.method.flat_params()).abs().max() < 1e-6
    assert not any(p.requires_grad for p in model.parameters())  # the variant froze them again


def test_progress_benchmark_runs_every_bar(toy_model):
    result = bench_progress(batch_size=2, steps=2, rounds=1)
    assert all(result[f"{name}_ms"] > 0 for name in ("no_bar", "lightning_bar", "throttled_bar"))


def test_fused_benchmark_trains_both_sides_to_the_same_parameters(toy_model):
    result = bench_fused(k=2, epochs=1, n_train=8, rounds=1, layers=[3])
    assert result["fused_s"] > 0 and result["separate_s"] > 0
    assert result["max_abs_param_diff"] <= 1e-5
