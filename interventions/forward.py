"""The frozen model's forward, read only where logits are needed: each prompt's last token.

A hook on `unembed.hook_in` keeps only the last real position of every row, so the
unembedding runs on [batch, 1, d_model] instead of [batch, pos, d_model] (for a big
vocabulary the largest matmul of the model). The hook sits after the final LayerNorm
because Hugging Face models (GPT-2) reshape the final norm's output to the full prompt
length; the norm itself is elementwise and cheap.

With `skip_unread=True` the same cut moves one step down: the last block's second
LayerNorm and MLP act position by position, so only the read positions' outputs can reach
the read logits, and they run on [batch, 1, d_model] too (for a 4-layer model a sixth of
the block matmuls, forward and backward). Only for callers whose hooks change activations
without reading them: a hook on the last block's MLP output or residual then sees zeros
(MLP output) or the residual without the MLP at the unread positions. Training and
evaluation use it when asked (`skip_unread`, off by default: the gradients round
differently, see docs/benchmarks.md); the clean log-probs and the attribution and illusion
analyses, which read activations at every position, never do.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from interventions.sites import AFTER_ATTENTION, hook, parse_hook


# Architectures whose blocks feed `ln2.hook_in` to a position-wise MLP and add its output
# (`hook_mlp_out`) to the residual, sequentially (GPT-2, LLaMA) or in parallel with the
# attention (GPT-NeoX / Pythia); each is checked against the full forward in
# tests/test_forward.py. Others (e.g. Gemma 2, whose MLP output is normalised again before
# the add) run the whole block.
SKIP_UNREAD_ADAPTERS = (
    "NativeArchitectureAdapter", "GPT2ArchitectureAdapter", "NeoxArchitectureAdapter", "LlamaArchitectureAdapter",
)


def _adapter(model) -> str:
    return type(getattr(model, "adapter", None)).__name__


def unread_mlp_hooks(model, last_index: torch.Tensor, seq_len: int) -> list:
    """Hooks running the last block's LayerNorm 2 and MLP only at `last_index` of each row,
    then scattering the MLP output into zeros [batch, seq_len, ...] so that later hooks and
    the residual add see their usual shapes; [] for other architectures."""
    if _adapter(model) not in SKIP_UNREAD_ADAPTERS:
        return []
    rows = torch.arange(last_index.shape[0], device=last_index.device)
    last = model.cfg.n_layers - 1

    def keep_read(h: torch.Tensor, hook) -> torch.Tensor:
        return h[rows, last_index].unsqueeze(1)

    def scatter_back(h: torch.Tensor, hook) -> torch.Tensor:
        return h.new_zeros(h.shape[0], seq_len, *h.shape[2:]).index_put((rows, last_index), h[:, 0])

    return [(hook("ln2_in", last), keep_read), (hook("mlp_out", last), scatter_back)]


def last_position_logits(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    last_index: torch.Tensor,
    fwd_hooks: list | None = None,
    skip_unread: bool = False,
) -> torch.Tensor:
    """Logits at `last_index` of each row.

    Args:
        model: a TransformerBridge.
        input_ids: [batch, pos] token ids (padded).
        attention_mask: [batch, pos] 1 for real tokens, or None (no padding).
        last_index: [batch] position of each row's last real token.
        fwd_hooks: extra (hook_name, fn) pairs active during this forward only.
        skip_unread: run the last block's MLP only at `last_index` (module docstring);
            only when `fwd_hooks` do not read activations.

    Returns:
        [batch, d_vocab] logits.
    """
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)

    def keep_last(resid: torch.Tensor, hook) -> torch.Tensor:
        return resid[rows, last_index].unsqueeze(1)

    # the scatter-back hook must run before any other hook on the last MLP's output
    unread = unread_mlp_hooks(model, last_index, input_ids.shape[1]) if skip_unread else []
    hooks = [*unread, *(fwd_hooks or []), (hook("unembed_in"), keep_last)]
    kwargs = {}
    if attention_mask is not None and not bool(attention_mask.all()):
        kwargs["attention_mask"] = attention_mask
    with model.hooks(fwd_hooks=hooks):
        logits = model(input_ids, **kwargs)
    return logits[:, 0]


# Architectures whose blocks can be called on a residual alone: positions enter with the
# embeddings (no rotary position_embeddings argument) and, without a mask, attention is
# causal. Both are checked against the full forward in tests/test_prefix.py.
PREFIX_SKIP_ADAPTERS = ("NativeArchitectureAdapter", "GPT2ArchitectureAdapter")


def supports_prefix_skip(model) -> bool:
    """Whether blocks can be run from a cached residual (unpadded prompts): the TL-native
    architecture and Hugging Face GPT-2."""
    return _adapter(model) in PREFIX_SKIP_ADAPTERS


@torch.no_grad()
def embeddings(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The residual entering block 0 of an unpadded batch (no gradient), for the architectures of
    `PREFIX_SKIP_ADAPTERS` (token plus learned absolute position embedding, the same numbers
    as TransformerBridge's `model(input_ids, stop_at_layer=0)`, which first runs the
    wrapped model's forward preamble: 0.12 ms against 0.04 ms on the toy, 0.30 ms against
    0.04 ms on its Hugging Face GPT-2 shape).

    Args:
        input_ids: [batch, pos] token ids, no padding.
    Returns:
        [batch, pos, d_model].
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return model.embed(input_ids) + model.pos_embed(positions)


def last_position_logits_from(
    model,
    resid: torch.Tensor,
    start_layer: int,
    last_index: torch.Tensor,
    fwd_hooks: list | None = None,
    skip_unread: bool = False,
) -> torch.Tensor:
    """Logits at `last_index` running only blocks `start_layer`..end on a cached residual.

    Args:
        resid: [batch, pos, d_model] the clean residual stream entering block `start_layer`
            (unchanged by any intervention on later layers: the prefix skip caches it once per
            dataset; for block 0 it is the embeddings).
        skip_unread: as for `last_position_logits`.
    Returns:
        [batch, d_vocab], equal to `last_position_logits` of the full prompts.
    """
    rows = torch.arange(resid.shape[0], device=resid.device)
    unread = unread_mlp_hooks(model, last_index, resid.shape[1]) if skip_unread else []
    with model.hooks(fwd_hooks=[*unread, *(fwd_hooks or [])]):
        h = resid.to(next(model.parameters()).dtype)  # the cache is float32; the model may be half
        for block in model.blocks[start_layer:]:
            out = block(h)
            h = out[0] if isinstance(out, tuple) else out
        h = model.ln_final(h[rows, last_index].unsqueeze(1))
        return model.unembed(h)[:, 0]


def shared_attention_hooks(layer: int, rows: int, reps: int) -> list:
    """Hooks running block `layer`'s LayerNorm 1 and attention once, on the first `rows` rows
    of a batch made of `reps` identical copies, and repeating its output to all copies.

    Only valid while the copies are identical up to that attention's output: no hook acts
    before it (`attention_shareable`). Must come before any other hook on `hook_attn_out`.
    """

    def first_copy(h: torch.Tensor, hook) -> torch.Tensor:
        return h[:rows]

    def to_all_copies(h: torch.Tensor, hook) -> torch.Tensor:
        return h.repeat(reps, *([1] * (h.dim() - 1)))

    return [(hook("ln1_in", layer), first_copy), (hook("attn_out", layer), to_all_copies)]


def attention_shareable(hook_names, layer: int) -> bool:
    """Whether no hook in `hook_names` can make the copies of a repeated batch differ before
    block `layer`'s attention output: every hook is in a later block, in block `layer` from
    `hook_attn_out` on (`sites.AFTER_ATTENTION`: LayerNorm 2, MLP, residual after the
    attention), or after the blocks. Any other hook (the attention's inputs and heads: head
    sites, or a name not in `sites.HOOKS`) keeps every copy's attention."""
    for name in hook_names:
        parsed = parse_hook(name)
        if parsed is None:
            return False
        short, block = parsed
        if block is None:  # after the blocks (ln_final, unembed)
            continue
        if block < layer or block == layer and short not in AFTER_ATTENTION:
            return False
    return True


