"""preflight: every wrong key or value on the command line is one ConfigError line naming
the key and what is allowed, before any model is loaded (PRODUCT.md, Errors)."""

from __future__ import annotations

import pytest
from conftest import fake_hub_cache

from interventions.cli.preflight import preflight
from interventions.errors import ConfigError


def error_of(argv, config_name="train") -> str:
    with pytest.raises(ConfigError) as info:
        preflight(argv, config_name)
    message = str(info.value)
    assert message.strip() == message and "\n" not in message, repr(message)
    return message


@pytest.mark.parametrize(
    "argv, must_contain",
    [
        # unknown option of a config group: the group and its options
        (["intervention=foo"], ["intervention", "foo", "activscalar", "steervec", "dynscalar"]),
        (["task=nope"], ["task", "nope", "ccc", "ioi"]),
        (["logger=web"], ["logger", "web", "wandb", "csv", "none"]),
        # unknown key inside a group: the key and the group's keys
        (["task.tempate=1"], ["task.tempate", "template", "n_train"]),
        (["objective.lamda_f=1"], ["objective.lamda_f", "lambda_f", "lambda_m", "margin"]),
        # bad values: the key and the allowed values or range
        (["objective.lambda_f=-1"], ["objective.lambda_f", "-1", ">= 0"]),
        (["objective.margin=-0.5"], ["objective.margin", "-0.5", ">= 0"]),
        (["objective.lambda_f=abc"], ["objective.lambda_f", "abc", "number"]),
        (["logger.mode=web"], ["logger.mode", "web", "offline", "online", "disabled"]),
        (["intervention.sites=[attnOut,bogus]"], ["intervention.sites", "bogus", "attnOut", "residPost", "z"]),
        (["trainer.max_epochs=0"], ["trainer.max_epochs", "0", ">= 1"]),
        (["intervention.method=foo"], ["intervention.method", "foo", "activscalar"]),
        (["intervention.lr=0"], ["intervention.lr", "> 0"]),
        (["task.batch_size=0"], ["task.batch_size", ">= 1"]),
        (["task.padding_side=middle"], ["task.padding_side", "middle", "right", "left"]),
        (["model.dtype=float8"], ["model.dtype", "float8", "float32", "bfloat16"]),
        (["skip_unread=maybe"], ["skip_unread", "maybe", "true or false"]),
        (["model.fused_gelu=maybe"], ["model.fused_gelu", "maybe", "true or false"]),
        # fused: a list of settings or a grid of values per key
        (["fused={lambda_f:0}"], ["fused must be a list of objective settings", "grid of values"]),
        (["fused=[]"], ["fused must be a list"]),
        (["fused={lambda_x:[0,1]}"], ["fused[0]: unknown key 'lambda_x'", "lambda_f"]),
        (["fused={lambda_f:[0,-1]}"], ["fused[1].lambda_f", "-1", ">= 0"]),
        (["fused_chunk=0"], ["fused_chunk", ">= 1"]),
        (["intervention=dla", "fused=[{lambda_f:0}]"], ["fused", "intervention=dla", "training-free", "-m"]),
        # unknown top-level key
        (["+foo=1"], ["foo", "seed", "task", "objective"]),
    ],
)
def test_train_preflight_rejects(argv, must_contain):
    message = error_of(argv)
    for text in must_contain:
        assert text in message, f"{text!r} not in {message!r}"


def test_bad_value_inside_a_sweep_is_found():
    message = error_of(["-m", "objective.lambda_f=0,1,-3"])
    assert "objective.lambda_f" in message and "-3" in message and ">= 0" in message


def test_bad_value_in_second_sweep_dimension_is_found():
    message = error_of(["-m", "objective.margin=0,1", "intervention=activscalar,bogus"])
    assert "intervention" in message and "bogus" in message and "steervec" in message


def test_good_sweep_passes():
    preflight(["-m", "objective.lambda_f=0,1,10,100", "intervention=activscalar,steervec"], "train")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["task=ioi"],
        ["intervention=steervec"],
        ["intervention=dynscalar", "task.template=all"],
        ["experiment=ioi_steervec"],
        ["logger=none"],
        ["logger=csv", "trainer.max_epochs=2", "task.n_train=64", "task.n_test=64"],
        ["objective.lambda_f=0", "objective.lambda_m=100", "objective.margin=10"],
        ["intervention.sites=[attnOut,mlpOut,residPost,z,v,o]", "intervention.layers=[0,-1]"],
        ["run_dir=/tmp/somewhere", "seed=3"],
        ["skip_unread=true"],
        ["fused=[{lambda_f:0},{lambda_f:1,lambda_m:0.01}]"],
        ["fused={lambda_f:[0,1],margin:[1,2]}", "fused_chunk=1"],
        ["experiment=paper_grid_fused"],
        ["experiment=paper_grid_small_fused"],
        ["hydra.run.dir=/tmp/x"],
    ],
)
def test_train_preflight_accepts(argv):
    preflight(argv, "train")


