"""The training objective E_m + λ_F·F + λ_M·M (docs/method.md §4), per-example terms included.
With `effectiveness="preference"` the hinge E_m is replaced by the bidirectional logistic
loss E_pref (docs/method.md §11); F and M are unchanged.

Notation: f̃⁺ / f̃⁻ are the intervened last-position logits [batch, vocab] at β = +1 / -1,
c and w the correct and wrong token ids [batch], and log σ(f) the clean log-probs
[batch, vocab] (computed once per dataset, never with gradients).

Answers of several tokens (docs/method.md §6) are scored by their log-probability under
teacher forcing, s(a) = Σ_t log σ(f(x ⊕ a_<t))_{a_t}. The first tokens share the prompt's
softmax normaliser, so s(c) - s(w) = (f_{c_1} - f_{w_1}) + tail, with
tail = Σ_{t≥2} log σ(·)_{c_t} - Σ_{u≥2} log σ(·)_{w_u} [batch] (`forward.answer_tails`);
c and w are then the answers' first tokens. Single-token data have no tail (None), and
every function here computes exactly what it did before tails existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interventions.spec import ObjectiveSpec


def logit_diff(logits: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """[batch] f_c - f_w."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, correct] - logits[rows, wrong]


def score_diff(logits: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor, tail=None) -> torch.Tensor:
    """[batch] s(c) - s(w): f_c - f_w, plus the answers' `tail` [batch] when they have
    several tokens (module docstring)."""
    diff = logit_diff(logits, correct, wrong)
    return diff if tail is None else diff + tail


def hinge_terms(logits_pos, logits_neg, correct, wrong, margin: float, tails=(None, None)):
    """Per-example hinge terms of E_m, each [batch].

    β=+1 term: max(0, s̃⁺(w) - s̃⁺(c) + m)  (push the correct answer above the wrong one)
    β=-1 term: max(0, s̃⁻(c) - s̃⁻(w) + m)  (and the reverse)
    For single-token answers s(c) - s(w) = f_c - f_w; `tails` = (tail⁺, tail⁻) otherwise.
    """
    pos = torch.relu(-score_diff(logits_pos, correct, wrong, tails[0]) + margin)
    neg = torch.relu(score_diff(logits_neg, correct, wrong, tails[1]) + margin)
    return pos, neg


def preference_terms(logits_pos, logits_neg, correct, wrong, tails=(None, None)):
    """Per-example terms of E_pref (BiPO / RePS without a reference model), each [batch].

    β=+1 term: softplus(-(s̃⁺(c) - s̃⁺(w)))  (-log σ of the correct answer's lead)
    β=-1 term: softplus(-(s̃⁻(w) - s̃⁻(c)))  (and of the wrong answer's lead)
    Unlike the hinge, neither term reaches 0: there is no margin at which pushing stops.
    """
    pos = F.softplus(-score_diff(logits_pos, correct, wrong, tails[0]))
    neg = F.softplus(score_diff(logits_neg, correct, wrong, tails[1]))
    return pos, neg


def effectiveness_terms(logits_pos, logits_neg, correct, wrong, margin, tails=(None, None), preference=False):
    """[batch] the effectiveness term per example: both hinges of E_m (margin `margin`), or
    both terms of E_pref with `preference` True. `preference` may be a bool tensor [batch]
    choosing per row (fused training: one form per configuration's rows)."""
    if isinstance(preference, bool) and not preference:
        pos, neg = hinge_terms(logits_pos, logits_neg, correct, wrong, margin, tails)
        return pos + neg
    pos, neg = preference_terms(logits_pos, logits_neg, correct, wrong, tails)
    if isinstance(preference, bool):
        return pos + neg
    hinge_pos, hinge_neg = hinge_terms(logits_pos, logits_neg, correct, wrong, margin, tails)
    return torch.where(preference, pos + neg, hinge_pos + hinge_neg)


