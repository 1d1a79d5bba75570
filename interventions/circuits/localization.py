"""How well a method's node scores find a truth set (docs/method.md §13): node AUROC (ties
count half), average precision and precision@|G|, with torchmetrics' AUROC and average
precision, and their mean ± sd over seeds.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_roc

from interventions.errors import ConfigError

METRICS = ("auroc", "average_precision", "precision_at_k")


def _tensors(scores: dict[str, float], truth: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [node for node in truth if node not in scores]
    if missing:
        raise ConfigError(f"truth nodes without a score: {', '.join(missing)}")
    nodes = sorted(scores)
    values = torch.tensor([scores[n] for n in nodes], dtype=torch.float64)
    labels = torch.tensor([n in set(truth) for n in nodes], dtype=torch.long)
    if labels.all() or not labels.any():
        raise ConfigError("a truth set must hold some nodes and leave some out (AUROC compares the two)")
    return values, labels


def precision_at_k(values: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of truth among the |G| highest scores; a tie across the cut counts the tied
    nodes' truth fraction for the places left (the expectation over tie orders)."""
    k = int(labels.sum())
    threshold = values.sort(descending=True).values[k - 1]
    above = values > threshold
    tied = values == threshold
    places = k - int(above.sum())
    hits = float(labels[above].sum()) + places * float(labels[tied].float().mean())
    return hits / k


def localization(scores: dict[str, float], truth: list[str]) -> dict[str, float]:
    """{"auroc", "average_precision", "precision_at_k"} of node scores against a truth set."""
    values, labels = _tensors(scores, truth)
    return {
        "auroc": float(binary_auroc(values, labels)),
        "average_precision": float(binary_average_precision(values, labels)),
        "precision_at_k": precision_at_k(values, labels),
    }


def roc_curve(scores: dict[str, float], truth: list[str]) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) of the ROC curve."""
    values, labels = _tensors(scores, truth)
    fpr, tpr, _ = binary_roc(values, labels)
    return fpr.tolist(), tpr.tolist()


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
