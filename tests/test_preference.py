"""The preference objective (docs/method.md §11): the bidirectional logistic loss in place of the
hinge, against values computed by hand (math.log / math.exp over the logit differences written
out), per row in fused training, and trained fused as separately."""

from __future__ import annotations

import math

import pytest
import torch

from interventions import train_intervention
from interventions.errors import ConfigError
from interventions.methods import intervention_spec
from interventions.objective import Objective, effectiveness_terms, preference_terms
from interventions.spec import ObjectiveSpec, RunSpec, TrainConfig
from interventions.tasks import load_task
from interventions.training.fused import fused_loss, train_fused

CORRECT, WRONG = torch.tensor([1, 0]), torch.tensor([0, 2])
# β = +1: f_c - f_w = 2 - 1 = 1 and 3 - 1 = 2; β = -1: 3 - 0 = 3 and 0 - 2 = -2 (as tests/test_objective.py)
POS = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0]])
NEG = torch.tensor([[0.0, 3.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0]])
CLEAN = torch.log_softmax(torch.tensor([[0.5, 0.0, -1.0, 2.0], [1.0, 1.0, 0.0, -2.0]]), -1)


def softplus(x: float) -> float:
    return math.log(1.0 + math.exp(x))


def test_preference_terms_by_hand():
    pos, neg = preference_terms(POS, NEG, CORRECT, WRONG)
    # β = +1: softplus(-(s⁺(c) - s⁺(w))) with the differences 1 and 2
    assert pos.tolist() == pytest.approx([softplus(-1.0), softplus(-2.0)], abs=1e-6)
    # β = -1: softplus(-(s⁻(w) - s⁻(c))) = softplus(s⁻(c) - s⁻(w)) with the differences 3 and -2
    assert neg.tolist() == pytest.approx([softplus(3.0), softplus(-2.0)], abs=1e-6)


def test_preference_terms_add_the_answers_tails():
    """Answers of several tokens: s(c) - s(w) = f_c - f_w + tail (docs/method.md §6)."""
    tails = (torch.tensor([0.5, -3.0]), torch.tensor([-1.0, 0.25]))
    pos, neg = preference_terms(POS, NEG, CORRECT, WRONG, tails)
    assert pos.tolist() == pytest.approx([softplus(-1.5), softplus(1.0)], abs=1e-6)
    assert neg.tolist() == pytest.approx([softplus(2.0), softplus(-1.75)], abs=1e-6)


def test_objective_with_preference_replaces_only_the_effectiveness_term():
    flat = torch.tensor([0.5, -1.5])
    hinge_total, hinge_parts = Objective(lambda_f=0.3, lambda_m=0.1, margin=2.0)(POS, NEG, CORRECT, WRONG, CLEAN, flat)
    total, parts = Objective(lambda_f=0.3, lambda_m=0.1, margin=2.0, effectiveness="preference")(
        POS, NEG, CORRECT, WRONG, CLEAN, flat)  # fmt: skip
    e_pref = ((softplus(-1.0) + softplus(3.0)) + (softplus(-2.0) + softplus(-2.0))) / 2  # the margin plays no part
    assert float(parts["effectiveness"]) == pytest.approx(e_pref, abs=1e-6)
    assert float(parts["faithfulness"]) == float(hinge_parts["faithfulness"])
    assert float(parts["minimality"]) == float(hinge_parts["minimality"]) == 2.0
    assert float(total) == pytest.approx(e_pref + 0.3 * float(hinge_parts["faithfulness"]) + 0.1 * 2.0, abs=1e-6)
    assert float(total) != pytest.approx(float(hinge_total), abs=1e-3)


