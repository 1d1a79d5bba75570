"""The architecture matrix: tiny random-weight Hugging Face models of 14 architectures, saved
to a folder and loaded with `load_model(folder)`. For each: every site's hook fires with its
documented shape; ActivScalar, SteerVec and DynScalar each train two steps and evaluate;
the export applies through the bridge and through the plain Hugging Face model
(`interventions.hf`) to the same logits, and steered greedy generation gives the same tokens
through both (the plain model inside its own `generate`, with its key-value cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import hub_offline

from interventions import hf
from interventions.errors import ConfigError
from interventions.export import load_intervention, save_intervention
from interventions.generation import generate_tokens
from interventions.metrics import parameter_metrics
from interventions.models import load_model
from interventions.objective import Objective
from interventions.sites import RESIDUAL_SITES, SITES, build_grid, hook_name
from interventions.spec import ObjectiveSpec, RunSpec, TrainedInterventionSpec
from interventions.tasks import load_task
from interventions.tasks.datamodule import TaskDataModule
from interventions.tasks.tokenize import added_tokens, own_token_count, prompt_token_ids
from interventions.tokenizer import model_tokenizer
from interventions.training.fused import train_fused
from interventions.training.module import InterventionModule

D, LAYERS, HEADS, KV, D_HEAD, FF = 32, 2, 4, 2, 8, 64


def _llama_like(vocab: int, gqa: bool = True, head_dim: bool = True, **extra) -> dict:
    sizes = dict(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FF,
                 num_key_value_heads=KV if gqa else HEADS, vocab_size=vocab, max_position_embeddings=64)  # fmt: skip
    return {**sizes, **({"head_dim": D_HEAD} if head_dim else {}), **extra}


# architecture -> (config class, model class, the config's sizes for a vocabulary of `v` tokens)
ARCHITECTURES = {
    "gpt2": (T.GPT2Config, T.GPT2LMHeadModel, lambda v: dict(n_embd=D, n_layer=LAYERS, n_head=HEADS, n_inner=FF,
                                                             vocab_size=v, n_positions=64)),
    "gptj": (T.GPTJConfig, T.GPTJForCausalLM, lambda v: dict(n_embd=D, n_layer=LAYERS, n_head=HEADS, n_inner=FF,
                                                             rotary_dim=4, vocab_size=v, n_positions=64)),
    "gpt_neox": (T.GPTNeoXConfig, T.GPTNeoXForCausalLM, lambda v: dict(hidden_size=D, num_hidden_layers=LAYERS,
                 num_attention_heads=HEADS, intermediate_size=FF, vocab_size=v, max_position_embeddings=64)),
    "llama": (T.LlamaConfig, T.LlamaForCausalLM, lambda v: _llama_like(v)),
    "mistral": (T.MistralConfig, T.MistralForCausalLM, lambda v: _llama_like(v)),
    "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM, lambda v: _llama_like(v, head_dim=False)),
    "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, lambda v: _llama_like(v)),
    "gemma2": (T.Gemma2Config, T.Gemma2ForCausalLM, lambda v: _llama_like(v)),
    "gemma3": (T.Gemma3TextConfig, T.Gemma3ForCausalLM, lambda v: _llama_like(v)),
    "phi3": (T.Phi3Config, T.Phi3ForCausalLM, lambda v: _llama_like(v, gqa=False, head_dim=False)),
    "olmo2": (T.Olmo2Config, T.Olmo2ForCausalLM, lambda v: _llama_like(v, head_dim=False)),
    "mixtral": (T.MixtralConfig, T.MixtralForCausalLM,
                lambda v: _llama_like(v, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (T.Qwen2MoeConfig, T.Qwen2MoeForCausalLM,
                  lambda v: _llama_like(v, head_dim=False, num_experts=4, num_experts_per_tok=2,
                                        moe_intermediate_size=FF, shared_expert_intermediate_size=FF)),
    "olmoe": (T.OlmoeConfig, T.OlmoeForCausalLM,
              lambda v: _llama_like(v, gqa=False, head_dim=False, num_experts=4, num_experts_per_tok=2)),
}  # fmt: skip
METHODS_TRAINED = ("activscalar", "steervec", "dynscalar")


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch(request, tmp_path_factory, toy_tokenizer):
    """(name, bridge, plain Hugging Face model) over the same random weights."""
    name = request.param
    config_cls, model_cls, sizes = ARCHITECTURES[name]
    ids = dict(bos_token_id=toy_tokenizer.bos_token_id, eos_token_id=toy_tokenizer.eos_token_id,
               pad_token_id=toy_tokenizer.pad_token_id)  # fmt: skip
    folder = tmp_path_factory.mktemp(f"matrix_{name}")
    torch.manual_seed(0)
    model_cls(config_cls(**sizes(len(toy_tokenizer)), **ids)).eval().save_pretrained(str(folder))
    toy_tokenizer.save_pretrained(str(folder))
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        bridge = load_model(str(folder))[0]
        plain = T.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return name, bridge, plain


def test_every_sites_hook_fires_with_its_documented_shape(arch):
    name, model, _ = arch
    cfg = model.cfg
    ids = torch.tensor(prompt_token_ids(model, ["The capital of France is"]))
    kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    want = {**{s: (1, ids.shape[1], cfg.d_model) for s in RESIDUAL_SITES},
            "z": (1, ids.shape[1], cfg.n_heads, cfg.d_head), "o": (1, ids.shape[1], cfg.n_heads, cfg.d_head),
            "v": (1, ids.shape[1], kv, cfg.d_head)}  # fmt: skip
    seen = {}

    def record(site):
        def hook(h, hook):
            seen[site] = tuple(h.shape)
            return h

        return hook

    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name(site, 1), record(site)) for site in SITES]):
        model(ids)
    assert seen == want
    if kv != cfg.n_heads:  # grouped-query attention: the per-head v site is refused in one line
        with pytest.raises(ConfigError, match="grouped-query attention") as error:
            build_grid(cfg, sites=["v"], positions=None)
        assert "\n" not in str(error.value)


def test_the_tokenizer_alone_gives_the_bridges_prompt_lengths(arch):
    """own tokens + the tokens the model adds (recorded in exports) = the bridge's length, on
    adapters that keep the BOS and on those that drop it (NeoX, Qwen): evaluate.py
    generate='s prompts are checked with it before the model loads."""
    name, model, _ = arch
    assert Path(model.cfg.model_name).is_dir()  # the saved folder
    tokenizer = model_tokenizer(model.cfg.model_name)
    added = added_tokens(model, model.tokenizer)
    assert added in (0, 1)
    prompts = ["The capital of France is", "When Mary and John went to the store", "a"]
    for prompt, ids in zip(prompts, prompt_token_ids(model, prompts)):
        assert own_token_count(tokenizer, prompt) + added == len(ids), name


