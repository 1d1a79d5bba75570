"""The adaptive multi-objective sweeper (issue 31, `hydra/sweeper=pareto`): its search space
and options, the hypervolume on hand-computed sets, how trials become jobs
(fused too), and real sweeps on the toy model: basic and joblib launchers, a failing trial,
a killed sweep relaunched, a fused batch, and `evaluate.py sweep=` rebuilding the outputs.

The end-to-end sweeps run `python train.py -m hydra/sweeper=pareto ...` in subprocesses with
16 data points per split and one epoch per trial (a few seconds each).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from conftest import ROOT, describe, rebuild_sweep_summary
from conftest import run_cli as _run_cli

from interventions.errors import ConfigError
from interventions.sweeps.adaptive import command_line, fused_override, plan_jobs
from interventions.sweeps.pareto import bounds, hypervolume, hypervolume_curve, normalize
from interventions.sweeps.space import Dimension, parse_dimension, parse_space, sweeper_options

TINY = ["task.n_train=16", "task.n_val=16", "task.n_test=16", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "logger=none"]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OBJECTIVES = ("effectiveness", "faithfulness", "minimality")
run_cli = partial(_run_cli, threads=1)


def adaptive(sweep: Path, *args: str, model_args=()) -> list[str]:
    return ["-m", "hydra/sweeper=pareto", *TINY, *model_args, f"hydra.sweep.dir={sweep}", *args]


def run_adaptive(tmp_path: Path, model_args, *args: str):
    """(sweep folder, result) of an adaptive sweep with `args`, run in `tmp_path/sweep`."""
    sweep = tmp_path / "sweep"
    return sweep, run_cli("train.py", *adaptive(sweep, *args, model_args=model_args))


def load(sweep: Path):
    import optuna

    from interventions.sweeps.study import JOURNAL_FILE, STUDY_NAME

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(sweep / JOURNAL_FILE)))
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


# -- the search space and the options ------------------------------------------------------------


def test_each_form_of_a_dimension_parses():
    assert parse_dimension("objective.lambda_f", "log(1e-3, 10)") == Dimension("objective.lambda_f", "float", 1e-3, 10,
                                                                               log=True)  # fmt: skip
    assert parse_dimension("objective.margin", " uniform(0,2) ") == Dimension("objective.margin", "float", 0, 2)
    assert parse_dimension("trainer.max_epochs", "int(1, 5)") == Dimension("trainer.max_epochs", "int", 1, 5)
    assert parse_dimension("intervention", "choice(activscalar, steervec)").choices == ("activscalar", "steervec")
    assert parse_dimension("x", "choice(1, 0.5, true, null, 'a b')").choices == (1, 0.5, True, None, "a b")
    assert parse_dimension("intervention", ["activscalar", "steervec"]).kind == "choice"
    assert parse_dimension("objective.lambda_f", "log(1e-3, 10)").text() == "log(0.001, 10)"


def test_a_space_may_be_nested_or_flat():
    nested = parse_space({"objective": {"lambda_f": "log(1e-3, 10)", "margin": "uniform(0, 2)"}, "intervention": ["a"]})
    flat = parse_space({"objective.lambda_f": "log(1e-3, 10)", "objective.margin": "uniform(0, 2)", "intervention": ["a"]})
    assert nested == flat and [d.key for d in nested] == ["objective.lambda_f", "objective.margin", "intervention"]


@pytest.mark.parametrize("value, words", [
    ("uniform(2, 1)", "low 2 is above high 1"),
    ("log(0, 1)", "a log scale needs bounds > 0"),
    ("log(-1, 1)", "a log scale needs bounds > 0"),
    ("choice()", "a choice needs at least one value"),
    ([], "a choice needs at least one value"),
    ("int(0.5, 3)", "int(low, high) needs integer bounds"),
    ("uniform(a, 3)", "is not a finite number"),
    ("uniform(0, inf)", "is not a finite number"),
    ("uniform(0, 1, 2)", "takes two bounds"),
    ("loguniform(1, 2)", "unknown form 'loguniform'"),
    ("0.5", "write the values to search as"),
])  # fmt: skip
def test_a_malformed_dimension_is_one_line_naming_it(value, words):
    with pytest.raises(ConfigError) as error:
        parse_dimension("objective.lambda_f", value)
    assert "hydra.sweeper.space.objective.lambda_f" in str(error.value) and words in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("options, words", [
    ({"sampler": "cmaes"}, "hydra.sweeper.sampler='cmaes' is not a sampler; allowed: gp, tpe, nsgaii"),
    ({"objectives": ["effectiveness", "speed"]}, "unknown objective 'speed'"),
    ({"objectives": ["effectiveness", "effectiveness"]}, "different objectives"),
    ({"objectives": []}, "one or more different objectives"),
    ({"n_trials": 0}, "hydra.sweeper.n_trials=0 must be an integer >= 1"),
    ({"n_jobs": 1.5}, "hydra.sweeper.n_jobs=1.5 must be an integer >= 1"),
    ({"fused": "yes"}, "hydra.sweeper.fused='yes' must be true or false"),
    ({"n_trial": 3}, "unknown key hydra.sweeper.n_trial"),
    ({"space": {}}, "hydra.sweeper.space is empty"),
    ({"sampler_options": {"population": 3}}, "sampler_options.population is not an option of optuna's GPSampler"),
    ({"sampler": "nsgaii", "sampler_options": {"n_startup_trials": 3}}, "not an option of optuna's NSGAIISampler"),
])  # fmt: skip
def test_bad_options_are_one_line(options, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        sweeper_options(**{"space": {"objective.lambda_f": "log(1e-3, 10)"}, **options})


def test_good_options_and_their_directions():
    options = sweeper_options(space={"x": "uniform(0, 1)"}, sampler="nsgaii", sampler_options={"population_size": 8})
    assert options.directions == ["maximize", "maximize", "minimize"]  # effectiveness, faithfulness up; minimality down
    assert sweeper_options(space={"x": "uniform(0, 1)"}, objectives=["faithfulness"]).directions == ["maximize"]


def test_the_command_line_fixes_a_key_or_makes_a_choice():
    options = sweeper_options(space={"objective.lambda_f": "log(1e-3, 10)", "objective.margin": "uniform(0, 2)"})
    searched, fixed = command_line(["objective.margin=1", "intervention=activscalar,steervec", "seed=3"], options)
    assert fixed == ["objective.margin=1", "seed=3"]
    assert [d.key for d in searched.space] == ["objective.lambda_f", "intervention"]
    assert searched.space[1].choices == ("activscalar", "steervec")
    with pytest.raises(ConfigError, match="takes a list of values"):
        command_line(["objective.margin=range(0,3)"], options)
    with pytest.raises(ConfigError, match="hydra.sweeper.fused=true"):
        command_line(["fused=[{lambda_f:0}]"], options)
    with pytest.raises(ConfigError, match="nothing is left to search"):
        command_line(["objective.margin=1", "objective.lambda_f=1"], options)


def test_preflight_names_the_dimension_the_config_refuses():
    """Each end of each dimension (and each choice) is composed and checked as a run before
    anything runs: one line naming the dimension."""
    from interventions.cli.preflight import preflight

    cases = [
        ("+hydra.sweeper.space.objective.lambda_x=\"uniform(0,1)\"", "hydra.sweeper.space.objective.lambda_x=uniform(0, 1): "
                                                                     "unknown key objective.lambda_x"),
        ("hydra.sweeper.space.objective.lambda_f=\"uniform(-1,1)\"", "objective.lambda_f=-1.0 must be >= 0"),
        ("hydra.sweeper.space.intervention=\"choice(activscalar,nosuch)\"", "intervention='nosuch' does not exist"),
        ("hydra.sweeper.space.objective.lambda_q=\"uniform(0,1)\"", "hydra.sweeper.space.objective has no such key to "
                                                                     "replace; add one with a leading +"),
        ("hydra.sweeper.sampler_options={n_startup_trials:5}", "add one with a leading +"),
        ("hydra.sweeper.n_trial=3", "unknown key hydra.sweeper.n_trial; allowed keys of hydra.sweeper: _target_, space"),
        ("hydra.sweeper.sampler=cmaes", "is not a sampler"),
    ]  # fmt: skip
    for override, words in cases:
        with pytest.raises(ConfigError) as error:
            preflight(["-m", "hydra/sweeper=pareto", override], "train")
        assert words in str(error.value), (override, str(error.value))
    preflight(["-m", "hydra/sweeper=pareto", "hydra.sweeper.fused=true", "objective.margin=1"], "train")  # fine
    preflight(["-m", "hydra/sweeper=pareto", "+hydra.sweeper.sampler_options={n_startup_trials:5}"], "train")


def test_a_bad_sampler_is_one_line_before_anything_runs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "hydra/sweeper=pareto", "hydra.sweeper.sampler=random", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2, describe(result)
    assert result.stderr.strip().splitlines() == ["error: hydra.sweeper.sampler='random' is not a sampler; allowed: "
                                                  "gp, tpe, nsgaii (optuna's GPSampler, TPESampler, NSGAIISampler)"]  # fmt: skip
    assert not sweep.exists()


# -- hypervolume on hand-computed sets -------------------------------------------------


def test_hypervolume_of_hand_computed_sets():
    assert hypervolume([]) == 0.0 and hypervolume([None]) == 0.0
    assert hypervolume([(0.25,)]) == 0.25
    assert hypervolume([(1.0, 0.5), (0.5, 1.0)]) == 0.75  # two boxes, 0.5 + 0.5 - their 0.25 overlap
    assert hypervolume([(1.0, 0.5), (0.5, 1.0), (0.5, 0.5), None]) == 0.75  # a dominated point adds nothing
    assert hypervolume([(1.0, 1.0, 0.5), (0.5, 0.5, 1.0)]) == 0.625  # 0.5 + 0.25 - 0.125
    assert hypervolume([(0.5, 0.5, 0.5), (0.5, 0.5, 0.5)]) == 0.125  # duplicates count once
    assert hypervolume([(1.0, 0.0, 1.0)]) == 0.0  # the worst on one objective: no volume


def test_normalisation_puts_the_worst_at_0_and_the_best_at_1():
    points = [(-1.0, 30), (-3.0, 10), (-2.0, 20), (None, 5)]
    limits = bounds(points, ("max", "min"))
    assert limits == [(-3.0, -1.0), (30, 10)]  # (worst, best); the unusable point is left out
    assert normalize((-2.0, 20), limits) == (0.5, 0.5) and normalize((-1.0, 10), limits) == (1.0, 1.0)
    assert normalize((None, 20), limits) is None
    assert normalize((-5.0, 40), limits) == (0.0, 0.0)  # outside U: clipped
    assert normalize((-2.0, 7), [(-3.0, -1.0), (7, 7)]) == (0.5, 1.0)  # an objective equal over U maps to 1


def test_the_curve_is_the_hypervolume_of_each_prefix():
    points = [(-3.0, -1.0), (-1.0, -3.0), (-2.0, -2.0), (None, 0.0), (-2.0, -2.0), (-1.5, -1.5)]
    limits = bounds(points, ("max", "max"))  # both from -3 (worst) to -1 (best)
    # unit points: (0, 1), (1, 0), (0.5, 0.5), -, (0.5, 0.5), (0.75, 0.75)
    assert hypervolume_curve(points, limits) == [0.0, 0.0, 0.25, 0.25, 0.25, 0.5625]


def test_hypervolume_equals_optunas_on_random_sets():
    """An independent implementation (optuna's, for minimisation from a reference point)."""
    import numpy as np

    compute = pytest.importorskip("optuna._hypervolume").compute_hypervolume
    rng = random.Random(0)
    for dims in (2, 3, 4):
        for n in (1, 7, 40):
            points = [tuple(rng.random() for _ in range(dims)) for _ in range(n)]
            expected = compute(-np.array(points), np.zeros(dims))
            assert abs(hypervolume(points) - expected) < 1e-12, (dims, n)


# -- trials become jobs ---------------------------------------------------------------------------


def test_each_trial_is_a_job_in_its_own_folder():
    batch = {4: {"intervention": "steervec", "objective.lambda_f": 0.5}, 5: {"objective.lambda_f": 1e-05}}
    jobs = plan_jobs(batch, batch, {}, ["seed=1"], fused=False)
    assert [(j.num, j.overrides, j.runs) for j in jobs] == [
        (4, ["seed=1", "intervention=steervec", "objective.lambda_f=0.5"], [(4, "4")]),
        (5, ["seed=1", "objective.lambda_f=1e-05"], [(5, "5")]),
    ]


def test_a_fused_batch_is_one_job_per_method():
    p = lambda method, f, m: {"intervention": method, "objective.lambda_f": f, "objective.margin": m}  # noqa: E731
    batch = {3: p("activscalar", 0.1, 1.0), 4: p("steervec", 0.2, 1.0), 5: p("activscalar", 0.3, 2.0)}
    jobs = plan_jobs(batch, batch, {}, [], fused=True)
    assert [(j.num, j.runs) for j in jobs] == [(3, [(3, "3/0"), (5, "3/1")]), (4, [(4, "4/0")])]
    assert jobs[0].overrides == ["intervention=activscalar", "fused=[{lambda_f:0.1,margin:1.0},{lambda_f:0.3,margin:2.0}]"]
    # a relaunch: trial 5 of job 3 was left running; the job comes back whole, its settings in order
    again = plan_jobs({5: batch[5]}, batch, {3: [3, 5], 4: [4]}, [], fused=True)
    assert [(j.num, j.runs, j.overrides) for j in again] == [(3, [(3, "3/0"), (5, "3/1")], jobs[0].overrides)]
    assert fused_override([{}]) == "fused=[{}]"


# -- the study in the sweep folder ----------------------------------------------------------------


def test_a_study_reopens_with_its_options_and_refuses_others(tmp_path):
    from interventions.sweeps.study import JOURNAL_FILE, distribution, open_study

    options = sweeper_options(space={"objective.lambda_f": "log(1e-3, 10)"}, n_trials=4)
    study = open_study(tmp_path, options)
    trial = study.ask({d.key: distribution(d) for d in options.space})
    study.tell(trial, [-1.0, -2.0, 3])
    assert (tmp_path / JOURNAL_FILE).exists()
    again = open_study(tmp_path, sweeper_options(space={"objective.lambda_f": "log(1e-3, 10)"}, n_trials=8,
                                                 sampler="tpe"))  # more trials, another sampler: fine
    assert [t.values for t in again.get_trials()] == [[-1.0, -2.0, 3.0]]
    with pytest.raises(ConfigError, match="holds a study of objectives"):
        open_study(tmp_path, sweeper_options(space={"objective.lambda_f": "log(1e-3, 10)"},
                                             objectives=["effectiveness", "faithfulness"]))  # fmt: skip
    with pytest.raises(ConfigError, match="holds a study of space"):
        open_study(tmp_path, sweeper_options(space={"objective.lambda_f": "log(1e-2, 10)"}))


def test_a_folder_of_another_sweeps_runs_is_refused(tmp_path):
    from interventions.sweeps.study import JOURNAL_FILE, open_study

    (tmp_path / "0" / ".hydra").mkdir(parents=True)  # a grid's run
    with pytest.raises(ConfigError, match="holds runs of a sweep without an adaptive study"):
        open_study(tmp_path, sweeper_options(space={"objective.lambda_f": "log(1e-3, 10)"}))
    assert not (tmp_path / JOURNAL_FILE).exists()


# -- real sweeps on the toy model -----------------------------------------------------------------


def _kill_after_first_trial(argv: list[str], log: Path):
    """Start the sweep, send it SIGTERM once its first trial has been told; (returncode, output)."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip
        deadline = time.monotonic() + 300  # a bound on a hung sweep, not a measurement
        while "trial 0 (run 0): val" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    return process.returncode, log.read_text()


@pytest.fixture(scope="module")
def killed_and_relaunched(tmp_path_factory, model_args):
    """A 3-trial sweep killed (SIGTERM) after its first run finished, then relaunched."""
    sweep = tmp_path_factory.mktemp("adaptive") / "sweep"
    args = adaptive(sweep, "hydra.sweeper.n_trials=3", model_args=model_args)
    killed = _kill_after_first_trial(args, sweep.parent / "killed.log")
    first = {p: p.stat().st_mtime_ns for p in (sweep / "0" / "metrics.json", sweep / "0" / ".hydra" / "config.yaml")}
    study = load(sweep)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    again = run_cli("train.py", *args)
    return {"sweep": sweep, "args": args, "killed": killed, "states": states, "first": first, "again": again}


@pytest.mark.slow
def test_a_killed_sweep_exits_non_zero_and_a_relaunch_goes_on_to_n_trials(killed_and_relaunched):
    run = killed_and_relaunched
    sweep, (code, out), again = run["sweep"], run["killed"], run["again"]
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert f"relaunch the same command with hydra.sweep.dir={sweep}" in out
    assert run["states"][0] == "COMPLETE" and "RUNNING" in run["states"][1:]  # the killed trial was left running
    assert again.returncode == 0, describe(again)
    assert "relaunch: running again the trials a killed launch left running" in again.stdout
    trials = load(sweep).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # no trial twice, none lost
    for path, mtime in run["first"].items():  # run 0 finished before the kill: neither launched nor rewritten
        assert path.stat().st_mtime_ns == mtime, path
    assert not list(sweep.glob("*/superseded"))
    assert "trial 0 (run 0)" not in again.stdout


@pytest.mark.slow
def test_the_sampler_is_told_the_val_objectives_and_the_outputs_are_written(killed_and_relaunched):
    sweep = killed_and_relaunched["sweep"]
    trials = load(sweep).get_trials(deepcopy=False)
    for trial in trials:
        metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
        assert trial.values == [metrics["val"][name] for name in OBJECTIVES]  # val, never test
        assert trial.values != [metrics["test"][name] for name in OBJECTIVES]
    summary = json.loads((sweep / "pareto.json").read_text())
    assert summary["counts"]["finished"] == 3 and all(r["val"] for r in summary["runs"])
    table = json.loads((sweep / "trials.json").read_text())
    assert [row["run"] for row in table["trials"]] == ["0", "1", "2"] and table["objectives"] == list(OBJECTIVES)
    assert all(row["ask_seconds"] >= 0 for row in table["trials"])
    records = {r["run"]: r for r in summary["runs"]}
    for split in ("val", "test"):  # the curve, recomputed from pareto.json's records
        points = [tuple(records[row["run"]][split][name] for name in OBJECTIVES) for row in table["trials"]]
        expected = hypervolume_curve(points, bounds(points, ("max", "max", "min")))
        assert table["hypervolume"][split] == [round(v, 6) for v in expected]
        assert table["hypervolume"][split] == sorted(table["hypervolume"][split]) and 0 <= expected[-1] <= 1
    assert (sweep / "hypervolume.png").read_bytes()[:8] == PNG_MAGIC
    assert "| 2 | 2 | COMPLETE |" in (sweep / "trials.md").read_text()


@pytest.mark.slow
def test_evaluate_sweep_rebuilds_the_trial_table_and_curves(killed_and_relaunched, tmp_path):
    sweep = killed_and_relaunched["sweep"]
    before, after = rebuild_sweep_summary(sweep, "trials.json", ("trials.json", "trials.md", "hypervolume.png"),
                                          tmp_path / "eval")  # fmt: skip
    assert after["hypervolume"] == before["hypervolume"] and after["trials"] == before["trials"]
    assert (sweep / "hypervolume.png").exists() and (sweep / "trials.md").exists()


@pytest.mark.slow
def test_a_trial_left_running_whose_run_finished_is_told_without_running_again(killed_and_relaunched, tmp_path):
    """A launch killed after a run finished but before its trial was told: the relaunch skips
    the run on the driver and tells its trial what the run scored."""
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(killed_and_relaunched["sweep"], sweep)
    study = load(sweep)
    done = study.get_trials(deepcopy=False)[0]
    study.enqueue_trial(done.params)
    left = study.ask(done.distributions)  # trial 3, as trial 0, left running
    shutil.copytree(sweep / "0", sweep / str(left.number))
    mtime = (sweep / str(left.number) / "metrics.json").stat().st_mtime_ns
    args = [a if not a.startswith("hydra.sweep.dir=") else f"hydra.sweep.dir={sweep}" for a in killed_and_relaunched["args"]]
    again = run_cli("train.py", *[a.replace("n_trials=3", "n_trials=4") for a in args])
    assert again.returncode == 0, describe(again)
    assert f"skipping run {left.number}" in again.stdout
    trials = load(sweep).get_trials(deepcopy=False)
    assert len(trials) == 4 and trials[left.number].state.name == "COMPLETE"
    assert trials[left.number].values == done.values
    assert (sweep / str(left.number) / "metrics.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_a_failing_trial_is_told_failed_and_recorded_like_a_failed_run(tmp_path, model_args):
    # every trial fails inside its run (the toy model has no layer 99)
    sweep, result = run_adaptive(tmp_path, model_args, "hydra.sweeper.n_trials=2", "intervention.layers=[0,99]")
    assert result.returncode == 1, describe(result)
    assert [t.state.name for t in load(sweep).get_trials(deepcopy=False)] == ["FAIL", "FAIL"]
    summary = json.loads((sweep / "pareto.json").read_text())
    assert summary["counts"]["failed"] == 2 and "no layer 99" in summary["runs"][0]["error"]
    assert (sweep / "0" / "error.txt").exists() and not (sweep / "0" / "metrics.json").exists()
    rows = json.loads((sweep / "trials.json").read_text())["trials"]
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"] and "no layer 99" in rows[1]["error"]
    assert "2 of 2 runs failed" in result.stderr


@pytest.mark.slow
def test_the_joblib_launcher_runs_a_batch_of_trials_together(tmp_path, model_args):
    sweep, result = run_adaptive(tmp_path, model_args, "hydra/launcher=parallel", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, describe(result)
    first, second = load(sweep).get_trials(deepcopy=False)
    assert first.state.name == second.state.name == "COMPLETE"
    assert second.datetime_start < first.datetime_complete  # asked before the first was told: one batch
    assert "2 at a time" in result.stdout  # the sweeper's batch: the launcher's n_jobs
    for trial in (first, second):
        assert json.loads((sweep / str(trial.number) / "sweep_job.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_fused_batch_trains_as_one_job(tmp_path, model_args):
    sweep, result = run_adaptive(tmp_path, model_args, "hydra.sweeper.fused=true", "hydra.sweeper.n_trials=3",
                                 "hydra.sweeper.n_jobs=3", "intervention=activscalar")  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert result.stdout.count("Launching 1 jobs") == 1  # the three settings: one job
    jobs = [p.name for p in sweep.iterdir() if p.is_dir()]
    assert jobs == ["0"] and sorted(p.name for p in (sweep / "0").iterdir() if p.is_dir()) == [".hydra", "0", "1", "2"]
    trials = load(sweep).get_trials(deepcopy=False)
    for k, trial in enumerate(trials):
        setting = sweep / "0" / str(k)
        metrics = json.loads((setting / "metrics.json").read_text())
        assert trial.values == [metrics["val"][name] for name in OBJECTIVES]
        job = json.loads((setting / "sweep_job.json").read_text())
        assert f"objective.lambda_f={trial.params['objective.lambda_f']!r}" in job["overrides"]
    rows = json.loads((sweep / "trials.json").read_text())["trials"]
    assert [r["run"] for r in rows] == ["0/0", "0/1", "0/2"] and all(r["state"] == "COMPLETE" for r in rows)
