"""Evaluate an exported intervention: python evaluate.py intervention=<run dir or export>

Any task, split or template (and, for DynScalar, prompts of other lengths); writes
metrics.json and plots into its own output directory and logs to W&B.

Two more modes:
    python evaluate.py sweep=<multirun dir>         rebuild the sweep's pareto.json, plots and
                                                    W&B summary run from its finished runs
    python evaluate.py generalization=<multirun dir | run dir | [dir,...]> [task.template=k]
                                                    effectiveness on A: train, B: test,
                                                    C: other templates (generalization.json/.md)
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from interventions.cli import report_errors, run


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@report_errors
def main(cfg: DictConfig) -> None:
    if cfg.get("sweep") is not None:
        from interventions.sweep import summarize_sweep

        summarize_sweep(cfg.sweep, logger=OmegaConf.to_container(cfg.logger, resolve=True))
        return
    if cfg.get("generalization") is not None:
        from interventions.generalization import generalization_from_config

        generalization_from_config(cfg)
        return
    from interventions.pipeline import evaluate_from_config

    evaluate_from_config(cfg)


if __name__ == "__main__":
    run(main, "evaluate")
