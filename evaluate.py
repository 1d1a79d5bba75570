"""Evaluate an exported intervention: python evaluate.py intervention=<run dir or export>

Any task, split or template (and, for DynScalar, prompts of other lengths); writes
metrics.json and plots into its own output directory and logs to W&B.
"""

import hydra
from omegaconf import DictConfig

from interventions.cli import report_errors, run


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@report_errors
def main(cfg: DictConfig) -> None:
    from interventions.pipeline import evaluate_from_config

    evaluate_from_config(cfg)


if __name__ == "__main__":
    run(main, "evaluate")
