"""Skipping the unchanged prefix of the model gives the same logits and the same training."""

import torch

from interventions import train_intervention
from interventions.forward import last_position_logits, last_position_logits_from, supports_prefix_skip
from interventions.methods import ActivScalar
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.tasks.datamodule import clean_residual, encode


def test_prefix_skip_gives_the_full_forward_logits_with_hooks(tiny_model):
    assert supports_prefix_skip(tiny_model)
    task = load_task("ioi", model=tiny_model, split="train", template=0, n=6)
    batch = encode(tiny_model, task, fixed_length=True)
    grid = build_grid(tiny_model.cfg, sites=["attnOut", "mlpOut", "z"], layers=[1], seq_len=batch["input_ids"].shape[1])
    method = ActivScalar(grid, tiny_model.cfg)
    method.initialize("normal", 0.5, seed=3)
    beta = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 1.0])
    with torch.no_grad():
        full = last_position_logits(tiny_model, batch["input_ids"], batch["attention_mask"], batch["last_index"],
                                    fwd_hooks=method.hooks(beta))  # fmt: skip
        resid = clean_residual(tiny_model, batch, 1)
        skipped = last_position_logits_from(tiny_model, resid, 1, batch["last_index"], fwd_hooks=method.hooks(beta))
    torch.testing.assert_close(skipped, full, atol=1e-5, rtol=0)


def test_training_with_and_without_the_prefix_skip_is_the_same(tiny_model):
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=8)
    runs = [
        train_intervention(tiny_model, train, method="activscalar", layers=[1], epochs=2, prefix_skip=skip)
        for skip in (True, False)
    ]
    assert runs[0].module.prefix_layer == 1 and runs[1].module.prefix_layer == 0
    torch.testing.assert_close(runs[0].method.flat_params(), runs[1].method.flat_params(), atol=1e-5, rtol=0)
