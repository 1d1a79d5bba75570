"""An export applied to a plain Hugging Face model, with PyTorch hooks (no TransformerLens).

    >>> from transformers import AutoModelForCausalLM
    >>> hf_model = AutoModelForCausalLM.from_pretrained(folder)
    >>> iv = load_intervention("outputs/latest")
    >>> with interventions.hf.apply(hf_model, iv, beta=-1.0):
    ...     out = hf_model.generate(**tokenizer(prompts, return_tensors="pt", padding=True), max_new_tokens=10)

Each site hooks the Hugging Face module whose output TransformerLens's hook point reads:
`attnOut` the attention module's output (after the post-attention norm where the model
has one: Gemma 2 and 3, OLMo 2), `mlpOut` the MLP's (or the mixture of experts' block; after
the post-feedforward norm likewise), `residPost` the decoder layer's, `z` (and ActivScalar's
or DynScalar's `o`, which act on z) the input of the attention's output projection, seen as
[batch, pos, heads, d_head], and `v` the value projection's output [batch, pos, kv heads,
d_head] (refused where q, k and v come from one fused projection: GPT-2, GPT-NeoX, Phi-3).
SteerVec's `o` adds to the attention output. The method's own hook functions run on those
tensors, so the arithmetic is the bridge's.

Positions follow docs/method.md §7, counted from each row's first real token: a
pre-forward hook on the model reads each call's attention mask (or, without one, the
key-value cache's length), so `hf_model.generate` with its cache and a left-padded batch
gets the same positions as the bridge's generation.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from interventions.errors import ExportError, LengthError
from interventions.export import Intervention, probe_ids, probe_matches
from interventions.forward import positions_of
from interventions.generation import Completion, decode, prepared
from interventions.generation import generate as generate_completions
from interventions.sites import parse_hook


@dataclass(frozen=True)
class Layout:
    """Where an architecture's modules are: the decoder layers (a dotted path from the model),
    and inside each layer the attention, the MLP (or mixture of experts) and the attention's
    output projection. `attn_out` / `mlp_out`: the modules whose output TransformerLens's
    hook_attn_out / hook_mlp_out read where that is not the attention / MLP itself (the post
    norms of Gemma 2, Gemma 3 and OLMo 2). `v_proj`: the value projection, None where q, k
    and v come from one fused projection."""

    layers: str
    attention: str
    mlp: str
    out_proj: str
    v_proj: str | None = None
    attn_out: str | None = None
    mlp_out: str | None = None


_DECODER = Layout("model.layers", "self_attn", "mlp", "self_attn.o_proj", "self_attn.v_proj")
_POST_NORMED = Layout("model.layers", "self_attn", "mlp", "self_attn.o_proj", "self_attn.v_proj",
                      "post_attention_layernorm", "post_feedforward_layernorm")  # fmt: skip
# By Hugging Face `config.model_type`; each checked against the bridge in tests/test_architectures.py.
LAYOUTS = {
    "gpt2": Layout("transformer.h", "attn", "mlp", "attn.c_proj"),
    "gptj": Layout("transformer.h", "attn", "mlp", "attn.out_proj", "attn.v_proj"),
    "gpt_neox": Layout("gpt_neox.layers", "attention", "mlp", "attention.dense"),
    "llama": _DECODER, "mistral": _DECODER, "qwen2": _DECODER, "qwen3": _DECODER, "mixtral": _DECODER,
    "qwen2_moe": _DECODER, "olmoe": _DECODER,
    "phi3": Layout("model.layers", "self_attn", "mlp", "self_attn.o_proj"),
    "gemma2": _POST_NORMED, "gemma3_text": _POST_NORMED, "olmo2": _POST_NORMED,
}  # fmt: skip
FUSED_QKV = {"gpt2": "c_attn", "gpt_neox": "query_key_value", "phi3": "qkv_proj"}


def layout_of(hf_model) -> Layout:
    """The module layout of `hf_model`'s architecture, or one ExportError line."""
    kind = getattr(getattr(hf_model, "config", None), "model_type", type(hf_model).__name__)
    if kind not in LAYOUTS:
        raise ExportError(f"interventions.hf does not know the {kind!r} architecture yet; supported: "
                          f"{', '.join(LAYOUTS)} (apply the export through load_model's TransformerBridge instead)")  # fmt: skip
    return LAYOUTS[kind]


