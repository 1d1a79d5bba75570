"""Reports: a run's own files (run), per-location values (locations) and figures (plots),
generalization across templates (generalization) and tasks (task_matrix), the
subspace-illusion diagnostic (illusion), SteerVec geometry (geometry), the head-level study
(heads), the files of an observable-propagation analysis (obsprop) and the toy model's
behaviour report (toy_behaviour). Their command lines are in interventions.cli.commands."""
