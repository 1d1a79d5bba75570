"""The public Python API: top-level names and train_intervention on a tiny model."""

import pytest
import torch

import interventions
from interventions.tasks import load_task
from interventions.spec import RunSpec


def test_every_exported_name_resolves():
    for name in interventions.__all__:
        assert getattr(interventions, name) is not None, name
    with pytest.raises(AttributeError):
        interventions.not_a_name  # noqa: B018


def test_train_intervention_learns_and_leaves_the_model_alone(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    train = load_task("ccc", model=tiny_model, split="train", n=16)
    test = load_task("ccc", model=tiny_model, split="test", n=8)
    trained = interventions.train_intervention(tiny_model, train, test, intervention="activscalar", objective=interventions.Objective(lambda_f=0.0, lambda_m=0.0, margin=1.0), run=RunSpec(epochs=2, batch_size=4))  # fmt: skip
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
        interventions.train_intervention(tiny_model, train, intervention="steervec", run=RunSpec(epochs=1, batch_size=4, seed=3))
        for _ in range(2)
    ]
    assert torch.equal(runs[0].method.flat_params(), runs[1].method.flat_params())


def test_location_labels_cover_every_position_of_a_mixed_length_batch(tiny_model):
    """DynScalar on prompts of several lengths: a label for every padded position."""
    from interventions.reports.locations import location_rows
    from interventions.methods import DynScalar
    from interventions.reports.run import position_labels
    from interventions.sites import build_grid
    from interventions.tasks.datamodule import encode

    task = load_task("ccc", model=tiny_model, split="test", template="all", n=12, seed=1)
    batch = encode(tiny_model, task)
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # really mixed
    shortest_first = torch.argsort(lengths)
    batch = {k: v[shortest_first] for k, v in batch.items()}
    labels = position_labels(tiny_model, batch)
    assert len(labels) == batch["input_ids"].shape[1]
    method = DynScalar(build_grid(tiny_model.cfg, positions=None), tiny_model.cfg)
    method.initialize("normal", 0.1)
    rows = location_rows(method, tiny_model, batch, labels)
    assert {r["token"] for r in rows if r["position"] == len(labels) - 1} == {labels[-1]}


@pytest.mark.parametrize("device, expected", [
    ("cpu", {"accelerator": "cpu", "devices": 1}),
    ("cuda", {"accelerator": "cuda", "devices": [0]}),
    ("cuda:1", {"accelerator": "cuda", "devices": [1]}),
    ("mps", {"accelerator": "mps", "devices": 1}),
])  # fmt: skip
def test_train_intervention_trains_where_the_model_is(device, expected):
    """Lightning's default would move a GPU model to the CPU and train there."""
    from interventions.training.train import lightning_device

    assert lightning_device(torch.device(device)) == expected


def test_train_intervention_passes_the_models_device_to_the_trainer(tiny_model, monkeypatch):
    from interventions.training import train as training

    asked = []

    def recording(device):
        asked.append(device)
        return {"accelerator": "cpu", "devices": 1}

    monkeypatch.setattr(training, "lightning_device", recording)
    interventions.train_intervention(tiny_model, load_task("ccc", model=tiny_model, split="train", n=8), run=RunSpec(epochs=1))
    assert asked == [next(tiny_model.parameters()).device]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_intervention_on_a_gpu_matches_the_cpu(toy_tokenizer):
    """Only where torch sees a GPU: a model on cuda trains there (the method's parameters
    live on it), leaves its weights alone, and learns what the CPU run learns."""
    from conftest import build_tiny_model

    params = {}
    for device in ("cpu", "cuda"):
        model = build_tiny_model(toy_tokenizer).to(device)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train = load_task("ccc", model=model, split="train", n=16)
        trained = interventions.train_intervention(model, train, intervention="activscalar", run=RunSpec(epochs=2, batch_size=4))
        params[device] = trained.method.flat_params().detach()
        assert params[device].device.type == device
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(params["cuda"].cpu(), params["cpu"], atol=1e-4, rtol=0)
