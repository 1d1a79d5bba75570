"""interventions.hf: an export applied to a plain Hugging Face model equals the bridge's apply,
inside `generate` too (key-value cache, left padding), on random GPT-2, GPT-NeoX and Llama."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model, hub_offline, save_tiny_gpt2

from interventions import hf
from interventions.errors import ExportError, LengthError
from interventions.export import load_intervention, save_intervention
from interventions.generation import generate_tokens, left_padded
from interventions.methods import METHODS
from interventions.models import load_model
from interventions.sites import build_grid
from interventions.tasks.tokenize import prompt_token_ids
from interventions.toyworld.hf_form import hf_form

PROMPTS = ["The capital of France is", "When Mary and John went to the store , John gave", "Q: Which city ? A:"]
KINDS = ["gpt2", "neox", "llama", "native"]  # native: the toy world's architecture, through its GPT-2 form
FUSED_QKV = ("gpt2", "neox", "native")


def _save(folder, tokenizer, kind: str, seed: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    if kind == "gpt2":
        save_tiny_gpt2(folder, tokenizer, seed=seed, n_layer=3)
        return
    if kind == "native":  # the form saves as an ordinary GPT-2 folder
        hf_form(build_tiny_model(tokenizer, seed=seed)).save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        return
    sizes = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                 vocab_size=len(tokenizer), max_position_embeddings=64)  # fmt: skip
    config, cls = (GPTNeoXConfig(**sizes), GPTNeoXForCausalLM) if kind == "neox" else \
        (LlamaConfig(num_key_value_heads=2, **sizes), LlamaForCausalLM)  # fmt: skip
    torch.manual_seed(seed)
    cls(config).eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


@pytest.fixture(scope="module", params=KINDS)
def pair(request, tmp_path_factory, toy_tokenizer):
    """(bridge, plain Hugging Face model, architecture) over the same random weights."""
    from transformers import AutoModelForCausalLM

    if request.param == "native":
        bridge = build_tiny_model(toy_tokenizer, seed=3)
        return bridge, hf_form(bridge), "native"
    folder = tmp_path_factory.mktemp(f"hf_{request.param}")
    _save(folder, toy_tokenizer, request.param, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        bridge = load_model(str(folder))[0]
        plain = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return bridge, plain, request.param


def export(bridge, tmp_path, name: str, sites, seq_len: int | None, scale: float = 0.5):
    grid = build_grid(bridge.cfg, sites=sites, positions=None if name == "dynscalar" else "all", seq_len=seq_len)
    method = METHODS[name](grid, bridge.cfg, bridge.W_O)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    save_intervention(tmp_path, method, bridge, "tiny", {})
    return load_intervention(tmp_path)


@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
@pytest.mark.parametrize("sites", [["attnOut", "mlpOut", "residPost"], ["z", "o"], ["v"]])
def test_logits_equal_the_bridges_apply(pair, tmp_path, name, sites):
    bridge, plain, kind = pair
    ids = torch.tensor(prompt_token_ids(bridge, [PROMPTS[0], "The capital of Spain is"]))
    iv = export(bridge, tmp_path, name, sites, ids.shape[1])
    if sites == ["v"] and kind in FUSED_QKV:  # one fused q/k/v projection: refused in one line
        with pytest.raises(ExportError, match="fused projection"), hf.apply(plain, iv):
            pass
        return
    beta = torch.tensor([1.0, -0.5])
    with torch.no_grad():
        with iv.apply(bridge, beta):
            want = bridge(ids)
        with hf.apply(plain, iv, beta):
            got = plain(ids).logits
        clean = plain(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - clean).abs().max() > 1e-2  # the hooks act
    torch.testing.assert_close(plain(ids).logits, clean)  # and are gone


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_with_its_cache_equals_the_bridges_generation(pair, tmp_path, use_cache):
    """DynScalar in `hf_model.generate` on a left-padded batch of three lengths (greedy, with
    and without Hugging Face's key-value cache) gives the bridge's tokens at each β."""
    bridge, plain, _ = pair
    iv = export(bridge, tmp_path, "dynscalar", ["attnOut", "mlpOut", "z"], None, scale=2.0)
    ids = prompt_token_ids(bridge, PROMPTS)
    input_ids, mask = left_padded(ids, pad=0)
    for beta in (-1.0, 1.0):
        want = generate_tokens(bridge, iv.method, ids, (beta,), 6)[0]
        with hf.apply(plain, iv, beta):
            out = plain.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                 use_cache=use_cache, pad_token_id=0, eos_token_id=None)  # fmt: skip
        assert torch.equal(out[:, input_ids.shape[1] :], want), beta


@pytest.mark.parametrize("beyond", ["none", "last"])
@pytest.mark.parametrize("name", ["activscalar", "steervec"])
def test_position_tied_generation_inside_generate(pair, tmp_path, name, beyond):
    bridge, plain, _ = pair
    ids = prompt_token_ids(bridge, PROMPTS[:1])
    iv = export(bridge, tmp_path, name, ["residPost"], len(ids[0]), scale=0.5 if name == "activscalar" else 2.0)
    want = generate_tokens(bridge, iv.method, ids, (1.0,), 5, positions_beyond=beyond)[0]
    with hf.apply(plain, iv, 1.0, positions_beyond=beyond):
        out = plain.generate(input_ids=torch.tensor(ids), max_new_tokens=5, do_sample=False, pad_token_id=0,
                             eos_token_id=None)  # fmt: skip
    assert torch.equal(out[:, len(ids[0]) :], want)
    with hf.apply(plain, iv, 1.0), pytest.raises(LengthError, match=f"tied to {len(ids[0])}-token prompts"):
        plain(torch.tensor(prompt_token_ids(bridge, PROMPTS[1:2])))


def test_checks_and_refusals(pair, tmp_path, toy_tokenizer):
    from transformers import AutoModelForCausalLM

    bridge, plain, kind = pair
    ids = torch.tensor(prompt_token_ids(bridge, PROMPTS[:1]))
    iv = export(bridge, tmp_path / "a", "activscalar", ["attnOut"], ids.shape[1])
    other_folder = tmp_path / "other"
    _save(other_folder, toy_tokenizer, kind, seed=9)
    other = AutoModelForCausalLM.from_pretrained(str(other_folder)).eval()
    with pytest.raises(ExportError, match="logits differ"):
        with hf.apply(other, iv):
            pass
    with hf.apply(other, iv, check_model=False):
        other(ids)
    del iv.meta["model"]["probe"]  # an export written before probes were recorded
    with pytest.raises(ExportError, match="check_model=False"):
        with hf.apply(plain, iv):
            pass
    if kind in FUSED_QKV:  # q, k and v come from one fused projection
        v = export(bridge, tmp_path / "v", "activscalar", ["v"], ids.shape[1])
        with pytest.raises(ExportError, match="site v on .*fused projection") as error:
            with hf.apply(plain, v):
                pass
        assert "\n" not in str(error.value)
    clean = plain(ids).logits
    with pytest.raises(RuntimeError, match="boom"):
        with hf.apply(plain, iv, check_model=False):
            raise RuntimeError("boom")
    torch.testing.assert_close(plain(ids).logits, clean)
    assert not iv.method.positions.tracking


def test_an_unknown_architecture_is_one_line(tmp_path, toy_tokenizer):
    from transformers import BloomConfig, BloomForCausalLM

    model = BloomForCausalLM(BloomConfig(hidden_size=32, n_layer=1, n_head=2, vocab_size=len(toy_tokenizer)))
    with pytest.raises(ExportError, match="'bloom' architecture") as error:
        hf.layout_of(model)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["dynscalar", "activscalar"])
def test_cached_generation_equals_the_bridges_token_for_token(pair, tmp_path, name):
    """hf.cached_tokens (the plain model's key-value cache, one token per step) gives the
    bridge's uncached tokens at β = -1, 0, +1; so does the plain model without its cache.
    DynScalar on a left-padded batch of three lengths, ActivScalar on prompts of its length
    with positions_beyond=last (every generated token steered)."""
    bridge, plain, _ = pair
    if name == "dynscalar":
        ids = prompt_token_ids(bridge, PROMPTS)
        iv = export(bridge, tmp_path, name, ["attnOut", "mlpOut", "z"], None, scale=2.0)
    else:
        ids = prompt_token_ids(bridge, [PROMPTS[0], "The capital of Spain is"])
        iv = export(bridge, tmp_path, name, ["residPost"], len(ids[0]), scale=0.5)
    betas = (-1.0, 0.0, 1.0)
    want = generate_tokens(bridge, iv.method, ids, betas, 6, positions_beyond="last")
    for use_cache in (True, False):
        got = hf.cached_tokens(plain, iv.method, ids, betas, 6, positions_beyond="last", use_cache=use_cache)
        assert torch.equal(got, want), use_cache
        assert not got.is_inference()  # decoding runs in inference mode; its tokens may enter autograd later
    assert torch.equal(hf.cached_tokens(plain, None, ids, (0.0,), 6)[0], want[1])  # β = 0: the unhooked model


def test_generate_on_a_plain_model_returns_completions_and_refuses_as_the_bridge_does(pair, tmp_path, toy_tokenizer):
    bridge, plain, _ = pair
    ids = prompt_token_ids(toy_tokenizer, PROMPTS[:1])
    iv = export(bridge, tmp_path, "activscalar", ["attnOut"], len(ids[0]))
    out = hf.generate(plain, iv, PROMPTS[:1], toy_tokenizer, betas=(-1, 1), max_new_tokens=3, stop_at_eos=False)
    assert [(c.prompt, c.beta, len(c.tokens)) for c in out] == [(PROMPTS[0], -1.0, 3), (PROMPTS[0], 1.0, 3)]
    with pytest.raises(LengthError, match=f"tied to {len(ids[0])}-token prompts"):
        hf.generate(plain, iv, PROMPTS[1:2], toy_tokenizer, max_new_tokens=3)


@pytest.mark.parametrize("kind", ["llama", "toy"])
def test_evaluate_generate_with_the_hf_backend_gives_the_bridges_completions(tmp_path, toy_tokenizer, kind):
    """evaluate.py generate=<run> backend=hf (the plain model with its key-value cache) on a
    DynScalar export of a Hugging Face folder, and of the toy model (its GPT-2 form, checked
    against the export's logits probe), gives the bridge's completions, token for token."""
    from conftest import describe, run_cli, skip_without_toy_checkpoint

    from interventions.spec import RunSpec, TaskSpec
    from interventions.tasks import load_task
    from interventions.training.train import train_intervention

    if kind == "toy":
        skip_without_toy_checkpoint()
        name, bridge = "toy", load_model("toy")[0]
    else:
        name = str(tmp_path / "llama")
        _save(name, toy_tokenizer, "llama", seed=5)
        with pytest.MonkeyPatch.context() as mp:
            hub_offline(mp)
            bridge = load_model(name)[0]
    trained = train_intervention(bridge, load_task("ccc", model=bridge, n=8), intervention="dynscalar",
                                 run=RunSpec(epochs=1))  # fmt: skip
    run = tmp_path / "run"
    save_intervention(run, trained.method, bridge, name, {"task": vars(TaskSpec(n_test=3))})
    out = tmp_path / "hf"
    done = run_cli("evaluate.py", f"generate={run}", "backend=hf", "n=3", "max_new_tokens=4", "logger=none",
                   f"run_dir={out}", hydra_dir=tmp_path / "h_hf")  # fmt: skip
    assert done.returncode == 0, describe(done)
    lines = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    from interventions.generation import generate

    prompts = list(dict.fromkeys(line["prompt"] for line in lines))
    bridge_side = generate(bridge, trained.method, prompts, betas=(-1.0, 0.0, 1.0), max_new_tokens=4)
    assert len(prompts) == 3 and [list(c.tokens) for c in bridge_side] == [line["tokens"] for line in lines]


def test_the_hf_backend_on_a_native_model_without_a_form_is_one_line_before_anything(tmp_path, tiny_model):
    from conftest import TINY_CONFIG, run_cli

    native = tmp_path / "rms-native"
    native.mkdir()
    (native / "config.json").write_text(json.dumps({**TINY_CONFIG, "normalization_type": "RMS", "d_vocab": 10}))
    save_intervention(tmp_path / "run", METHODS["dynscalar"](build_grid(tiny_model.cfg, positions=None), tiny_model.cfg),
                      tiny_model, str(native), {})  # fmt: skip
    done = run_cli("evaluate.py", f"generate={tmp_path / 'run'}", "backend=hf", f"hydra.run.dir={tmp_path / 'out'}")
    assert done.returncode == 2 and "has no Hugging Face form (normalization_type='RMS'" in done.stderr
    assert done.stderr.strip().count("\n") == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("act_fn", ["gelu", "gelu_new"])
def test_the_native_form_computes_the_native_models_logits(toy_tokenizer, act_fn):
    """toyworld.hf_form: a GPT2LMHeadModel with a native model's weights gives its logits, frozen;
    a native model of another architecture is refused in one line."""
    from conftest import TINY_CONFIG
    from transformer_lens.model_bridge import TransformerBridge

    from interventions.errors import ModelError
    from interventions.models import freeze

    def native(**changes):
        config = dict(TINY_CONFIG, d_vocab=len(toy_tokenizer), seed=2, act_fn=act_fn, **changes)
        return freeze(TransformerBridge.boot_native(config, tokenizer=toy_tokenizer))

    bridge = native()
    form = hf_form(bridge)
    assert not any(p.requires_grad for p in form.parameters()) and not form.training
    for ids in prompt_token_ids(bridge, PROMPTS):
        ids = torch.tensor([ids])
        torch.testing.assert_close(form(ids).logits, bridge(ids), atol=1e-5, rtol=0)
    with pytest.raises(ModelError, match="normalization_type='RMS'") as error:
        hf_form(native(normalization_type="RMS"))
    assert "\n" not in str(error.value)
