"""The objective E_m + λ_F·F + λ_M·‖θ‖₁ (docs/method.md §4) against values computed by hand.

Tiny tensors (vocab 4, batch 2). Every expected number is written out or computed with
plain Python arithmetic (math.exp / math.log over explicit sums), never with the code
under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from interventions.errors import ConfigError
from interventions.objective import (
    Objective,
    faithfulness_terms,
    hinge_terms,
    kl_to_clean,
    logit_diff,
    minimality_loss,
)


def effectiveness_mean(logits_pos, logits_neg, correct, wrong, margin):
    """E_m: the mean over the batch of both hinge terms."""
    pos, neg = hinge_terms(logits_pos, logits_neg, correct, wrong, margin)
    return (pos + neg).mean()


def faithfulness_mean(logits_pos, logits_neg, clean_logprobs):
    """F: the mean over the batch of both KLs."""
    return faithfulness_terms(logits_pos, logits_neg, clean_logprobs).mean()

# Two data points over a vocabulary of 4 tokens.
CORRECT = torch.tensor([1, 0])
WRONG = torch.tensor([0, 2])
# β = +1 logits: row 0 f_c - f_w = 2 - 1 = 1; row 1 f_c - f_w = 3 - 1 = 2.
POS = [[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0]]
# β = -1 logits: row 0 f_c - f_w = 3 - 0 = 3; row 1 f_c - f_w = 0 - 2 = -2.
NEG = [[0.0, 3.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0]]
# Clean logits.
CLEAN = [[0.5, 0.0, -1.0, 2.0], [1.0, 1.0, 0.0, -2.0]]


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def kl_by_hand(p_logits: list[float], q_logits: list[float]) -> float:
    """KL(p ‖ q) = Σ_v p_v log(p_v / q_v), written out."""
    p, q = softmax(p_logits), softmax(q_logits)
    return sum(pv * math.log(pv / qv) for pv, qv in zip(p, q))


def clean_logprobs() -> torch.Tensor:
    return torch.log_softmax(t(CLEAN), dim=-1)


# -- effectiveness -----------------------------------------------------------------------


def test_logit_diff_picks_correct_minus_wrong_per_row():
    assert logit_diff(t(POS), CORRECT, WRONG).tolist() == [1.0, 2.0]
    assert logit_diff(t(NEG), CORRECT, WRONG).tolist() == [3.0, -2.0]


# margin -> (β=+1 hinge terms, β=-1 hinge terms), by hand from the logit differences
# above: β=+1 term max(0, -(ld+) + m) with ld+ = (1, 2); β=-1 term max(0, ld- + m) with
# ld- = (3, -2).
HINGES = {
    0.0: ([0.0, 0.0], [3.0, 0.0]),
    0.5: ([0.0, 0.0], [3.5, 0.0]),
    1.0: ([0.0, 0.0], [4.0, 0.0]),  # row 0 of β=+1 sits exactly on the hinge
    1.5: ([0.5, 0.0], [4.5, 0.0]),
    3.0: ([2.0, 1.0], [6.0, 1.0]),  # every term past the hinge
}


@pytest.mark.parametrize("margin", sorted(HINGES))
def test_hinge_terms_by_hand(margin):
    pos, neg = hinge_terms(t(POS), t(NEG), CORRECT, WRONG, margin)
    want_pos, want_neg = HINGES[margin]
    assert pos.tolist() == pytest.approx(want_pos, abs=1e-6)
    assert neg.tolist() == pytest.approx(want_neg, abs=1e-6)


@pytest.mark.parametrize("margin", sorted(HINGES))
def test_effectiveness_is_mean_over_points_of_both_hinges(margin):
    want_pos, want_neg = HINGES[margin]
    want = (want_pos[0] + want_neg[0] + want_pos[1] + want_neg[1]) / 2
    got = effectiveness_mean(t(POS), t(NEG), CORRECT, WRONG, margin)
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_effectiveness_zero_when_both_directions_flip_beyond_margin():
    # β=+1: c above w by 5; β=-1: w above c by 5; margin 2 -> every hinge inactive.
    pos = t([[0.0, 5.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    neg = t([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0]])
    assert effectiveness_mean(pos, neg, CORRECT, WRONG, 2.0).item() == 0.0
    # swapping the two directions makes every hinge active: each term is 5 + 2
    assert effectiveness_mean(neg, pos, CORRECT, WRONG, 2.0).item() == pytest.approx(14.0)


def test_effectiveness_gradient_only_from_active_hinges():
    pos = t(POS).requires_grad_(True)
    neg = t(NEG).requires_grad_(True)
    effectiveness_mean(pos, neg, CORRECT, WRONG, 1.5).backward()
    # β=+1: only row 0 is active (0.5 > 0): d/df_w = +1/N, d/df_c = -1/N with N = 2.
    want_pos = torch.zeros(2, 4)
    want_pos[0, 0], want_pos[0, 1] = 0.5, -0.5
    # β=-1: only row 0 is active: d/df_c = +1/N, d/df_w = -1/N.
    want_neg = torch.zeros(2, 4)
    want_neg[0, 1], want_neg[0, 0] = 0.5, -0.5
    assert torch.allclose(pos.grad, want_pos)
    assert torch.allclose(neg.grad, want_neg)


# -- faithfulness ------------------------------------------------------------------------


def test_kl_to_clean_matches_explicit_sum_and_direction():
    got = kl_to_clean(t(POS), clean_logprobs())
    want = [kl_by_hand(POS[i], CLEAN[i]) for i in range(2)]
    assert got.tolist() == pytest.approx(want, rel=1e-5)
    # KL is not symmetric: the intervened distribution comes first.
    reverse = [kl_by_hand(CLEAN[i], POS[i]) for i in range(2)]
    assert abs(want[0] - reverse[0]) > 0.05 and abs(want[1] - reverse[1]) > 0.05
    assert got.tolist() != pytest.approx(reverse, rel=1e-3)


def test_kl_to_clean_zero_for_clean_logits_and_shift_invariant():
    assert kl_to_clean(t(CLEAN), clean_logprobs()).abs().max().item() < 1e-6
    # adding a constant to the logits leaves σ unchanged
    assert kl_to_clean(t(CLEAN) + 7.0, clean_logprobs()).abs().max().item() < 1e-5


def test_kl_known_value_two_tokens():
    # p = σ([log 3, 0]) = (3/4, 1/4), q = (1/2, 1/2): KL = 3/4 log(3/2) + 1/4 log(1/2)
    p_logits = t([[math.log(3.0), 0.0]])
    q = torch.log(torch.tensor([[0.5, 0.5]]))
    want = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kl_to_clean(p_logits, q).item() == pytest.approx(want, rel=1e-6)


def test_faithfulness_both_directions_mean_over_points():
    got = faithfulness_mean(t(POS), t(NEG), clean_logprobs())
    want = sum(kl_by_hand(POS[i], CLEAN[i]) + kl_by_hand(NEG[i], CLEAN[i]) for i in range(2)) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)


# -- minimality --------------------------------------------------------------------------


def test_minimality_is_l1_norm():
    theta = torch.tensor([1.0, -2.0, 0.5, 0.0, -0.25])
    assert minimality_loss(theta).item() == pytest.approx(3.75)
    assert minimality_loss(torch.zeros(7)).item() == 0.0


# -- the total ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lambda_f, lambda_m, margin",
    [(1.0, 0.0, 1.0), (2.0, 0.5, 1.5), (0.0, 0.0, 0.0), (10.0, 100.0, 3.0)],
)
def test_objective_total(lambda_f, lambda_m, margin):
    theta = torch.tensor([0.5, -1.5, 2.0])  # ‖θ‖₁ = 4
    objective = Objective(lambda_f=lambda_f, lambda_m=lambda_m, margin=margin)
    total, parts = objective(t(POS), t(NEG), CORRECT, WRONG, clean_logprobs(), theta)

    want_pos, want_neg = HINGES[margin]
    e = (sum(want_pos) + sum(want_neg)) / 2
    f = sum(kl_by_hand(POS[i], CLEAN[i]) + kl_by_hand(NEG[i], CLEAN[i]) for i in range(2)) / 2
    m = 4.0
    assert parts["effectiveness"].item() == pytest.approx(e, abs=1e-6)
    assert parts["faithfulness"].item() == pytest.approx(f, rel=1e-5)
    assert parts["minimality"].item() == pytest.approx(m)
    assert total.item() == pytest.approx(e + lambda_f * f + lambda_m * m, rel=1e-5)


def test_objective_total_carries_gradient_to_parameters():
    theta = torch.tensor([0.5, -1.5, 2.0], requires_grad=True)
    total, parts = Objective(lambda_f=1.0, lambda_m=3.0, margin=1.0)(
        t(POS), t(NEG), CORRECT, WRONG, clean_logprobs(), theta
    )
    total.backward()
    assert theta.grad.tolist() == pytest.approx([3.0, -3.0, 3.0])  # λ_M · sign(θ)
    assert not parts["effectiveness"].requires_grad  # logged parts are detached


@pytest.mark.parametrize("key", ["lambda_f", "lambda_m", "margin"])
def test_objective_rejects_negative_hyperparameters(key):
    with pytest.raises(ConfigError) as info:
        Objective(**{key: -1.0})
    message = str(info.value)
    assert key in message and "\n" not in message


def test_objective_accepts_zero_hyperparameters():
    Objective(lambda_f=0.0, lambda_m=0.0, margin=0.0)
