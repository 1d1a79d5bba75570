"""The tokenizer of a model name or folder, loaded without the model (no weights, no
TransformerLens): what `models.load_model` gives the model, for the checks that run before
a model loads and for the plain Hugging Face model (`hf`)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from interventions.toyworld import CHECKPOINT, is_native_model
from interventions.toyworld.tokenizer import load_tokenizer


def saved_generic_tokenizer(folder: Path) -> bool:
    """Whether `folder` holds a tokenizer saved as transformers' generic fast tokenizer
    (tokenizer_class "TokenizersBackend"), not a model-specific class."""
    config = folder / "tokenizer_config.json"
    if not (folder.is_dir() and config.is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("tokenizer_class") == "TokenizersBackend"
    except json.JSONDecodeError:
        return False


def generic_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The folder's generic fast tokenizer as saved. Why not AutoTokenizer: for some model types
    (Qwen2 in transformers 5.25) it forces the model's own tokenizer class onto whatever
    tokenizer the folder holds, which turns a word-level vocabulary into garbage
    ("The capital of France is" -> "a a a"); `add_bos_token` keeps TransformerLens from
    loading it again that way."""
    return PreTrainedTokenizerFast.from_pretrained(str(folder), add_bos_token=True)


def model_tokenizer(name_or_path: str):
    """The tokenizer of "toy", a toy-format folder, a Hugging Face folder or a hub name."""
    if str(name_or_path) == "toy":
        return load_tokenizer(CHECKPOINT)
    if is_native_model(name_or_path):
        return load_tokenizer(name_or_path)
    local = Path(str(name_or_path)).expanduser()
    if saved_generic_tokenizer(local):
        return generic_tokenizer(local)
    return AutoTokenizer.from_pretrained(str(local) if local.is_dir() else str(name_or_path))
