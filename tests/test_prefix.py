"""Skipping the unchanged prefix of the model gives the same logits and the same training."""

import torch

from interventions import train_intervention
from interventions.forward import last_position_logits, last_position_logits_from, supports_prefix_skip
from interventions.methods import ActivScalar
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.tasks.datamodule import clean_residual, encode
from interventions.spec import RunSpec
from interventions.methods import intervention_spec


def test_prefix_skip_gives_the_full_forward_logits_with_hooks(block_model):
    model = block_model
    assert supports_prefix_skip(model)
    task = load_task("ioi", model=model, split="train", template=0, n=6)
    batch = encode(model, task, fixed_length=True)
    grid = build_grid(model.cfg, sites=["attnOut", "mlpOut", "z"], layers=[1], seq_len=batch["input_ids"].shape[1])
    method = ActivScalar(grid, model.cfg)
    method.initialize("normal", 0.5, seed=3)
    beta = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 1.0])
    with torch.no_grad():
        full = last_position_logits(model, batch["input_ids"], batch["attention_mask"], batch["last_index"],
                                    fwd_hooks=method.hooks(beta))  # fmt: skip
        resid = clean_residual(model, batch, 1)
        skipped = last_position_logits_from(model, resid, 1, batch["last_index"], fwd_hooks=method.hooks(beta))
    torch.testing.assert_close(skipped, full, atol=1e-5, rtol=0)


def test_training_with_and_without_the_prefix_skip_is_the_same(block_model):
    model = block_model
    train = load_task("ccc", model=model, split="train", template=0, n=8)
    runs = [
        train_intervention(model, train, intervention=intervention_spec("activscalar", layers=[1]), run=RunSpec(epochs=2, prefix_skip=skip))
        for skip in (True, False)
    ]
    assert runs[0].module.prefix_layer == 1 and runs[1].module.prefix_layer == 0
    torch.testing.assert_close(runs[0].method.flat_params(), runs[1].method.flat_params(), atol=1e-5, rtol=0)


def test_other_architectures_run_the_whole_model():
    """Rotary models (Pythia, LLaMA) need position embeddings inside each block: no skip."""
    from types import SimpleNamespace

    assert not supports_prefix_skip(SimpleNamespace(adapter=SimpleNamespace()))


def test_prefix_skip_on_a_bfloat16_model(toy_tokenizer):
    """The residual cache is float32; a half-precision model still runs from it."""
    from conftest import build_tiny_model

    model = build_tiny_model(toy_tokenizer, seed=2).to(torch.bfloat16)
    ids = torch.randint(5, len(toy_tokenizer), (2, 7))
    last = torch.full((2,), 6)
    with torch.no_grad():
        full = last_position_logits(model, ids, None, last)
        resid = clean_residual(model, {"input_ids": ids, "index": torch.arange(2)}, 1)
        skipped = last_position_logits_from(model, resid, 1, last)
    assert resid.dtype == torch.float32 and skipped.dtype == torch.bfloat16
    torch.testing.assert_close(skipped, full, atol=0, rtol=0)
