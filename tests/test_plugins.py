"""Methods as plug-ins (issue 29): a method is one class with its options and one YAML, placed by
a config; another installed package's methods register through the `interventions.methods`
entry point group and work like built-in ones.

The extension test writes a new method module and its YAML outside the package and runs it
through train, evaluate, a sweep, fused settings, generate and `hf.apply` with no edit
anywhere else (the module on PYTHONPATH, the YAML found through `hydra.searchpath`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, describe, run_cli

from interventions.errors import ConfigError, ExportError
from interventions.methods import intervention_spec, known_names, method_class, options_from, registry

PLUGIN = textwrap.dedent('''
    """A method written outside the package: h + β Uᵀ(V h), U, V ∈ ℝ^{r×d}, at every position."""

    from dataclasses import dataclass
    from typing import Any

    from interventions.methods.base import BetaViews, Method
    from interventions.sites import RESIDUAL_SITES, hook_name
    from interventions.spec import TrainedInterventionSpec, bounded, check_bounds


    @dataclass
    class LowRankOptions(TrainedInterventionSpec):
        rank: int = bounded(2, 1, integer=True)
        positions: Any = None

        def __post_init__(self):
            super().__post_init__()
            check_bounds(self, "intervention.")


    class LowRank(Method):
        name = "lowrank"
        label = "low-rank edit"
        Options = LowRankOptions
        position_tied = False
        supported_sites = RESIDUAL_SITES
        scalar = False
        value_label, signed_values = "|U| |V|", False

        def param_shapes(self, site, cfg):
            return {"U": (self.options.rank, cfg.d_model), "V": (self.options.rank, cfg.d_model)}

        def site_hook(self, site, layer, beta):
            beta_of = BetaViews(beta)

            def hook(h, hook=None):
                U, V = self.param(site, layer, "U"), self.param(site, layer, "V")
                return (h + beta_of(h) * ((h @ V.T) @ U)).to(h.dtype)

            return hook_name(site, layer), hook

        def location_values(self, site, layer):
            return (self.param(site, layer, "U").norm() * self.param(site, layer, "V").norm()).detach()
''')
YAML = textwrap.dedent("""
    # the method's class, on the Python path (PYTHONPATH)
    _target_: lowrank_plugin.LowRank
    method: lowrank
    sites: [attnOut, mlpOut]
    layers: all
    positions: null
    heads: all
    init: normal
    init_scale: 0.1
    lr: 0.05
    rank: 2
""")
TINY = ["task.n_train=16", "task.n_val=8", "task.n_test=16", "trainer.max_epochs=1", "logger=none",
        "trainer.enable_progress_bar=false"]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_plugin_left_registered():
    """Each test's plugin methods out of this process's registry (`methods.registry.REGISTRY`)
    after it: a plugin's class, once imported, would stay a method for every later test of
    this worker (tests/test_architecture.py lists the built-in ones). The package's own stay:
    their modules are imported once."""
    before = set(registry.REGISTRY)
    yield
    for name, cls in list(registry.REGISTRY.items()):
        if name not in before and not cls.__module__.startswith("interventions."):
            del registry.REGISTRY[name]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """A folder with the method's module and conf/intervention/lowrank.yaml."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "lowrank_plugin.py").write_text(PLUGIN)
    (folder / "conf" / "intervention").mkdir(parents=True)
    (folder / "conf" / "intervention" / "lowrank.yaml").write_text(YAML)
    return folder


def cli(plugin: Path, script: str, *args: str):
    """`python <script> <args>` with the plugin's folder on PYTHONPATH (in a warm interpreter
    started with it: conftest.run_cli)."""
    return run_cli(script, *args, pythonpath=str(plugin))


