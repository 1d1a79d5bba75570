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
    assert resolve_threads(None, {"SLURM_CPUS_PER_TASK": ""}, jobs=None, cpus=16) == (torch.get_num_threads(),
                                                                                          "torch's default")  # fmt: skip


def test_use_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    try:
        assert use_threads(None) == {"threads": 1, "source": "SLURM_CPUS_PER_TASK"}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
