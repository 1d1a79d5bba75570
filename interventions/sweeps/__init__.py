"""Sweeps: the jobs of a multirun (jobs), their summary (summary: collect, fronts, table, W&B
run), the Pareto fronts and the hypervolume (pareto) and plots (plots); the grid sweeper
(grid) and the adaptive one (adaptive: its search space in space, its optuna study in study)."""
