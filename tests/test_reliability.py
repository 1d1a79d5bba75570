"""Nothing a user wrote is lost, and no broken run is called finished (issue 19).

Each section reproduces a way a run could lose results or report a broken run as finished:
finished folders, non-finite numbers, signals, errors that came as tracebacks, plots that
said more than they showed, and console noise. Files written before are compared byte for
byte.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, describe, fake_hub_cache, run_cli, toy_records, write_jsonl
from interventions.errors import ConfigError, ExportError, NonFiniteError, TaskError
from interventions.spec import RunSpec
from interventions.methods import METHODS, intervention_spec

TINY = ["task.n_train=16", "task.n_val=8", "task.n_test=16", "trainer.max_epochs=1", "logger=none"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_run(folder: Path) -> Path:
    """A folder that looks like a finished run (the files a run leaves, metrics.json last)."""
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "intervention.safetensors").write_bytes(b"\x00\x01weights")
    (folder / "train.log").write_text("the first run's log\n")
    (folder / "metrics.json").write_text('{"test": {"effectiveness": -0.5}}\n')
    return folder


# -- 1. a finished run is never overwritten ---------------------------------------------------


def test_claimed_folders_are_distinct_even_when_claimed_at_once(tmp_path):
    from interventions.rundir import claim_dir

    base = str(tmp_path / "outputs" / "12-00-00")
    claimed, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        claimed.append(claim_dir(base))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8 and all(Path(p).is_dir() for p in claimed)
    assert sorted(claimed)[0] == base and {Path(p).name for p in claimed} == {"12-00-00"} | {f"12-00-00-{i}" for i in range(1, 8)}


@pytest.mark.slow
def test_two_runs_started_together_get_two_folders(tmp_path, model_args):
    """Both processes ask Hydra for the same default-style folder at the same time: each gets
    its own, both finish, both say their own folder."""
    base = tmp_path / "outputs" / "same-second"
    argv = [sys.executable, "train.py", *TINY, *model_args, f"hydra.run.dir=${{unique_dir:{base}}}"]
    env = dict(os.environ, WANDB_MODE="disabled")
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = {line.split("run directory: ")[1] for out, _ in outs for line in out.splitlines() if "run directory: " in line}
    assert folders == {str(base), f"{base}-1"}
    for folder in folders:
        assert (Path(folder) / "metrics.json").is_file()
        log = (Path(folder) / "train.log").read_text()
        assert "run directory:" in log and "effectiveness" in log  # train.log holds the run's lines
    for out, _ in outs:  # not a terminal: plain progress lines, no carriage-return redraws
        assert "\r" not in out and ": epoch 1/1" in out


def test_an_explicit_folder_with_a_finished_run_is_refused_before_any_work(tmp_path):
    from interventions.cli.preflight import preflight

    run = finished_run(tmp_path / "run")
    before = snapshot(run)
    for key in ("hydra.run.dir", "run_dir"):
        with pytest.raises(ConfigError, match=rf"{key}={run} holds a finished run .* overwrite=true"):
            preflight([f"{key}={run}", *TINY], "train")
    assert snapshot(run) == before


def test_overwrite_moves_the_finished_run_aside_byte_for_byte(tmp_path):
    from interventions.cli.preflight import preflight
    from interventions.rundir import supersede

    run = finished_run(tmp_path / "run")
    before = snapshot(run)
    plan = preflight([f"hydra.run.dir={run}", "overwrite=true", *TINY], "train")
    assert plan.supersede == [run]
    moved = supersede(run)
    assert snapshot(moved) == before  # .hydra and train.log too: Hydra has not written yet
    assert [p.name for p in run.iterdir()] == ["superseded"]
    assert preflight([f"hydra.run.dir={run}", *TINY], "train").supersede == []  # no longer finished


def test_latest_points_at_the_last_run_under_outputs_and_only_there(tmp_path, monkeypatch):
    from interventions.rundir import LATEST, link_latest

    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "outputs" / "a", tmp_path / "outputs" / "b"
    first.mkdir(parents=True), second.mkdir()
    assert link_latest(first) == LATEST and LATEST.resolve() == first
    assert link_latest(second) == LATEST and LATEST.resolve() == second
    elsewhere = tmp_path / "scratch" / "run"
    elsewhere.mkdir(parents=True)
    assert link_latest(elsewhere) is None and LATEST.resolve() == second
    LATEST.unlink()
    LATEST.mkdir()  # a user's own folder named latest is never replaced
    assert link_latest(first) is None and LATEST.is_dir() and not LATEST.is_symlink()


def test_a_multirun_job_moves_a_finished_run_with_another_config_aside(tmp_path):
    from interventions.sweeps.jobs import run_job

    sweep = tmp_path / "sweep"
    run = finished_run(sweep / "0")
    (run / "sweep_job.json").write_text(json.dumps({"config": {"seed": 1}}))
    before = {k: v for k, v in snapshot(run).items() if not k.startswith((".hydra", "train.log"))}
    cfg = OmegaConf.create({"run_dir": str(run), "seed": 2, "logger": {"kind": "none", "group": None}})
    ctx = {"sweep_dir": str(sweep), "num": 0, "overrides": [], "output_dir": str(run)}
    run_job(lambda cfg: (Path(cfg.run_dir) / "metrics.json").write_text("{}"), cfg, ctx)
    moved = next((run / "superseded").iterdir())
    assert snapshot(moved) == before


# -- 2. non-finite numbers fail the run ------------------------------------------------------


@pytest.mark.parametrize("override", ["objective.lambda_f=nan", "objective.margin=inf", "intervention.lr=nan",
                                      "intervention.init_scale=-inf", "objective.lambda_m=1e400"])  # fmt: skip
def test_non_finite_hyperparameters_are_refused_in_preflight(override):
    from interventions.cli.preflight import preflight

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}=.* must be a finite number"):
        preflight([override], "train")


def test_the_objective_refuses_non_finite_weights():
    from interventions.objective import Objective

    with pytest.raises(ConfigError, match="lambda_f=nan must be a finite number"):
        Objective(lambda_f=float("nan"))


@pytest.mark.parametrize("method", ["activscalar", "steervec", "dynscalar"])
def test_a_far_too_large_learning_rate_fails_with_the_step_and_the_cause(tiny_model, method):
    """lr = 1e30 keeps the loss and the parameters finite (about 1e30) but scales activations
    past float32's range: the overflow check catches it at the first epoch's end."""
    from interventions import load_task, train_intervention

    train = load_task("ccc", model=tiny_model, split="train", n=8)
    with pytest.raises(NonFiniteError, match=r"training failed at epoch 0, step \d+: .* overflows .* intervention.lr=1e\+30") as caught:
        train_intervention(tiny_model, train, intervention=intervention_spec(method, lr=1e30), run=RunSpec(epochs=3))
    assert caught.value.step is not None


def test_a_nan_loss_stops_training_at_that_step(tiny_model, monkeypatch):
    from interventions import load_task, train_intervention
    from interventions.objective import Objective

    real, calls = Objective.__call__, {"n": 0}

    def nan_from_the_third_step(self, *args, **kwargs):
        loss, parts = real(self, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] >= 3 else loss), parts

    monkeypatch.setattr(Objective, "__call__", nan_from_the_third_step)
    train = load_task("ccc", model=tiny_model, split="train", n=16)
    with pytest.raises(NonFiniteError, match=r"training failed at epoch 0, step 3: the loss is nan"):
        train_intervention(tiny_model, train, run=RunSpec(epochs=2))


def test_a_diverging_fused_setting_fails_alone_and_the_others_are_unchanged(tiny_model, monkeypatch):
    import interventions.training.fused
    from interventions import Objective, load_task, train_fused

    train = load_task("ccc", model=tiny_model, split="train", n=16)
    objectives = [Objective(lambda_f=0.1), Objective(lambda_f=1.0)]
    clean = train_fused(tiny_model, train, objectives, intervention=intervention_spec(lr=0.05), run=RunSpec(epochs=2))
    real, calls = interventions.training.fused.fused_loss, {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        values = real(*args)
        return values * torch.tensor([1.0, float("nan") if calls["n"] >= 3 else 1.0])

    monkeypatch.setattr(interventions.training.fused, "fused_loss", poisoned)
    results = train_fused(tiny_model, train, objectives, intervention=intervention_spec(lr=0.05), run=RunSpec(epochs=2))
    assert isinstance(results[1], NonFiniteError) and "step 3 (fused setting 1): the loss is nan" in str(results[1])
    assert torch.equal(results[0].flat_params(), clean[0].flat_params())


def test_non_finite_metrics_are_a_failure():
    from interventions.numerics import check_metrics

    check_metrics({"test": {"effectiveness": -0.1, "logit_diff": {"0": 2.0}}}, "run")
    with pytest.raises(NonFiniteError, match="test/logit_diff/-1"):
        check_metrics({"test": {"effectiveness": -0.1, "logit_diff": {"-1": float("nan")}}}, "run")


def test_nan_parameters_count_against_minimality():
    from interventions.metrics import parameter_metrics

    assert parameter_metrics(torch.tensor([0.0, 0.5, float("nan"), 0.001]))["minimality"] == 2


def test_every_json_written_is_strict(tmp_path):
    from interventions.io import write_json

    write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.0, float("inf"), -float("inf")], "z": torch.tensor(2.5)})
    text = (tmp_path / "a.json").read_text()

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(text, parse_constant=refuse) == {"x": None, "y": [1.0, None, None], "z": 2.5}


def test_no_module_writes_json_around_the_strict_writer():
    """Every JSON file goes through interventions.io (allow_nan=False, non-finite as null)."""
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "interventions").rglob("*.py")
        if path.name != "io.py" and ("json.dump(" in path.read_text() or "allow_nan=True" in path.read_text())
    ]  # fmt: skip
    assert offenders == []


@pytest.mark.slow
def test_a_sweep_records_a_diverged_run_as_failed_in_strict_json(tmp_path, model_args):
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "intervention.lr=1e30,0.01", *TINY, *model_args, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, describe(result)
    text = (sweep / "pareto.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in pareto.json"))
    failed, ok = summary["runs"]
    assert failed["status"] == "failed" and "overflows" in failed["error"] and "intervention.lr=1e+30" in failed["error"]
    assert not (sweep / "0" / "metrics.json").exists() and not (sweep / "0" / "intervention.safetensors").exists()
    assert ok["status"] == "finished"
    assert json.loads((sweep / "0" / "sweep_job.json").read_text())["status"] == "failed"
    assert json.loads((sweep / "1" / "sweep_job.json").read_text())["status"] == "finished"
    assert "1 of 2 runs failed" in result.stderr


def test_a_failing_single_run_leaves_error_txt_and_exits_1(tmp_path, capsys):
    from interventions.cli.entry import report_errors

    def diverging(cfg):
        raise NonFiniteError("training failed at epoch 0, step 4: the loss is nan; likely cause: x", step=4)

    with pytest.raises(SystemExit) as exited:
        report_errors(diverging)(OmegaConf.create({"run_dir": str(tmp_path)}))
    assert exited.value.code == 1
    assert (tmp_path / "error.txt").read_text().startswith("the run failed: training failed at epoch 0, step 4")
    assert not (tmp_path / "metrics.json").exists()


# -- 3. signals -------------------------------------------------------------------------------


def _wait_for(predicate, proc, timeout: float = 900.0) -> None:
    """Wait until `predicate()` holds. The timeout only ends a hang (15 minutes: a loaded
    machine is slow, never wrong); a process that ended before is a failure at once."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc={proc.returncode}) before it was signalled:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no epoch line after 15 minutes")
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_to_a_single_run_exits_143_and_leaves_nothing_finished(tmp_path, model_args):
    run = tmp_path / "run"
    argv = [sys.executable, "train.py", "task.n_train=64", "task.n_val=8", "task.n_test=16", "trainer.max_epochs=200",
            "logger=none", *model_args, f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(lambda: (run / "train.log").exists() and ": epoch" in (run / "train.log").read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM before the run finished; nothing was written as finished" in err
    assert not any((run / name).exists() for name in ("metrics.json", "intervention.safetensors", "intervention.json"))


@pytest.mark.slow
def test_sigterm_to_a_sweep_exits_143_says_what_finished_and_a_relaunch_completes_it(tmp_path, model_args):
    sweep = tmp_path / "sweep"
    args = ["-m", "objective.lambda_f=0,1", "task.n_train=64", "task.n_val=8", "task.n_test=16",
            "trainer.max_epochs=100", "logger=none", *model_args, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(lambda: (sweep / "0" / "train.log").exists() and ": epoch" in (sweep / "0" / "train.log").read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 143, err
    assert "the sweep was interrupted by SIGTERM: 0 of 1 started runs finished (none)" in err
    assert f"hydra.sweep.dir={sweep}" in err
    summary = json.loads((sweep / "pareto.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["interrupted"]
    assert json.loads((sweep / "0" / "sweep_job.json").read_text())["status"] == "interrupted"
    assert not (sweep / "0" / "metrics.json").exists()
    again = run_cli("train.py", *[a if not a.startswith("trainer.max_epochs") else "trainer.max_epochs=1" for a in args])
    assert again.returncode == 0, describe(again)
    assert [r["status"] for r in json.loads((sweep / "pareto.json").read_text())["runs"]] == ["finished", "finished"]


SIGNAL_WHILE_IMPORTING = """
import builtins, os, signal, sys
module, signum = sys.argv[1], getattr(signal, sys.argv[2])
sys.argv = ["train.py", *sys.argv[3:]]
real_import = builtins.__import__

def importing(name, *args, **kwargs):  # the signal arrives exactly while `module` loads
    if name == module and not getattr(importing, "sent", False):
        importing.sent = True
        os.kill(os.getpid(), signum)
    return real_import(name, *args, **kwargs)

builtins.__import__ = importing
from interventions.cli import main
main("train")
"""


@pytest.mark.parametrize("module, signum, code", [("hydra", "SIGINT", 130), ("torch", "SIGTERM", 143),
                                                  ("lightning", "SIGINT", 130)])  # fmt: skip
def test_a_signal_while_the_command_line_loads_is_one_line_and_its_status(tmp_path, module, signum, code):
    """Issue 28: Ctrl+C or SIGTERM in a sweep's first seconds (Hydra, then torch importing) gave a
    traceback of about 100 lines and exit status 1."""
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_IMPORTING, module, signum, "-m", "objective.lambda_f=0,1",
                             "logger=none", f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, WANDB_MODE="disabled"))  # fmt: skip
    assert result.returncode == code, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by {signum}"), describe(result)
    assert not list(sweep.rglob("metrics.json"))


def test_signals_wait_while_a_finished_run_is_written():
    from interventions.errors import RunInterrupted
    from interventions.interrupts import deferred, signals_raise

    order = []
    with pytest.raises(RunInterrupted) as caught, signals_raise():
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            order.append("written")  # the whole block runs before the signal is delivered
        order.append("after")
    assert order[0] == "written" and caught.value.exit_code == 143  # delivered only once the block ended


class _SignalsInItsDestructor:
    """Sends this process SIGTERM from its destructor, where Python prints the handler's
    exception ("Exception ignored in ...") and goes on: as in a garbage collector's callback,
    where a killed sweep lost its SIGTERM and ran to the end with status 0."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here, inside the destructor


def test_a_signal_whose_exception_was_lost_still_stops_the_run_where_it_may(monkeypatch):
    from interventions.errors import RunInterrupted
    from interventions.interrupts import raise_if_signalled, signals_raise

    lost = []  # what Python would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: lost.append(unraisable.exc_type))
    went_on = []
    with pytest.raises(RunInterrupted) as caught, signals_raise():
        _SignalsInItsDestructor()  # collected at once: the signal's exception is lost in __del__
        went_on.append(True)
        raise_if_signalled()  # a training step's or a sweep job's start
        went_on.append(False)
    assert went_on == [True] and caught.value.exit_code == 143
    assert lost == [RunInterrupted]  # lost in the destructor, as the sweep's was
    # nothing checked before the block's end: the end raises it
    with pytest.raises(RunInterrupted), signals_raise():
        _SignalsInItsDestructor()
    raise_if_signalled()  # outside the block, and with the signal handled: nothing left over
    with signals_raise():  # a block without a signal ends normally
        raise_if_signalled()


def _signalled_then_replaced():
    """SIGTERM, whose exception a failing `finally` block then replaces: as when a sweep was
    killed while OmegaConf built a job's config and the cut-short cleanup raised
    AttributeError, which Hydra printed before exiting with status 1 (seen once in the suite)."""
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler raises here
    finally:
        raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")


def test_a_signal_whose_exception_another_replaced_still_stops_the_run():
    from interventions.errors import RunInterrupted
    from interventions.interrupts import interruption, signals_raise

    with pytest.raises(RunInterrupted) as caught, signals_raise():
        _signalled_then_replaced()
    assert caught.value.exit_code == 143 and isinstance(caught.value.__cause__, AttributeError)
    with pytest.raises(ValueError), signals_raise():  # an error without a signal stays what it is
        raise ValueError("a bug")
    with pytest.raises(SystemExit) as exited, signals_raise():  # an exit status chosen on purpose stays too
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        except RunInterrupted:
            sys.exit(7)
    assert exited.value.code == 7
    assert interruption(ValueError()) is None  # outside a block: no signal on record


def test_a_sweep_job_whose_signal_another_error_replaced_is_interrupted_not_failed(tmp_path):
    from interventions.errors import RunInterrupted
    from interventions.interrupts import signals_raise
    from interventions.sweeps.jobs import run_job

    config = OmegaConf.create({"run_dir": str(tmp_path / "0"), "logger": {"kind": "none", "group": None}})
    context = {"sweep_dir": str(tmp_path), "num": 0, "overrides": ["x=1"], "output_dir": str(tmp_path / "0")}
    with pytest.raises(RunInterrupted) as caught, signals_raise():
        run_job(lambda cfg: _signalled_then_replaced(), config, context)
    assert caught.value.sweep_dir == tmp_path  # the entry point summarises this sweep and says how to relaunch it
    job = json.loads((tmp_path / "0" / "sweep_job.json").read_text())
    assert job["status"] == "interrupted" and not (tmp_path / "0" / "error.txt").exists()  # a relaunch runs it again


SIGNAL_REPLACED_IN_THE_LAUNCHER = """
import os, signal, sys, time
import hydra.core.utils  # where Hydra's basic launcher takes run_job from when its plugin scan loads it
sys.argv = ["train.py", *sys.argv[1:]]
real_run_job = hydra.core.utils.run_job

def run_job(*args, **kwargs):  # the second job: SIGTERM while it is set up, replaced by the cleanup's error
    if getattr(run_job, "started", False):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        finally:
            raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")
    run_job.started = True
    return real_run_job(*args, **kwargs)

hydra.core.utils.run_job = run_job
from interventions.cli import main
main("train")
"""


def test_a_sweep_whose_signal_hydra_reported_as_an_error_exits_143_and_says_how_to_relaunch(tmp_path, model_args):
    """Issue 28's killed adaptive sweep once exited 1: SIGTERM came while its second job's config
    was built, an error in OmegaConf's cleanup replaced it, and Hydra printed that and exited 1."""
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-c", SIGNAL_REPLACED_IN_THE_LAUNCHER, "-m", "intervention=activscalar,steervec",
                             *TINY, *model_args, f"hydra.sweep.dir={sweep}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, WANDB_MODE="disabled"))  # fmt: skip
    assert result.returncode == 143, describe(result)
    said = result.stdout + result.stderr  # Hydra's log goes to stdout
    assert f"relaunch the same command with hydra.sweep.dir={sweep}" in said and "Traceback" not in said, describe(result)
    assert (sweep / "0" / "metrics.json").exists() and not (sweep / "1").exists()


# -- 4. one-line errors -------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["task", "ioi"], "'task' is not an override (no '='); write task=ioi"),
    (["task"], "'task' is not an override (no '='); write task=<value>"),
    (["-m", "task", "ioi"], "write task=ioi"),
])  # fmt: skip
def test_a_bare_word_is_named_with_the_fix(argv, message):
    from interventions.cli.preflight import preflight

    with pytest.raises(ConfigError, match=re.escape(message)):
        preflight(argv, "train")


@pytest.mark.parametrize("folder", ["/proc/no/such", "/sys/kernel/x"])
def test_an_unwritable_output_folder_is_one_line(folder):
    """/proc and /sys refuse new files even to root, as a read-only file system does."""
    from interventions.cli.preflight import preflight

    with pytest.raises(ConfigError, match=rf"hydra.run.dir={re.escape(folder)}: cannot write in"):
        preflight([f"hydra.run.dir={folder}"], "train")


@pytest.mark.parametrize("argv", [["write-mixed", "/proc/no/such"], ["control-vector", "RUN", "/proc/no/such/cv.gguf"]])
def test_the_commands_that_write_a_file_refuse_an_unwritable_target_in_one_line(argv, capsys):
    """Issue 28: write-mixed and control-vector answered a read-only target with a traceback."""
    from interventions.cli.commands import main

    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and re.fullmatch(r"error: (DIR|OUT\.gguf)=/proc/no/such.*: cannot write in /proc.*", lines[0])


def test_a_hub_model_without_network_is_one_line_at_once(tmp_path, monkeypatch):
    """Issue 28: `python train.py model=gpt2` without network printed 20 lines of retries over
    about 25 s before its one-line error. Now it is one line, before any model loads."""
    from interventions.cli.preflight import preflight

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ConfigError, match=r"model.name=gpt2: 'gpt2' is not in the local Hugging Face cache .* the hub "
                                          r"is out of reach \(cannot reach 127.0.0.1:9.*--local-dir DIR"):  # fmt: skip
        preflight(["model=gpt2"], "train")
    result = run_cli("train.py", "model=gpt2", f"hydra.run.dir={tmp_path / 'run'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "out of reach" in lines[0], describe(result)
    assert "Retrying" not in result.stdout + result.stderr
    # a cached model with the hub out of reach passes, and will load offline (no retries)
    fake_hub_cache(monkeypatch, tmp_path / "hf", "gpt2")
    preflight(["model=gpt2"], "train")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    import errno
    import tempfile

    from interventions.rundir import check_writable

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ConfigError, match=r"run_dir=.*: cannot write in .* \(Read-only file system\)"):
        check_writable(tmp_path / "existing-or-not", "run_dir")


def test_a_damaged_export_names_its_file(tmp_path):
    from interventions.export import load_intervention

    run = tmp_path / "run"
    run.mkdir()
    (run / "intervention.json").write_text(json.dumps({"format_version": 1, "method": "activscalar"}))
    (run / "intervention.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")  # cut short
    with pytest.raises(ExportError, match=rf"{re.escape(str(run / 'intervention.safetensors'))} cannot be read .* damaged"):
        load_intervention(run)


def test_evaluating_a_sweep_folder_suggests_sweep(tmp_path):
    from interventions.cli.preflight import preflight

    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "sweep_job.json").write_text("{}")
    with pytest.raises(ConfigError, match=rf"is a sweep folder, not one run; pass sweep={re.escape(str(tmp_path))}"):
        preflight([f"intervention={tmp_path}"], "evaluate")