def test_preference_keeps_pushing_where_the_hinge_is_satisfied():
    """Past the margin the hinge's gradient is 0; the logistic loss's is -σ(-d) < 0."""
    logits = POS.clone().requires_grad_()
    pos, _ = preference_terms(logits, NEG, CORRECT, WRONG)
    pos.sum().backward()
    # d(softplus(-d))/d f_c = -σ(-d) with d = 1 (row 0, correct token 1) and d = 2 (row 1, correct token 0)
    assert logits.grad[0, 1].item() == pytest.approx(-1 / (1 + math.exp(1.0)), abs=1e-6)
    assert logits.grad[1, 0].item() == pytest.approx(-1 / (1 + math.exp(2.0)), abs=1e-6)
    hinge = effectiveness_terms(POS.clone().requires_grad_(), NEG, CORRECT, WRONG, margin=0.5)
    assert hinge.tolist() == [3.5, 0.0]  # row 1 satisfies both hinges: nothing left to push


def test_a_per_row_choice_mixes_the_two_forms():
    """Fused training: one form per configuration's rows."""
    mixed = effectiveness_terms(POS, NEG, CORRECT, WRONG, margin=1.0, preference=torch.tensor([True, False]))
    assert mixed.tolist() == pytest.approx([softplus(-1.0) + softplus(3.0), 0.0 + 0.0], abs=1e-6)
    hinge = effectiveness_terms(POS, NEG, CORRECT, WRONG, margin=1.0)
    assert hinge.tolist() == [0.0 + 4.0, 0.0 + 0.0]  # max(0, -1 + 1) + max(0, 3 + 1); max(0, -2 + 1) + max(0, -2 + 1)


def test_fused_loss_with_both_forms_is_the_sum_of_each_alone():
    objectives = [Objective(0.1, 0.0, 1.0), Objective(0.5, 0.01, 2.0, effectiveness="preference")]
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    neg = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    stacked = {"a": torch.randn(2, 4, generator=gen, requires_grad=True)}
    batch = {"correct": torch.tensor([0, 1, 2]), "wrong": torch.tensor([3, 4, 0]),
             "clean_logprobs": torch.log_softmax(torch.randn(3, 5, generator=gen), -1)}  # fmt: skip
    fused = fused_loss(objectives, stacked, batch, pos, neg)
    alone = torch.stack([o(pos[i], neg[i], batch["correct"], batch["wrong"], batch["clean_logprobs"], stacked["a"][i])[0]
                         for i, o in enumerate(objectives)])  # fmt: skip
    torch.testing.assert_close(fused, alone, atol=1e-6, rtol=1e-6)
    grads = torch.autograd.grad(fused.sum(), [pos, neg]), torch.autograd.grad(alone.sum(), [pos, neg])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("method", ["activscalar", "loreft"])
def test_fused_training_with_preference_gives_the_parameters_of_separate_runs(tiny_model, method):
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=8)
    options = intervention_spec(method, init_scale=1e-2, lr=0.05, **({"sites": ["residPost"]} if method == "loreft" else {}))
    objectives = [Objective(), Objective(effectiveness="preference")]
    fused = train_fused(tiny_model, train, objectives, intervention=options, run=RunSpec(epochs=2))
    for objective, got in zip(objectives, fused):
        separate = train_intervention(tiny_model, train, intervention=options, objective=objective, run=RunSpec(epochs=2))
        torch.testing.assert_close(got.flat_params(), separate.method.flat_params(), atol=1e-5, rtol=0)
    # the two objectives train different parameters: by far more than the 1e-5 above
    assert (fused[0].flat_params() - fused[1].flat_params()).abs().max() > 1e-3


def test_effectiveness_is_checked_before_any_model_loads():
    assert ObjectiveSpec(effectiveness="preference").effectiveness == "preference"
    with pytest.raises(ConfigError, match="objective.effectiveness"):
        ObjectiveSpec(effectiveness="logistic")
    with pytest.raises(ConfigError, match=r"fused\[1\].effectiveness"):
        TrainConfig(intervention="activscalar", fused=[{"effectiveness": "hinge"}, {"effectiveness": "dpo"}])
    config = TrainConfig(intervention="activscalar", fused={"effectiveness": ["hinge", "preference"]})
    assert [o.effectiveness for o in config.fused_objectives()] == ["hinge", "preference"]
