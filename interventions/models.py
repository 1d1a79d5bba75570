"""Load a frozen model: the embedded toy checkpoint, a Hugging Face name, or a local folder.

`load_model` always returns a `TransformerBridge` in eval mode whose parameters never
require gradients, together with its tokenizer. Interventions only ever add hooks to it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import huggingface_hub
import torch
import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
from safetensors.torch import load_file
from transformer_lens.model_bridge import TransformerBridge
from transformers.activations import NewGELUActivation

from interventions.errors import ModelError
from interventions.hub import download_hint, hub_problem, is_hub_name, offline
from interventions.toyworld import CHECKPOINT, is_native_model
from interventions.tokenizer import generic_tokenizer, saved_generic_tokenizer
from interventions.toyworld.tokenizer import load_tokenizer

TOY_NAME = "toy"
TOY_CHECKPOINT = CHECKPOINT

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; allowed: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def freeze(model: TransformerBridge) -> TransformerBridge:
    """Eval mode and no parameter requires grad: the model is never trained here."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_toy(
    checkpoint: str | Path = TOY_CHECKPOINT, device: str = "cpu", dtype: torch.dtype | None = None
) -> TransformerBridge:
    """The toy world's model from a checkpoint folder written by `toyworld.train`."""
    checkpoint = Path(checkpoint)
    weights = checkpoint / "model.safetensors"
    if not weights.exists():
        raise ModelError(
            f"no toy checkpoint at {checkpoint}; "
            "train one with: python -m interventions toyworld train --out DIR"
        )
    config = json.loads((checkpoint / "config.json").read_text())
    tokenizer = load_tokenizer(checkpoint)
    model = TransformerBridge.boot_native(
        dict(config, init_weights=False), tokenizer=tokenizer, model_name=TOY_NAME
    )
    model.load_state_dict(load_file(str(weights)))
    if str(device) != "cpu" or (dtype not in (None, torch.float32)):
        model = model.to(device=device, dtype=dtype or torch.float32)
    return model


def _load_hf(name_or_path: str, device: str, dtype: torch.dtype) -> TransformerBridge:
    local = Path(name_or_path).expanduser()
    if name_or_path.startswith(("/", "./", "../", "~")) and not local.exists():
        raise ModelError(f"model folder {local} does not exist")
    if local.is_dir() and not (local / "config.json").exists():
        raise ModelError(
            f"{local} is a folder but has no config.json; pass a folder saved with "
            "save_pretrained (config.json, weights, tokenizer files)"
        )
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if local.is_dir() and not any((local / f).exists() for f in tokenizer_files):
        raise ModelError(
            f"{local} has no tokenizer files ({', '.join(tokenizer_files)}); save the tokenizer "
            "into the same folder with tokenizer.save_pretrained(folder)"
        )
    if not local.is_dir() and is_hub_name(name_or_path):
        problem = hub_problem(name_or_path)
        if problem is not None:
            raise ModelError(f"could not load {name_or_path!r}: {problem}; {download_hint(name_or_path)}")
        huggingface_hub.constants.HF_HUB_OFFLINE = offline()  # read at import; hub_problem may have just set it
    try:
        return TransformerBridge.boot_transformers(
            str(local) if local.is_dir() else name_or_path, device=device, dtype=dtype,
            **({"tokenizer": generic_tokenizer(local)} if saved_generic_tokenizer(local) else {}),
        )
    except (OSError, ValueError) as error:  # hub errors are OSErrors; bad repo ids ValueErrors
        if local.is_dir():
            raise ModelError(f"could not load the model in {local}: {error}") from error
        raise ModelError(
            f"could not load {name_or_path!r} from the Hugging Face hub (no network, or no such model); "
            f"{download_hint(name_or_path)}"
        ) from error


def fuse_gelu(model: TransformerBridge) -> int:
    """Swap each Hugging Face `NewGELUActivation` ("gelu_new", GPT-2's MLP activation) inside
    `model` for PyTorch's fused `nn.GELU(approximate="tanh")`; returns how many were swapped.

    Why: HF computes gelu_new as eight elementwise ops, each a pass over the MLP's
    [batch, positions, d_mlp] activations, and autograd keeps a backward node for each; the
    fused kernel does one pass each way. It is the same function (equal to 1e-15 in float64,
    equally accurate in float32), so only rounding changes: about 2e-6 in the logits of a
    random GPT-2-small. It cut a GPT-2-small-shaped training step on the CPU by 10%
    (docs/benchmarks.md). Hooks are unaffected: the MLP's hook points sit on the
    projections around the activation, not on it.
    """
    swapped = 0
    for parent in getattr(model, "original_model", model).modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                setattr(parent, name, torch.nn.GELU(approximate="tanh"))
                swapped += 1
    return swapped


def load_model(
    name_or_path: str = TOY_NAME,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    fused_gelu: bool = True,
):
    """Load a frozen model and its tokenizer.

    Args:
        name_or_path: "toy" (the committed toy-world checkpoint), a Hugging Face model
            name such as "gpt2" (needs network), a local folder saved with
            `save_pretrained` (offline), or a toy-format folder written by
            `python -m interventions toyworld train --out DIR`.
        device: torch device string.
        dtype: "float32" (default), "float16", "bfloat16" or a torch.dtype.
        fused_gelu: compute a Hugging Face model's "gelu_new" activation with PyTorch's
            fused kernel (`fuse_gelu`: the same function, faster; logits differ from HF's at
            rounding level). False keeps HF's module. Other activations, and the toy
            model, are never touched.

    Returns:
        (model, tokenizer): a frozen `TransformerBridge` (eval mode, no parameter
        requires grad) and its Hugging Face tokenizer.
    """
    torch_dtype = _resolve_dtype(dtype)
    if name_or_path == TOY_NAME:
        model = load_toy(device=device, dtype=torch_dtype)
    elif is_native_model(name_or_path):
        model = load_toy(name_or_path, device=device, dtype=torch_dtype)
    else:
        model = _load_hf(str(name_or_path), device, torch_dtype)
        if fused_gelu:
            fuse_gelu(model)
    if model.tokenizer is None:
        raise ModelError(f"{name_or_path!r} came without a tokenizer; save one next to the model")
    return freeze(model), model.tokenizer


def model_device(model) -> torch.device:
    """The device the (frozen) model's weights are on."""
    return next(model.parameters()).device


def model_fingerprint(model: TransformerBridge) -> str:
    """A short hash of the model's configuration and every weight, to match exports to models."""
    # Cached per weight state: an in-place change (load_state_dict, an optimizer step)
    # bumps a tensor's version counter and invalidates the cache.
    state = tuple((t.data_ptr(), t._version) for t in model.state_dict().values())
    cached = getattr(model, "_interventions_fingerprint", None)
    if cached is not None and cached[0] == state:
        return cached[1]
    h = hashlib.sha256()
    cfg = model.cfg
    for key in ("d_model", "n_layers", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx"):
        h.update(f"{key}={getattr(cfg, key, None)};".encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest = h.hexdigest()[:16]
    model._interventions_fingerprint = (state, digest)
    return digest


def tokenizer_identity(tokenizer) -> dict:
    """Name, vocabulary size and a hash of the vocabulary, to detect a different tokenizer."""
    vocab = tokenizer.get_vocab()
    h = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]
    return {
        "name": os.path.basename(str(getattr(tokenizer, "name_or_path", ""))) or type(tokenizer).__name__,
        "class": type(tokenizer).__name__,
        "vocab_size": len(vocab),
        "vocab_hash": h,
    }