def test_a_file_too_small_for_the_split_says_so(tmp_path):
    from interventions import load_task

    from interventions.tasks.files import split_of

    records = toy_records(2)
    path = write_jsonl(tmp_path / "two.jsonl", records)
    empty = next(s for s in ("test", "val", "train") if s not in {split_of(r["prompt"]) for r in records})
    with pytest.raises(TaskError, match=rf"two.jsonl has 2 data points, .*70% train, 10% val, 20% test\) left none for {empty}"):
        load_task("jsonl", split=empty, path=str(path))


def test_wandb_online_without_a_server_falls_back_offline_at_once(tmp_path, monkeypatch):
    """No server: one probe bounded by REACH_TIMEOUT_S, then W&B starts offline; it never tries
    its own online start (whose timeout is about 90 s). Checked by what was called, not by a
    clock, so a busy machine cannot fail it."""
    from interventions import loggers, reach

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    timeouts, modes = [], []
    connect = reach.socket.create_connection
    monkeypatch.setattr(reach.socket, "create_connection",
                        lambda address, timeout: timeouts.append(timeout) or connect(address, timeout=timeout))  # fmt: skip
    wandb_logger = loggers.WandbLogger
    monkeypatch.setattr(loggers, "WandbLogger", lambda **kwargs: modes.append(kwargs["mode"]) or wandb_logger(**kwargs))
    with pytest.warns(UserWarning, match=r"W&B online: cannot reach 127.0.0.1:9 .* logging this run offline instead"):
        logger = loggers.make_logger("wandb", tmp_path, mode="online", name="t")
    try:
        assert timeouts == [reach.REACH_TIMEOUT_S]
        assert modes == ["offline"]
        assert logger.experiment.settings.mode == "offline"
    finally:
        loggers.finish(logger)


