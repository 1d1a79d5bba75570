"""Prompt tokenization through the model, so BOS handling follows TransformerLens."""

from __future__ import annotations


def prompt_token_ids(model, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt (with BOS where the model prepends one), unpadded.

    `model` is a TransformerBridge (its `to_tokens` decides BOS) or a bare tokenizer.
    """
    if hasattr(model, "to_tokens"):
        return [model.to_tokens(p, padding_side="right")[0].tolist() for p in prompts]
    return [model(p)["input_ids"] for p in prompts]
