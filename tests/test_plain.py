"""interventions.plain: the training module's steered forward through the model's plain
Hugging Face form gives the bridge's logits and gradients (to float rounding), falls back to
the bridge where it must, never trains or changes the frozen weights, and leaves no hook."""

from __future__ import annotations

import pytest
import torch

from interventions.errors import ConfigError
from interventions.methods import METHODS
from interventions.objective import Objective
from interventions.plain import plain_form
from interventions.sites import build_grid
from interventions.spec import RunSpec
from interventions.training.module import InterventionModule

SEQ = 6
METHOD_SITES = [  # each method, on sites of every kind the plain form maps (a head's z and o among them)
    ("activscalar", ["attnOut", "mlpOut"]), ("activscalar", ["z", "o", "residPost"]), ("dynscalar", ["attnOut", "z"]),
    ("steervec", ["mlpOut", "o"]), ("loreft", ["residPost"]),
]  # fmt: skip


def batch_of(model, padding: str | None, seed: int = 0) -> dict:
    """A batch of 3 prompts of SEQ tokens; `padding` "right"/"left" shortens the first row by 2."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, model.cfg.d_vocab, (3, SEQ), generator=g)
    mask = torch.ones_like(ids)
    last = torch.full((3,), SEQ - 1)
    if padding == "right":
        mask[0, -2:], last[0] = 0, SEQ - 3
    elif padding == "left":
        mask[0, :2] = 0
    return {"input_ids": ids, "attention_mask": mask, "last_index": last,
            "correct": torch.randint(4, model.cfg.d_vocab, (3,), generator=g),
            "wrong": torch.randint(4, model.cfg.d_vocab, (3,), generator=g)}  # fmt: skip


def method_of(model, name: str, sites, scale: float = 0.3):
    positions = None if name == "dynscalar" else "all"
    grid = build_grid(model.cfg, sites=sites, positions=positions, seq_len=SEQ)
    method = METHODS[name](grid, model.cfg, model.W_O)
    if name == "loreft":  # R is held orthonormal by a parametrization: its own initialisation
        method.initialize("normal", scale, seed=1)
        return method
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return method


def assert_gradients_close(got: dict, want: dict) -> None:
    """Gradients by parameter name equal to float rounding: 1e-4 relative, and 1e-5 of the
    largest gradient in absolute terms, since an element near zero carries the rounding of
    the larger terms summed into it (a fixed 1e-5 was half used up on LoReFT's
    gradients of 3e-5). Measured with 1 and 2 threads, with and without
    torch.use_deterministic_algorithms: every comparison in this module uses at most 19% of
    its tolerance."""
    largest = max(float(g.abs().max()) for g in want.values())
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5 * max(1.0, largest))


def pair(model, name: str, sites):
    """(module through the plain form, module through the bridge) over one method object."""
    method = method_of(model, name, sites)
    plain = InterventionModule(model, method, Objective())
    bridge = InterventionModule(model, method, Objective(), forward="bridge")
    return plain, bridge


@pytest.mark.parametrize("padding", [None, "right"])
@pytest.mark.parametrize("name,sites", METHOD_SITES)
def test_plain_logits_and_gradients_equal_the_bridges(tiny_model, name, sites, padding):
    plain, bridge = pair(tiny_model, name, sites)
    assert plain._frozen.plain is not None and bridge._frozen.plain is None
    batch = batch_of(tiny_model, padding)  # right-padded, a position-tied method runs on the bridge
    grads = []
    for module in (plain, bridge):
        module.method.zero_grad(set_to_none=True)
        pos, neg = module.steered_logits(batch)
        (pos.logsumexp(-1).sum() - 2 * neg[:, 5].sum()).backward()
        grads.append(([pos, neg], {k: p.grad.clone() for k, p in module.method.named_parameters()}))
    (logits_p, grads_p), (logits_b, grads_b) = grads
    assert logits_p[0].abs().max() > 1e-2  # a real comparison: the logits are not all zero
    assert not torch.allclose(logits_p[0], logits_p[1])  # β = ±1 steer differently
    for a, b in zip(logits_p, logits_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert_gradients_close(grads_p, grads_b)


def test_left_padding_gets_the_bridges_positions(tiny_model):
    plain, bridge = pair(tiny_model, "dynscalar", ["attnOut", "mlpOut"])
    batch = batch_of(tiny_model, "left")
    with torch.no_grad():
        for a, b in zip(plain.steered_logits(batch), bridge.steered_logits(batch)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_steps_the_plain_form_cannot_run_fall_back_to_the_bridge(tiny_model):
    plain, _ = pair(tiny_model, "activscalar", ["attnOut"])
    form = plain._frozen.plain
    calls = []
    form.register_forward_pre_hook(lambda module, args: calls.append(1))
    batch = batch_of(tiny_model, None)
    with torch.no_grad():
        plain.steered_logits(batch)
        assert len(calls) == 1
        probe = ("blocks.0.hook_resid_pre", lambda h, hook: h)
        plain.steered_logits(batch, extra_hooks=[probe])  # the overflow probe's hook points: the bridge
        plain.check_overflow(batch)
    assert len(calls) == 1
    form._forward_pre_hooks.clear()


def test_models_and_methods_without_a_plain_form_use_the_bridge(tiny_model, hf_gpt2):
    assert plain_form(tiny_model, method_of(tiny_model, "activscalar", ["v"])) is None  # GPT-2's fused q/k/v
    assert plain_form(tiny_model, method_of(tiny_model, "activscalar", ["attnOut"]), forward="bridge") is None
    assert plain_form(hf_gpt2, method_of(hf_gpt2, "activscalar", ["attnOut"])) is None  # a hub model's bridge


def test_the_frozen_form_gets_no_gradient_and_never_changes(tiny_model):
    plain, _ = pair(tiny_model, "activscalar", ["attnOut", "mlpOut"])
    form = plain._frozen.plain
    before = {k: v.clone() for k, v in form.state_dict().items()}
    optimizer = torch.optim.Adam(plain.method.parameters(), lr=0.1)
    batch = batch_of(tiny_model, None)
    for _ in range(3):
        pos, neg = plain.steered_logits(batch)
        optimizer.zero_grad()
        (pos[:, 4].sum() - neg[:, 4].sum()).backward()
        optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in form.parameters())
    assert all(torch.equal(before[k], v) for k, v in form.state_dict().items())
    assert list(plain.parameters()) == list(plain.method.parameters())  # the form is no child of the module


def test_hooks_are_removed_when_the_forward_raises(tiny_model):
    plain, _ = pair(tiny_model, "activscalar", ["attnOut"])
    form = plain._frozen.plain

    def boom(*args):
        raise RuntimeError("boom")

    handle = form.transformer.h[1].register_forward_hook(boom)
    with pytest.raises(RuntimeError):
        plain.steered_logits(batch_of(tiny_model, None))
    handle.remove()
    left = [m for m in form.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert left == []


def test_forward_is_checked():
    with pytest.raises(ConfigError):
        RunSpec(forward="plain")


@pytest.mark.parametrize("name,sites", [("activscalar", ["attnOut", "z"]), ("dynscalar", ["mlpOut", "o"])])
def test_fused_steps_on_the_plain_form_equal_the_bridges(tiny_model, name, sites):
    from interventions.training.fused import fused_step_logits, stack_parameters

    methods = [method_of(tiny_model, name, sites) for _ in range(2)]
    with torch.no_grad():
        methods[1].params[next(iter(methods[1].params))].mul_(-2)  # two different settings
    stacked = stack_parameters(methods)
    plain = plain_form(tiny_model, methods[0])
    for padding in (None, "right"):
        batch = batch_of(tiny_model, padding)
        on_plain = fused_step_logits(tiny_model, methods[0], stacked, batch, plain=plain)
        on_bridge = fused_step_logits(tiny_model, methods[0], stacked, batch)
        assert not torch.allclose(on_plain[0][0], on_plain[0][1])  # the settings steer differently
        for a, b in zip(on_plain, on_bridge):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def with_answers(batch: dict, model, lengths, seed: int = 2) -> dict:
    """`batch` with answers of up to 3 tokens, `lengths` [B, 2] (correct, wrong) of them real."""
    g = torch.Generator().manual_seed(seed)
    answers = torch.randint(4, model.cfg.d_vocab, (len(lengths), 2, 3), generator=g)
    return {**batch, "answer_ids": answers, "answer_len": torch.tensor(lengths), "correct": answers[:, 0, 0],
            "wrong": answers[:, 1, 0]}  # fmt: skip


@pytest.mark.parametrize("padding", [None, "right"])
@pytest.mark.parametrize("name,sites", METHOD_SITES)
def test_answer_tails_and_their_gradients_on_the_plain_form_equal_the_bridges(tiny_model, name, sites, padding):
    """Answers of several tokens train on the plain form too (the teacher-forced forward)."""
    plain, bridge = pair(tiny_model, name, sites)
    batch = with_answers(batch_of(tiny_model, padding), tiny_model, [[3, 2], [1, 3], [2, 2]])
    calls = []
    handle = plain._frozen.plain.register_forward_pre_hook(lambda module, args: calls.append(1))
    results = []
    for module in (plain, bridge):
        module.method.zero_grad(set_to_none=True)
        (pos, neg), (tail_pos, tail_neg) = module.steered(batch)
        (pos.logsumexp(-1).sum() - 2 * neg[:, 5].sum() + tail_pos.sum() - 3 * tail_neg.sum()).backward()
        results.append(([pos, neg, tail_pos, tail_neg], {k: p.grad.clone() for k, p in module.method.named_parameters()}))
    handle.remove()
    assert calls == [1]  # the plain module's one forward ran on the plain form
    (values_p, grads_p), (values_b, grads_b) = results
    assert values_p[2].abs().min() > 1e-3 and not torch.allclose(values_p[2], values_p[3])  # real tails, β = ±1 differ
    for a, b in zip(values_p, values_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert_gradients_close(grads_p, grads_b)


def test_fused_answer_tails_on_the_plain_form_equal_the_bridges(tiny_model):
    from interventions.training.fused import fused_step_scores, stack_parameters

    methods = [method_of(tiny_model, "activscalar", ["attnOut", "z"]) for _ in range(2)]
    with torch.no_grad():
        methods[1].params[next(iter(methods[1].params))].mul_(-2)  # two different settings
    stacked = stack_parameters(methods)
    batch = with_answers(batch_of(tiny_model, "right"), tiny_model, [[3, 2], [1, 3], [2, 2]])
    form, calls = plain_form(tiny_model, methods[0]), []
    handle = form.register_forward_pre_hook(lambda module, args: calls.append(1))
    on_plain = fused_step_scores(tiny_model, methods[0], stacked, batch, plain=form)
    handle.remove()
    on_bridge = fused_step_scores(tiny_model, methods[0], stacked, batch)
    assert calls == [1]
    assert not torch.allclose(on_plain[2][0][0], on_plain[2][0][1])  # the settings' tails differ
    for a, b in zip([*on_plain[:2], *on_plain[2]], [*on_bridge[:2], *on_bridge[2]]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
