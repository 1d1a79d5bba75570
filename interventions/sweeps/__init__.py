"""Sweeps: the jobs of a multirun (jobs), their summary (summary: collect, fronts, table, W&B
run), the Pareto fronts (pareto) and plots (plots)."""
