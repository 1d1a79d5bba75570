"""How many intra-op threads torch uses in a run: the CPUs the run was given.

In order: an explicit `threads=N`; SLURM's `SLURM_CPUS_PER_TASK` (a job given 4 CPUs
uses 4, not every core of the node); a parallel launcher's share (hydra/launcher=parallel
or joblib with n_jobs jobs: the machine's CPUs divided among them); otherwise torch's
default (every core). Sweeps on a busy or shared machine were several times slower
without this (issue 23: 357 s against 32 s for a 2-point sweep under SLURM).
"""

from __future__ import annotations

import os

import torch
from hydra.core.hydra_config import HydraConfig


def launcher_jobs() -> int | None:
    """The number of jobs a parallel Hydra launcher runs at once (n_jobs), if any."""
    if not HydraConfig.initialized():
        return None
    jobs = HydraConfig.get().launcher.get("n_jobs")
    return int(jobs) if isinstance(jobs, int) and jobs > 0 else None


def resolve_threads(explicit: int | None, environ=None, jobs: int | None = None,
                    cpus: int | None = None) -> tuple[int, str]:  # fmt: skip
    """(threads, where the number came from), by the module docstring's order."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return explicit, "threads"
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm), "SLURM_CPUS_PER_TASK"
    cpus = cpus or os.cpu_count() or 1
    if jobs:
        return max(1, cpus // jobs), f"{cpus} CPUs shared by {jobs} parallel jobs"
    return torch.get_num_threads(), "torch's default"


def use_threads(explicit: int | None) -> dict:
    """Set torch's intra-op threads for this run; returns {"threads": n, "source": ...} for
    the run's JSON."""
    threads, source = resolve_threads(explicit, jobs=launcher_jobs())
    torch.set_num_threads(threads)
    return {"threads": threads, "source": source}
