"""The toy world's word-level tokenizer, as a Hugging Face fast tokenizer.

One token per whitespace-separated word, so every entity is a single token and an answer
written with a leading space (" Paris", the GPT-2 convention) tokenizes the same as
without. A `<bos>` is prepended by the tokenizer itself (TransformerBridge expects that of
a tokenizer that declares `add_bos_token`). It is saved as an ordinary tokenizer folder,
so `AutoTokenizer.from_pretrained(folder)` and TransformerBridge's `to_tokens` /
`to_str_tokens` work on it unchanged.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over SPECIAL_TOKENS + `words` (ids in that order)."""
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    if len(vocab) != len(SPECIAL_TOKENS) + len(words):
        raise ValueError("duplicate words in the toy vocabulary")
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = vocab["<bos>"]
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    # Decoding a single id gives the bare word; a sequence is joined with spaces.
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
        padding_side="right",
    )


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(folder))
