"""Fused training equals separate runs."""

import pytest
import torch

from interventions import train_intervention
from interventions.fused import fused_step_logits, train_fused
from interventions.objective import Objective
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode

OBJECTIVES = [Objective(0.0, 0.0, 1.0), Objective(1.0, 0.01, 1.0), Objective(0.1, 0.0, 2.0)]


@pytest.mark.parametrize("method", ["activscalar", "steervec"])
def test_fused_training_gives_the_parameters_of_separate_runs(tiny_model, method):
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=12)
    fused = train_fused(tiny_model, train, OBJECTIVES, method=method, epochs=2, init_scale=1e-2, lr=0.05)
    for objective, got in zip(OBJECTIVES, fused):
        separate = train_intervention(tiny_model, train, method=method, objective=objective, epochs=2,
                                      init_scale=1e-2, lr=0.05)  # fmt: skip
        torch.testing.assert_close(got.flat_params(), separate.method.flat_params(), atol=1e-5, rtol=0)
    assert not torch.equal(fused[0].flat_params(), fused[1].flat_params())  # the configs differ


def test_fused_logits_equal_each_method_alone(tiny_model):
    from interventions.methods import ActivScalar
    from interventions.module import InterventionModule
    from interventions.sites import build_grid

    task = load_task("ioi", model=tiny_model, split="train", template=0, n=4)
    batch = encode(tiny_model, task, fixed_length=True)
    grid = build_grid(tiny_model.cfg, seq_len=batch["input_ids"].shape[1])
    methods = []
    for seed in (1, 2):
        m = ActivScalar(grid, tiny_model.cfg)
        m.initialize("normal", 0.3, seed=seed)
        methods.append(m)
    with torch.no_grad():
        pos, neg = fused_step_logits(tiny_model, methods, batch)
        for k, m in enumerate(methods):
            alone_pos, alone_neg = InterventionModule(tiny_model, m, Objective()).steered_logits(batch)
            torch.testing.assert_close(pos[k], alone_pos, atol=1e-5, rtol=0)
            torch.testing.assert_close(neg[k], alone_neg, atol=1e-5, rtol=0)
