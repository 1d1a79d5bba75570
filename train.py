"""Train one intervention: python train.py [overrides]   (sweeps: python train.py -m ...)

Composes conf/train.yaml, checks it before any model loads, then trains, evaluates and
exports (interventions.runs.train_run).
"""

from interventions.cli import main

if __name__ == "__main__":
    main("train")
