"""Prompt tokenization through the model, so BOS handling follows TransformerLens."""

from __future__ import annotations


# Texts whose token counts show what a model's tokenization adds to a prompt's own tokens.
ADDED_TOKENS_PROBES = ("The", "a b c", "Hello, world! 12 + 3")


def prompt_token_ids(model, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt (with BOS where the model prepends one), unpadded and never
    truncated (TransformerBridge's `to_tokens` cuts at the context by default; a prompt too
    long for the model must be refused, not shortened: `validation.check_context`).

    `model` is a TransformerBridge (its `to_tokens` decides BOS) or a bare tokenizer.
    """
    if hasattr(model, "to_tokens"):
        return [model.to_tokens(p, padding_side="right", truncate=False)[0].tolist() for p in prompts]
    return [model(p)["input_ids"] for p in prompts]


def own_token_count(tokenizer, text: str) -> int:
    """The tokens of `text` alone, without the special tokens a tokenizer adds."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def added_tokens(model, tokenizer) -> int | None:
    """How many tokens `model` adds to a prompt's own tokens (a BOS: 1; none: 0), the same
    for every probe text, else None. With it, a tokenizer alone gives a prompt's length
    under the model (`own_token_count` + this) before the model loads."""
    added = {len(ids) - own_token_count(tokenizer, text)
             for text, ids in zip(ADDED_TOKENS_PROBES, prompt_token_ids(model, list(ADDED_TOKENS_PROBES)))}  # fmt: skip
    return added.pop() if len(added) == 1 else None
