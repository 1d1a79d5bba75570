"""InterventionMetrics and parameter_metrics (docs/method.md §5) against by-hand values.

Two batches of unequal size (2 and 1 data points), so a mean of batch means would
differ from the mean over data points.
"""

from __future__ import annotations

import math

import pytest
import torch

from interventions.metrics import InterventionMetrics, flatten, parameter_metrics

# Batch A: two data points over a vocabulary of 5 tokens.
A = dict(
    correct=[1, 3],
    wrong=[2, 0],
    pos=[[0.0, 2.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.5, 0.0]],  # ld+ = 1, -0.5
    neg=[[0.0, 0.0, 3.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0, 0.0]],  # ld- = -3, 2
    clean=[[0.0, 1.0, 0.5, 0.0, -1.0], [2.0, 0.0, 0.0, 1.0, 0.0]],  # ld0 = 0.5, -1
)
# Batch B: one data point.
B = dict(
    correct=[4],
    wrong=[0],
    pos=[[0.0, 0.0, 0.0, 0.0, 4.0]],  # ld+ = 4
    neg=[[1.0, 0.0, 0.0, 0.0, 0.5]],  # ld- = -0.5
    clean=[[0.25, 0.0, 1.0, 0.0, 1.0]],  # ld0 = 0.75
)


def softmax(row):
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def kl_by_hand(p_logits, q_logits):
    p, q = softmax(p_logits), softmax(q_logits)
    return sum(pv * math.log(pv / qv) for pv, qv in zip(p, q))


def update(metric: InterventionMetrics, batch: dict) -> None:
    tensor = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    metric.update(
        tensor(batch["pos"]),
        tensor(batch["neg"]),
        torch.log_softmax(tensor(batch["clean"]), dim=-1),
        torch.tensor(batch["correct"]),
        torch.tensor(batch["wrong"]),
    )


def by_hand(*batches) -> dict:
    """Every metric from the raw lists, data point by data point."""
    rows = []
    for b in batches:
        for i, (c, w) in enumerate(zip(b["correct"], b["wrong"])):
            rows.append(
                dict(
                    ld_pos=b["pos"][i][c] - b["pos"][i][w],
                    ld_neg=b["neg"][i][c] - b["neg"][i][w],
                    ld_zero=b["clean"][i][c] - b["clean"][i][w],  # raw clean logits
                    kl_pos=kl_by_hand(b["pos"][i], b["clean"][i]),
                    kl_neg=kl_by_hand(b["neg"][i], b["clean"][i]),
                )
            )
    n = len(rows)
    mean = lambda f: sum(f(r) for r in rows) / n  # noqa: E731
    flip_pos = mean(lambda r: 1.0 if r["ld_pos"] > 0 else 0.0)
    flip_neg = mean(lambda r: 1.0 if r["ld_neg"] < 0 else 0.0)
    return {
        # E_0 = mean of max(0, -ld+) + max(0, ld-)
        "effectiveness": -mean(lambda r: max(0.0, -r["ld_pos"]) + max(0.0, r["ld_neg"])),
        "faithfulness": -mean(lambda r: r["kl_pos"] + r["kl_neg"]),
        "flip_accuracy": (flip_pos + flip_neg) / 2,
        "flip_accuracy_pos": flip_pos,
        "flip_accuracy_neg": flip_neg,
        "logit_diff": {
            "-1": mean(lambda r: r["ld_neg"]),
            "0": mean(lambda r: r["ld_zero"]),
            "+1": mean(lambda r: r["ld_pos"]),
        },
        "clean_accuracy": mean(lambda r: 1.0 if r["ld_zero"] > 0 else 0.0),
        "n": n,
    }


def assert_metrics_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, dict):
            assert set(got[key]) == set(value)
            for k, v in value.items():
                assert got[key][k] == pytest.approx(v, abs=1e-5), f"{key}[{k}]"
        else:
            assert got[key] == pytest.approx(value, abs=1e-5), key