def test_wandb_mode_in_the_environment_is_the_default(monkeypatch):
    from interventions.cli.preflight import CONF_DIR, check_logger_mode, compose_config

    monkeypatch.setenv("WANDB_MODE", "online")
    assert OmegaConf.to_container(compose_config(CONF_DIR, "train", []).logger, resolve=True)["mode"] == "online"
    assert check_logger_mode(["logger.mode=offline"]) == ["note: logger.mode=offline overrides WANDB_MODE=online from the environment"]
    monkeypatch.delenv("WANDB_MODE")
    assert OmegaConf.to_container(compose_config(CONF_DIR, "train", []).logger, resolve=True)["mode"] == "offline"


# -- 6. plots say what they show -------------------------------------------------------------


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        legend = ax.get_legend()
        parts += [t.get_text() for t in legend.get_texts()] if legend else []
    return "\n".join(parts)


def test_the_beta_curve_names_its_split_and_speaks_of_the_mean():
    import matplotlib.pyplot as plt

    from interventions.reports.plots import beta_curve

    correct = torch.randn(7, 3).numpy()
    fig = beta_curve([-1, 0, 1], correct, correct - 1, "test", "t")
    text = _texts(fig)
    plt.close(fig)
    assert "correct answer: mean over the 7 test prompts" in text and "wrong answer: mean over the 7 test prompts" in text
    assert "±1 s.d. across prompts" in text and "test split" in text
    assert "Paris" not in text  # no single data point's answers