def _site_module(hf_model, layout: Layout, block, short: str):
    """(the module, "output" | "values" | "input") a TransformerLens hook point maps to."""
    if short == "attn_out":
        return block.get_submodule(layout.attn_out or layout.attention), "output"
    if short == "mlp_out":
        return block.get_submodule(layout.mlp_out or layout.mlp), "output"
    if short == "resid_post":
        return block, "output"
    if short == "z":
        return block.get_submodule(layout.out_proj), "input"
    if short == "v" and layout.v_proj is not None:
        return block.get_submodule(layout.v_proj), "values"
    if short != "v":
        raise ExportError(f"interventions.hf places no hook at TransformerLens's {short!r} (it maps attn_out, "
                          "mlp_out, resid_post, z and v)")  # fmt: skip
    kind = hf_model.config.model_type
    fused = FUSED_QKV.get(kind, "its attention module")
    raise ExportError(f"site v on {kind!r}: its values come out of the fused projection {fused} together with the "
                      "queries and keys, which interventions.hf does not split; use z, or the bridge")  # fmt: skip


def check_sites(hf_model, hook_names) -> None:
    """ExportError (one line) if some TransformerLens hook name has no module on `hf_model`
    (an architecture not in LAYOUTS, a hook outside `sites.HOOKS`' block sites, `v` on a
    fused projection)."""
    layout = layout_of(hf_model)
    blocks = hf_model.get_submodule(layout.layers)
    for name in hook_names:
        parsed = parse_hook(name)
        if parsed is None or parsed[1] is None:
            raise ExportError(f"interventions.hf places no hook at {name!r}")
        _site_module(hf_model, layout, blocks[parsed[1]], parsed[0])


def check_same_model(hf_model, iv: Intervention) -> None:
    """Refuse a model whose clean logits on the export's probe differ from the model it was
    trained on (the weights' fingerprint of the bridge cannot be read off a plain model)."""
    if "probe" not in iv.meta["model"]:
        raise ExportError(f"{iv.path} was written before exports recorded a probe of their model's logits, so "
                          "interventions.hf cannot check the model; pass check_model=False if it is the same model")  # fmt: skip
    device = next(hf_model.parameters()).device
    with torch.no_grad():
        config = iv.meta["model"]["config"]
        logits = hf_model(probe_ids(config["d_vocab"], config.get("n_ctx")).to(device)).logits[0, -1]
    if not probe_matches(logits, iv.meta["model"]["probe"]):
        raise ExportError(f"{iv.path} was trained on model {iv.meta['model']['name']!r}, and this model's logits differ "
                          "from it on the export's probe; load the same weights, or pass check_model=False")  # fmt: skip


def w_o(hf_model, layout: Layout, n_heads: int) -> torch.Tensor:
    """[n_layers, n_heads, d_head, d_model] the attention output projections, as the bridge's W_O."""
    out = []
    for block in hf_model.get_submodule(layout.layers):
        proj = block.get_submodule(layout.out_proj)
        weight = proj.weight if hasattr(proj, "nf") else proj.weight.T  # GPT-2's Conv1D stores [in, out]
        out.append(weight.detach().reshape(n_heads, -1, weight.shape[-1]))
    return torch.stack(out)


def _output_hook(fn):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook


def _v_hook(fn, n_heads: int):
    def hook(module, args, output):
        return fn(output.view(*output.shape[:-1], n_heads, -1)).reshape(output.shape)

    return hook


