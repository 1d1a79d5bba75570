"""Fused training equals separate runs."""

import pytest
import torch

from interventions import train_intervention
from interventions.training.fused import fused_step_logits, stack_parameters, train_fused, unstack_into
from interventions.objective import Objective
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.spec import RunSpec
from interventions.methods import intervention_spec

OBJECTIVES = [Objective(0.0, 0.0, 1.0), Objective(1.0, 0.01, 1.0), Objective(0.1, 0.0, 2.0)]


@pytest.mark.parametrize("method, task, objectives", [
    ("activscalar", "ccc", OBJECTIVES),
    ("steervec", "ccc", OBJECTIVES),
    ("dynscalar", "ccc", OBJECTIVES),
    # a held answer pair: one configuration without λ_H, one with
    ("activscalar", "bias", [Objective(0.1, 0.0, 1.0), Objective(0.1, 0.0, 1.0, lambda_hold=1.0)]),
])  # fmt: skip
def test_fused_training_gives_the_parameters_of_separate_runs(tiny_model, method, task, objectives):
    hold = {"hold_pair": "grammatical"} if task == "bias" else {}
    train = load_task(task, model=tiny_model, split="train", template=0, n=12, **hold)
    fused = train_fused(tiny_model, train, objectives, intervention=intervention_spec(method, init_scale=1e-2, lr=0.05), run=RunSpec(epochs=2))
    for objective, got in zip(objectives, fused):
        separate = train_intervention(tiny_model, train, intervention=intervention_spec(method, init_scale=1e-2, lr=0.05), objective=objective, run=RunSpec(epochs=2))  # fmt: skip
        torch.testing.assert_close(got.flat_params(), separate.method.flat_params(), atol=1e-5, rtol=0)
    assert not torch.equal(fused[0].flat_params(), fused[1].flat_params())  # the configs differ


def test_fused_logits_equal_each_method_alone(tiny_model):
    from interventions.methods import ActivScalar
    from interventions.training.module import InterventionModule
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
        pos, neg = fused_step_logits(tiny_model, methods[0], stack_parameters(methods), batch)
        for k, m in enumerate(methods):
            # the fused step runs on the bridge: compare it with the bridge's own step
            alone_pos, alone_neg = InterventionModule(tiny_model, m, Objective(), forward="bridge").steered_logits(batch)
            torch.testing.assert_close(pos[k], alone_pos, atol=1e-5, rtol=0)
            torch.testing.assert_close(neg[k], alone_neg, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
@pytest.mark.parametrize("sites, heads, positions", [
    (["attnOut", "mlpOut", "residPost"], "all", "all"),
    (["z", "o", "v"], [1, 3], [0, -1]),  # head and position subsets: scattered parameters
])  # fmt: skip
def test_fused_hooks_equal_each_method_alone(tiny_model, name, sites, heads, positions):
    """The vectorised (vmap) hooks give every block of rows its own method's logits and
    gradients, for every method and site kind."""
    from interventions.methods import METHODS
    from interventions.training.module import InterventionModule
    from interventions.sites import build_grid

    task = load_task("ioi", model=tiny_model, split="train", template=0, n=3)
    batch = encode(tiny_model, task, fixed_length=True)
    tied = METHODS[name].position_tied
    grid = build_grid(tiny_model.cfg, sites=sites, heads=heads, positions=positions if tied else None,
                      seq_len=batch["input_ids"].shape[1])  # fmt: skip
    methods = []
    for seed in (1, 2, 3):
        m = METHODS[name](grid, tiny_model.cfg, W_O=tiny_model.W_O.detach())
        m.initialize("normal", 0.3, seed=seed)
        methods.append(m)
    stacked = stack_parameters(methods)
    pos, neg = fused_step_logits(tiny_model, methods[0], stacked, batch)
    (pos.square().sum() + neg.sum()).backward()
    fused_grads = [[p.grad[k] for p in stacked.values()] for k in range(len(methods))]
    for k, m in enumerate(methods):
        m.zero_grad()
        alone_pos, alone_neg = InterventionModule(tiny_model, m, Objective(), forward="bridge").steered_logits(batch)
        torch.testing.assert_close(pos[k].detach(), alone_pos.detach(), atol=1e-5, rtol=0)
        torch.testing.assert_close(neg[k].detach(), alone_neg.detach(), atol=1e-5, rtol=0)
        (alone_pos.square().sum() + alone_neg.sum()).backward()
        for got, want in zip(fused_grads[k], [p.grad for p in m.parameters()]):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_stacked_parameters_round_trip(tiny_model):
    """stack_parameters puts method k at slice k; unstack_into writes slice k back."""
    from interventions.methods import SteerVec
    from interventions.sites import build_grid

    grid = build_grid(tiny_model.cfg, sites=["attnOut", "z"], seq_len=5)
    methods = [SteerVec(grid, tiny_model.cfg, W_O=tiny_model.W_O.detach()) for _ in range(3)]
    for seed, m in enumerate(methods):
        m.initialize("normal", 0.3, seed=seed)
    stacked = stack_parameters(methods)
    assert all(v.is_leaf and v.requires_grad and v.shape[0] == 3 for v in stacked.values())
    for k, m in enumerate(methods):
        torch.testing.assert_close(torch.cat([v[k].reshape(-1) for v in stacked.values()]), m.flat_params())
    with torch.no_grad():
        for v in stacked.values():
            v.mul_(2)
    want = [2 * m.flat_params().detach() for m in methods]
    unstack_into(stacked, methods)
    for m, w in zip(methods, want):
        torch.testing.assert_close(m.flat_params().detach(), w)


@pytest.mark.parametrize("prefix_skip", [True, False])
def test_fused_training_skips_the_prefix_as_separate_runs_do(tiny_model, prefix_skip):
    """Intervening only on the last layer, the fused forward runs from the cached residual
    (block 0 never runs with gradients) and still equals the separate runs, which skip the
    prefix too; with prefix_skip=False it runs the whole model and gives the same numbers."""
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=8)
    layers = [tiny_model.cfg.n_layers - 1]
    grad_calls = []
    handle = tiny_model.blocks[0].register_forward_hook(lambda *_: grad_calls.append(torch.is_grad_enabled()))
    try:
        # on the bridge, whose block 0 the hook watches (without the prefix skip the plain form would run it)
        fused = train_fused(tiny_model, train, OBJECTIVES[:2], intervention=intervention_spec(layers=layers, init_scale=1e-2, lr=0.05), run=RunSpec(epochs=2, prefix_skip=prefix_skip, forward="bridge"))  # fmt: skip
    finally:
        handle.remove()
    assert any(grad_calls) is not prefix_skip
    for objective, got in zip(OBJECTIVES[:2], fused):
        separate = train_intervention(tiny_model, train, intervention=intervention_spec(layers=layers, init_scale=1e-2, lr=0.05), objective=objective, run=RunSpec(epochs=2))  # fmt: skip
        assert separate.module.prefix_layer == layers[0]
        torch.testing.assert_close(got.flat_params(), separate.method.flat_params(), atol=1e-5, rtol=0)