def test_the_heatmap_shares_one_scale_names_its_prompt_and_marks_untrained_locations():
    import matplotlib.pyplot as plt

    from interventions.reports.plots import NO_GRADIENT_MARK, NO_GRADIENT_NOTE, heatmap

    rows = [dict(layer=l, site=s, position=p, token=f"t{p}", head="", value=v * (10 if s == "mlpOut" else 1),
                 received_gradient=not (l == 1 and p == 0))
            for s in ("attnOut", "mlpOut") for l in (0, 1) for p, v in ((0, 0.1), (1, -0.2))]  # fmt: skip
    fig = heatmap(rows, METHODS["activscalar"], "t", "token labels: train data point 0")
    images = [im for ax in fig.axes for im in ax.get_images()]
    marks = [t for ax in fig.axes for t in ax.texts if t.get_text() == NO_GRADIENT_MARK]
    text = _texts(fig)
    plt.close(fig)
    assert len(images) == 2 and len({im.get_clim() for im in images}) == 1  # one colour, one value
    assert images[0].get_clim() == (-2.0, 2.0)
    assert len(marks) == 2  # (layer 1, position 0) in both panels
    assert "token labels: train data point 0" in text and NO_GRADIENT_NOTE in text


def test_training_records_which_locations_received_a_gradient(tiny_model, tmp_path):
    """The last layer's positions before the read one cannot reach the logits: no gradient,
    and the export, scalars.csv rows and the heatmap say so."""
    from interventions import load_task, train_intervention
    from interventions.reports.locations import location_rows
    from interventions.export import load_intervention, save_intervention

    train = load_task("ccc", model=tiny_model, split="train", n=8)
    trained = train_intervention(tiny_model, train, run=RunSpec(epochs=1))
    mask = trained.method.received_gradient["mlpOut_1"]
    assert mask[-1] and not mask[:-1].any()  # last layer: only the last position
    assert trained.method.received_gradient["attnOut_0"].all()
    save_intervention(tmp_path, trained.method, tiny_model, "tiny", {})
    loaded = load_intervention(tmp_path).method
    assert torch.equal(loaded.received_gradient["mlpOut_1"], mask.cpu())
    rows = [r for r in location_rows(loaded) if r["site"] == "mlpOut" and r["layer"] == 1]
    assert [r["received_gradient"] for r in rows] == mask.tolist()


