"""InterventionModule under a real lightning.Trainer on the tiny model: the frozen model
stays frozen, only the method is optimised and checkpointed, the loss goes down, and
training is reproducible."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from interventions.methods import ActivScalar
from interventions.training.module import InterventionModule
from interventions.objective import Objective, faithfulness_terms, hinge_terms
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.tasks.datamodule import TaskDataModule

EPOCHS = 4
LR = 0.05


@pytest.fixture(scope="module")
def datamodule(tiny_model):
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=32, seed=0, fixed_length=True)
    test = load_task("ccc", model=tiny_model, split="test", template=0, n=16, seed=0, fixed_length=True)
    dm = TaskDataModule(tiny_model, train, None, test, batch_size=16, fixed_length=True, shuffle_seed=0)
    dm.setup()
    return dm


def new_module(model, dm, seed=0, lr=LR) -> InterventionModule:
    L.seed_everything(seed, verbose=False)
    seq_len = dm.datasets["train"].tensors["input_ids"].shape[1]
    grid = build_grid(model.cfg, sites=["attnOut", "mlpOut"], positions="all", seq_len=seq_len)
    method = ActivScalar(grid, model.cfg)
    method.initialize("normal", scale=1e-5, seed=seed)
    return InterventionModule(model, method, Objective(lambda_f=1.0, lambda_m=0.0, margin=1.0), lr=lr)


def new_trainer(**kw) -> L.Trainer:
    return L.Trainer(
        max_epochs=EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, limit_val_batches=0,
        num_sanity_val_steps=0, **kw,
    )  # fmt: skip


def full_loss(module: InterventionModule, loader) -> float:
    """The objective over a whole loader, recomputed from steered logits."""
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            pos, neg = module.steered_logits(batch)
            loss, _ = module.objective(
                pos, neg, batch["correct"], batch["wrong"], batch["clean_logprobs"], module.method.flat_params()
            )
            total += loss.item() * len(batch["correct"])
            n += len(batch["correct"])
    return total / n


@pytest.fixture(scope="module")
def trained(tiny_model, datamodule):
    """One training run; records what the model and the loss looked like before it."""
    weights_before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    module = new_module(tiny_model, datamodule)
    loss_before = full_loss(module, datamodule.loader("train"))
    params_before = {k: v.detach().clone() for k, v in module.method.params.items()}
    trainer = new_trainer()
    trainer.fit(module, datamodule=datamodule)
    return dict(
        module=module, trainer=trainer, weights_before=weights_before,
        loss_before=loss_before, params_before=params_before,
    )  # fmt: skip


def test_frozen_weights_bit_identical_after_training(tiny_model, trained):
    after = tiny_model.state_dict()
    assert set(after) == set(trained["weights_before"])
    for key, value in trained["weights_before"].items():
        assert torch.equal(after[key], value), key


def test_no_model_parameter_has_grad_or_requires_grad(tiny_model, trained):
    for name, p in tiny_model.named_parameters():
        assert p.grad is None, name
        assert not p.requires_grad, name


def test_method_parameters_did_train(trained):
    module = trained["module"]
    changed = [not torch.equal(p.detach(), trained["params_before"][k]) for k, p in module.method.params.items()]
    assert all(changed)
    assert all(p.requires_grad for p in module.method.parameters())


def test_no_hooks_left_on_the_model_after_training(tiny_model, trained):
    assert all(len(hp._forward_hooks) == 0 for hp in tiny_model.hook_dict.values())


def test_optimizer_holds_only_the_method_parameters(tiny_model, trained):
    module, trainer = trained["module"], trained["trainer"]
    assert len(trainer.optimizers) == 1
    held = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert {id(p) for p in held} == {id(p) for p in module.method.parameters()}
    assert len(held) == len(list(module.method.parameters()))
    model_ids = {id(p) for p in tiny_model.parameters()}
    assert not model_ids & {id(p) for p in held}
    # the module's own parameters are the method's only (the model is not a child)
    assert {id(p) for p in module.parameters()} == {id(p) for p in module.method.parameters()}


def test_checkpoint_contains_only_method_tensors(trained, tmp_path):
    module, trainer = trained["module"], trained["trainer"]
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(str(path))
    saved = torch.load(str(path), map_location="cpu", weights_only=False)
    keys = set(saved["state_dict"])
    want = {f"method.params.{k}" for k in module.method.params}
    assert keys == want
    assert all(k.startswith("method.") for k in keys)
    for key in want:
        assert torch.equal(saved["state_dict"][key], module.method.params[key.split(".")[-1]].detach())
    # and nothing as big as a model weight anywhere in the state dict
    n_saved = sum(v.numel() for v in saved["state_dict"].values())
    assert n_saved == module.method.n_params


def test_loss_decreases(trained, datamodule):
    after = full_loss(trained["module"], datamodule.loader("train"))
    assert after < trained["loss_before"] - 0.02, (trained["loss_before"], after)


def test_steered_logits_batched_equals_separate_passes(trained, datamodule):
    module = trained["module"]
    batch = next(iter(datamodule.loader("test")))
    with torch.no_grad():
        pos, neg = module.steered_logits(batch, betas=(1.0, -1.0))
        (pos_alone,) = module.steered_logits(batch, betas=(1.0,))
        (neg_alone,) = module.steered_logits(batch, betas=(-1.0,))
        (zero,) = module.steered_logits(batch, betas=(0.0,))
    assert torch.allclose(pos, pos_alone, atol=1e-5)
    assert torch.allclose(neg, neg_alone, atol=1e-5)
    assert not torch.allclose(pos, neg, atol=1e-3)
    # β = 0 is the clean model: its log-softmax is the batch's cached clean log-probs
    assert torch.allclose(torch.log_softmax(zero, -1), batch["clean_logprobs"], atol=1e-5)


def test_evaluate_matches_objective_terms(trained, datamodule):
    module = trained["module"]
    batch = next(iter(datamodule.loader("test")))  # the whole test split (16 points)
    assert len(batch["correct"]) == len(datamodule.datasets["test"])
    values = module.evaluate(datamodule.loader("test"))
    with torch.no_grad():
        pos, neg = module.steered_logits(batch)
        e0 = sum(hinge_terms(pos, neg, batch["correct"], batch["wrong"], 0.0)).mean().item()
        f = faithfulness_terms(pos, neg, batch["clean_logprobs"]).mean().item()
    assert values["effectiveness"] == pytest.approx(-e0, abs=1e-5)
    assert values["faithfulness"] == pytest.approx(-f, abs=1e-5)
    assert values["n_params"] == module.method.n_params
    flat = module.method.flat_params().detach()
    assert values["minimality"] == int((flat.abs() >= 0.01).sum())


def test_training_is_reproducible(tiny_model, datamodule, trained):
    first = trained["module"]
    second = new_module(tiny_model, datamodule)
    new_trainer().fit(second, datamodule=datamodule)
    assert set(first.method.params) == set(second.method.params)
    for key, p in first.method.params.items():
        assert torch.equal(p.detach(), second.method.params[key].detach()), key


def test_module_starts_on_the_models_device(toy_tokenizer):
    """Built outside a Trainer (evaluation, fused sweeps), the module, its method and the
    batches it moves follow the frozen model's device ("meta" stands in for a GPU here)."""
    from conftest import build_tiny_model
    from interventions.methods import ActivScalar
    from interventions.training.module import InterventionModule
    from interventions.objective import Objective
    from interventions.sites import build_grid

    model = build_tiny_model(toy_tokenizer, seed=0).to("meta")
    method = ActivScalar(build_grid(model.cfg, seq_len=5), model.cfg)
    module = InterventionModule(model, method, Objective())
    assert module.device.type == "meta"
    assert all(p.device.type == "meta" for p in method.parameters())


def test_loggers_record_the_same_parts_as_when_every_step_logs_them(tiny_model, datamodule, tmp_path, monkeypatch):
    """The parts are logged only on the steps the Trainer sends to its loggers; what the
    loggers record is exactly what logging them on every step recorded."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    def logged_rows(name: str) -> list[dict]:
        module = new_module(tiny_model, datamodule)
        trainer = L.Trainer(
            max_epochs=EPOCHS, logger=CSVLogger(tmp_path, name=name), log_every_n_steps=3, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
            limit_val_batches=0, num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        with open(next((tmp_path / name).rglob("metrics.csv"))) as f:
            return list(csv.DictReader(f))

    skipping = logged_rows("skipping")
    monkeypatch.setattr(InterventionModule, "_logger_records_this_step", lambda self: True)
    every_step = logged_rows("every_step")
    assert skipping == every_step
    steps = len(datamodule.loader("train")) * EPOCHS  # 8: logged after steps 3 and 6
    with_parts = [row for row in skipping if row.get("train/effectiveness_loss")]
    assert [int(row["step"]) for row in with_parts] == list(range(2, steps, 3))
    assert all(row["train/loss"] and row["train/faithfulness_loss"] and row["train/minimality_loss"] for row in with_parts)
