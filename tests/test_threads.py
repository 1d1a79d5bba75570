"""Each run uses the CPUs it was given (interventions.threads)."""

from __future__ import annotations

import torch

from interventions.threads import resolve_threads, use_threads


def test_the_number_comes_from_the_key_then_slurm_then_the_launcher_then_torch():
    slurm = {"SLURM_CPUS_PER_TASK": "3"}
    assert resolve_threads(2, slurm, jobs=4, cpus=16) == (2, "threads")
    assert resolve_threads(None, slurm, jobs=4, cpus=16) == (3, "SLURM_CPUS_PER_TASK")
    assert resolve_threads(None, {}, jobs=4, cpus=16) == (4, "16 CPUs shared by 4 parallel jobs")
    assert resolve_threads(None, {}, jobs=32, cpus=16) == (1, "16 CPUs shared by 32 parallel jobs")
    assert resolve_threads(None, {"SLURM_CPUS_PER_TASK": ""}, jobs=None, cpus=16, allowed=1024) == (
        torch.get_num_threads(), "torch's default")  # fmt: skip


def test_a_slurm_job_without_cpus_per_task_uses_the_cpus_on_its_node():
    """hydra/launcher=submitit_slurm sets no --cpus-per-task: SLURM gives one CPU and sets only
    SLURM_CPUS_ON_NODE (issue 28: the runs took torch's 2 threads, 3.6x slower)."""
    job = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "1"}
    assert resolve_threads(None, job, cpus=16, allowed=16) == (1, "SLURM_CPUS_ON_NODE")
    ddp = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "4", "SLURM_NTASKS_PER_NODE": "2"}
    assert resolve_threads(None, ddp, cpus=16, allowed=16) == (2, "SLURM_CPUS_ON_NODE shared by 2 tasks")
    assert resolve_threads(None, {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "4", "SLURM_TASKS_PER_NODE": "4(x2)"},
                           cpus=16, allowed=16) == (1, "SLURM_CPUS_ON_NODE shared by 4 tasks")  # fmt: skip
    assert resolve_threads(None, {"SLURM_CPUS_ON_NODE": "1"}, cpus=16, allowed=1024)[1] == "torch's default"  # not a job
    assert resolve_threads(None, {**job, "SLURM_CPUS_PER_TASK": "3"}, cpus=16) == (3, "SLURM_CPUS_PER_TASK")


def test_a_process_confined_to_fewer_cpus_uses_them():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        assert resolve_threads(None, {}, cpus=16, allowed=1) == (1, "the CPUs this process may run on")
        assert resolve_threads(None, {}, cpus=16, allowed=8) == (4, "torch's default")
    finally:
        torch.set_num_threads(before)


def test_use_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    try:
        assert use_threads(None) == {"threads": 1, "source": "SLURM_CPUS_PER_TASK"}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