def kl_to_clean(logits: torch.Tensor, clean_logprobs: torch.Tensor) -> torch.Tensor:
    """[batch] KL(σ(f̃) ‖ σ(f)) = Σ_v σ(f̃)_v (log σ(f̃)_v - log σ(f)_v)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * (logp - clean_logprobs.float())).sum(-1)


def faithfulness_terms(logits_pos, logits_neg, clean_logprobs) -> torch.Tensor:
    """[batch] KL(σ(f̃⁺)‖σ(f)) + KL(σ(f̃⁻)‖σ(f))."""
    return kl_to_clean(logits_pos, clean_logprobs) + kl_to_clean(logits_neg, clean_logprobs)


def hold_terms(logits_pos, logits_neg, clean_logprobs, hold_correct, hold_wrong) -> torch.Tensor:
    """[batch] (LD₂(f̃⁺) - LD₂(f))² + (LD₂(f̃⁻) - LD₂(f))² for a second answer pair (c₂, w₂)
    that should not move (log-softmax keeps logit differences, so the clean LD₂ comes from
    the cached clean log-probs)."""
    clean = logit_diff(clean_logprobs, hold_correct, hold_wrong)
    pos = logit_diff(logits_pos, hold_correct, hold_wrong) - clean
    neg = logit_diff(logits_neg, hold_correct, hold_wrong) - clean
    return pos**2 + neg**2


def example_terms(logits_pos, logits_neg, correct, wrong, clean_logprobs, margin, hold=None, tails=(None, None),
                  preference=False) -> dict:  # fmt: skip
    """Per-example terms, each [rows]: "effectiveness" (both hinges, or both preference terms:
    `effectiveness_terms`), "faithfulness" (both KLs, at the last prompt position) and, when
    `hold` = (c₂, w₂) is given, "hold". `margin` is a float or a tensor [rows] (fused
    training: one margin per configuration's rows), `preference` a bool or a bool tensor
    [rows]; `tails` as for `hinge_terms`."""
    terms = {
        "effectiveness": effectiveness_terms(logits_pos, logits_neg, correct, wrong, margin, tails, preference),
        "faithfulness": faithfulness_terms(logits_pos, logits_neg, clean_logprobs),
    }
    if hold is not None:
        terms["hold"] = hold_terms(logits_pos, logits_neg, clean_logprobs, *hold)
    return terms


def minimality_loss(flat_params: torch.Tensor) -> torch.Tensor:
    """M: ‖vec(θ)‖₁ of vec(θ) [n] (a scalar), or of each row of [K, n] ([K]: fused training)."""
    return flat_params.abs().sum(-1)


def weighted_sum(means: dict, minimality, lambda_f, lambda_m, lambda_hold=0.0):
    """E_m + λ_F·F + λ_M·M, plus λ_H·H when `means` has "hold".

    Scalars for one objective, or [K] means, M and weights for K objectives at once (fused
    training); the terms are added in the same order either way, so the gradients agree.
    """
    total = means["effectiveness"] + lambda_f * means["faithfulness"] + lambda_m * minimality
    if "hold" in means:
        total = total + lambda_hold * means["hold"]
    return total


@dataclass
class Objective(ObjectiveSpec):
    """E_m + λ_F·F + λ_M·M (+ λ_H·H for a held answer pair) with λ_F, λ_M, λ_H, m finite and
    ≥ 0 (its spec, `spec.ObjectiveSpec`, checks them), as a loss to call; E_pref in place of
    E_m with `effectiveness="preference"`."""

    def __call__(self, logits_pos, logits_neg, correct, wrong, clean_logprobs, flat_params, hold=None, tails=(None, None)):
        """Returns (total loss, {"effectiveness": E_m (or E_pref), "faithfulness": F, "minimality": M[, "hold": H]}).

        `hold`: (hold_correct [B], hold_wrong [B]) for the λ_H term, or None. `tails`:
        (tail⁺ [B], tail⁻ [B]) for answers of several tokens (module docstring).
        """
        hold = hold if self.lambda_hold > 0 else None
        terms = example_terms(logits_pos, logits_neg, correct, wrong, clean_logprobs, self.margin, hold, tails,
                              self.effectiveness == "preference")  # fmt: skip
        means = {k: v.mean() for k, v in terms.items()}
        m = minimality_loss(flat_params)
        total = weighted_sum(means, m, self.lambda_f, self.lambda_m, self.lambda_hold)
        parts = {"effectiveness": means["effectiveness"].detach(), "faithfulness": means["faithfulness"].detach(),
                 "minimality": m.detach()}  # fmt: skip
        if "hold" in means:
            parts["hold"] = means["hold"].detach()
        return total, parts
