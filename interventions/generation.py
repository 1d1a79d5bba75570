"""Steered text generation: an intervention's hooks on the frozen model while it decodes.

Which positions an intervention acts on (docs/method.md §7): positions are counted from each
prompt's first real token. DynScalar acts on every position, prompt and generated alike.
ActivScalar and SteerVec act on the prompt positions they were trained on (a prompt must
have the trained length) and on generated tokens only with `positions_beyond="last"`, which
reuses the last prompt position's parameters for every new token.

Prompts are batched with left padding (positions and attention follow the mask), and all βs
of a batch run in one forward (copy k of the batch steered with β_k); a padded batch gives
the same tokens as each prompt alone (tests/test_generation.py).

No key-value cache: each step runs the whole sequence again, unembedding only its last
position. TransformerBridge (TransformerLens 4.x) returns an empty cache from
`return_type="logits_and_cache"` (length 0 after the prompt), so a cached step attends to
itself alone and its logits are 0.1-0.2 away from the full forward's on random GPT-2 and
Llama models, while Hugging Face's own cache agrees to 1e-7; its `generate(use_past_kv_cache=True)`
gives other tokens than without the cache too (tests/test_generation.py keeps the
measurement). Generation with a cache runs on a plain Hugging Face model (`hf.generate`;
the toy world's native model through its GPT-2 form, `toyworld.hf_form`), with the same
positions, batching and sampling, and gives these tokens (tests/test_hf.py).

    >>> rows = generate(model, method, ["The capital of France is"], betas=(-1, 0, 1), max_new_tokens=5)
"""

from __future__ import annotations

import hashlib
import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass

import torch

from interventions.errors import ConfigError
from interventions.forward import positions_of
from interventions.models import model_device
from interventions.sites import hook
from interventions.tasks.datapoint import Task
from interventions.tasks.tokenize import prompt_token_ids
from interventions.tasks.validation import answer_ids, check_prompt_lengths


@dataclass(frozen=True)
class Completion:
    """One prompt continued at one β: the text and token ids after the prompt."""

    prompt: str
    beta: float
    text: str
    tokens: tuple[int, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens": list(self.tokens)}


def check_betas(betas) -> tuple[float, ...]:
    """β values as floats, or one ConfigError line."""
    if isinstance(betas, (int, float)) and not isinstance(betas, bool):
        betas = (betas,)
    try:
        values = tuple(float(b) for b in betas if not isinstance(b, bool))
        if len(values) != len(tuple(betas)) or not values:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"betas={betas!r} must be a non-empty list of numbers, e.g. betas=[-1,0,1]") from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"betas={list(values)} must be finite numbers")
    return values


def left_padded(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, W] left-padded to the longest, and their mask [B, W]."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    return input_ids, mask


