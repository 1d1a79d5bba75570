"""The multi-observable objective: hold a second answer pair fixed while steering the first."""

import pytest
import torch

from interventions.errors import TaskError
from interventions.metrics import InterventionMetrics
from interventions.objective import Objective, hold_terms
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.spec import RunSpec


def test_hold_term_by_hand():
    clean = torch.log_softmax(torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]]), -1)
    pos = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 3.0]])
    neg = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    c2, w2 = torch.tensor([0, 2]), torch.tensor([2, 1])
    # clean LD2: 2-1 = 1 and 3-1 = 2; β=+1 LD2: 3, 1; β=-1 LD2: 1, 3
    expected = ((3 - 1) ** 2 + (1 - 1) ** 2 + (1 - 2) ** 2 + (3 - 2) ** 2) / 2
    assert float(hold_terms(pos, neg, clean, c2, w2).mean()) == pytest.approx(expected)


def test_objective_adds_the_weighted_hold_term_only_when_asked():
    torch.manual_seed(0)
    pos, neg, clean_logits = torch.randn(3, 4, 6)
    clean = torch.log_softmax(clean_logits, -1)
    c, w, c2, w2 = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4]), torch.tensor([5, 5, 0, 0]), torch.tensor([4, 3, 5, 5])
    params = torch.randn(10)
    base, parts = Objective(0.1, 0.01, 1.0)(pos, neg, c, w, clean, params, hold=(c2, w2))
    assert "hold" not in parts  # λ_H = 0: the term is not even computed
    total, parts = Objective(0.1, 0.01, 1.0, lambda_hold=2.0)(pos, neg, c, w, clean, params, hold=(c2, w2))
    assert float(total) == pytest.approx(float(base) + 2.0 * float(hold_terms(pos, neg, clean, c2, w2).mean()))
    assert float(parts["hold"]) == pytest.approx(float(hold_terms(pos, neg, clean, c2, w2).mean()))


def test_metrics_report_the_held_pair_at_each_beta():
    clean = torch.log_softmax(torch.tensor([[2.0, 0.0, 1.0]]), -1)
    pos, neg = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    metric = InterventionMetrics()
    metric.update(pos, neg, clean, torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    held = metric.compute()["hold_logit_diff"]
    assert held["+1"] == pytest.approx(3.0) and held["-1"] == pytest.approx(1.0) and held["0"] == pytest.approx(1.0)
    plain = InterventionMetrics()
    plain.update(pos, neg, clean, torch.tensor([0]), torch.tensor([1]))
    assert "hold_logit_diff" not in plain.compute()


def test_bias_task_carries_the_held_pair_into_batches(tiny_model):
    task = load_task("bias", model=tiny_model, split="train", n=6, hold_pair="grammatical")
    for p in task:
        female = p.correct == " nurse"
        assert (p.hold_correct, p.hold_wrong) == ((" actress", " actor") if female else (" actor", " actress"))
    batch = encode(tiny_model, task)
    tok = tiny_model.tokenizer
    assert batch["hold_correct"].tolist() == [tok.convert_tokens_to_ids(p.hold_correct.strip()) for p in task]
    assert "hold_correct" not in encode(tiny_model, load_task("bias", model=tiny_model, split="train", n=6))
    with pytest.raises(TaskError, match="hold_pair"):
        load_task("ccc", hold_pair="grammatical")


def test_training_with_the_hold_term_moves_the_held_pair_less(toy_model):
    """Toy bias task: debiasing nurse/programmer without the term also erases actress/actor."""
    from interventions import train_intervention

    model, _ = toy_model
    task = load_task("bias", model=model, split="train", n=32, hold_pair="grammatical")
    shifts = {}
    for lam in (0.0, 1.0):
        trained = train_intervention(model, task, intervention="activscalar", objective=Objective(lambda_f=0.0, lambda_m=0.0, margin=0.0, lambda_hold=lam), run=RunSpec(epochs=6, seed=0))  # fmt: skip
        held = trained.evaluate("train")["hold_logit_diff"]
        shifts[lam] = abs(held["-1"] - held["0"])
    assert shifts[0.0] > 0.5  # without the term the grammatical pair moves a lot
    assert shifts[1.0] < 0.25 * shifts[0.0]