def test_hand_values_are_what_the_comments_say():
    """Guard the fixtures themselves: the expected numbers are the intended ones."""
    want = by_hand(A, B)
    # ld+ = (1, -0.5, 4), ld- = (-3, 2, -0.5), ld0 = (0.5, -1, 0.75)
    assert want["logit_diff"] == pytest.approx({"-1": -1.5 / 3, "0": 0.25 / 3, "+1": 4.5 / 3})
    # hinges at m = 0: β=+1 (0, 0.5, 0), β=-1 (0, 2, 0)
    assert want["effectiveness"] == pytest.approx(-2.5 / 3)
    assert want["flip_accuracy_pos"] == pytest.approx(2 / 3)
    assert want["flip_accuracy_neg"] == pytest.approx(2 / 3)
    assert want["clean_accuracy"] == pytest.approx(2 / 3)


def test_metrics_over_two_batches_equal_hand_values():
    metric = InterventionMetrics()
    update(metric, A)
    update(metric, B)
    got = metric.compute()
    assert_metrics_equal(got, by_hand(A, B))
    assert got["n"] == 3


def test_metric_signs_higher_is_better():
    metric = InterventionMetrics()
    update(metric, A)
    got = metric.compute()
    assert got["effectiveness"] <= 0 and got["faithfulness"] <= 0


def test_logit_diff_at_zero_comes_from_clean_logprobs():
    """β=0 logit difference is read from the clean log-probs (log-softmax keeps differences)."""
    metric = InterventionMetrics()
    update(metric, B)
    assert metric.compute()["logit_diff"]["0"] == pytest.approx(0.75, abs=1e-6)


def test_perfect_intervention_scores_zero():
    # β=+1 prefers c, β=-1 prefers w: effectiveness and flip accuracy are perfect, but
    # both distributions differ from the clean (uniform) one, so faithfulness is not.
    batch = dict(
        correct=[0], wrong=[1], pos=[[5.0, 0.0, 0.0]], neg=[[0.0, 5.0, 0.0]], clean=[[0.0, 0.0, 0.0]]
    )
    metric = InterventionMetrics()
    update(metric, batch)
    got = metric.compute()
    assert got["effectiveness"] == 0.0
    assert got["flip_accuracy"] == 1.0
    assert got["faithfulness"] < 0


def test_a_tie_is_not_a_flip():
    """f_c = f_w at β = ±1 has neither the right nor the wrong sign: not flipped."""
    batch = dict(
        correct=[0], wrong=[1], pos=[[2.0, 2.0, 0.0]], neg=[[1.0, 1.0, 0.0]], clean=[[1.0, 1.0, 0.0]]
    )
    metric = InterventionMetrics()
    update(metric, batch)
    got = metric.compute()
    assert got["flip_accuracy_pos"] == 0.0
    assert got["flip_accuracy_neg"] == 0.0
    assert got["clean_accuracy"] == 0.0
    assert got["effectiveness"] == 0.0  # E_0: both hinge terms are max(0, 0)


def test_reset_forgets_previous_batches():
    metric = InterventionMetrics()
    update(metric, A)
    metric.compute()
    metric.reset()
    update(metric, B)
    got = metric.compute()
    assert_metrics_equal(got, by_hand(B))
    assert got["n"] == 1


def test_flatten_nests_logit_diff():
    flat = flatten({"effectiveness": -1.0, "logit_diff": {"-1": 2.0, "+1": 3.0}}, "test/")
    assert flat == {"test/effectiveness": -1.0, "test/logit_diff/-1": 2.0, "test/logit_diff/+1": 3.0}


def test_parameter_metrics_counts_non_negligible():
    # |θ| >= 0.01 counts: 0.5, -0.02, 0.011, 0.01 (boundary, float64) -> 4 of 8
    theta = torch.tensor([0.5, -0.02, 0.011, 0.01, 0.0099, -0.005, 0.0, 1e-7], dtype=torch.float64)
    assert parameter_metrics(theta) == {"minimality": 4, "n_params": 8}


def test_parameter_metrics_negative_values_count_by_magnitude():
    theta = torch.tensor([-3.0, -0.5, 0.001])
    assert parameter_metrics(theta) == {"minimality": 2, "n_params": 3}


def test_parameter_metrics_all_zero():
    assert parameter_metrics(torch.zeros(12)) == {"minimality": 0, "n_params": 12}