@pytest.mark.parametrize("method", METHODS_TRAINED)
def test_trains_evaluates_exports_and_applies_through_both(arch, method, tmp_path):
    name, bridge, plain = arch
    train = load_task("ccc", model=bridge, split="train", n=8, fixed_length=True)
    spec = TrainedInterventionSpec(method=method, sites=["attnOut", "mlpOut", "z"], lr=0.05, init_scale=0.05)
    trained = train_fused(bridge, train, [ObjectiveSpec()], intervention=spec, run=RunSpec(epochs=1, batch_size=4))[0]
    assert parameter_metrics(trained.flat_params())["n_params"] > 0 and bool(torch.isfinite(trained.flat_params()).all())
    test = load_task("ccc", model=bridge, split="test", n=4, fixed_length=True)
    dm = TaskDataModule(bridge, None, None, test, batch_size=4, fixed_length=trained.position_tied)
    metrics = InterventionModule(bridge, trained, Objective()).evaluate(dm.loader("test"))
    assert metrics["n"] == 4 and all(torch.isfinite(torch.tensor(float(metrics[k]))) for k in ("effectiveness", "faithfulness"))

    save_intervention(tmp_path, trained, bridge, name, {})
    iv = load_intervention(tmp_path)
    ids = torch.tensor(prompt_token_ids(bridge, [test[0].prompt]))
    with torch.no_grad():
        with iv.apply(bridge, beta=-1.0):
            want = bridge(ids)
        with hf.apply(plain, iv, beta=-1.0):
            got = plain(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    tokens = generate_tokens(bridge, iv.method, ids.tolist(), (-1.0,), 4)[0]
    with hf.apply(plain, iv, beta=-1.0):
        out = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             pad_token_id=0, eos_token_id=None)  # fmt: skip
    assert torch.equal(out[:, ids.shape[1] :], tokens)


POST_NORMED = ("gemma2", "gemma3", "olmo2")  # the attention output is normalised again before the residual add


def test_head_features_are_exact_with_attention_frozen_or_refused(arch):
    """Observable propagation: for every head, y = W_V W_O u (grouped-query attention: the
    shared key-value head's W_V) dotted with the head's attention-weighted input equals its
    output's projection on u, z W_O · u, at the last position (attention pattern frozen:
    rotary embeddings only enter through it). Post-normed models are refused in one line."""
    from interventions.obsprop.features import head_features

    name, model, _ = arch
    u = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    if name in POST_NORMED:
        with pytest.raises(ConfigError, match="post-attention norm") as error:
            head_features(model, u=u, input_space="ln_out")
        assert "\n" not in str(error.value)
        return
    y = head_features(model, u=u, input_space="ln_out")  # [L, H, d_model]
    ids = torch.tensor(prompt_token_ids(model, ["The capital of France is Rome . Q: What is the capital"]))
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
    last, checked = ids.shape[1] - 1, 0
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, last]  # [H, pos]
        x_in = pattern @ cache[f"blocks.{layer}.ln1.hook_out"][0]  # [H, d_model]: each head's input
        z = cache[f"blocks.{layer}.attn.hook_z"][0, last]  # [H, d_head]
        bias = getattr(model.blocks[layer].attn, "b_V", None)  # None: a bias-free value projection
        bias = None if bias is None else bias.reshape(-1, model.cfg.d_head)  # [kv heads, d_head]
        for head in range(model.cfg.n_heads):
            direct = z[head] @ model.W_O[layer, head] @ u
            if bias is not None:  # the value bias is a constant, not part of the input's feature
                direct = direct - bias[head * bias.shape[0] // model.cfg.n_heads] @ model.W_O[layer, head] @ u
            assert abs(float(y[layer, head] @ x_in[head] - direct)) < 1e-4 * (1 + abs(float(direct))), (layer, head)
            checked += 1
    assert checked == model.cfg.n_layers * model.cfg.n_heads