def test_options_are_checked_by_the_class_recorded_and_restored(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key intervention.rank; allowed keys of intervention \(activscalar\)"):
        options_from({"method": "activscalar", "rank": 8})
    with pytest.raises(ConfigError, match=r"intervention.rank='x' must be an integer >= 1"):
        options_from({"method": "loreft", "rank": "x"})
    with pytest.raises(ConfigError, match=r"intervention.rank=0 must be >= 1"):
        options_from({"method": "loreft", "rank": 0})
    with pytest.raises(ConfigError, match="loreft acts on attnOut, mlpOut, residPost, not 'z'"):
        options_from({"method": "loreft", "sites": ["z"]})
    with pytest.raises(ConfigError, match="is not a method here; known: .*activscalar"):
        method_class("nope")
    from interventions import load_task, train_intervention
    from interventions.export import load_intervention
    from interventions.spec import RunSpec

    task = load_task("ccc", model=tiny_model, split="train", n=8)
    trained = train_intervention(tiny_model, task, intervention=intervention_spec("loreft", rank=3, sites=["residPost"]),
                                 run=RunSpec(epochs=1))  # fmt: skip
    assert trained.method.param("residPost", 0, "W").shape == (3, tiny_model.cfg.d_model)
    trained.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "intervention.json").read_text())
    assert meta["options"]["rank"] == 3 and meta["class"] == "interventions.methods.loreft.LoReFT"
    back = load_intervention(tmp_path / "run").method
    assert back.options.rank == 3
    for key, value in trained.method.params.items():  # R through its orthogonal parametrization too
        torch.testing.assert_close(back.params[key], value.detach(), rtol=0, atol=1e-6)


def test_a_method_of_an_installed_package_works_like_a_built_in_one(tmp_path, monkeypatch, tiny_model):
    """An `interventions.methods` entry point of an installed distribution (a dist-info folder
    on the path, as pip leaves one) is a method by its name: in Python and on the command line."""
    (tmp_path / "tinyplug_pkg").mkdir()
    (tmp_path / "tinyplug_pkg" / "__init__.py").write_text(textwrap.dedent('''
        from interventions.methods.activscalar import ActivScalar

        class TinyPlug(ActivScalar):
            name = "tinyplug"
            label = "ActivScalar, from another package"
    '''))
    info = tmp_path / "tinyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[interventions.methods]\ntinyplug = tinyplug_pkg:TinyPlug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tinyplug" in known_names()
    from interventions import load_task, train_intervention
    from interventions.spec import RunSpec

    trained = train_intervention(tiny_model, load_task("ccc", model=tiny_model, split="train", n=8), intervention="tinyplug",
                                 run=RunSpec(epochs=1))  # fmt: skip
    assert trained.method.name == "tinyplug" and trained.method.display_name() == "ActivScalar, from another package"
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "train.py", "intervention=tinyplug", "intervention.lr=0.05", *TINY,
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=env)  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert json.loads((tmp_path / "run" / "intervention.json").read_text())["method"] == "tinyplug"


def test_installed_methods_are_read_once_until_a_package_is_installed(tmp_path, monkeypatch):
    """A command line asks for them twice (its checks, its run) and each read parses every
    installed distribution's metadata (about 0.2 s): read again only when the path changed."""
    import importlib.metadata

    from interventions.entry_points import method_entry_points

    reads = []
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: reads.append(kwargs) or real(**kwargs))
    monkeypatch.syspath_prepend(str(tmp_path))
    settled = time.time() - 3600
    os.utime(tmp_path, (settled, settled))  # a folder that has not changed for an hour
    first = method_entry_points()
    assert method_entry_points() == first and len(reads) == 1  # the same path: read once
    info = tmp_path / "later-0.1.dist-info"  # installed while this process runs (a notebook's kernel)
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: later\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[interventions.methods]\nlater = later_pkg:Later\n")
    assert set(method_entry_points()) == {*first, "later"} and len(reads) == 2
    # a folder changed just now may change again within its file system's timestamp tick:
    # read again until it has settled
    assert "later" in method_entry_points() and len(reads) == 3
    os.utime(tmp_path, (settled + 60, settled + 60))  # settled since (importlib.metadata caches a listing by its time)
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))  # another path: read again, even if it adds nothing
    assert "later" in method_entry_points() and len(reads) == 4
    assert "later" in method_entry_points() and len(reads) == 4  # settled: kept