def row_generator(seed: int, prompt: str, beta: float) -> torch.Generator:
    """A sampling stream of its own for each (prompt, β): the same draws whether the prompt is
    generated alone or in any batch."""
    digest = hashlib.sha256(f"{seed}|{beta!r}|{prompt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def next_tokens(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None,
                generators: list[torch.Generator]) -> torch.Tensor:  # fmt: skip
    """[rows] the next token of each row from its logits [rows, vocab]: the argmax, or a draw
    from softmax(logits / temperature) restricted to the top_k (one generator per row)."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1).cpu()
    return torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, generators)]).to(logits.device)


def decode(step, input_ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, choose) -> torch.Tensor:
    """[rows, max_new_tokens] tokens appended one at a time to input_ids [rows, W] (mask [rows, W]).

    `step(input_ids, mask, state)` returns the last position's logits [rows, vocab] and a state
    for the next step (a key-value cache, or None); `choose` turns logits into tokens."""
    state, new = None, []
    # Inference mode skips autograd's bookkeeping on each of a step's many small tensor operations
    # (a hook's too): about 5% of a toy generation through the bridge (docs/benchmarks.md).
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits, state = step(input_ids, mask, state)
            token = choose(logits)
            new.append(token)
            input_ids = torch.cat([input_ids, token[:, None]], 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        tokens = torch.stack(new, 1)
    return tokens.clone()  # a normal tensor: an inference tensor may not enter a later autograd graph


def prepared(ids: list[list[int]], betas: tuple[float, ...], pad: int, device, sampling: tuple):
    """What a decoding loop starts from: left-padded ids and mask [len(betas)·B, W] (copy k
    for betas[k]), β per row [len(betas)·B], and `choose` (sampling: (do_sample, temperature,
    top_k, generators))."""
    input_ids, mask = (t.to(device).repeat(len(betas), 1) for t in left_padded(ids, pad))
    beta = torch.tensor(betas, device=device).repeat_interleave(len(ids))

    def choose(logits: torch.Tensor) -> torch.Tensor:
        do_sample, temperature, top_k, generators = sampling
        return next_tokens(logits, do_sample, temperature, top_k, generators or [])

    return input_ids, mask, beta, choose


@torch.no_grad()
def generate_tokens(
    model, method, ids: list[list[int]], betas: tuple[float, ...], max_new_tokens: int, *, do_sample: bool = False,
    temperature: float = 1.0, top_k: int | None = None, generators: list[torch.Generator] | None = None,
    positions_beyond: str = "none",
) -> torch.Tensor:  # fmt: skip
    """New tokens [len(betas), B, max_new_tokens] for prompts `ids` (token id lists) at each β,
    from one left-padded batch of len(betas) × B rows (copy k steered with betas[k]).
    `method` None: the unhooked model. `generators`: one per row (β-major) when sampling.

    Each step runs the whole sequence and unembeds only its last position (module docstring:
    why not TransformerBridge's key-value cache); a position-tied method sees each step's
    positions (`Method.track_positions`)."""
    pad = getattr(model.tokenizer, "pad_token_id", None)  # a model built without a tokenizer pads with 0
    input_ids, mask, beta, choose = prepared(ids, betas, 0 if pad is None else pad, model_device(model),
                                             (do_sample, temperature, top_k, generators))  # fmt: skip

    see = None

    def step(input_ids: torch.Tensor, mask: torch.Tensor, state):
        unpadded = bool(mask.all())
        if see is not None:
            see(length=mask.shape[1]) if unpadded else see(positions_of(mask))
        logits = model(input_ids) if unpadded else model(input_ids, attention_mask=mask)
        return logits[:, -1], None

    def keep_last(resid: torch.Tensor, hook) -> torch.Tensor:
        return resid[:, -1:]

    hooks = [(hook("unembed_in"), keep_last)]
    with ExitStack() as stack:
        if method is not None:
            see = stack.enter_context(method.track_positions(positions_beyond))
            hooks = [*method.decoding_hooks(beta), *hooks]
        stack.enter_context(model.hooks(fwd_hooks=hooks))
        tokens = decode(step, input_ids, mask, max_new_tokens, choose)
    return tokens.view(len(betas), len(ids), max_new_tokens)


def completion_text(tokenizer, tokens: list[int], stop_at_eos: bool) -> tuple[str, tuple[int, ...]]:
    """The decoded text of generated tokens, cut after the first end-of-sequence token."""
    eos = tokenizer.eos_token_id
    if stop_at_eos and eos is not None and eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    return tokenizer.decode(tokens), tuple(tokens)


def context_length(model) -> int:
    """The longest sequence `model` takes: a bridge's n_ctx, a Hugging Face config's positions."""
    if hasattr(model, "cfg"):
        return model.cfg.n_ctx
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions")


def generate(
    model, method, prompts: list[str], betas=(-1.0, 0.0, 1.0), max_new_tokens: int = 20, *, do_sample: bool = False,
    temperature: float = 1.0, top_k: int | None = None, seed: int = 0, positions_beyond: str = "none",
    batch_size: int = 16, stop_at_eos: bool = True, tokenizer=None, decode=None,
) -> list[Completion]:  # fmt: skip
    """Continue each prompt at each β with `method`'s hooks on the frozen `model`.

    Args:
        model: a frozen TransformerBridge (`models.load_model`).
        method: a trained `Method` (an export's `.method`), or None for the unhooked model.
        prompts: the prompts (strings; BOS is added as the model does).
        betas: steering strengths; 0 is the clean model.
        max_new_tokens: tokens generated per prompt (≥ 1).
        do_sample: sample from softmax(logits / temperature) (top_k if given) instead of
            greedy; each (prompt, β) draws from its own generator seeded from `seed`.
        positions_beyond: "none" or "last" (module docstring); position-tied methods only.
        batch_size: prompts per forward (each forward holds len(betas) × batch_size rows).
        stop_at_eos: cut each completion at the tokenizer's end-of-sequence token.
        tokenizer: the tokenizer of a model that is not a bridge (`interventions.hf.generate`);
            a bridge tokenizes as it does everywhere (`to_tokens`, BOS included).
        decode: what generates the tokens, `generate_tokens`'s signature (default: it).

    Returns:
        One Completion per (prompt, β), prompt-major in the order given.
    """
    betas = check_betas(betas)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
    if do_sample and not temperature > 0:
        raise ConfigError(f"temperature={temperature!r} must be > 0")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError("prompts must be a non-empty list of non-empty strings")
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    ids = prompt_token_ids(model if hasattr(model, "to_tokens") else tokenizer, list(prompts))
    tied = (method.name, method.grid.seq_len) if method is not None and method.position_tied else None
    check_prompt_lengths([len(x) for x in ids], list(prompts), max_new_tokens, context_length(model), tied)
    decode = decode or generate_tokens
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_ids = prompts[start : start + batch_size], ids[start : start + batch_size]
        generators = [row_generator(seed, p, b) for b in betas for p in chunk] if do_sample else None
        tokens = decode(
            model, method, chunk_ids, betas, max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
            generators=generators, positions_beyond=positions_beyond,
        ).cpu()  # fmt: skip
        for i, prompt in enumerate(chunk):
            for k, beta in enumerate(betas):
                text, kept = completion_text(tokenizer, tokens[k, i].tolist(), stop_at_eos)
                out.append(Completion(prompt, beta, text, kept))
    return out


def generation_flip_accuracy(model, method, task: Task, positions_beyond: str = "none", batch_size: int = 16) -> dict:
    """How often greedy generation flips the answer (docs/method.md §5, generation level).

    For each data point, the greedy continuation at β = +1 must start with the correct
    answer's tokens and at β = -1 with the wrong answer's (exact match on the tokens; an
    answer of several tokens must match all of them). Costs one generation of as many
    tokens as the longest answer per prompt and direction.

    Returns:
        {"generation_flip_accuracy": mean of the two directions, "generation_flip_accuracy_pos",
            "generation_flip_accuracy_neg", "n"}.
    """
    tokenizer = model.tokenizer
    correct = [answer_ids(tokenizer, p.correct) for p in task]
    wrong = [answer_ids(tokenizer, p.wrong) for p in task]
    longest = max(len(a) for a in correct + wrong)
    completions = generate(model, method, task.prompts, (1.0, -1.0), longest, positions_beyond=positions_beyond,
                           batch_size=batch_size, stop_at_eos=False)  # fmt: skip
    pos = [list(c.tokens[: len(a)]) == a for c, a in zip(completions[0::2], correct)]
    neg = [list(c.tokens[: len(a)]) == a for c, a in zip(completions[1::2], wrong)]
    n = len(pos)
    return {
        "generation_flip_accuracy": (sum(pos) + sum(neg)) / (2 * n),
        "generation_flip_accuracy_pos": sum(pos) / n,
        "generation_flip_accuracy_neg": sum(neg) / n,
        "n": n,
    }
