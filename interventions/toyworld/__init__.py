"""The toy world: a synthetic language with known ground truth, its tokenizer, corpus, model
trainer and the committed checkpoint of the embedded default model (`model=toy`).

Torch-free: the command line reads the checkpoint's place and the training defaults here.
"""

from pathlib import Path

CHECKPOINT = Path(__file__).parent / "checkpoint"
# The trainer's defaults (seed 0 with these reproduces the committed checkpoint).
TRAINING_DEFAULTS = dict(seed=0, steps=3000, batch_size=64, lr=1e-3, weight_decay=0.01, warmup=100)