# -- 7. quiet output ----------------------------------------------------------------------------


def test_the_python_api_prints_nothing_of_lightnings(tiny_model, capfd, caplog):
    from interventions import load_task, train_intervention

    caplog.set_level("INFO")
    train = load_task("ccc", model=tiny_model, split="train", n=8)
    train_intervention(tiny_model, train, run=RunSpec(epochs=1))
    out, err = capfd.readouterr()
    assert out == "" and "GPU available" not in err and "litlogger" not in err and "LeafSpec" not in err
    assert "GPU available" not in caplog.text and "litlogger" not in caplog.text
    train_intervention(tiny_model, train, run=RunSpec(epochs=1), verbose=True)  # asked for: Lightning's lines are back
    assert "GPU available" in caplog.text + "".join(capfd.readouterr())


def test_no_srun_hint_and_no_logging_interval_warning_on_a_short_run(tiny_model, tmp_path, monkeypatch):
    """Issue 28: Lightning's "`srun` is available" hint on every run of a machine with SLURM
    installed, and its log_every_n_steps warning on runs of fewer steps than that."""
    import warnings

    from interventions import load_task, train_intervention

    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    train = load_task("ccc", model=tiny_model, split="train", n=8)  # 2 steps per epoch
    for trainer_kwargs in (None, {"log_every_n_steps": 5}):  # the API's default, the command line's trainer preset
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_intervention(tiny_model, train, run=RunSpec(epochs=1), trainer_kwargs=trainer_kwargs)
        texts = [str(w.message) for w in caught]
        assert not [t for t in texts if "srun" in t or "log_every_n_steps" in t], texts


def test_a_terminal_of_no_width_gets_progress_lines(monkeypatch):
    """Issue 28: a terminal that reports 0 columns got a bar of no width: no progress at all."""
    from interventions.training import progress

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(progress.sys.stderr, "fileno", lambda: 2, raising=False)
    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((0, 24)))
    assert not progress.on_terminal() and isinstance(progress.progress_callback(), progress.EpochLinesCallback)
    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((120, 24)))
    assert progress.on_terminal() and isinstance(progress.progress_callback(), progress.ThrottledProgressBar)


def test_progress_is_plain_lines_off_a_terminal(caplog):
    from interventions.training.progress import EpochLines

    caplog.set_level("INFO")
    lines = EpochLines("activscalar on ccc", epochs=3, interval=3600)
    for epoch in range(3):
        lines.epoch_end(epoch, 0.5)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["activscalar on ccc: epoch 1/3", "activscalar on ccc: epoch 3/3"]

