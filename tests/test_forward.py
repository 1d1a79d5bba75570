"""Last-position logits: `skip_unread` (the last block's MLP only at the read positions)
gives the logits and gradients of the full forward, and really runs the MLP on one position."""

from types import SimpleNamespace

import pytest
import torch

from interventions.forward import last_position_logits, last_position_logits_from, unread_mlp_hooks
from interventions.methods import METHODS
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.tasks.datamodule import clean_residual, encode
from interventions.tasks.datapoint import Task
from interventions.spec import RunSpec
from interventions.methods import intervention_spec


@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
def test_skip_unread_gives_the_full_forward_logits_and_gradients(unread_model, name):
    model = unread_model
    task = load_task("ioi", model=model, split="train", template=0, n=4)
    batch = encode(model, task, fixed_length=True)
    tied = METHODS[name].position_tied
    # every site kind, including the last block's MLP output and residual
    grid = build_grid(model.cfg, sites=["attnOut", "mlpOut", "residPost", "z"], positions="all" if tied else None,
                      seq_len=batch["input_ids"].shape[1])  # fmt: skip
    method = METHODS[name](grid, model.cfg)
    method.initialize("normal", 0.3, seed=4)
    beta = torch.tensor([1.0, -1.0, 0.5, -0.5])
    outs, grads = [], []
    for skip in (False, True):
        method.zero_grad()
        logits = last_position_logits(model, batch["input_ids"], None, batch["last_index"],
                                      fwd_hooks=method.hooks(beta), skip_unread=skip)  # fmt: skip
        (logits.square().mean() + logits[:, 3].sum()).backward()
        outs.append(logits.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in method.parameters()]))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().sum() > 0


def test_skip_unread_with_padding_reads_each_row_at_its_position(unread_model):
    model = unread_model
    points = (*load_task("ioi", model=model, split="train", template=0, n=3),
              *load_task("ccc", model=model, split="train", template=0, n=2))  # fmt: skip
    batch = encode(model, Task("mixed", "train", "mixed", points), padding_side="right")
    assert len(set(batch["last_index"].tolist())) > 1
    grid = build_grid(model.cfg, sites=["mlpOut"], positions=None)
    method = METHODS["dynscalar"](grid, model.cfg)
    method.initialize("normal", 0.3, seed=5)
    with torch.no_grad():
        full, skipped = (
            last_position_logits(model, batch["input_ids"], batch["attention_mask"], batch["last_index"],
                                 fwd_hooks=method.hooks(1.0), skip_unread=skip)
            for skip in (False, True)
        )  # fmt: skip
    torch.testing.assert_close(skipped, full, atol=1e-5, rtol=0)


def test_skip_unread_runs_the_last_mlp_on_one_position(unread_model):
    model = unread_model
    task = load_task("ioi", model=model, split="train", template=0, n=2)
    batch = encode(model, task, fixed_length=True)
    last = model.cfg.n_layers - 1
    shapes = {}

    def record(name):
        def hook(h, hook):
            shapes[name] = tuple(h.shape)

        return hook

    names = [f"blocks.{last}.mlp.hook_pre", f"blocks.{last - 1}.mlp.hook_pre", f"blocks.{last}.hook_resid_post"]
    with torch.no_grad():
        last_position_logits(model, batch["input_ids"], None, batch["last_index"],
                             fwd_hooks=[(n, record(n)) for n in names], skip_unread=True)  # fmt: skip
    seq_len = batch["input_ids"].shape[1]
    assert shapes[names[0]][:2] == (2, 1)  # the last block's MLP: one position
    assert shapes[names[1]][:2] == (2, seq_len)  # earlier blocks: every position
    assert shapes[names[2]][:2] == (2, seq_len)  # the residual keeps its shape for later hooks


def test_skip_unread_from_a_cached_residual(block_model):
    model = block_model
    task = load_task("ioi", model=model, split="train", template=0, n=3)
    batch = encode(model, task, fixed_length=True)
    grid = build_grid(model.cfg, sites=["mlpOut", "residPost"], layers=[model.cfg.n_layers - 1],
                      seq_len=batch["input_ids"].shape[1])  # fmt: skip
    method = METHODS["activscalar"](grid, model.cfg)
    method.initialize("normal", 0.5, seed=6)
    start = model.cfg.n_layers - 1
    with torch.no_grad():
        resid = clean_residual(model, batch, start)
        full = last_position_logits(model, batch["input_ids"], None, batch["last_index"], fwd_hooks=method.hooks(1.0))
        skipped = last_position_logits_from(model, resid, start, batch["last_index"], fwd_hooks=method.hooks(1.0),
                                            skip_unread=True)  # fmt: skip
    torch.testing.assert_close(skipped, full, atol=1e-5, rtol=0)


def test_other_architectures_run_the_last_mlp_everywhere():
    """Architectures not checked here (e.g. Gemma 2, with a norm after the MLP) are not cut."""
    model = SimpleNamespace(adapter=SimpleNamespace(), cfg=SimpleNamespace(n_layers=2))
    assert unread_mlp_hooks(model, torch.tensor([3]), 4) == []


def test_training_with_skip_unread_is_the_same_up_to_rounding(unread_model):
    from interventions import train_intervention

    train = load_task("ccc", model=unread_model, split="train", template=0, n=8)
    runs = [train_intervention(unread_model, train, intervention="activscalar", run=RunSpec(epochs=2, skip_unread=s)) for s in (True, False)]
    assert runs[0].module.skip_unread and not runs[1].module.skip_unread
    torch.testing.assert_close(runs[0].method.flat_params(), runs[1].method.flat_params(), atol=1e-5, rtol=0)


def test_fused_training_with_skip_unread_equals_separate_runs(tiny_model):
    from interventions import train_intervention
    from interventions.training.fused import train_fused
    from interventions.objective import Objective

    train = load_task("ccc", model=tiny_model, split="train", template=0, n=8)
    objectives = [Objective(0.0, 0.0, 1.0), Objective(1.0, 0.01, 2.0)]
    fused = train_fused(tiny_model, train, objectives, intervention=intervention_spec(init_scale=1e-2, lr=0.05), run=RunSpec(epochs=2, skip_unread=True))
    for objective, got in zip(objectives, fused):
        alone = train_intervention(tiny_model, train, intervention=intervention_spec(init_scale=1e-2, lr=0.05), objective=objective, run=RunSpec(epochs=2, skip_unread=True))  # fmt: skip
        torch.testing.assert_close(got.flat_params(), alone.method.flat_params(), atol=1e-5, rtol=0)