def repeated_batch_logits(
    model, batch: dict, reps: int, fwd_hooks: list | None = None, prefix_layer: int = 0, skip_unread: bool = False,
    share_attention: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Last-position logits of a batch repeated `reps` times (copy r is rows r·B..(r+1)·B-1,
    for hooks that steer each copy differently).

    Where blocks can be run on a residual (`supports_prefix_skip`) and no row is padded, it
    runs blocks `prefix_layer`.. on the cached clean residual `batch["resid_pre"]` (when
    `prefix_layer` > 0), or all blocks on the embeddings. The copies are identical until the
    first hook, so when that is at or after the first block's attention output
    (`attention_shareable`: the default residual sites) that block's attention runs once on
    B rows (`shared_attention_hooks`): for K configurations × 2 β in a fused sweep, 1/(2K) of
    its cost. Otherwise the whole model runs on the repeated `batch["input_ids"]`
    (`last_position_logits`). Every path gives the same logits.

    Args:
        batch: input_ids [B, pos], attention_mask [B, pos], last_index [B], and
            resid_pre [B, pos, d_model] when the prefix is skipped.
        share_attention: False runs every copy's attention (the benchmark's ablation).
    Returns:
        [reps · B, d_vocab], float32 whatever the model's precision (the objective's).
    """
    hooks = list(fwd_hooks or [])
    rows = batch["input_ids"].shape[0]
    last_index = batch["last_index"].repeat(reps)
    unpadded = bool(batch["attention_mask"].all())
    start, resid = 0, None
    if unpadded and prefix_layer > 0 and "resid_pre" in batch:
        start, resid = prefix_layer, batch["resid_pre"]
    share = share_attention and reps > 1 and attention_shareable([name for name, _ in hooks], start)
    if resid is None and unpadded and share and supports_prefix_skip(model):
        resid = embeddings(model, batch["input_ids"])
    if resid is None:
        input_ids, mask = batch["input_ids"].repeat(reps, 1), batch["attention_mask"].repeat(reps, 1)
        return last_position_logits(model, input_ids, mask, last_index, hooks, skip_unread).float()
    if share:
        hooks = shared_attention_hooks(start, rows, reps) + hooks
    return last_position_logits_from(model, resid.repeat(reps, 1, 1), start, last_index, hooks, skip_unread).float()


def steered_logits(model, method, batch: dict, betas=(1.0, -1.0), extra_hooks=(), prefix_layer: int = 0,
                   skip_unread: bool = False) -> list[torch.Tensor]:  # fmt: skip
    """Last-position logits [batch, vocab] for each β, from ONE batched forward.

    The batch is repeated len(betas) times and each copy gets its own β, so `method`'s hooks
    see β as a tensor [len(betas) * batch]; `extra_hooks` run after them (e.g.
    `numerics.residual_probe`). `prefix_layer` and `skip_unread` as in
    `repeated_batch_logits`.
    """
    k, b = len(betas), batch["input_ids"].shape[0]
    method.check_length(batch["input_ids"].shape[1])
    hooks = [*steering_hooks(method, betas, b, batch["input_ids"].device), *extra_hooks]
    logits = repeated_batch_logits(model, batch, k, hooks, prefix_layer=prefix_layer, skip_unread=skip_unread)
    return list(logits.split(b))


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """[B, W] each token's position counted from its row's first real token, -1 at padding,
    for a mask [B, W] whose real tokens are contiguous (left or right padding)."""
    return torch.where(mask.bool(), mask.cumsum(1) - 1, -1)


def has_answer_tails(batch: dict) -> bool:
    """Whether a batch (or a split's tensors) has answers of several tokens, whose tails need
    the teacher-forced forward; with answers of one token the tail is exactly zero and the
    last-position logits are all a score needs (docs/method.md §6)."""
    return "answer_ids" in batch and batch["answer_ids"].shape[-1] > 1


def answer_sequences(batch: dict) -> tuple[torch.Tensor, ...]:
    """Each prompt followed by its answer but the answer's last token (teacher forcing,
    docs/method.md §6), for the correct answers (rows 0..B-1) then the wrong (B..2B-1).

    Args:
        batch: input_ids [B, T], attention_mask [B, T], last_index [B], answer_ids [B, 2, A]
            (correct, wrong; padded), answer_len [B, 2].
    Returns:
        ids [2B, T+A-1], mask [2B, T+A-1], read [2B, A] (the positions whose next-token
        logits score answer tokens 1..A), answers [2B, A], lengths [2B].
    """
    answers = batch["answer_ids"].transpose(0, 1).flatten(0, 1)
    lengths = batch["answer_len"].T.flatten()
    ids, mask, last = batch["input_ids"].repeat(2, 1), batch["attention_mask"].repeat(2, 1), batch["last_index"].repeat(2)
    steps = torch.arange(answers.shape[1], device=ids.device)
    if answers.shape[1] > 1:
        at = last[:, None] + 1 + steps[:-1]
        ids = F.pad(ids, (0, len(steps) - 1)).scatter(1, at, answers[:, :-1])
        mask = F.pad(mask, (0, len(steps) - 1)).scatter(1, at, (steps[None, :-1] < lengths[:, None] - 1).to(mask.dtype))
    return ids, mask, last[:, None] + steps, answers, lengths


def teacher_forced(batch: dict, k: int) -> tuple[torch.Tensor, ...]:
    """`answer_sequences` repeated k times, with what a forward of them needs.

    Returns:
        ids [k·2B, W], mask [k·2B, W], index [k·2B, 1] (each row's number) and read [k·2B, A]
        (together: the positions to unembed, `logits[index, read]`), position_ids [2B, W]
        (for `Method.track_positions`, which repeats them over the copies: fused training's
        hooks see one block of copies at a time), answers [2B, A], lengths [2B].
    """
    ids, mask, read, answers, lengths = answer_sequences(batch)
    position_ids = positions_of(mask)
    ids, mask, read = ids.repeat(k, 1), mask.repeat(k, 1), read.repeat(k, 1)
    index = torch.arange(ids.shape[0], device=ids.device)[:, None]
    return ids, mask, index, read, position_ids, answers, lengths


def tails_of(logits: torch.Tensor, answers: torch.Tensor, lengths: torch.Tensor, k: int,
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """For each of the k copies, the last-prompt-position logits [B, vocab] and the answers'
    tail [B], from the teacher-forced logits [k·2B, A, vocab] at the read positions."""
    logits = logits.float()  # the objective in float32 whatever the model's precision
    rows = answers.shape[0]
    logp = torch.log_softmax(logits, -1).gather(-1, answers.repeat(k, 1)[..., None])[..., 0]
    steps = torch.arange(answers.shape[1], device=logits.device)[None]
    rest = torch.where((steps >= 1) & (steps < lengths.repeat(k)[:, None]), logp, 0.0).sum(-1)  # [k·2B]
    b = rows // 2
    return [(logits[j * rows : j * rows + b, 0], rest[j * rows : j * rows + b] - rest[j * rows + b : (j + 1) * rows])
            for j in range(k)]  # fmt: skip


def answer_tails(model, batch: dict, betas=(1.0, -1.0), method=None, extra_hooks=(), steer=None,
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """For each β, the last-prompt-position logits [B, vocab] and the answers' tail [B]
    (`objective.score_diff`): Σ_{t≥2} log σ(f̃(x ⊕ c_<t))_{c_t} - Σ_{u≥2} log σ(f̃(x ⊕ w_<u))_{w_u}.

    One forward of the 2B teacher-forced sequences (`answer_sequences`) repeated len(betas)
    times, copy k steered with betas[k] by `method` (None: the clean model). Position-tied
    methods act on the prompt positions only (`Method.track_positions`: answer tokens lie past
    the trained prompt); DynScalar acts on the answer tokens too. `steer(beta)`, given β per
    row [len(betas)·2B], returns the steering hooks instead of `method.hooks` (fused
    training: K settings' hooks over blocks of rows; `method` still reads the positions).
    The same on a model's plain Hugging Face form: `plain.plain_answer_tails`.
    """
    k = len(betas)
    ids, mask, index, read, position_ids, answers, lengths = teacher_forced(batch, k)

    def keep_read(resid: torch.Tensor, hook) -> torch.Tensor:
        return resid[index, read]

    hooks, positions = [*extra_hooks, (hook("unembed_in"), keep_read)], nullcontext(lambda ids: None)
    if method is not None:
        method.check_length(batch["input_ids"].shape[1])
        steering = steering_hooks(method, betas, answers.shape[0], ids.device, steer)
        hooks, positions = [*steering, *hooks], method.track_positions()
    with positions as see, model.hooks(fwd_hooks=hooks):
        see(position_ids)
        logits = model(ids, attention_mask=mask)  # [k·2B, A, vocab]
    return tails_of(logits, answers, lengths, k)


def steering_hooks(method, betas, rows: int, device, steer=None) -> list:
    """The hooks steering a forward of len(betas) copies of `rows` rows, copy k with betas[k]:
    `method.hooks`, or `steer(beta)` (fused training), given β per row [len(betas)·rows]."""
    beta = torch.tensor(betas, device=device).repeat_interleave(rows)
    return steer(beta) if steer is not None else method.hooks(beta)
