"""The Hugging Face form of a TransformerLens-native model: the same weights in a
`GPT2LMHeadModel`, so the toy world's model generates with Hugging Face's key-value cache
(`hf.generate`; `evaluate.py generate=<run> backend=hf`) and takes exports through
`hf.apply` like any plain Hugging Face model.

The native model the toy world trains (`toyworld.train.MODEL_CONFIG`) is GPT-2's
architecture: pre-LayerNorm blocks, learned absolute positions, GELU (exact, or the tanh
form of `act_fn="gelu_new"`), attention
scaled by 1/√d_head, biases on every projection and none on the unembedding. The form
computes the same function (logits to float rounding; tests/test_generation.py).
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from interventions.errors import ModelError
from interventions.toyworld import hf_form_problem

# TransformerLens's activation names -> GPT-2's (both exact GELU, or both PyTorch's tanh form)
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_pytorch_tanh"}


def _conv(weight: torch.Tensor) -> torch.Tensor:
    """An nn.Linear weight [out, in] as GPT-2's Conv1D weight [in, out]."""
    return weight.t().contiguous()


def hf_form(model) -> GPT2LMHeadModel:
    """The frozen GPT2LMHeadModel (eval mode, on the model's device and dtype) with the
    weights of a native TransformerBridge `model`; ModelError for a native model of
    another architecture (RMSNorm, rotary positions, a gated MLP, ...)."""
    cfg = model.cfg
    problem = hf_form_problem({key: getattr(cfg, key, None) for key in
                               ("normalization_type", "positional_embedding_type", "act_fn", "gated_mlp",
                                "attn_only", "n_heads", "n_key_value_heads", "final_rms")})  # fmt: skip
    weights = model.state_dict()
    if problem is None and bool(weights["unembed.bias"].any()):
        problem = "a bias on the unembedding"
    if problem is not None:
        raise ModelError(f"this TransformerLens-native model has no Hugging Face form ({problem}); use backend=bridge")
    tokenizer = model.tokenizer
    special = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad")}
    config = GPT2Config(
        vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
        n_inner=cfg.d_mlp, activation_function=ACTIVATIONS[cfg.act_fn], layer_norm_epsilon=cfg.eps, tie_word_embeddings=False,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **{k: v for k, v in special.items() if v is not None},
    )  # fmt: skip
    state = {"transformer.wte.weight": weights["embed.weight"], "transformer.wpe.weight": weights["pos_embed.weight"],
             "transformer.ln_f.weight": weights["ln_final.weight"], "transformer.ln_f.bias": weights["ln_final.bias"],
             "lm_head.weight": weights["unembed.weight"]}  # fmt: skip
    for layer in range(cfg.n_layers):
        ours, theirs = f"blocks.{layer}.", f"transformer.h.{layer}."
        qkv = [weights[f"{ours}attn.{x}.weight"] for x in "qkv"]
        state.update({
            f"{theirs}ln_1.weight": weights[f"{ours}ln1.weight"], f"{theirs}ln_1.bias": weights[f"{ours}ln1.bias"],
            f"{theirs}attn.c_attn.weight": torch.cat([_conv(w) for w in qkv], dim=1),
            f"{theirs}attn.c_attn.bias": torch.cat([weights[f"{ours}attn.{x}.bias"] for x in "qkv"]),
            f"{theirs}attn.c_proj.weight": _conv(weights[f"{ours}attn.o.weight"]),
            f"{theirs}attn.c_proj.bias": weights[f"{ours}attn.o.bias"],
            f"{theirs}ln_2.weight": weights[f"{ours}ln2.weight"], f"{theirs}ln_2.bias": weights[f"{ours}ln2.bias"],
            f"{theirs}mlp.c_fc.weight": _conv(weights[f"{ours}mlp.in.weight"]),
            f"{theirs}mlp.c_fc.bias": weights[f"{ours}mlp.in.bias"],
            f"{theirs}mlp.c_proj.weight": _conv(weights[f"{ours}mlp.out.weight"]),
            f"{theirs}mlp.c_proj.bias": weights[f"{ours}mlp.out.bias"],
        })  # fmt: skip
    reference = weights["embed.weight"]
    with torch.device("meta"):
        form = GPT2LMHeadModel(config)
    form.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
    form = form.to(device=reference.device, dtype=reference.dtype).eval()
    for p in form.parameters():
        p.requires_grad_(False)
    return form
