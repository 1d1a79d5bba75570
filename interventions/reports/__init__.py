"""Reports on trained interventions: a run's own files (run), per-location values (locations)
and figures (plots), generalization across templates (generalization) and tasks
(task_matrix), the subspace-illusion diagnostic (illusion), SteerVec geometry (geometry) and
the head-level study (heads). Their command lines are in interventions.cli.commands."""
