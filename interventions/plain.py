"""Training and evaluation through the frozen model's plain Hugging Face form.

A TransformerBridge routes every module call through its hook points, and on the toy model
its forward + backward costs about 1.4× the same step on a plain `GPT2LMHeadModel` of the
same weights with the same hooks (docs/benchmarks.md, "The floor"). Where the frozen model
has that form (a TransformerLens-native model of GPT-2's architecture: `toyworld.hf_form`)
and a step can run on it, the training module runs its steered forward there, with the
method's own hook functions attached by `interventions.hf` (the arithmetic is the bridge's;
the logits agree to float rounding, so a run's numbers do too, not bit for bit).

What stays on the bridge: steps that need its hook points or its block-level shortcuts —
the prefix skip (`prefix_layer` > 0), `skip_unread`, extra hooks (the overflow probe at
each epoch's end) — and hooks the plain form does not map (`hf.check_sites`: e.g. `v` on
GPT-2's fused projection). Answers of several tokens run on the plain form too
(`plain_answer_tails`; the bridge's `answer_tails` has no block-level shortcut to lose). The
clean log-probs and answer tails, observable propagation and the analyses always use the
bridge.
"""

from __future__ import annotations

import torch

from interventions.errors import ExportError, ModelError
from interventions.forward import answer_tails, steering_hooks, tails_of, teacher_forced
from interventions.hf import check_sites, placed
from interventions.models import model_device
from interventions.toyworld.hf_form import hf_form


def plain_form(model, method, forward: str = "auto"):
    """The plain Hugging Face model to train `method` through, or None for the bridge:
    `forward="bridge"`, a model without a plain form (hub models, native models of other
    architectures), or a method whose hooks the form cannot place."""
    native = type(getattr(model, "adapter", None)).__name__ == "NativeArchitectureAdapter"
    if forward == "bridge" or not native or model_device(model).type == "meta":
        return None
    try:
        plain = hf_form(model)
        check_sites(plain, [name for name, _ in method.hooks(1.0)])
    except (ModelError, ExportError):
        return None
    return plain


def plain_usable(prefix_layer: int, skip_unread: bool, extra_hooks) -> bool:
    """Whether a step's last-position logits can come from the plain form (module docstring)."""
    return prefix_layer == 0 and not skip_unread and not extra_hooks


def logits_at(plain, hooks: list, ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, read: torch.Tensor,
              n_heads: int) -> torch.Tensor:  # fmt: skip
    """The plain form's logits [rows, n, vocab] at positions `read` [rows, n] of each row
    (`index` [rows, 1]: the rows' numbers) of `ids` [rows, W] with `mask` [rows, W], `hooks`
    (TransformerLens names) placed by `hf.placed`: the unembedding runs on those positions only,
    as on the bridge's paths. Positions are counted from each row's first real token, as the
    bridge does."""

    def keep_read(module, args):
        return (args[0][index, read],)

    kwargs = {}
    if not bool(mask.all()):
        kwargs = {"attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp_min(0)}
    handle = plain.get_output_embeddings().register_forward_pre_hook(keep_read)
    try:
        with placed(plain, hooks, n_heads):
            return plain(input_ids=ids, use_cache=False, **kwargs).logits
    finally:
        handle.remove()


def plain_logits(plain, hooks: list, batch: dict, reps: int, n_heads: int) -> torch.Tensor:
    """`forward.repeated_batch_logits` on the plain form: last-position logits [reps · B, vocab]
    (float32) of the batch repeated `reps` times (`logits_at`). A position-tied hook sees the
    positions by index, as on the bridge's training path.

    Args:
        plain: the plain form (`plain_form`).
        batch: input_ids [B, pos], attention_mask [B, pos], last_index [B].
    """
    ids, mask = batch["input_ids"].repeat(reps, 1), batch["attention_mask"].repeat(reps, 1)
    index, last = torch.arange(ids.shape[0], device=ids.device)[:, None], batch["last_index"].repeat(reps)[:, None]
    return logits_at(plain, hooks, ids, mask, index, last, n_heads)[:, 0].float()


def plain_steered_logits(plain, method, batch: dict, betas=(1.0, -1.0)) -> list[torch.Tensor]:
    """`forward.steered_logits` on the plain form: last-position logits [batch, vocab]
    (float32) for each β from one forward of the batch repeated len(betas) times."""
    k, b = len(betas), batch["input_ids"].shape[0]
    method.check_length(batch["input_ids"].shape[1])
    hooks = steering_hooks(method, betas, b, batch["input_ids"].device)
    return list(plain_logits(plain, hooks, batch, k, method.cfg_dims["n_heads"]).split(b))


def plain_answer_tails(plain, method, batch: dict, betas=(1.0, -1.0), steer=None,
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """`forward.answer_tails` on the plain form: for each β, the last-prompt-position logits
    [B, vocab] and the answers' tail [B], from one forward of the teacher-forced sequences
    repeated len(betas) times; position-tied hooks see each token's position, as there.
    `steer(beta)` replaces `method.hooks` (fused training)."""
    k = len(betas)
    ids, mask, index, read, position_ids, answers, lengths = teacher_forced(batch, k)
    method.check_length(batch["input_ids"].shape[1])
    hooks = steering_hooks(method, betas, answers.shape[0], ids.device, steer)
    with method.track_positions() as see:
        see(position_ids)
        logits = logits_at(plain, hooks, ids, mask, index, read, method.cfg_dims["n_heads"])  # [k·2B, A, vocab]
    return tails_of(logits, answers, lengths, k)


def steered_answer_tails(model, plain, method, batch: dict, betas=(1.0, -1.0), steer=None,
                         ) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """`plain_answer_tails` where the model has a plain form (`plain` not None), else the
    bridge's `forward.answer_tails`: the same pairs, to float rounding."""
    if plain is None:
        return answer_tails(model, batch, betas, method, steer=steer)
    return plain_answer_tails(plain, method, batch, betas, steer=steer)
