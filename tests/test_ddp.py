"""DDP done right (issue 23): evaluation counted once, the single-process batches split across
the processes (so the parameters equal a single-process run's), rank 0 alone keeps the
sweep's books, and a multirun never runs twice inside an allocation."""

from __future__ import annotations

import json

import pytest
from conftest import describe, run_cli, skip_without_toy_checkpoint
from omegaconf import OmegaConf
from safetensors.torch import load_file

from interventions.sweeps.jobs import JOB_FILE, run_job
from interventions.tasks.datamodule import EpochShuffle


@pytest.mark.parametrize("n, batch", [(16, 4), (18, 4), (17, 4)])
def test_the_processes_together_draw_the_single_process_batches(n, batch):
    alone = list(EpochShuffle(n, seed=3))
    parts = [list(EpochShuffle(n, seed=3, rank=r, world=2, batch=batch)) for r in range(2)]
    global_batches = [alone[i : i + batch] for i in range(0, n, batch)]
    half = batch // 2
    rebuilt = []
    for step in range(len(parts[0]) // half + (len(parts[0]) % half > 0)):
        rebuilt.append(parts[0][step * half : (step + 1) * half] + parts[1][step * half : (step + 1) * half])
    kept = [b for b in global_batches if len(b) >= 2]  # a last batch of one data point cannot be split
    assert [sorted(b) for b in rebuilt] == [sorted(b) for b in kept]
    steps = [-(-len(part) // half) for part in parts]  # DataLoader batches of `half` per process
    assert steps[0] == steps[1]  # every process takes the same number of steps (else DDP hangs)
    assert len(EpochShuffle(n, seed=3, rank=0, world=2, batch=batch)) == len(parts[0])


def test_a_ddp_run_counts_each_data_point_once_and_matches_a_single_process(tmp_path):
    """trainer=ddp on 2 CPU processes at task.batch_size=4 (2 per process) against
    train_intervention in one process at batch 4: the same parameters (float tolerance)
    and n in metrics.json, not twice it."""
    skip_without_toy_checkpoint()
    from interventions.models import load_model
    from interventions.spec import RunSpec, TaskSpec
    from interventions.tasks import load_splits
    from interventions.training.train import train_intervention

    sizes = ["task.n_train=16", "task.n_val=4", "task.n_test=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=1"]
    run = tmp_path / "ddp"
    result = run_cli("train.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *sizes, "logger=csv",
                     f"run_dir={run}", hydra_dir=tmp_path / "hydra", fresh=True)  # DDP's process group: a process of its own  # fmt: skip
    assert result.returncode == 0, describe(result)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["n"] == 16 and metrics["test"]["n"] == 16

    model = load_model("toy")[0]
    tasks = load_splits(TaskSpec(n_train=16, n_val=4, n_test=16), model, seed=0, fixed_length=True)
    from lightning.pytorch.loggers import CSVLogger

    alone = train_intervention(model, tasks["train"], tasks["test"], tasks["val"], run=RunSpec(epochs=2),
                               logger=CSVLogger(tmp_path / "alone"), trainer_kwargs={"log_every_n_steps": 1})  # fmt: skip
    ddp = load_file(str(run / "intervention.safetensors"))
    diff = max(float((ddp[k] - alone.method.params[k].detach()).abs().max()) for k in ddp)
    assert diff < 1e-5, diff
    assert alone.evaluate("test")["effectiveness"] == pytest.approx(metrics["test"]["effectiveness"], abs=1e-5)
    # the logged train/loss is the global batch's (the mean over the processes), step by step
    losses = [_train_losses(path) for path in (run / "csv", tmp_path / "alone")]
    assert len(losses[0]) == len(losses[1]) == 8
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def _train_losses(folder) -> list[float]:
    import csv

    (path,) = folder.rglob("metrics.csv")
    return [float(row["train/loss"]) for row in csv.DictReader(path.open()) if row.get("train/loss")]


def _job_cfg(tmp_path):
    return OmegaConf.create({"run_dir": str(tmp_path / "0"), "objective": {"lambda_f": 0.1},
                             "logger": {"kind": "none", "group": None}, "trainer": {"strategy": "ddp"}})  # fmt: skip


def _ctx(tmp_path):
    return {"sweep_dir": str(tmp_path), "num": 0, "overrides": [], "output_dir": str(tmp_path / "0")}


def test_only_rank_0_keeps_the_books_of_a_sweep_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_PROCID", "1")
    ran = []
    run_job(lambda cfg: ran.append(1), _job_cfg(tmp_path), _ctx(tmp_path))
    assert ran == [1] and not (tmp_path / "0" / JOB_FILE).exists()  # rank 1 trains, writes nothing
    monkeypatch.setenv("SLURM_PROCID", "0")
    run_job(lambda cfg: ran.append(0), _job_cfg(tmp_path), _ctx(tmp_path))
    assert ran == [1, 0] and json.loads((tmp_path / "0" / JOB_FILE).read_text())["status"] == "finished"


def test_a_relaunched_ddp_job_skips_a_finished_run_on_every_rank(tmp_path, monkeypatch):
    """Issue 28: relaunched under SLURM, rank 0 skipped the finished run while rank 1 trained
    and waited for rank 0 until the job's time limit."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_PROCID", "0")
    run_job(lambda cfg: (tmp_path / "0" / "metrics.json").write_text("{}"), _job_cfg(tmp_path), _ctx(tmp_path))
    for rank in ("0", "1"):
        monkeypatch.setenv("SLURM_PROCID", rank)
        run_job(lambda cfg: pytest.fail(f"rank {rank} trained a finished run"), _job_cfg(tmp_path), _ctx(tmp_path))
    changed = _job_cfg(tmp_path)
    changed.objective.lambda_f = 1.0  # another config: every rank trains it
    ran = []
    run_job(lambda cfg: ran.append(1), changed, _ctx(tmp_path))
    assert ran == [1]


def test_ddp_inside_an_allocation_is_still_refused_without_slurm_tasks(tmp_path, monkeypatch):
    """salloc sets SLURM_JOB_ID for the driver too: DDP there would re-run the sweep."""
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert run_job(lambda cfg: pytest.fail("must not run"), _job_cfg(tmp_path), _ctx(tmp_path)) is None
    assert json.loads((tmp_path / "0" / JOB_FILE).read_text())["status"] == "failed"


def test_a_failed_run_ends_its_submitit_job_process_with_status_1(tmp_path):
    """Inside a submitit job (SUBMITIT_EXECUTOR set) a failed run is recorded, the job
    function returns normally (submitit writes its result: the driver's summary goes on),
    and the process then exits 1, so that SLURM (sacct) shows the job as failed."""
    import subprocess
    import sys

    code = f"""
import json
from omegaconf import OmegaConf
from interventions.sweeps.jobs import run_job
cfg = OmegaConf.create({{"run_dir": {str(tmp_path / "0")!r}, "objective": {{}}, "logger": {{"kind": "none", "group": None}}}})
ctx = {{"sweep_dir": {str(tmp_path)!r}, "num": 0, "overrides": [], "output_dir": {str(tmp_path / "0")!r}}}
def fail(cfg):
    raise ValueError("this run fails")
print("returned", run_job(fail, cfg, ctx), flush=True)
"""
    for executor, status in (("slurm", 1), ("", 0)):
        env = {**__import__("os").environ, "SUBMITIT_EXECUTOR": executor}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == status, (executor, done.stderr[-2000:])
        assert "returned None" in done.stdout  # the job function itself returned
        assert json.loads((tmp_path / "0" / JOB_FILE).read_text())["status"] == "failed"
