"""Exports written before this version of the format still load, apply and evaluate: a
committed export of the default run, written by commit 83bbf46 (before exports recorded a
logits probe and their model's dtype), and a DynScalar export written by commit cc502dc
(before DynScalar computed α as (h·g)/‖h‖ instead of (h/‖h‖)·g)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interventions import hf
from interventions.errors import ExportError
from interventions.evaluation import evaluate_export, export_task, exported_model
from interventions.export import load_intervention
from interventions.spec import ModelSpec

OLD = Path(__file__).parent / "data" / "export_v1"
OLD_DYNSCALAR = Path(__file__).parent / "data" / "dynscalar_cc502dc"


def test_an_old_dynscalar_export_evaluates_to_its_metrics_within_rounding(toy_model):
    """Issue 28: DynScalar's α in another algebraically equal form changes its results only at
    rounding level. Measured: 1.2e-7 relative at most on this export, 3.3e-7 on the default
    DynScalar run's (asserted: 1e-6)."""
    iv = load_intervention(OLD_DYNSCALAR)
    metrics = evaluate_export(iv, exported_model(iv, ModelSpec(name=None)), export_task(iv), "test", seed=0)
    recorded = json.loads((OLD_DYNSCALAR / "metrics.json").read_text())["test"]
    for key in ("effectiveness", "faithfulness", "flip_accuracy"):
        assert metrics[key] == pytest.approx(recorded[key], rel=1e-6, abs=1e-9), key
    for beta in ("-1", "+1"):
        assert metrics["logit_diff"][beta] == pytest.approx(recorded["logit_diff"][beta], rel=1e-6), beta


def test_an_old_export_loads_applies_and_evaluates_to_its_own_metrics(toy_model):
    iv = load_intervention(OLD)
    assert "probe" not in iv.meta["model"] and "dtype" not in iv.meta["model"]
    model = exported_model(iv, ModelSpec(name=None))  # float32, the precision of the time
    task = export_task(iv)
    assert task.multi_token is False  # a key the export predates, at its default
    metrics = evaluate_export(iv, model, task, "test", seed=0)
    recorded = json.loads((OLD / "metrics.json").read_text())["test"]
    for key in ("effectiveness", "faithfulness", "flip_accuracy"):
        assert metrics[key] == pytest.approx(recorded[key], abs=1e-6), key
    ids = model.to_tokens("The capital of France is Rome . Q: What is the capital of France ? A:")
    with torch.no_grad(), iv.apply(model, beta=-1.0):
        steered = model(ids)
    assert (steered - model(ids)).abs().max() > 1e-3


def test_an_old_export_on_a_plain_model_asks_for_check_model_false(toy_model):
    iv = load_intervention(OLD)
    with pytest.raises(ExportError, match="before exports recorded a probe.*check_model=False"):
        hf.check_same_model(torch.nn.Linear(1, 1), iv)
