"""A real one-node SLURM cluster on localhost (issue 23), started by the fixture where Debian's
`slurm-wlm` and `munge` are installed and the tests run as root; skipped with the reason
otherwise (CI does not install them: `apt-get install slurm-wlm munge` takes about a minute
and the test about 15 s, kept opt-in to hold the suite near five minutes).

It runs a 2-point sweep through hydra/launcher=slurm (one job failing on purpose) and checks
pareto.json, the threads each job used (SLURM_CPUS_PER_TASK), the failed job's exit status
in SLURM, that a relaunch submits no job for the finished run, that sinfo refuses a request
no node can satisfy (CPUs, nodes) before anything is submitted, and that
hydra/launcher=submitit_slurm's jobs use the CPUs SLURM gave them (SLURM_CPUS_ON_NODE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import describe, run_cli
from test_adaptive_sweeper import adaptive, load

SLURM_CONF = """ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=localhost CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _sh(*argv, env=None, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, check=check, timeout=60)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a started one-node cluster (munged, slurmctld, slurmd); shut down after."""
    missing = [b for b in ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "sbatch") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("starting munged and slurmd needs root")
    if subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0:
        pytest.skip("a slurmctld is already running on this machine; the fixture starts its own")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    if not os.path.exists("/etc/munge/munge.key"):
        _sh("mungekey", "--create", "--keyfile=/etc/munge/munge.key")
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        os.makedirs("/run/munge", exist_ok=True)
        _sh("munged", "--force")
    mem = int(int(open("/proc/meminfo").read().split()[1]) / 1024 * 0.8)
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(d=d, cpus=os.cpu_count(), mem=mem))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    _sh("slurmctld", "-f", str(conf), env=env)
    _sh("slurmd", "-f", str(conf), env=env)
    for _ in range(30):
        if "idle" in _sh("sinfo", "-h", "-o", "%t", env=env, check=False).stdout:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the node never became idle: {(d / 'slurmctld.log').read_text()[-2000:]}")
    yield str(conf)
    _sh("scontrol", "shutdown", env=env, check=False)


def test_a_sweep_on_slurm(slurm, tmp_path, model_args, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm)
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "hydra/launcher=slurm", "intervention.layers=[0],[9]", "task.n_train=8",
                     "task.n_val=4", "task.n_test=8", "trainer.max_epochs=1", "logger=none",
                     "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}", *model_args)  # fmt: skip
    print(result.stdout[-1500:], result.stderr[-1500:])  # the real output, for the record (pytest -s)
    assert result.returncode == 1, describe(result)  # layer 9 does not exist: one run fails, the sweep says so
    pareto = json.loads((sweep / "pareto.json").read_text())
    assert pareto["counts"]["finished"] == 1 and pareto["counts"]["failed"] == 1
    finished = next(r for r in pareto["runs"] if r["status"] == "finished")
    record = json.loads((sweep / finished["run"] / "intervention.json").read_text())
    assert record["threads"] == {"threads": 1, "source": "SLURM_CPUS_PER_TASK"}  # the preset's one CPU
    jobs = _settled(slurm)
    states = sorted(line.split()[0] for line in jobs.split("\n") if "JobState=" in line.strip())
    assert states == ["JobState=COMPLETED", "JobState=FAILED"], jobs
    refused = run_cli("train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=64",
                      "objective.lambda_f=0,1", f"hydra.sweep.dir={tmp_path / 'never'}")  # fmt: skip
    assert refused.returncode == 2 and "64 CPUs, which no node" in refused.stderr, describe(refused)
    refused = run_cli("train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.nodes=2", "objective.lambda_f=0,1",
                      f"hydra.sweep.dir={tmp_path / 'never'}")  # fmt: skip
    assert refused.returncode == 2 and "asks for 2 nodes" in refused.stderr, describe(refused)
    assert not (tmp_path / "never").exists()
    # a relaunch submits a job for the failed run only: the finished one is skipped on the driver
    before = len(_jobs(slurm))
    again = run_cli("train.py", "-m", "hydra/launcher=slurm", "intervention.layers=[0],[9]", "task.n_train=8",
                    "task.n_val=4", "task.n_test=8", "trainer.max_epochs=1", "logger=none",
                    "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}", *model_args)  # fmt: skip
    assert again.returncode == 1 and f"skipping run {finished['run']}" in again.stdout, describe(again)
    assert len(_jobs(slurm)) == before + 1


def _settled(conf: str, timeout: float = 120) -> str:
    """`scontrol show job` once every job has ended: the sweep returns as soon as each job has
    written its result, and a job's process may still be exiting then (RUNNING, COMPLETING)."""
    deadline = time.monotonic() + timeout
    while True:
        out = _show_jobs(conf)
        if not any(state in out for state in ("JobState=RUNNING", "JobState=COMPLETING", "JobState=PENDING")):
            return out
        if time.monotonic() > deadline:
            return out  # the assertion on the states shows what never ended
        time.sleep(0.5)


