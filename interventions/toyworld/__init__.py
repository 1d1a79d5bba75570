"""The toy world: a synthetic language with known ground truth, its tokenizer, corpus, model
trainer and the committed checkpoint of the embedded default model (`model=toy`).

Torch-free: the command line reads the checkpoint's place and the training defaults here.
"""

import json
from pathlib import Path

CHECKPOINT = Path(__file__).parent / "checkpoint"
# The trainer's defaults (seed 0 with these reproduces the committed checkpoint).
TRAINING_DEFAULTS = dict(seed=0, steps=3000, batch_size=64, lr=1e-3, weight_decay=0.01, warmup=100)


def model_config(name_or_path) -> dict | None:
    """A model's config.json ("toy": the committed checkpoint's; a native or Hugging Face
    folder's), or None where there is none to read (a hub name, a missing folder)."""
    folder = CHECKPOINT if str(name_or_path) == "toy" else Path(str(name_or_path)).expanduser()
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_native_model(name_or_path) -> bool:
    """"toy", or a folder written by `toyworld.train` (a TransformerLens-native config, not a
    Hugging Face one; the toy world's architecture has a GPT-2 form, `toyworld.hf_form`)."""
    if str(name_or_path) == "toy":
        return True
    data = model_config(name_or_path)
    return data is not None and "d_model" in data and "model_type" not in data


# What `toyworld.hf_form` needs of a native model's config to give it a GPT-2 form (None:
# TransformerLens's default, which is the supported value).
HF_FORM = {"normalization_type": ("LN",), "positional_embedding_type": ("standard",), "act_fn": ("gelu", "gelu_new"),
           "gated_mlp": (False, None), "attn_only": (False, None), "final_rms": (False, None)}  # fmt: skip


def hf_form_problem(config: dict) -> str | None:
    """What keeps a native model's config (config.json's keys) from a Hugging Face (GPT-2)
    form, or None."""
    for key, allowed in HF_FORM.items():
        if config.get(key, allowed[0]) not in allowed:
            return f"{key}={config.get(key)!r}; the form needs {' or '.join(map(repr, allowed))}"
    kv = config.get("n_key_value_heads")
    if kv not in (None, config.get("n_heads")):
        return f"n_key_value_heads={kv!r}; the form needs as many as n_heads"
    return None
