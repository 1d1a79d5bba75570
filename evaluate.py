"""Evaluate an exported intervention: python evaluate.py intervention=<run folder or export>

Any task, split or template (and, for DynScalar, prompts of other lengths); writes
metrics.json and plots into its own output folder and logs to W&B. Two more modes, each
with its own config in conf/evaluate/:

    python evaluate.py sweep=<multirun folder>         rebuild the sweep's pareto.json, plots and
                                                       W&B summary run from its finished runs
    python evaluate.py generalization=<multirun folder | run folder | [folder,...]> [task.template=k]
                                                       effectiveness on A: train, B: test,
                                                       C: other templates (generalization.json/.md)
"""

from interventions.cli import main

if __name__ == "__main__":
    main("evaluate")
