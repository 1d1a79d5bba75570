"""A repeated batch (β = ±1, fused configurations) runs the first block's attention once when
no hook acts before its output: the same logits, gradients and training, less compute."""

import pytest
import torch

import interventions.forward as forward
from interventions import train_intervention
from interventions.forward import attention_shareable, last_position_logits, repeated_batch_logits
from interventions.methods import METHODS
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.tasks.datamodule import clean_residual, encode


def attention_rows(model, layer: int, run) -> list[int]:
    """The batch sizes of the hidden states block `layer`'s attention was called on during
    `run()` (a plain torch pre-hook on the module, which the hook names never see)."""
    rows = []

    def record(module, args, kwargs):
        hidden = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() == 3)
        rows.append(hidden.shape[0])

    handle = model.blocks[layer].attn.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return rows


def batch_of(model, n: int, prefix_layer: int = 0) -> dict:
    task = load_task("ioi", model=model, split="train", template=0, n=n)
    batch = encode(model, task, fixed_length=True)
    if prefix_layer:
        batch["resid_pre"] = clean_residual(model, batch, prefix_layer)
    return batch


@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
@pytest.mark.parametrize("first_layer", [0, 1])
def test_shared_attention_gives_the_repeated_forwards_logits_and_gradients(block_model, name, first_layer):
    model = block_model
    batch = batch_of(model, 3, prefix_layer=first_layer)
    tied = METHODS[name].position_tied
    grid = build_grid(model.cfg, sites=["attnOut", "mlpOut", "residPost"], layers=list(range(first_layer, model.cfg.n_layers)),
                      positions="all" if tied else None, seq_len=batch["input_ids"].shape[1])  # fmt: skip
    method = METHODS[name](grid, model.cfg)
    method.initialize("normal", 0.3, seed=5)
    beta = torch.tensor([1.0, -1.0, 0.5]).repeat_interleave(3)
    outs, grads = [], []
    for shared in (True, False):
        method.zero_grad()
        if shared:
            logits = None

            def run():
                nonlocal logits
                logits = repeated_batch_logits(model, batch, 3, method.hooks(beta), prefix_layer=first_layer)

            assert attention_rows(model, first_layer, run) == [3]  # once, on B rows, not 3 × B
        else:
            logits = last_position_logits(model, batch["input_ids"].repeat(3, 1), None, batch["last_index"].repeat(3),
                                          fwd_hooks=method.hooks(beta))  # fmt: skip
        (logits.square().mean() + logits[:, 2].sum()).backward()
        outs.append(logits.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in method.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().sum() > 0
    assert not torch.equal(outs[0][:3], outs[0][3:6])  # the copies were steered apart


def test_a_head_site_on_the_first_layer_keeps_the_copies_attention_separate(block_model):
    model = block_model
    batch = batch_of(model, 2)
    grid = build_grid(model.cfg, sites=["z", "mlpOut"], seq_len=batch["input_ids"].shape[1])
    method = METHODS["activscalar"](grid, model.cfg)
    method.initialize("normal", 0.3, seed=2)
    beta = torch.tensor([1.0, -1.0]).repeat_interleave(2)
    with torch.no_grad():
        logits = None

        def run():
            nonlocal logits
            logits = repeated_batch_logits(model, batch, 2, method.hooks(beta))

        assert attention_rows(model, 0, run) == [4]
        full = last_position_logits(model, batch["input_ids"].repeat(2, 1), None, batch["last_index"].repeat(2),
                                    fwd_hooks=method.hooks(beta))  # fmt: skip
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)


def test_a_padded_batch_runs_the_whole_model_on_every_copy(tiny_model):
    from interventions.tasks.datapoint import Task

    points = (*load_task("ioi", model=tiny_model, split="train", template=0, n=1),
              *load_task("ccc", model=tiny_model, split="train", template=0, n=1))  # fmt: skip
    batch = encode(tiny_model, Task("mixed", "train", "mixed", points), padding_side="right")
    assert not batch["attention_mask"].all()
    grid = build_grid(tiny_model.cfg, sites=["attnOut"], seq_len=batch["input_ids"].shape[1])
    method = METHODS["activscalar"](grid, tiny_model.cfg)
    method.initialize("normal", 0.3, seed=1)
    beta = torch.tensor([1.0, -1.0]).repeat_interleave(2)
    with torch.no_grad():
        logits = None

        def run():
            nonlocal logits
            logits = repeated_batch_logits(tiny_model, batch, 2, method.hooks(beta))

        assert attention_rows(tiny_model, 0, run) == [4]
        full = last_position_logits(tiny_model, batch["input_ids"].repeat(2, 1), batch["attention_mask"].repeat(2, 1),
                                    batch["last_index"].repeat(2), fwd_hooks=method.hooks(beta))  # fmt: skip
    torch.testing.assert_close(logits, full, atol=0, rtol=0)


@pytest.mark.parametrize("names, layer, shareable", [
    (["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.3.hook_resid_post"], 0, True),
    (["blocks.2.hook_attn_out", "unembed.hook_in", "ln_final.hook_normalized"], 2, True),
    (["blocks.1.attn.hook_z"], 0, True),  # a later block's heads: block 0 is still shared
    (["blocks.0.attn.hook_z"], 0, False),  # inside the shared attention
    (["blocks.0.ln1.hook_out"], 0, False),
    (["blocks.2.hook_resid_pre"], 2, False),
    (["blocks.1.hook_mlp_out"], 2, False),  # before the first block that runs
    (["hook_embed"], 0, False),
    ([], 0, True),
])  # fmt: skip
def test_attention_shareable(names, layer, shareable):
    assert attention_shareable(names, layer) is shareable


def test_training_with_the_shared_attention_is_bit_identical(tiny_model, monkeypatch):
    """On the native model the shared path rounds exactly like the repeated full forward."""
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=8)
    shared = train_intervention(tiny_model, train, method="activscalar", epochs=2, init_scale=1e-2, lr=0.05)
    monkeypatch.setattr(forward, "attention_shareable", lambda names, layer: False)
    full = train_intervention(tiny_model, train, method="activscalar", epochs=2, init_scale=1e-2, lr=0.05)
    assert torch.equal(shared.method.flat_params(), full.method.flat_params())
    assert not torch.equal(shared.method.flat_params(), torch.zeros_like(shared.method.flat_params()))
