"""A GPT-2-style byte-level BPE tokenizer built here, from the toy world's corpus, so that the
Hugging Face loading tests run on any clone (the real GPT-2 files are not part of it).

It behaves like GPT-2's where the tests look: byte-level (every string tokenizes), a leading
space is part of a word's token (" Paris" is one token, "Paris" may be several), no BOS of
its own, `<|endoftext|>` as BOS, EOS and unknown token. Two words are kept out of its
training text (`RARE`), so that, as " Nairobi" is for GPT-2, they stay several tokens.

    python tests/bpe.py DIR      # write the tokenizer folder (tests build it in a temporary one)
"""

from __future__ import annotations

import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from interventions.toyworld import corpus

END = "<|endoftext|>"
VOCAB_SIZE = 1024
RARE = ("Nairobi", "Brasilia")  # never in the training text: several tokens, like GPT-2's " Nairobi"
SENTENCES, SEED = 20_000, 0
# Text outside the toy world, so that common English pieces exist too ("ness", "ing", digits).
EXTRA = (
    "Hello, world! The happiness and kindness of the business were something. Reading, writing and "
    "counting: 1, 2, 3, 12 + 3 = 15. Zürich's café — 3.14! It's a long day; isn't it? "
)


def training_text() -> list[str]:
    """The toy corpus without sentences that name a word of RARE, and some plain English."""
    sentences = [s for s in corpus.sample_corpus(SENTENCES, seed=SEED) if not any(w in s for w in RARE)]
    return sentences + [EXTRA] * 50


def build_bpe_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer (module docstring), trained deterministically in a second or two."""
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[END], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    core.train_from_iterator(training_text(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=END, eos_token=END, unk_token=END)


def save_bpe_tokenizer(folder: str | Path) -> Path:
    folder = Path(folder)
    build_bpe_tokenizer().save_pretrained(str(folder))
    return folder


if __name__ == "__main__":
    print(save_bpe_tokenizer(sys.argv[1]))
