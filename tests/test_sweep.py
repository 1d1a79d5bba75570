"""Sweeps (issue 5): Pareto fronts, the sweep summary, robust and resumable multiruns,
launcher and trainer presets, and the generalization table.

The end-to-end sweeps run `python train.py -m ...` in subprocesses on the toy model (or a
tiny random checkpoint while it is absent) with 16 data points and one epoch per run.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from functools import partial
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import describe, rebuild_sweep_summary
from conftest import run_cli as _run_cli

from interventions.errors import ConfigError
from interventions.sweeps.jobs import sweep_group

ROOT = Path(__file__).resolve().parents[1]
TINY = ["task.n_train=16", "task.n_val=16", "task.n_test=16", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "logger=csv"]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- Pareto fronts on hand-made points -----------------------------------------------------------


def test_pareto_dominated_points_are_off_the_front():
    from interventions.sweeps.pareto import pareto_mask

    points = [(0.0, 0.0), (-1.0, -1.0), (-1.0, 0.0), (0.0, -1.0)]
    assert pareto_mask(points, ("max", "max")) == [True, False, False, False]


def test_pareto_trade_off_keeps_every_non_dominated_point():
    from interventions.sweeps.pareto import pareto_mask

    points = [(-1.0, 0.0), (0.0, -1.0), (-0.5, -0.5), (-0.6, -0.6), (-0.5, -0.7)]
    assert pareto_mask(points, ("max", "max")) == [True, True, True, False, False]


def test_pareto_ties_and_duplicates():
    from interventions.sweeps.pareto import pareto_mask

    # identical points do not dominate each other: both stay on the front
    assert pareto_mask([(0.0, -1.0), (0.0, -1.0)], ("max", "max")) == [True, True]
    # equal on one axis, worse on the other: weakly dominated, off the front
    assert pareto_mask([(0.0, -1.0), (0.0, -2.0)], ("max", "max")) == [True, False]
    # duplicates of a dominated point are all off the front
    assert pareto_mask([(0.0, 0.0), (-1.0, -1.0), (-1.0, -1.0)], ("max", "max")) == [True, False, False]
    # a single point is its own front; no points, no front
    assert pareto_mask([(-3.0, -4.0)], ("max", "max")) == [True]
    assert pareto_mask([], ("max", "max")) == []


def test_pareto_minimality_lower_is_better():
    from interventions.sweeps.pareto import pareto_mask

    # (effectiveness: max, minimality count: min)
    points = [(-1.0, 10), (-1.0, 5), (0.0, 100), (-2.0, 5), (0.0, 100)]
    assert pareto_mask(points, ("max", "min")) == [False, True, True, False, True]


def test_pareto_missing_and_non_finite_values_are_never_on_the_front():
    from interventions.sweeps.pareto import pareto_mask

    points = [(math.nan, 0.0), (None, 1.0), (-5.0, -5.0), (math.inf, 0.0)]
    assert pareto_mask(points, ("max", "max")) == [False, False, True, False]
    with pytest.raises(ValueError):
        pareto_mask([(0.0, 0.0)], ("max", "up"))


def test_front_of_uses_finished_runs_test_metrics_only():
    from interventions.sweeps.pareto import front_of

    records = [
        {"status": "finished", "test": {"effectiveness": -1.0, "faithfulness": -1.0}, "train": {"effectiveness": 0.0, "faithfulness": 0.0}},
        {"status": "finished", "test": {"effectiveness": -2.0, "faithfulness": -2.0}, "train": {"effectiveness": 0.0, "faithfulness": 0.0}},
        {"status": "failed", "test": None},
        {"status": "incomplete", "test": {"effectiveness": 0.0, "faithfulness": 0.0}},
    ]  # fmt: skip
    assert front_of(records, "effectiveness", "faithfulness") == [True, False, False, False]
    assert front_of(records, "effectiveness", "faithfulness", split="train") == [True, True, False, False]


# -- the summary from hand-made run folders ------------------------------------------------------


def _metrics(eff, faith, minimality, n_params=100):
    one = {"effectiveness": eff, "faithfulness": faith, "minimality": minimality, "n_params": n_params,
           "flip_accuracy": 0.5, "logit_diff": {"-1": 0.0, "0": 1.0, "+1": 2.0}}  # fmt: skip
    return {"train": dict(one, effectiveness=eff + 0.1), "test": one}


def _fake_run(sweep: Path, num: int, method: str, lambda_f: float, metrics=None, error=None, group="g1"):
    run = sweep / str(num)
    (run / ".hydra").mkdir(parents=True)
    overrides = [f"intervention={method}", f"objective.lambda_f={lambda_f}"]
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    config = {"intervention": {"method": method, "lr": 0.01}, "objective": {"lambda_f": lambda_f, "lambda_m": 0.0,
              "margin": 1.0}, "seed": 0, "task": {"name": "ccc", "template": 0}}  # fmt: skip
    job = {"job_num": num, "overrides": overrides, "config": config, "group": group, "status": "running"}
    if error:
        job.update(status="failed", error=error)
        (run / "error.txt").write_text(f"run {num} failed: {error}\n\nTraceback (most recent call last):\n...")
    (run / "sweep_job.json").write_text(json.dumps(job))
    if metrics:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def fake_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep, 0, "activscalar", 0, _metrics(-0.5, -2.0, 50, 136))
    _fake_run(sweep, 1, "activscalar", 1, _metrics(-1.0, -0.5, 40, 136))
    _fake_run(sweep, 2, "steervec", 0, _metrics(-0.2, -3.0, 9000, 17408))
    _fake_run(sweep, 3, "steervec", 1, _metrics(-1.5, -1.0, 9000, 17408))  # dominated by run 1
    _fake_run(sweep, 4, "steervec", 10, error="intervention.layers: the model has no layer 99")
    _fake_run(sweep, 5, "activscalar", 10)  # started, never finished (killed)
    (sweep / "10").mkdir()  # something else: not a run folder
    return sweep


def test_the_pareto_plots_name_each_run_and_read_counts_within_one_decade():
    """Issue 28: the minimality plot showed no y value when the counts lay within one decade
    (no tick inside the data), points carried no run numbers, and identical points hid each
    other."""
    from interventions.sweeps.plots import count_ticks, plot_front

    records = [{"run": str(i), "status": "finished", "hparams": {"method": "activscalar"},
                "train": _metrics(eff, -1.0, count)["train"], "test": _metrics(eff, -1.0, count)["test"]}
               for i, (eff, count) in enumerate([(-0.5, 16), (-0.2, 24), (-0.2, 24), (-0.1, 20)])]  # fmt: skip
    fig = plot_front(records, "minimality")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    inside = [t for t in ax.get_yticks() if low <= t <= high]
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(inside) >= 2 and {"16", "20", "24"} <= set(labels), labels
    names = sorted(t.get_text() for t in ax.texts)
    assert names == ["0", "1, 2", "3"]  # the two identical points share one label
    assert count_ticks(0, 5) == [0.0, 1.0, 2.0, 5.0] and count_ticks(150, 17000) == [200.0, 500.0, 1000.0, 2000.0,
                                                                                       5000.0, 10000.0]  # fmt: skip
    assert count_ticks(31, 33) == [31.0, 33.0]


def _write_export(run: Path, values) -> None:
    import torch
    from safetensors.torch import save_file

    (run / "intervention.json").write_text(json.dumps({"method": "activscalar"}))
    save_file({"attnOut_0": torch.tensor(values, dtype=torch.float32)}, str(run / "intervention.safetensors"))


def test_a_run_whose_export_is_damaged_is_named_kept_off_the_fronts_and_run_again(fake_sweep, caplog):
    """Issue 28: a run with a cut-short intervention.safetensors was summarised as finished."""
    from interventions.sweeps.jobs import already_finished
    from interventions.sweeps.summary import summarize_sweep

    for num in (0, 1):
        _write_export(fake_sweep / str(num), [0.5, -0.25])
    data = (fake_sweep / "1" / "intervention.safetensors").read_bytes()
    (fake_sweep / "1" / "intervention.safetensors").write_bytes(data[:-3])  # cut short
    with caplog.at_level("WARNING"):
        summary = summarize_sweep(fake_sweep, logger={"kind": "none"}, verbose=False)
    runs = {r["run"]: r for r in summary["runs"]}
    assert runs["0"]["status"] == "finished" and runs["1"]["status"] == "damaged"
    assert "intervention.safetensors is damaged or cut short" in runs["1"]["error"]
    assert summary["counts"]["damaged"] == 1 and "1" not in summary["fronts"]["faithfulness"]
    assert any("run 1 finished, but intervention.safetensors is damaged" in m for m in caplog.messages)
    assert "damaged: intervention.safetensors" in (fake_sweep / "pareto.md").read_text()
    job = json.loads((fake_sweep / "1" / "sweep_job.json").read_text())
    assert not already_finished(fake_sweep / "1", job["config"], "run 1")  # a relaunch runs it again
    assert not (fake_sweep / "1" / "metrics.json").exists() and list((fake_sweep / "1" / "superseded").iterdir())


def test_a_sweep_summary_refuses_a_folder_that_is_not_a_sweep(fake_sweep, tmp_path):
    """Issue 28: `evaluate.py sweep=<an export folder>` exited 0 and wrote an empty pareto.json,
    pareto.md and two empty plots into the export folder."""
    from interventions.cli.preflight import preflight
    from interventions.sweeps.summary import summarize_sweep

    run = fake_sweep / "0"
    _write_export(run, [0.5])
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, words in ((run, "is one run (it holds metrics.json), not a sweep; evaluate it with python evaluate.py "
                                "intervention="), (empty, "holds no runs of a sweep")):  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(words)):
            preflight([f"sweep={folder}"], "evaluate")
        with pytest.raises(ConfigError, match=re.escape(words)):
            summarize_sweep(folder, verbose=False)
        assert not (folder / "pareto.json").exists() and not (folder / "pareto.md").exists()
    result = run_cli("evaluate.py", f"sweep={run}", "logger=none", hydra_dir=tmp_path / "hydra")
    assert result.returncode == 2 and "is one run" in result.stderr, describe(result)
    assert not (run / "pareto.json").exists() and not list(run.glob("*.png"))


def test_summary_records_status_hparams_and_fronts(fake_sweep):
    from interventions.sweeps.summary import summarize_sweep

    summary = summarize_sweep(fake_sweep, logger={"kind": "none"}, verbose=False)
    written = json.loads((fake_sweep / "pareto.json").read_text())
    assert written["counts"] == {"finished": 4, "damaged": 0, "failed": 1, "interrupted": 0, "incomplete": 1,
                                 "runs": 6}
    runs = {r["run"]: r for r in written["runs"]}
    assert list(runs) == ["0", "1", "2", "3", "4", "5"]
    assert runs["4"]["status"] == "failed" and "layer 99" in runs["4"]["error"]
    assert runs["4"]["traceback"].endswith("error.txt")
    assert runs["5"]["status"] == "incomplete" and runs["5"]["test"] is None
    assert runs["0"]["hparams"]["method"] == "activscalar" and runs["1"]["hparams"]["lambda_f"] == 1
    assert runs["0"]["overrides"] == ["intervention=activscalar", "objective.lambda_f=0"]
    assert runs["2"]["test"]["minimality"] == 9000 and runs["2"]["train"]["effectiveness"] == pytest.approx(-0.1)
    # effectiveness vs faithfulness (both higher is better): 2 (most effective), 0, 1 (most faithful)
    assert written["fronts"]["faithfulness"] == ["0", "1", "2"]
    # effectiveness vs minimality (count, lower is better): 1 (fewest), 0, 2 (most effective)
    assert written["fronts"]["minimality"] == ["0", "1", "2"]
    assert runs["3"]["pareto"] == {"faithfulness": False, "minimality": False}
    assert runs["3"]["pareto_within_method"]["faithfulness"] is True  # the SteerVec front alone
    assert runs["4"]["pareto"] == {"faithfulness": False, "minimality": False}
    assert "LOWER" in written["conventions"]["minimality"]
    assert written["group"] == "g1"  # recorded by the runs
    assert summary["fronts"] == written["fronts"]
    for name in ("pareto_faithfulness.png", "pareto_minimality.png"):
        assert (fake_sweep / name).read_bytes()[:8] == PNG_MAGIC, name
    table = (fake_sweep / "pareto.md").read_text()
    assert "failed: intervention.layers" in table and "incomplete" in table


def test_summary_wandb_run_gets_the_group_table_and_plots(fake_sweep, monkeypatch):
    import interventions.sweeps.summary as summary
    from interventions.sweeps.summary import summarize_sweep

    calls = {}

    class FakeExperiment:
        summary: dict = {}

    class WandbLogger:  # is_wandb() looks at the class name
        experiment = FakeExperiment()

        def log_table(self, key, columns, data):
            calls["table"] = (key, columns, data)

        def log_image(self, key, images):
            calls.setdefault("images", {})[key] = images

    def fake_make_logger(kind, run_dir, **kwargs):
        calls["make"] = dict(kwargs, kind=kind, run_dir=run_dir)
        return WandbLogger()

    monkeypatch.setattr(summary, "make_logger", fake_make_logger)  # the names summarize_sweep calls
    monkeypatch.setattr(summary, "finish", lambda logger: calls.setdefault("finished", True))
    summarize_sweep(fake_sweep, logger={"kind": "wandb", "project": "p", "mode": "offline"}, verbose=False)
    assert calls["make"]["group"] == "g1" and calls["make"]["mode"] == "offline"
    assert calls["make"]["name"] == "sweep-summary" and Path(calls["make"]["run_dir"]) == fake_sweep
    key, columns, data = calls["table"]
    assert key == "pareto" and len(data) == 6 and "front_faithfulness" in columns
    assert set(calls["images"]) == {"pareto_faithfulness", "pareto_minimality"}
    assert calls["finished"]


# -- robust jobs: skip finished, supersede changed, record failures ------------------------------


def _ctx(sweep: Path, num: int = 0):
    return {"sweep_dir": str(sweep), "num": num, "overrides": ["x=1"], "output_dir": str(sweep / str(num))}


def _job_cfg(sweep: Path, num: int = 0, **objective):
    return OmegaConf.create({"run_dir": str(sweep / str(num)), "objective": {"lambda_f": 0.1, **objective},
                             "logger": {"kind": "none", "group": None}})  # fmt: skip


def test_run_job_skips_a_finished_run_with_the_same_config(tmp_path, caplog):
    caplog.set_level("INFO")
    from interventions.sweeps.jobs import run_job

    calls = []

    def fn(cfg):
        calls.append(cfg.logger.group)
        (Path(cfg.run_dir) / "metrics.json").write_text(json.dumps({"test": {"effectiveness": -0.25}}))
        return -0.25

    assert run_job(fn, _job_cfg(tmp_path), _ctx(tmp_path)) == -0.25
    assert calls == [sweep_group(tmp_path)]  # the W&B group is the sweep's name
    job = json.loads((tmp_path / "0" / "sweep_job.json").read_text())
    assert job["group"] == sweep_group(tmp_path) and job["overrides"] == ["x=1"]
    assert run_job(fn, _job_cfg(tmp_path), _ctx(tmp_path)) == -0.25
    assert len(calls) == 1
    assert "skipping run 0 (x=1): already finished" in caplog.text


def test_run_job_reruns_a_finished_run_whose_config_changed(tmp_path, caplog):
    caplog.set_level("INFO")
    from interventions.sweeps.jobs import run_job

    def fn(cfg):
        (Path(cfg.run_dir) / "metrics.json").write_text(json.dumps({"test": {"effectiveness": cfg.objective.lambda_f}}))

    run_job(fn, _job_cfg(tmp_path), _ctx(tmp_path))
    run_job(fn, _job_cfg(tmp_path, lambda_f=1.0), _ctx(tmp_path))
    run_dir = tmp_path / "0"
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["effectiveness"] == 1.0
    old = list((run_dir / "superseded").glob("*/metrics.json"))
    assert len(old) == 1 and json.loads(old[0].read_text())["test"]["effectiveness"] == 0.1  # kept, not lost
    assert "another config" in caplog.text


def test_same_results_ignores_keys_that_do_not_change_training():
    from interventions.sweeps.jobs import same_results

    base = {"model": {"name": "toy"}, "task": {"name": "ccc"}, "intervention": {"method": "activscalar"},
            "objective": {"lambda_f": 0.1}, "trainer": {"max_epochs": 1}, "seed": 0}  # fmt: skip
    assert same_results(base, dict(base, illusion="auto"))  # e.g. a diagnostics key added later
    assert not same_results(base, dict(base, seed=1))
    assert not same_results(base, dict(base, objective={"lambda_f": 1.0}))
    assert not same_results(None, base)


def test_a_run_finished_before_model_fused_gelu_existed_is_still_finished():
    from omegaconf import OmegaConf

    from interventions.sweeps.jobs import job_identity, same_results

    base = {"model": {"name": "gpt2", "dtype": "float32"}, "task": {"name": "ccc"},
            "intervention": {"method": "activscalar"}, "objective": {"lambda_f": 0.1}, "trainer": {}, "seed": 0}  # fmt: skip
    now = dict(base, model=dict(base["model"], fused_gelu=False))
    assert same_results(job_identity(OmegaConf.create(base)), job_identity(OmegaConf.create(now)))
    assert not same_results(job_identity(OmegaConf.create(base)),
                            job_identity(OmegaConf.create(dict(now, model={"name": "gpt2", "dtype": "bfloat16"}))))


def test_run_job_records_a_failure_and_returns(tmp_path, caplog):
    caplog.set_level("INFO")
    from interventions.sweeps.jobs import run_job

    def boom(cfg):
        raise RuntimeError("something broke\nsecond line")

    assert run_job(boom, _job_cfg(tmp_path), _ctx(tmp_path)) is None
    err = caplog.text
    assert "error: run 0 (x=1) failed: RuntimeError: something broke" in err
    text = (tmp_path / "0" / "error.txt").read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: something broke" in text
    job = json.loads((tmp_path / "0" / "sweep_job.json").read_text())
    assert job["status"] == "failed" and job["error"] == "RuntimeError: something broke"

    def ok(cfg):  # a relaunch that succeeds clears the old error
        (Path(cfg.run_dir) / "metrics.json").write_text(json.dumps({"test": {"effectiveness": 0.0}}))

    run_job(ok, _job_cfg(tmp_path), _ctx(tmp_path))
    assert not (tmp_path / "0" / "error.txt").exists()


def test_ddp_in_a_local_multirun_is_refused_with_advice(tmp_path, caplog, monkeypatch):
    caplog.set_level("INFO")
    from interventions.sweeps.jobs import run_job

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    cfg = _job_cfg(tmp_path)
    cfg.trainer = {"strategy": "ddp"}
    assert run_job(lambda cfg: pytest.fail("must not run"), cfg, _ctx(tmp_path)) is None
    assert "hydra/launcher=slurm" in caplog.text


def test_a_killed_run_is_not_finished(tmp_path):
    """metrics.json is written last (atomically): a run killed before it is rerun."""
    from interventions.sweeps.summary import collect_runs
    from interventions.sweeps.jobs import run_job

    def killed(cfg):
        (Path(cfg.run_dir) / "intervention.json").write_text("{}")
        raise KeyboardInterrupt  # not caught: a kill stops the sweep

    with pytest.raises(KeyboardInterrupt):
        run_job(killed, _job_cfg(tmp_path), _ctx(tmp_path))
    assert collect_runs(tmp_path)[0]["status"] == "incomplete"
    ran = []
    run_job(lambda cfg: ran.append(1), _job_cfg(tmp_path), _ctx(tmp_path))
    assert ran == [1]


# -- configs: presets and launchers compose --------------------------------------------------------


def _compose(overrides, name="train", hydra=True):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from interventions.cli.configs import store

    store()  # the schemas and the model / logger options live in Hydra's ConfigStore
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(name, overrides=overrides, return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    "launcher, target",
    [("joblib", "JoblibLauncher"), ("parallel", "JoblibLauncher"), ("submitit_slurm", "SlurmLauncher"),
     ("slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher")],
)  # fmt: skip
def test_launcher_configs_compose(launcher, target):
    pytest.importorskip(f"hydra_plugins.hydra_{'joblib' if target == 'JoblibLauncher' else 'submitit'}_launcher")
    cfg = _compose([f"hydra/launcher={launcher}", "experiment=paper_grid_small"])
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "parallel":
        assert cfg.hydra.launcher.n_jobs == 2


def test_trainer_presets_compose():
    gpu = _compose(["trainer=gpu"]).trainer
    assert gpu.accelerator == "gpu" and gpu.devices == 1 and gpu.max_epochs == 25
    ddp = _compose(["trainer=ddp"]).trainer
    assert ddp.strategy == "ddp" and ddp.devices == -1


@pytest.mark.parametrize("name, runs", [("paper_grid", 128), ("paper_grid_small", 12)])
def test_paper_grid_presets(name, runs):
    cfg = _compose([f"experiment={name}"])
    params = cfg.hydra.sweeper.params
    assert len(list(itertools.product(*(str(v).split(",") for v in params.values())))) == runs
    assert set(str(params.intervention).split(",")) == {"activscalar", "steervec"}
    assert list(cfg.intervention.sites) == ["attnOut", "mlpOut"]
    assert cfg.intervention.layers == "all" and cfg.intervention.positions == "all"
    if name == "paper_grid":
        for key in ("objective.lambda_f", "objective.lambda_m", "objective.margin"):
            assert str(params[key]).split(",") == ["0", "1", "10", "100"]
    assert cfg.hydra.callbacks.sweep_summary._target_ == "interventions.sweeps.summary.SweepSummary"


def test_preflight_accepts_the_sweep_entry_points(fake_sweep):
    from interventions.cli.preflight import preflight

    preflight(["-m", "experiment=paper_grid"], "train")
    preflight(["-m", "experiment=paper_grid_small", "hydra/launcher=joblib", "objective.lambda_f=0,1"], "train")
    preflight([f"sweep={fake_sweep}"], "evaluate")
    with pytest.raises(ConfigError, match="is not a directory"):
        preflight(["sweep=/some/multirun/dir"], "evaluate")
    preflight(["generalization=[/a,/b]", "task.template=2"], "evaluate")


def test_evaluate_preflight_rejects_both_modes():
    from interventions.cli.preflight import preflight
    from interventions.errors import ConfigError

    with pytest.raises(ConfigError, match="either sweep"):
        preflight(["sweep=/a", "generalization=/b"], "evaluate")


# -- end to end: multiruns of train.py ---------------------------------------------------------------




run_cli = partial(_run_cli, threads=1)  # a sweep runs several trainings at once


@pytest.fixture(scope="module")
def sweep_ok(tmp_path_factory, model_args):
    """A 2-point multirun: ActivScalar and SteerVec."""
    sweep = tmp_path_factory.mktemp("sweep_ok") / "sweep"
    args = ["-m", "intervention=activscalar,steervec", *TINY, *model_args, f"hydra.sweep.dir={sweep}"]
    return run_cli("train.py", *args), sweep, args


@pytest.mark.slow
def test_multirun_writes_pareto_json_and_plots(sweep_ok):
    result, sweep, _ = sweep_ok
    assert result.returncode == 0, describe(result)
    summary = json.loads((sweep / "pareto.json").read_text())
    assert summary["counts"] == {"finished": 2, "damaged": 0, "failed": 0, "interrupted": 0, "incomplete": 0,
                                 "runs": 2}
    methods = [r["hparams"]["method"] for r in summary["runs"]]
    assert methods == ["activscalar", "steervec"]
    for r in summary["runs"]:
        assert r["status"] == "finished" and r["error"] is None
        assert {"effectiveness", "faithfulness", "minimality", "n_params"} <= set(r["test"]) and r["train"]
        assert set(r["pareto"]) == {"faithfulness", "minimality"}
        assert r["hparams"]["lambda_f"] == 0.1 and r["hparams"]["max_epochs"] == 1
        assert f"intervention={r['hparams']['method']}" in r["overrides"]
        job = json.loads((Path(r["run_dir"]) / "sweep_job.json").read_text())
        assert job["group"] == sweep_group(sweep)  # every run of the sweep in one W&B group
    # the run with the fewest non-negligible parameters is on the minimality front
    fewest = min(summary["runs"], key=lambda r: r["test"]["minimality"])
    assert fewest["pareto"]["minimality"]
    assert summary["fronts"]["faithfulness"] and summary["fronts"]["minimality"]
    for name in ("pareto_faithfulness.png", "pareto_minimality.png"):
        assert (sweep / name).read_bytes()[:8] == PNG_MAGIC, name
    assert "sweep summary: 2 finished" in result.stdout


@pytest.mark.slow
def test_relaunch_skips_finished_runs_and_reruns_an_unfinished_one(sweep_ok):
    result, sweep, args = sweep_ok
    assert result.returncode == 0, describe(result)
    kept = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    launched = (sweep / "0" / ".hydra" / "config.yaml").stat().st_mtime_ns  # Hydra writes it when a job starts
    (sweep / "1" / "metrics.json").unlink()  # as if run 1 had been killed before it finished
    again = run_cli("train.py", *args)
    assert again.returncode == 0, describe(again)
    assert "skipping run 0 (intervention=activscalar" in again.stdout
    assert "launching 1 of 2 runs; the others are finished" in again.stdout  # said by the driver: run 0 got no job
    assert (sweep / "0" / ".hydra" / "config.yaml").stat().st_mtime_ns == launched
    assert "skipping run 1" not in again.stdout
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == kept
    assert json.loads((sweep / "1" / "sweep_job.json").read_text())["job_num"] == 1
    assert (sweep / "1" / "metrics.json").exists()
    assert json.loads((sweep / "pareto.json").read_text())["counts"]["finished"] == 2


@pytest.mark.slow
def test_evaluate_sweep_rebuilds_the_summary(sweep_ok):
    result, sweep, _ = sweep_ok
    assert result.returncode == 0, describe(result)
    before, after = rebuild_sweep_summary(sweep, "pareto.json", ("pareto.json", "pareto_faithfulness.png",
                                          "pareto_minimality.png"), sweep.parent / "eval")  # fmt: skip
    assert after["fronts"] == before["fronts"] and after["counts"] == before["counts"]
    assert [r["test"] for r in after["runs"]] == [r["test"] for r in before["runs"]]
    assert (sweep / "pareto_minimality.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, model_args):
    sweep = tmp_path / "sweep"
    # run 0 fails inside the run (the toy model has no layer 99); run 1 must still run
    result = run_cli("train.py", "-m", "intervention.layers=[0,99],[0]", *TINY, *model_args, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, describe(result)
    summary = json.loads((sweep / "pareto.json").read_text())
    failed, ok = summary["runs"]
    assert failed["status"] == "failed" and "99" in failed["error"] and "intervention.layers" in failed["error"]
    assert "Traceback (most recent call last)" in (sweep / "0" / "error.txt").read_text()
    assert not (sweep / "0" / "metrics.json").exists()
    assert ok["status"] == "finished" and (sweep / "1" / "metrics.json").exists()
    assert summary["fronts"]["faithfulness"] == ["1"]
    assert "error: run 0" in result.stderr and "1 of 2 runs failed" in result.stderr


# -- generalization (Table 2) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynscalar_run(tmp_path_factory, model_args):
    from interventions.runs import train_run

    run_dir = tmp_path_factory.mktemp("dyn") / "run"
    cfg = _compose(["intervention=dynscalar", *TINY, "logger=none", f"run_dir={run_dir}", *model_args], hydra=False)
    train_run(cfg)
    return run_dir


@pytest.mark.slow
def test_generalization_table(sweep_ok, dynscalar_run, tmp_path):
    from interventions.reports.generalization import generalization, markdown, write_generalization

    result, sweep, _ = sweep_ok
    assert result.returncode == 0, describe(result)
    summary = generalization([sweep, dynscalar_run], verbose=False)
    assert [r["method"] for r in summary["runs"]] == ["activscalar", "steervec", "dynscalar"]
    assert list(summary["by_method"]) == ["activscalar", "dynscalar", "steervec"]  # by name
    for r in summary["runs"]:
        metrics = json.loads((Path(r["run"]) / "metrics.json").read_text())
        assert r["A"]["effectiveness"] == metrics["train"]["effectiveness"]
        assert r["B"]["effectiveness"] == metrics["test"]["effectiveness"]
        assert set(r["C"]) == {"1", "2"}  # the other ccc templates
        for cell in r["C"].values():
            if r["method"] == "dynscalar":
                assert cell["effectiveness"] <= 0 and cell["n"] == 16
            elif cell["effectiveness"] is None:  # position-tied on another length: a reason, no crash
                assert "tied to" in cell["not_applicable"] and "DynScalar" in cell["not_applicable"]
    json_path, md_path = write_generalization(summary, tmp_path / "gen")
    assert json.loads(json_path.read_text())["by_method"]["dynscalar"]["C"]["2"]["effectiveness"] <= 0
    table = md_path.read_text()
    assert "| DynScalar |" in table and "C: template 2" in table
    assert markdown(summary) == table


@pytest.mark.slow
def test_dynscalar_task_matrix_and_mixed_tasks(sweep_ok, dynscalar_run, tmp_path, model_args):
    from interventions.reports.task_matrix import task_matrix, write_task_matrix
    from interventions.tasks.mixed import write_mixed_task
    from interventions.models import load_model
    from interventions.tasks import load_task

    result, sweep, _ = sweep_ok
    matrix = task_matrix([dynscalar_run, sweep / "0"], tasks=("ccc", "pronouns"), n=8, verbose=False)
    assert matrix["rows"] == ["ccc", "ccc"] and matrix["columns"] == ["ccc", "pronouns"]
    assert all(v <= 0 for v in matrix["effectiveness"][0])  # DynScalar: any task, any length
    assert matrix["effectiveness"][1] == [None, None]  # ActivScalar on mixed lengths: n/a, no crash
    assert "dynscalar" in matrix["cells"][1][0]["not_applicable"].lower()
    json_path, png_path = write_task_matrix(matrix, tmp_path / "matrix")
    assert png_path.read_bytes()[:8] == PNG_MAGIC and json.loads(json_path.read_text())["rows"] == ["ccc", "ccc"]

    model = load_model(model_args[0].split("=", 1)[1] if model_args else "toy")[0]
    path = write_mixed_task(tmp_path / "mixed", tasks=("ccc", "ioi"), n={"train": 4, "val": 2, "test": 4}, model=model)
    test = load_task("jsonl", model=model, split="test", path=path)
    assert len(test) == 8
    assert sum("capital" in p.prompt for p in test) == 4 and sum(p.prompt.endswith(" to") for p in test) == 4


@pytest.mark.slow
def test_training_free_baselines_land_in_pareto_json(tmp_path, model_args):
    """activpatch, attrpatch, dla and obsprop_steer run in a sweep like any method."""
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "intervention=dla,attrpatch,activpatch,obsprop_steer", "task=bias",
                     *TINY, *model_args, f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, describe(result)
    summary = json.loads((sweep / "pareto.json").read_text())
    assert summary["counts"]["finished"] == 4
    assert [r["hparams"]["method"] for r in summary["runs"]] == ["dla", "attrpatch", "activpatch", "obsprop_steer"]
    for r in summary["runs"]:
        assert set(r["pareto"]) == {"faithfulness", "minimality"}
        meta = json.loads((Path(r["run_dir"]) / "intervention.json").read_text())
        assert meta["attribution"]["scale"] > 0  # the tuned scale is recorded


@pytest.mark.parametrize("fused", [False, True])
def test_skip_unread_reaches_the_training(tmp_path, monkeypatch, fused):
    """`skip_unread=true` on the command line is what train_intervention / train_fused get."""
    from interventions import runs
    from interventions.runs import fused as fused_flow
    from interventions.runs import train as train_flow
    from interventions.spec import RunSpec

    class Reached(Exception):
        pass

    def stop(*args, **kwargs):
        raise Reached(next(a for a in (*args, *kwargs.values()) if isinstance(a, RunSpec)).skip_unread)

    monkeypatch.setattr(train_flow, "train_intervention", stop)
    monkeypatch.setattr(fused_flow, "train_fused", stop)
    overrides = ["skip_unread=true", "logger=none", f"run_dir={tmp_path}", "task.n_train=8", "task.n_test=8"]
    cfg = _compose(overrides + (["fused=[{lambda_f:0}]"] if fused else []), hydra=False)
    with pytest.raises(Reached) as reached:
        runs.train_run(cfg)
    assert reached.value.args == (True,)
    assert _compose([], hydra=False).skip_unread is False  # off by default


@pytest.mark.slow
def test_obsprop_init_runs_from_the_cli(tmp_path, model_args):
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "intervention=steervec", "intervention.init=obsprop", "intervention.init_scale=0.1",
                     "task=bias", *TINY, *model_args, f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'hydra'}")  # fmt: skip
    assert result.returncode == 0, describe(result)
    meta = json.loads((run_dir / "intervention.json").read_text())
    assert meta["intervention"]["init"] == "obsprop"
    for name in ("intervention.safetensors", "metrics.json", "scalars.csv", "heatmap.png", "beta_curve.png"):
        assert (run_dir / name).exists(), name


def test_fused_relaunch_trains_only_what_is_not_finished(tmp_path, monkeypatch, model_args, caplog):
    """A fused sweep writes a run folder (with its logger run, CSV here) per setting and
    pareto.json; relaunched into the same run_dir it skips the settings already finished with
    the same config and moves aside a finished setting whose config changed."""
    import interventions.runs.fused
    from interventions.runs import train_run

    caplog.set_level("INFO")
    trained = []
    real = interventions.runs.fused.train_fused

    def counting(model, train, objectives, *args, **kwargs):
        trained.append([o.lambda_f for o in objectives])
        assert kwargs["progress"] is False  # trainer.enable_progress_bar=false reaches the loop
        return real(model, train, objectives, *args, **kwargs)

    monkeypatch.setattr(interventions.runs.fused, "train_fused", counting)  # the name the fused flow calls
    root = tmp_path / "fused"

    def launch(settings):
        cfg = _compose([f"fused={settings}", *TINY, *model_args, f"run_dir={root}"], hydra=False)
        train_run(cfg)
        return json.loads((root / "pareto.json").read_text())

    first = launch("[{lambda_f:0},{lambda_f:1}]")
    assert trained == [[0, 1]] and first["counts"]["finished"] == 2
    assert [r["hparams"]["lambda_f"] for r in first["runs"]] == [0, 1]
    for k in (0, 1):  # a normal run's files, and the setting's logger run
        files = {p.name for p in (root / str(k)).iterdir()}
        assert {"intervention.safetensors", "intervention.json", "metrics.json", "scalars.csv", "csv"} <= files
    metrics_0 = (root / "0" / "metrics.json").read_text()

    launch("[{lambda_f:0},{lambda_f:1}]")
    assert trained == [[0, 1]]  # nothing left to train
    assert "skipping fused setting 0" in caplog.text

    second = launch("[{lambda_f:0},{lambda_f:2}]")
    assert trained == [[0, 1], [2]]
    assert (root / "0" / "metrics.json").read_text() == metrics_0  # untouched
    moved = list((root / "1" / "superseded").iterdir())
    assert len(moved) == 1 and (moved[0] / "metrics.json").exists()  # the λ_F = 1 run, kept
    assert [r["hparams"]["lambda_f"] for r in second["runs"]] == [0, 2]


@pytest.mark.parametrize("override, message", [
    ("trainer=ddp", "trainer.devices=-1 is not supported with fused"),
    ("+trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val is not supported with fused"),
    ("trainer=gpu trainer.precision=bf16-mixed", "trainer.precision='bf16-mixed' is not supported with fused"),
])  # fmt: skip
def test_fused_refuses_trainer_settings_it_cannot_honour(override, message, monkeypatch):
    import torch

    from interventions.cli.preflight import preflight
    from interventions.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU presets, as on a GPU machine

    with pytest.raises(ConfigError, match=re.escape(message)):
        preflight(["fused=[{lambda_f:0}]", *override.split()], "train")
    preflight(override.split(), "train")  # fine without fused


def test_fused_runs_where_the_trainer_says():
    from interventions.runs.fused import fused_device
    from interventions.spec import to_spec

    assert fused_device(to_spec(_compose(["fused=[{lambda_f:0}]", "trainer=gpu"], hydra=False), run_dir=".")) == "cuda"
    assert fused_device(to_spec(_compose(["fused=[{lambda_f:0}]"], hydra=False), run_dir=".")) == "cpu"


@pytest.mark.slow
def test_fused_grid_in_a_multirun_gives_the_multiruns_pareto_json(tmp_path, model_args):
    """-m over the method with a fused grid of objectives (what experiment=paper_grid_fused
    does) gives the runs, metrics and fronts of the plain multirun over all the axes; a
    relaunch trains nothing."""
    fused, plain = tmp_path / "fused", tmp_path / "plain"
    args = ["-m", "intervention=activscalar,steervec", *TINY, *model_args]
    result = run_cli("train.py", *args, "fused={lambda_f:[0,1]}", f"hydra.sweep.dir={fused}")
    assert result.returncode == 0, describe(result)
    # the plain multirun's four jobs, run in this process as Hydra's launcher would run them
    from interventions.runs import train_run
    from interventions.sweeps.jobs import run_job
    from interventions.sweeps.summary import summarize_sweep

    for num, (method, lambda_f) in enumerate(itertools.product(("activscalar", "steervec"), (0, 1))):
        overrides = [f"intervention={method}", f"objective.lambda_f={lambda_f}"]
        cfg = _compose([*overrides, *TINY, *model_args, f"run_dir={plain / str(num)}"], hydra=False)
        context = {"sweep_dir": plain, "num": num, "overrides": overrides, "output_dir": plain / str(num)}
        run_job(train_run, cfg, context)
    summarize_sweep(plain)
    got, want = (json.loads((d / "pareto.json").read_text()) for d in (fused, plain))
    assert got["counts"]["finished"] == want["counts"]["finished"] == 4
    names = {}
    for g, w in zip(got["runs"], want["runs"]):
        names[w["run"]] = g["run"]
        assert (g["hparams"]["method"], g["hparams"]["lambda_f"]) == (w["hparams"]["method"], w["hparams"]["lambda_f"])
        for key in ("effectiveness", "faithfulness", "minimality"):
            assert g["test"][key] == pytest.approx(w["test"][key], abs=1e-4)
    assert [r["run"] for r in got["runs"]] == ["0/0", "0/1", "1/0", "1/1"]
    for front, runs in want["fronts"].items():
        assert got["fronts"][front] == [names[r] for r in runs]

    from interventions.reports.generalization import find_runs  # the Table-2 tool finds them too

    assert [name for name, _ in find_runs(fused)] == ["0/0", "0/1", "1/0", "1/1"]
    assert [name for name, _ in find_runs(plain)] == ["0", "1", "2", "3"]

    again = run_cli("train.py", *args, "fused={lambda_f:[0,1]}", f"hydra.sweep.dir={fused}")
    assert again.returncode == 0, describe(again)
    assert again.stdout.count("skipping fused setting") == 4
    assert json.loads((fused / "pareto.json").read_text())["fronts"] == got["fronts"]


def test_fused_chunk_trains_the_settings_in_groups_with_the_same_results(tmp_path, monkeypatch, model_args):
    import interventions.runs.fused
    from interventions.runs import train_run

    groups = []
    real = interventions.runs.fused.train_fused

    def counting(model, train, objectives, *args, **kwargs):
        groups.append([o.lambda_f for o in objectives])
        return real(model, train, objectives, *args, **kwargs)

    monkeypatch.setattr(interventions.runs.fused, "train_fused", counting)  # the name the fused flow calls
    results = {}
    for chunk in ("null", "2"):
        root = tmp_path / chunk
        cfg = _compose(["fused={lambda_f:[0,0.1,1]}", f"fused_chunk={chunk}", *TINY, *model_args, f"run_dir={root}"],
                       hydra=False)  # fmt: skip
        train_run(cfg)
        results[chunk] = [r["test"] for r in json.loads((root / "pareto.json").read_text())["runs"]]
    assert groups == [[0, 0.1, 1], [0, 0.1], [1]]
    for together, chunked in zip(results["null"], results["2"]):
        for key in ("effectiveness", "faithfulness", "minimality"):
            assert chunked[key] == pytest.approx(together[key], abs=1e-5)


def test_a_relaunch_launches_each_unfinished_run_under_its_own_number():
    from interventions.sweeps.grid import launch_numbered

    calls = []

    class Launcher:
        def launch(self, batch, initial_job_idx):
            calls.append((batch, initial_job_idx))
            return ["r"] * len(batch)

    assert launch_numbered(Launcher(), []) == [] and calls == []
    assert launch_numbered(Launcher(), [(1, ["a=1"]), (2, ["a=2"]), (4, ["a=4"])]) == ["r"] * 3
    assert calls == [([["a=1"], ["a=2"], ["a=4", "hydra.sweep.subdir=4"]], 1)]
