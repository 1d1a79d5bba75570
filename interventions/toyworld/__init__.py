"""The toy world: a synthetic language with known ground truth, its tokenizer, corpus, model
trainer and the committed checkpoint of the embedded default model (`model=toy`).

Torch-free: the command line reads the checkpoint's place and the training defaults here.
"""

import json
from pathlib import Path

CHECKPOINT = Path(__file__).parent / "checkpoint"
# The trainer's defaults (seed 0 with these reproduces the committed checkpoint).
TRAINING_DEFAULTS = dict(seed=0, steps=3000, batch_size=64, lr=1e-3, weight_decay=0.01, warmup=100)


def is_native_model(name_or_path) -> bool:
    """"toy", or a folder written by `toyworld.train` (a TransformerLens-native config, not a
    Hugging Face one): a model with no Hugging Face form."""
    if str(name_or_path) == "toy":
        return True
    config = Path(str(name_or_path)).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError:
        return False
    return "d_model" in data and "model_type" not in data
