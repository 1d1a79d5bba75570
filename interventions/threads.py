"""How many intra-op threads torch uses in a run: the CPUs the run was given.

In order: an explicit `threads=N`; SLURM's `SLURM_CPUS_PER_TASK` (a job given 4 CPUs
uses 4, not every core of the node); inside a SLURM job that did not ask for CPUs per task
(hydra/launcher=submitit_slurm's defaults), the CPUs SLURM gave the job on this node,
`SLURM_CPUS_ON_NODE`, shared by its tasks on the node; a parallel launcher's share
(hydra/launcher=parallel or joblib with n_jobs jobs: the machine's CPUs divided among them);
the CPUs this process may run on (its affinity: taskset, a cgroup's cpuset) when they are
fewer than torch's default; otherwise torch's default (every core). Sweeps on a busy or
shared machine were several times slower without this (issue 23: 357 s against 32 s for a
2-point sweep under SLURM; issue 28: 3.6x under submitit_slurm, which set no
SLURM_CPUS_PER_TASK).
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


def _leading_int(text: str) -> int | None:
    """The number a SLURM count starts with ("2(x3)" -> 2), or None."""
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits and int(digits) > 0 else None


def affinity() -> int | None:
    """How many CPUs this process may run on (None where the platform cannot say)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def resolve_threads(explicit: int | None, environ=None, jobs: int | None = None, cpus: int | None = None,
                    allowed: int | None = None) -> tuple[int, str]:  # fmt: skip
    """(threads, where the number came from), by the module docstring's order. `cpus` and
    `allowed` (the affinity) default to this machine's."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return explicit, "threads"
    per_task = _leading_int(environ.get("SLURM_CPUS_PER_TASK", ""))
    if per_task:
        return per_task, "SLURM_CPUS_PER_TASK"
    on_node = _leading_int(environ.get("SLURM_CPUS_ON_NODE", "")) if environ.get("SLURM_JOB_ID") else None
    if on_node:
        tasks = _leading_int(environ.get("SLURM_NTASKS_PER_NODE", "")) or _leading_int(environ.get("SLURM_TASKS_PER_NODE", "")) or 1
        if tasks == 1:
            return on_node, "SLURM_CPUS_ON_NODE"
        return max(1, on_node // tasks), f"SLURM_CPUS_ON_NODE shared by {tasks} tasks"
    cpus = cpus or os.cpu_count() or 1
    if jobs:
        return max(1, cpus // jobs), f"{cpus} CPUs shared by {jobs} parallel jobs"
    allowed = affinity() if allowed is None else allowed
    default = torch.get_num_threads()
    if allowed is not None and allowed < default:
        return allowed, "the CPUs this process may run on"
    return default, "torch's default"


def use_threads(explicit: int | None) -> dict:
    """Set torch's intra-op threads for this run; returns {"threads": n, "source": ...} for
    the run's JSON."""
    threads, source = resolve_threads(explicit, jobs=launcher_jobs())
    torch.set_num_threads(threads)
    return {"threads": threads, "source": source}
