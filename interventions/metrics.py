"""Evaluation metrics (docs/method.md §5) as a torchmetrics Metric. Higher is better, 0 best:

    effectiveness   -E_0 (margin 0): 0 means every data point flips both ways
    faithfulness    -F
    flip_accuracy   fraction of (data point, direction) pairs with the right sign of
                    f_c - f_w: > 0 at β = +1 and < 0 at β = -1 (also per direction)
    logit_diff      mean f_c - f_w at β = -1, 0, +1
    clean_accuracy  fraction with f_c > f_w in the clean model
For answers of several tokens f_c - f_w is the difference of the answers' log-probabilities
s(c) - s(w) (docs/method.md §6; `objective.score_diff`).
Parameter-based scores (minimality = count of |θ| >= 0.01, n_params) do not depend on
data and are added by `parameter_metrics`.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from interventions.objective import hinge_terms, kl_to_clean, logit_diff, score_diff

MINIMALITY_THRESHOLD = 0.01
_SUMS = (
    "hinge_pos", "hinge_neg", "kl_pos", "kl_neg", "flip_pos", "flip_neg",
    "ld_neg", "ld_zero", "ld_pos", "clean_correct", "n",
    "hold_ld_neg", "hold_ld_zero", "hold_ld_pos", "n_hold",
)  # fmt: skip


class InterventionMetrics(Metric):
    """Accumulates per-example sums over batches; `compute` returns a flat dict."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in _SUMS:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits_pos, logits_neg, clean_logprobs, correct, wrong, hold_correct=None, hold_wrong=None,
               tails=(None, None, None)) -> None:  # fmt: skip
        """Logits [batch, vocab] at β = +1 and -1; clean log-probs [batch, vocab]; optional
        held answer pair ids [batch] (multi-observable objective); `tails` (at β = +1, -1 and
        the clean model's, each [batch]) for answers of several tokens."""
        tail_pos, tail_neg, tail_clean = tails
        pos, neg = hinge_terms(logits_pos, logits_neg, correct, wrong, 0.0, (tail_pos, tail_neg))
        ld_pos = score_diff(logits_pos, correct, wrong, tail_pos)
        ld_neg = score_diff(logits_neg, correct, wrong, tail_neg)
        ld_zero = score_diff(clean_logprobs, correct, wrong, tail_clean)  # log-softmax keeps logit differences
        values = {
            "hinge_pos": pos, "hinge_neg": neg,
            "kl_pos": kl_to_clean(logits_pos, clean_logprobs),
            "kl_neg": kl_to_clean(logits_neg, clean_logprobs),
            "flip_pos": (ld_pos > 0).float(), "flip_neg": (ld_neg < 0).float(),
            "ld_neg": ld_neg, "ld_zero": ld_zero, "ld_pos": ld_pos,
            "clean_correct": (ld_zero > 0).float(),
        }  # fmt: skip
        if hold_correct is not None:
            values.update({
                "hold_ld_neg": logit_diff(logits_neg, hold_correct, hold_wrong),
                "hold_ld_zero": logit_diff(clean_logprobs, hold_correct, hold_wrong),
                "hold_ld_pos": logit_diff(logits_pos, hold_correct, hold_wrong),
            })  # fmt: skip
            self.n_hold += len(hold_correct)
        for name, v in values.items():
            setattr(self, name, getattr(self, name) + v.detach().double().sum())
        self.n += len(correct)

    def compute(self) -> dict[str, float]:
        n = self.n.clamp_min(1)
        mean = lambda name: float(getattr(self, name) / n)  # noqa: E731
        return {
            "effectiveness": -(mean("hinge_pos") + mean("hinge_neg")),
            "faithfulness": -(mean("kl_pos") + mean("kl_neg")),
            "flip_accuracy": (mean("flip_pos") + mean("flip_neg")) / 2,
            "flip_accuracy_pos": mean("flip_pos"),
            "flip_accuracy_neg": mean("flip_neg"),
            "logit_diff": {"-1": mean("ld_neg"), "0": mean("ld_zero"), "+1": mean("ld_pos")},
            "clean_accuracy": mean("clean_correct"),
            "n": int(self.n),
            **self._hold(),
        }

    def _hold(self) -> dict:
        """The held pair's mean logit difference at β = -1, 0, +1 (if any data point had one)."""
        if int(self.n_hold) == 0:
            return {}
        m = lambda name: float(getattr(self, name) / self.n_hold)  # noqa: E731
        return {"hold_logit_diff": {"-1": m("hold_ld_neg"), "0": m("hold_ld_zero"), "+1": m("hold_ld_pos")}}


def parameter_metrics(minimality_vector: torch.Tensor, n_params: int | None = None) -> dict[str, int]:
    """minimality (count of |θ_j| >= 0.01 over a method's `minimality_vector`; a NaN counts too)
    and n_params (the number of parameters; default: the vector's length)."""
    return {
        "minimality": int((~(minimality_vector.detach().abs() < MINIMALITY_THRESHOLD)).sum()),
        "n_params": int(minimality_vector.numel() if n_params is None else n_params),
    }


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"logit_diff": {"-1": x}} -> {"prefix/logit_diff/-1": x}, for loggers."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
