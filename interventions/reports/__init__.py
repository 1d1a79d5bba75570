"""Reports on trained interventions: a run's own files (run), per-location values (locations)
and figures (plots), generalization across templates (generalization) and tasks
(task_matrix), the subspace-illusion diagnostic (illusion), SteerVec geometry (geometry), the
head-level study (heads), and the files of an observable-propagation analysis (obsprop).
Their command lines are in interventions.cli.commands."""
