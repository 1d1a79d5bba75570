"""The public Python API: top-level names and train_intervention on a tiny model."""

import pytest
import torch

import interventions
from interventions.tasks import load_task


def test_every_exported_name_resolves():
    for name in interventions.__all__:
        assert getattr(interventions, name) is not None, name
    with pytest.raises(AttributeError):
        interventions.not_a_name  # noqa: B018


def test_train_intervention_learns_and_leaves_the_model_alone(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    train = load_task("ccc", model=tiny_model, split="train", n=16)
    test = load_task("ccc", model=tiny_model, split="test", n=8)
    trained = interventions.train_intervention(
        tiny_model, train, test, method="activscalar", epochs=2, batch_size=4,
        objective=interventions.Objective(lambda_f=0.0, lambda_m=0.0, margin=1.0),
    )  # fmt: skip
    params = trained.method.flat_params()
    assert params.abs().max() > 1e-3  # moved away from the 1e-5 initialisation
    train_metrics = trained.evaluate("train")
    assert train_metrics["n"] == 16 and train_metrics["n_params"] == trained.method.n_params
    assert trained.evaluate("test")["n"] == 8
    with pytest.raises(ValueError, match="val"):
        trained.evaluate("val")
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_train_intervention_is_reproducible(tiny_model):
    train = load_task("ioi", model=tiny_model, split="train", n=12)
    runs = [
        interventions.train_intervention(tiny_model, train, method="steervec", epochs=1, batch_size=4, seed=3)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].method.flat_params(), runs[1].method.flat_params())
