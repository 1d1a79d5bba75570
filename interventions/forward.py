"""The frozen model's forward, read only where logits are needed: each prompt's last token.

A hook on `unembed.hook_in` keeps only the last real position of every row, so the
unembedding runs on [batch, 1, d_model] instead of [batch, pos, d_model] (for a big
vocabulary the largest matmul of the model). The hook sits after the final LayerNorm
because Hugging Face models (GPT-2) reshape the final norm's output to the full prompt
length; the norm itself is elementwise and cheap.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch


def last_position_logits(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    last_index: torch.Tensor,
    fwd_hooks: list | None = None,
) -> torch.Tensor:
    """Logits at `last_index` of each row.

    Args:
        model: a TransformerBridge.
        input_ids: [batch, pos] token ids (padded).
        attention_mask: [batch, pos] 1 for real tokens, or None (no padding).
        last_index: [batch] position of each row's last real token.
        fwd_hooks: extra (hook_name, fn) pairs active during this forward only.

    Returns:
        [batch, d_vocab] logits.
    """
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)

    def keep_last(resid: torch.Tensor, hook) -> torch.Tensor:
        return resid[rows, last_index].unsqueeze(1)

    hooks = [*(fwd_hooks or []), ("unembed.hook_in", keep_last)]
    kwargs = {}
    if attention_mask is not None and not bool(attention_mask.all()):
        kwargs["attention_mask"] = attention_mask
    with ExitStack() as stack:
        stack.enter_context(model.hooks(fwd_hooks=hooks))
        logits = model(input_ids, **kwargs)
    return logits[:, 0]


# Architectures whose blocks can be called on a residual alone: positions enter with the
# embeddings (no rotary position_embeddings argument) and, without a mask, attention is
# causal. Both are checked against the full forward in tests/test_prefix.py.
PREFIX_SKIP_ADAPTERS = ("NativeArchitectureAdapter", "GPT2ArchitectureAdapter")


def supports_prefix_skip(model) -> bool:
    """Whether blocks can be run from a cached residual (unpadded prompts): the TL-native
    architecture and Hugging Face GPT-2."""
    return type(getattr(model, "adapter", None)).__name__ in PREFIX_SKIP_ADAPTERS


def last_position_logits_from(
    model,
    resid: torch.Tensor,
    start_layer: int,
    last_index: torch.Tensor,
    fwd_hooks: list | None = None,
) -> torch.Tensor:
    """Logits at `last_index` running only blocks `start_layer`..end on a cached residual.

    Args:
        resid: [batch, pos, d_model] the clean residual stream entering block `start_layer`
            (unchanged by any intervention on later layers, so it is computed once per dataset).
    Returns:
        [batch, d_vocab], equal to `last_position_logits` of the full prompts.
    """
    rows = torch.arange(resid.shape[0], device=resid.device)
    with model.hooks(fwd_hooks=list(fwd_hooks or [])):
        h = resid.to(next(model.parameters()).dtype)  # the cache is float32; the model may be half
        for block in model.blocks[start_layer:]:
            out = block(h)
            h = out[0] if isinstance(out, tuple) else out
        h = model.ln_final(h[rows, last_index].unsqueeze(1))
        return model.unembed(h)[:, 0]