def test_fused_training_pads_on_the_side_it_is_given(tiny_model, monkeypatch):
    """Left and right padding agree to rounding (positions follow the mask), so the side is
    checked where it is used: the data module the fused loop trains on, as in separate runs."""
    import interventions.training.fused
    import interventions.training.setup
    import interventions.training.train

    sides = []
    real_prepare = interventions.training.setup.prepare

    def recording_prepare(*args, **kwargs):
        dm, seq_len = real_prepare(*args, **kwargs)
        sides.append(dm.padding_side)
        return dm, seq_len

    for module in (interventions.training.fused, interventions.training.train):  # where it is called
        monkeypatch.setattr(module, "prepare", recording_prepare)
    train = load_task("ccc", model=tiny_model, split="train", template="all", n=8)
    spec, run = intervention_spec("dynscalar"), RunSpec(epochs=1, padding_side="left")
    train_fused(tiny_model, train, OBJECTIVES[:2], spec, run)
    train_intervention(tiny_model, train, intervention=spec, run=run)
    assert sides == ["left", "left"]


def test_fused_progress_bar_counts_the_steps(tiny_model, capsys, monkeypatch):
    import interventions.training.fused

    monkeypatch.setattr(interventions.training.fused, "on_terminal", lambda: True)  # the bar is for terminals
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=8)
    train_fused(tiny_model, train, OBJECTIVES[:2], run=RunSpec(epochs=2), progress=True)
    err = capsys.readouterr().err
    assert "fused activscalar ×2" in err and "4/4" in err  # 8 prompts, batch 4, 2 epochs
    train_fused(tiny_model, train, OBJECTIVES[:2], run=RunSpec(epochs=1))
    assert capsys.readouterr().err == ""  # off by default (the Python API)


def test_fused_loss_is_the_sum_of_each_objective_alone():
    """All K objectives at once ([K] weights, means and M_k) equal Σ_k objective_k on its own
    block of rows, in value and gradients, with a held pair weighted for one setting only."""
    from interventions.training.fused import fused_loss

    objectives = [Objective(0.0, 0.0, 1.0), Objective(1.0, 0.01, 2.0), Objective(0.3, 0.1, 0.5, lambda_hold=2.0)]
    k, b, vocab = len(objectives), 4, 7
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(k, b, vocab, generator=gen, requires_grad=True)
    neg = torch.randn(k, b, vocab, generator=gen, requires_grad=True)
    stacked = {"a": torch.randn(k, 3, 2, generator=gen, requires_grad=True),
               "b": torch.randn(k, 5, generator=gen, requires_grad=True)}  # fmt: skip
    batch = {"correct": torch.tensor([0, 1, 2, 3]), "wrong": torch.tensor([4, 5, 6, 0]),
             "hold_correct": torch.tensor([1, 1, 2, 2]), "hold_wrong": torch.tensor([3, 0, 3, 0]),
             "clean_logprobs": torch.log_softmax(torch.randn(b, vocab, generator=gen), -1)}  # fmt: skip
    leaves = [pos, neg, *stacked.values()]
    fused = fused_loss(objectives, stacked, batch, pos, neg).sum()
    fused_grads = torch.autograd.grad(fused, leaves)
    alone = sum(
        o(pos[i], neg[i], batch["correct"], batch["wrong"], batch["clean_logprobs"],
          torch.cat([v[i].reshape(-1) for v in stacked.values()]), hold=(batch["hold_correct"], batch["hold_wrong"]))[0]
        for i, o in enumerate(objectives)
    )  # fmt: skip
    alone_grads = torch.autograd.grad(alone, leaves)
    torch.testing.assert_close(fused, alone, atol=1e-6, rtol=1e-6)
    for got, want in zip(fused_grads, alone_grads):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-6)
    without_hold = [*objectives[:2], Objective(0.3, 0.1, 0.5)]
    assert not torch.isclose(fused_loss(without_hold, stacked, batch, pos, neg).sum(), fused)  # the held pair counted