@pytest.mark.slow
def test_a_method_written_outside_the_package_runs_everywhere(plugin, tmp_path):
    search = f"hydra.searchpath=[file://{plugin / 'conf'}]"
    run = tmp_path / "run"
    trained = cli(plugin, "train.py", "intervention=lowrank", "intervention.rank=3", search, *TINY, f"hydra.run.dir={run}")
    assert trained.returncode == 0, describe(trained)
    meta = json.loads((run / "intervention.json").read_text())
    assert meta["class"] == "lowrank_plugin.LowRank" and meta["options"]["rank"] == 3
    from safetensors.torch import load_file

    tensors = load_file(str(run / "intervention.safetensors"))
    assert set(tensors) >= {"attnOut_0__U", "attnOut_0__V"} and tensors["attnOut_0__U"].shape[0] == 3
    for bad, words in (("intervention.rank=x", "intervention.rank='x' must be an integer"),
                       ("intervention.bogus=1", "unknown key intervention.bogus")):  # fmt: skip
        refused = cli(plugin, "train.py", "intervention=lowrank", bad, search, f"hydra.run.dir={tmp_path / 'no'}")
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr, describe(refused)
    evaluated = cli(plugin, "evaluate.py", f"intervention={run}", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, describe(evaluated)
    generated = cli(plugin, "evaluate.py", f"generate={run}", "n=2", "max_new_tokens=2", "logger=none",
                    f"hydra.run.dir={tmp_path / 'gen'}")  # fmt: skip
    assert generated.returncode == 0 and (tmp_path / "gen" / "completions.jsonl").exists(), describe(generated)
    sweep = tmp_path / "sweep"
    swept = cli(plugin, "train.py", "-m", "intervention=lowrank", "intervention.rank=1,2", search, *TINY,
                f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert swept.returncode == 0, describe(swept)
    assert json.loads((sweep / "pareto.json").read_text())["counts"]["finished"] == 2
    fused = cli(plugin, "train.py", "intervention=lowrank", "fused=[{lambda_f:0},{lambda_f:1}]", search, *TINY,
                f"hydra.run.dir={tmp_path / 'fused'}")  # fmt: skip
    assert fused.returncode == 0, describe(fused)
    assert json.loads((tmp_path / "fused" / "pareto.json").read_text())["counts"]["finished"] == 2


@pytest.mark.slow
def test_a_method_written_outside_the_package_applies_to_the_plain_hf_model(plugin, tmp_path, monkeypatch, toy_model):
    from interventions import hf, load_task, train_intervention
    from interventions.export import load_intervention
    from interventions.spec import RunSpec
    from interventions.toyworld.hf_form import hf_form

    monkeypatch.syspath_prepend(str(plugin))
    model, _ = toy_model
    options = options_from({"_target_": "lowrank_plugin.LowRank", "method": "lowrank", "init_scale": 0.1, "lr": 0.05})
    trained = train_intervention(model, load_task("ccc", model=model, split="train", n=8), intervention=options,
                                 run=RunSpec(epochs=1))  # fmt: skip
    trained.save(tmp_path / "run")
    iv = load_intervention(tmp_path / "run")
    ids = model.to_tokens("The capital of France is Rome . Q: What is the capital of France ? A:")
    with torch.no_grad():
        with iv.apply(model, beta=-1.0):
            bridge = model(ids)[0, -1]
        plain = hf_form(model)
        with hf.apply(plain, iv, beta=-1.0):
            theirs = plain(ids).logits[0, -1]
    assert float((bridge - model(ids)[0, -1]).abs().max()) > 1e-3  # it acts
    torch.testing.assert_close(theirs, bridge, atol=1e-4, rtol=0)


def test_an_export_of_a_method_that_cannot_be_imported_is_one_line(tmp_path, tiny_model):
    from interventions.export import load_intervention, save_intervention
    from interventions.methods import METHODS
    from interventions.sites import build_grid

    method = METHODS["dynscalar"](build_grid(tiny_model.cfg, positions=None), tiny_model.cfg)
    save_intervention(tmp_path, method, tiny_model, "tiny", {})
    meta = json.loads((tmp_path / "intervention.json").read_text())
    (tmp_path / "intervention.json").write_text(json.dumps({**meta, "method": "gone", "class": "no_such_module.Gone"}))
    with pytest.raises(ExportError, match="cannot be loaded: .*no_such_module.Gone.*cannot be imported") as error:
        load_intervention(tmp_path)
    assert "\n" not in str(error.value)