def _z_hook(fn, n_heads: int):
    def hook(module, args):
        x = args[0]
        return (fn(x.view(*x.shape[:-1], n_heads, -1)).reshape(x.shape), *args[1:])

    return hook


def _positions_hook(method, see, trained: int):
    """A pre-forward hook on the model: each call's token positions from its attention mask
    (or the cache's length), handed to the position-tied `method` (`see`). The first call's
    prompts must have the trained length (later calls may be the same sequence grown by
    generated tokens); a cached call after it holds only tokens past the prompt."""
    first = [True]

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        steps, mask = ids.shape[1], kwargs.get("attention_mask")
        cache = kwargs.get("past_key_values", kwargs.get("cache"))  # transformers 5 names it `cache`
        past = cache.get_seq_length() if cache is not None else 0
        if past > 0 and not first[0]:
            see(past=past)
            return
        if mask is not None and mask.dim() == 2:
            positions = positions_of(mask.long())[:, -steps:]
        else:
            positions = (past + torch.arange(steps, device=ids.device))[None]
        if past == 0 and first[0]:
            first[0] = False
            lengths = positions.max(1).values + 1
            if bool((lengths != trained).any()):
                got = int(lengths[lengths != trained][0])
                raise LengthError(f"this {method.name} intervention is tied to {trained}-token prompts but got a "
                                  f"{got}-token prompt; use prompts of the trained template", trained=trained, got=got)  # fmt: skip
        see(positions)

    return hook


@contextmanager
def placed(hf_model, hooks, n_heads: int):
    """(TransformerLens hook name, fn) pairs on `hf_model`'s modules for the duration of the
    block, each fn given the tensor its hook point holds on the bridge (`_site_module`; z and v
    seen as [batch, pos, heads, d_head]). Removed on exit, also when the block raises."""
    layout = layout_of(hf_model)
    n_kv_heads = getattr(hf_model.config, "num_key_value_heads", None) or n_heads
    blocks = hf_model.get_submodule(layout.layers)
    handles = []
    try:
        for name, fn in hooks:
            short, layer = parse_hook(name)
            module, kind = _site_module(hf_model, layout, blocks[layer], short)
            if kind == "output":
                handles.append(module.register_forward_hook(_output_hook(fn)))
            elif kind == "values":
                handles.append(module.register_forward_hook(_v_hook(fn, n_kv_heads)))
            else:
                handles.append(module.register_forward_pre_hook(_z_hook(fn, n_heads)))
        yield hf_model
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def attached(hf_model, method, beta: float | torch.Tensor = 1.0, positions_beyond: str = "none",
             decoding: bool = False):  # fmt: skip
    """`method`'s hooks on `hf_model`'s modules for the duration of the block (no checks:
    `apply` checks the model first), with the positions of each call handed to a
    position-tied method. Hooks are removed on exit, also when the block raises.
    `decoding`: the method's `decoding_hooks` (a decoding loop's; no gradient reaches its parameters)."""
    layout = layout_of(hf_model)
    device = next(hf_model.parameters()).device
    if any(t.device != device for t in (*method.parameters(), *method.buffers())):  # no walk per call
        method = method.to(device)
    n_heads = method.cfg_dims["n_heads"]
    if "o" in method.grid.sites:
        method.W_O = w_o(hf_model, layout, n_heads)
    with ExitStack() as stack:
        see = stack.enter_context(method.track_positions(positions_beyond))
        if method.position_tied:  # the positions hook only where a method reads positions
            handle = hf_model.register_forward_pre_hook(_positions_hook(method, see, method.grid.seq_len),
                                                        with_kwargs=True)  # fmt: skip
            stack.callback(handle.remove)
        hooks = method.decoding_hooks(beta) if decoding else method.hooks(beta)
        stack.enter_context(placed(hf_model, hooks, n_heads))
        yield hf_model