@pytest.mark.parametrize(
    "argv",
    [
        ["intervention=/some/path"],
        ["intervention=/some/path/intervention.json", "split=train", "task.name=ioi", "logger=none"],
        ["intervention=/some/path", "model=gpt2"],
    ],
)
def test_evaluate_preflight_accepts_a_path(argv, monkeypatch, tmp_path):
    fake_hub_cache(monkeypatch, tmp_path, "gpt2")  # downloaded: composing is what is tested
    preflight(argv, "evaluate")


def test_evaluate_preflight_requires_the_export():
    message = error_of(["split=train", "task.name=ioi", "logger=none", "n=64"], "evaluate")
    assert "intervention=" in message


@pytest.mark.parametrize(
    "argv, must_contain",
    [
        (["split=bogus"], ["split", "bogus", "train", "val", "test"]),
        (["task.name=nope"], ["task.name", "nope", "ccc"]),
        (["logger.mode=web"], ["logger.mode", "web", "offline"]),
        (["logger=web"], ["logger", "web", "wandb", "csv", "none"]),
        (["+foo=1"], ["foo", "split", "intervention"]),
    ],
)
def test_evaluate_preflight_rejects(argv, must_contain):
    message = error_of(argv, "evaluate")
    for text in must_contain:
        assert text in message, f"{text!r} not in {message!r}"


@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
def test_config_lr_is_the_methods_default_lr(name):
    """train.py and the Python API (lr=None) must train with the same step size."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from interventions.methods import METHODS

    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "intervention" / f"{name}.yaml")
    assert cfg.lr == METHODS[name].default_lr


def test_fused_grid_is_the_product_with_the_last_key_fastest():
    from interventions.spec import fused_settings

    grid = fused_settings({"lambda_f": [0, 1], "lambda_m": [0, 0.01, 0.1]})
    assert grid == [{"lambda_f": f, "lambda_m": m} for f in (0, 1) for m in (0, 0.01, 0.1)]
    listed = [{"lambda_f": 0}, {"margin": 2}]
    assert fused_settings(listed) == listed


def test_experiments_set_their_keys_over_train_yaml():
    """The experiment comes after train.yaml's own keys: its sweep folder and `fused` apply."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from interventions.cli.preflight import CONF_DIR
    from interventions.cli.configs import store
    from interventions.spec import fused_settings

    store()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper_grid_fused"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.sweep.dir.startswith("multirun/paper_grid_fused/")
    assert len(fused_settings(OmegaConf.to_container(cfg.fused))) == 64
    assert cfg.hydra.sweeper.params.intervention == "activscalar,steervec"


@pytest.mark.parametrize("argv", [["trainer=gpu"], ["intervention=dla", "model.device=cuda"], ["trainer=ddp"],
                                  ["experiment=paper_grid_small_fused", "trainer=gpu"]])  # fmt: skip
def test_asking_for_a_gpu_that_torch_does_not_see_is_one_line(argv, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = error_of(argv)
    assert "asks for a GPU, but torch sees none" in message and "CPU" in message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    preflight(argv, "train")  # accepted where there is a GPU


@pytest.mark.parametrize("argv", [["model.device=cuda"], ["model.device=cuda:1", "fused=[{lambda_f:0}]"]])
def test_a_model_on_the_gpu_with_a_cpu_trainer_is_refused_for_trained_methods(argv, monkeypatch):
    """Lightning would move the model back to the CPU and train there."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    message = error_of(argv)
    assert "trainer.accelerator=cpu would train on the CPU" in message and "trainer=gpu" in message
    preflight([*argv, "trainer=gpu"], "train")
    preflight(["intervention=dla", *argv[:1]], "train")  # training-free: runs on model.device


def test_a_slurm_sweep_asking_for_gpus_passes_on_a_machine_without_one(monkeypatch, fake_sinfo):
    """The jobs run on the cluster's nodes; the submitting machine needs no GPU (a fake SLURM
    on PATH: this machine's own may be installed but not running)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    preflight(["-m", "experiment=paper_grid", "hydra/launcher=slurm", "trainer=gpu"], "train")
    with pytest.raises(ConfigError, match="asks for a GPU"):
        preflight(["-m", "experiment=paper_grid", "hydra/launcher=parallel", "trainer=gpu"], "train")
