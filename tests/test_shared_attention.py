"""A repeated batch (β = ±1, fused configurations) runs the first block's attention once when
no hook acts before its output: the same logits, gradients and training, less compute."""

import pytest
import torch

import interventions.forward as forward
from interventions import train_intervention
from interventions.forward import attention_shareable, embeddings, last_position_logits, repeated_batch_logits
from interventions.methods import METHODS
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.tasks.datamodule import clean_residual, encode
from interventions.spec import RunSpec
from interventions.methods import intervention_spec


def attention_rows(model, layer: int, run) -> tuple:
    """(run()'s result, the batch sizes of the hidden states block `layer`'s attention was
    called on meanwhile), read by a plain torch pre-hook on the module, which the hook names
    never see."""
    rows = []

    def record(module, args, kwargs):
        hidden = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() == 3)
        rows.append(hidden.shape[0])

    handle = model.blocks[layer].attn.register_forward_pre_hook(record, with_kwargs=True)
    try:
        return run(), rows
    finally:
        handle.remove()


def repeated_full_logits(model, batch: dict, reps: int, hooks: list) -> torch.Tensor:
    """The reference: the whole model on the batch repeated `reps` times, every copy's attention."""
    mask = batch["attention_mask"].repeat(reps, 1)
    return last_position_logits(model, batch["input_ids"].repeat(reps, 1), None if mask.all() else mask,
                                batch["last_index"].repeat(reps), fwd_hooks=hooks)  # fmt: skip


def batch_of(model, n: int, prefix_layer: int = 0) -> dict:
    task = load_task("ioi", model=model, split="train", template=0, n=n)
    batch = encode(model, task, fixed_length=True)
    if prefix_layer:
        batch["resid_pre"] = clean_residual(model, batch, prefix_layer)
    return batch


def test_embeddings_are_the_residual_entering_block_0(block_model):
    ids = batch_of(block_model, 3)["input_ids"]
    with torch.no_grad():
        reference = block_model(ids, stop_at_layer=0)
    assert reference.shape == (3, ids.shape[1], block_model.cfg.d_model)
    assert torch.equal(embeddings(block_model, ids), reference)
    # the same token at another position embeds differently: the positions are added
    assert not torch.equal(embeddings(block_model, ids[:, 1:])[:, 0], reference[:, 1])


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
            logits, rows = attention_rows(
                model, first_layer, lambda: repeated_batch_logits(model, batch, 3, method.hooks(beta), first_layer)
            )
            assert rows == [3]  # once, on B rows, not 3 × B
        else:
            logits = repeated_full_logits(model, batch, 3, method.hooks(beta))
        (logits.square().mean() + logits[:, 2].sum()).backward()
        outs.append(logits.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in method.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().sum() > 0
    assert not torch.equal(outs[0][:3], outs[0][3:6])  # the copies were steered apart


@pytest.mark.parametrize("case", ["a head site on the first layer", "a padded batch"])
def test_every_copy_runs_its_own_attention_where_they_cannot_share_it(block_model, case):
    model = block_model
    if case == "a padded batch":
        from interventions.tasks.datapoint import Task

        points = (*load_task("ioi", model=model, split="train", template=0, n=1),
                  *load_task("ccc", model=model, split="train", template=0, n=1))  # fmt: skip
        batch = encode(model, Task("mixed", "train", "mixed", points), padding_side="right")
        assert not batch["attention_mask"].all()
        sites = ["attnOut"]
    else:
        batch, sites = batch_of(model, 2), ["z", "mlpOut"]
    grid = build_grid(model.cfg, sites=sites, seq_len=batch["input_ids"].shape[1])
    method = METHODS["activscalar"](grid, model.cfg)
    method.initialize("normal", 0.3, seed=2)
    beta = torch.tensor([1.0, -1.0]).repeat_interleave(2)
    with torch.no_grad():
        logits, rows = attention_rows(model, 0, lambda: repeated_batch_logits(model, batch, 2, method.hooks(beta)))
        full = repeated_full_logits(model, batch, 2, method.hooks(beta))
    assert rows == [4]
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("names, layer, shareable", [
    (["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.3.hook_resid_post"], 0, True),
    (["blocks.2.hook_attn_out", "unembed.hook_in", "ln_final.hook_normalized"], 2, True),
    (["blocks.1.attn.hook_z"], 0, True),  # a later block's heads: block 0 is still shared
    (["blocks.0.attn.hook_z"], 0, False),  # inside the shared attention
    (["blocks.0.ln1.hook_out"], 0, False),
    (["blocks.0.hook_q_input"], 0, False),  # an attention input, by its block-level alias
    (["blocks.1.ln2.hook_out", "blocks.1.mlp.hook_out", "blocks.1.hook_resid_mid"], 1, True),
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
    shared = train_intervention(tiny_model, train, intervention=intervention_spec("activscalar", init_scale=1e-2, lr=0.05), run=RunSpec(epochs=2))
    monkeypatch.setattr(forward, "attention_shareable", lambda names, layer: False)
    full = train_intervention(tiny_model, train, intervention=intervention_spec("activscalar", init_scale=1e-2, lr=0.05), run=RunSpec(epochs=2))
    assert torch.equal(shared.method.flat_params(), full.method.flat_params())
    assert not torch.equal(shared.method.flat_params(), torch.zeros_like(shared.method.flat_params()))
