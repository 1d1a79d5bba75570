"""Train the toy world's model from scratch and write the checkpoint folder.

    python -m interventions toyworld train --out DIR [--seed 0] [--steps N]

The model is a TransformerLens-native transformer (`TransformerBridge.boot_native`):
4 layers, 4 heads, LayerNorm, GELU MLPs. It is trained as a plain next-token language
model on `corpus.sample_corpus`, one sentence per sequence. The committed checkpoint was
made with the defaults below; retraining with the same seed on a CPU reproduces it up to
floating-point nondeterminism, and its behaviour report within tolerance.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
from safetensors.torch import save_file
from tqdm import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interventions.io import write_json
from interventions.toyworld import TRAINING_DEFAULTS, corpus
from interventions.toyworld.tokenizer import build_tokenizer


MODEL_CONFIG = dict(
    d_model=128,
    n_layers=4,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    n_ctx=64,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
)
DEFAULTS = TRAINING_DEFAULTS


def build_model(vocab_size: int, seed: int, tokenizer=None):
    """A freshly initialised native TransformerBridge and its config dict."""
    config = dict(MODEL_CONFIG, d_vocab=vocab_size, seed=seed)
    return TransformerBridge.boot_native(config, tokenizer=tokenizer, model_name="toy"), config


def sentence_batches(token_lists: list[list[int]], batch_size: int, pad_id: int, generator):
    """Endless shuffled batches: (tokens [batch, pos], loss mask [batch, pos-1])."""
    n = len(token_lists)
    if n < batch_size:  # no full batch would ever be drawn
        raise ValueError(f"{n} sentences cannot fill a batch of {batch_size}")
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - batch_size + 1, batch_size):
            rows = [token_lists[i] for i in order[start : start + batch_size]]
            length = max(map(len, rows))
            tokens = torch.full((batch_size, length), pad_id, dtype=torch.long)
            for r, row in enumerate(rows):
                tokens[r, : len(row)] = torch.tensor(row)
            yield tokens, (tokens[:, 1:] != pad_id)


def tokenized_corpus(tokenizer, n: int, seed: int) -> tuple[list[str], list[list[int]]]:
    """`n` corpus sentences and their token ids; every word must be in the vocabulary."""
    sentences = corpus.sample_corpus(n, seed=seed)
    token_lists = [tokenizer(s)["input_ids"] for s in sentences]
    bad = [s for s, t in zip(sentences, token_lists) if tokenizer.unk_token_id in t]
    if bad:
        raise RuntimeError(f"corpus sentence has words outside the vocabulary: {bad[0]!r}")
    return sentences, token_lists


def optimizer_and_schedule(model, lr: float, weight_decay: float, warmup: int, steps: int):
    """AdamW (no decay on vectors) with linear warmup, then cosine decay to 10% of `lr`."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
        betas=(0.9, 0.98),
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def next_token_loss(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `tokens` [batch, pos] over the positions `mask`
    [batch, pos-1] keeps."""
    logits = model(tokens)[:, :-1]
    loss_all = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return (loss_all * mask).sum() / mask.sum()


def take_step(model, optimizer, scheduler, loss: torch.Tensor) -> float:
    """One optimiser step on `loss` (gradients clipped to norm 1); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return loss.item()


def train(
    out_dir: str | Path,
    seed: int = DEFAULTS["seed"],
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    warmup: int = DEFAULTS["warmup"],
    progress: bool = True,
) -> dict:
    """Train the toy model and save it to `out_dir`; returns the training summary."""
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(corpus.all_words())
    # each sentence is seen about 4 times; at least one batch's worth, however few the steps
    sentences, token_lists = tokenized_corpus(tokenizer, max(steps * batch_size // 4, batch_size), seed)

    model, config = build_model(len(tokenizer), seed)
    config.pop("seed")  # only the initialisation used it
    model.train()
    optimizer, scheduler = optimizer_and_schedule(model, lr, weight_decay, warmup, steps)
    generator = torch.Generator().manual_seed(seed)
    batches = sentence_batches(token_lists, batch_size, tokenizer.pad_token_id, generator)
    losses = []
    bar = tqdm(range(steps), desc="toy model", disable=not progress)
    for step in bar:
        losses.append(take_step(model, optimizer, scheduler, next_token_loss(model, *next(batches))))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"))
    tokenizer.save_pretrained(str(out_dir))
    write_json(out_dir / "config.json", config)
    summary = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup": warmup,
        "corpus_sentences": len(sentences),
        "final_loss": sum(losses[-100:]) / len(losses[-100:]),
        "train_seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
    }
    write_json(out_dir / "training.json", summary)
    return summary