def _show_jobs(conf: str) -> str:
    return _sh("scontrol", "show", "job", env={**os.environ, "SLURM_CONF": conf}, check=False).stdout


def _jobs(conf: str) -> list[str]:
    return [line for line in _show_jobs(conf).split("\n") if line.startswith("JobId=")]


def test_submitit_slurm_jobs_use_the_cpus_slurm_gave_them(slurm, tmp_path, model_args, monkeypatch):
    """Issue 28: submitit_slurm sets no --cpus-per-task, so SLURM gives one CPU and sets only
    SLURM_CPUS_ON_NODE; the runs took torch's 2 threads and the sweep 3.6x the slurm preset's time."""
    monkeypatch.setenv("SLURM_CONF", slurm)
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "hydra/launcher=submitit_slurm", "objective.lambda_f=0", "task.n_train=8",
                     "task.n_val=4", "task.n_test=8", "trainer.max_epochs=1", "logger=none",
                     "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}", *model_args)  # fmt: skip
    assert result.returncode == 0, describe(result)
    record = json.loads((sweep / "0" / "intervention.json").read_text())
    assert record["threads"] == {"threads": 1, "source": "SLURM_CPUS_ON_NODE"}


def test_a_ddp_sweep_relaunched_under_slurm_skips_its_finished_run_on_every_task(slurm, tmp_path, model_args,
                                                                                  monkeypatch):  # fmt: skip
    """Issue 28: relaunched, rank 0 skipped the finished run while rank 1 trained it and waited
    for rank 0 until the job's time limit. The relaunch now ends at once (no job at all: the
    driver skips the run), and a DDP job started for the run anyway skips it on every task."""
    monkeypatch.setenv("SLURM_CONF", slurm)
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2", "trainer=ddp", "trainer.accelerator=cpu",
            "trainer.devices=2", "objective.lambda_f=0", "task.n_train=8", "task.n_val=4", "task.n_test=8",
            "trainer.max_epochs=1", "logger=none", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}",
            *model_args]  # fmt: skip
    first = run_cli("train.py", *args)
    assert first.returncode == 0, describe(first)
    before = len(_jobs(slurm))
    again = run_cli("train.py", *args, timeout=300)
    assert again.returncode == 0 and "skipping run 0" in again.stdout, describe(again)
    assert len(_jobs(slurm)) == before
    # a job of the finished run (as the driver would launch it with hydra/sweeper=basic) ends too
    basic = run_cli("train.py", *args, "hydra/sweeper=basic", timeout=300)
    assert basic.returncode == 0, describe(basic)
    assert len(_jobs(slurm)) == before + 1


@pytest.mark.slow
def test_a_batch_of_trials_on_slurm(slurm, tmp_path, model_args, monkeypatch):
    """The adaptive sweeper (tests/test_adaptive_sweeper.py) on hydra/launcher=slurm: a batch of
    two trials as two SLURM jobs; relaunched, nothing is submitted. Here, not beside the
    sweeper's other tests, so that one test worker runs every test of the cluster (a second
    cluster cannot start while the first runs)."""
    monkeypatch.setenv("SLURM_CONF", slurm)
    sweep = tmp_path / "sweep"
    args = adaptive(sweep, "hydra/launcher=slurm", "hydra.launcher.timeout_min=10", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.n_jobs=2", model_args=model_args)  # fmt: skip
    before = len(_jobs(slurm))
    result = run_cli("train.py", *args, threads=1)
    assert result.returncode == 0, describe(result)
    assert len(_jobs(slurm)) == before + 2
    trials = load(sweep).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[1].datetime_start < trials[0].datetime_complete  # one batch
    record = json.loads((sweep / "1" / "intervention.json").read_text())
    assert record["threads"] == {"threads": 1, "source": "SLURM_CPUS_PER_TASK"}
    again = run_cli("train.py", *args, threads=1)
    assert again.returncode == 0, describe(again)
    assert len(_jobs(slurm)) == before + 2 and len(load(sweep).get_trials(deepcopy=False)) == 2
