"""Train one intervention: python train.py [overrides]   (sweeps: python train.py -m ...)

Composes the Hydra config in conf/train.yaml, validates it before any model loads, then
trains, evaluates and exports (interventions.pipeline.train_from_config).
"""

import hydra
from omegaconf import DictConfig

from interventions.cli import report_errors, run


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
@report_errors
def main(cfg: DictConfig) -> float:
    from interventions.pipeline import train_from_config

    metrics = train_from_config(cfg)
    return metrics["test"]["effectiveness"]


if __name__ == "__main__":
    run(main, "train")