@contextmanager
def apply(hf_model, iv: Intervention, beta: float | torch.Tensor = 1.0, check_model: bool = True,
          positions_beyond: str = "none"):  # fmt: skip
    """Attach `iv`'s hooks to a plain Hugging Face causal LM for the duration of the block.

    Args:
        hf_model: e.g. `AutoModelForCausalLM.from_pretrained(folder)` of a supported
            architecture (`LAYOUTS`).
        iv: a loaded export (`load_intervention`).
        beta: the steering strength, a float or a tensor [batch].
        check_model: refuse a model whose logits on the export's probe differ.
        positions_beyond: "none" or "last" (docs/method.md §7), for position-tied methods.

    Hooks are removed on exit, also when the block raises. Works inside `hf_model.generate`
    (with its key-value cache and left padding). A position-tied method checks the length of
    the first prompts the model sees in the block.
    """
    layout_of(hf_model)
    if check_model:
        check_same_model(hf_model, iv)
    with attached(hf_model, iv.method, beta, positions_beyond):
        yield hf_model


def _forward_names(hf_model) -> set[str]:
    return set(inspect.signature(hf_model.forward).parameters)


@torch.no_grad()
def cached_tokens(
    hf_model, method, ids: list[list[int]], betas: tuple[float, ...], max_new_tokens: int, *, do_sample: bool = False,
    temperature: float = 1.0, top_k: int | None = None, generators=None, positions_beyond: str = "none",
    use_cache: bool = True,
) -> torch.Tensor:  # fmt: skip
    """`generation.generate_tokens` on a plain Hugging Face model, with its key-value cache:
    new tokens [len(betas), B, max_new_tokens] from one left-padded batch of len(betas) × B
    rows; each step after the first feeds the new token alone (`use_cache` False: the whole
    sequence, for the comparison the tests make). `method` None: the unhooked model."""
    input_ids, mask, beta, choose = prepared(ids, betas, 0, next(hf_model.parameters()).device,
                                             (do_sample, temperature, top_k, generators))  # fmt: skip
    names = _forward_names(hf_model)
    cache_name = "cache" if "cache" in names else "past_key_values"  # transformers 5 renamed it
    keep = {"logits_to_keep": 1} if "logits_to_keep" in names else {}

    def step(input_ids: torch.Tensor, mask: torch.Tensor, cache):
        fed = input_ids if cache is None else input_ids[:, -1:]
        positions = positions_of(mask).clamp_min(0)[:, -fed.shape[1] :]
        out = hf_model(input_ids=fed, attention_mask=mask, position_ids=positions, use_cache=use_cache,
                       **{cache_name: cache}, **keep)  # fmt: skip
        return out.logits[:, -1], out.past_key_values if use_cache else None

    with attached(hf_model, method, beta, positions_beyond, decoding=True) if method is not None else nullcontext():
        tokens = decode(step, input_ids, mask, max_new_tokens, choose)
    return tokens.view(len(betas), len(ids), max_new_tokens)


def generate(hf_model, iv: Intervention, prompts: list[str], tokenizer, betas=(-1.0, 0.0, 1.0),
             max_new_tokens: int = 20, check_model: bool = True, use_cache: bool = True,
             **options) -> list[Completion]:  # fmt: skip
    """Steered completions on a plain Hugging Face model with its key-value cache: what
    `generation.generate` does through the bridge, with the same positions, batching,
    sampling streams and refusals (`options`: do_sample, temperature, top_k, seed,
    positions_beyond, batch_size, stop_at_eos). Prompts are tokenized by `tokenizer` as it
    does by default (a bridge may add a BOS token it does not)."""
    layout_of(hf_model)
    if check_model:
        check_same_model(hf_model, iv)
    return generate_completions(hf_model, iv.method, prompts, betas, max_new_tokens, tokenizer=tokenizer,
                                decode=functools.partial(cached_tokens, use_cache=use_cache), **options)  # fmt: skip
