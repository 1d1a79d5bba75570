"""load_model: the toy checkpoint, a local Hugging Face folder (offline), and its errors."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model, hub_offline, save_tiny_gpt2

from interventions.errors import InterventionsError, ModelError
from interventions.models import freeze, fuse_gelu, load_model, model_fingerprint, tokenizer_identity
from interventions.tasks.tokenize import added_tokens, own_token_count, prompt_token_ids
from interventions.tokenizer import model_tokenizer
from interventions.toyworld import world

TOY_PROMPT = "The capital of France is Rome . Q: What is the capital of France ? A:"


def _assert_frozen(model):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(model, TransformerBridge)
    assert not model.training
    assert all(not m.training for m in model.modules())
    params = list(model.parameters())
    assert params and not any(p.requires_grad for p in params)


def _entities() -> list[str]:
    return [
        *world.NAMES,
        *world.COUNTRIES,
        *world.CAPITALS.values(),
        *world.OCCUPATIONS,
        *world.SUBJECT_PRONOUN.values(),
        *world.OBJECT_PRONOUN.values(),
        *world.GRAMMATICAL_ROLE.values(),
        *world.STEREOTYPE.values(),
        *world.PLACES,
        *world.OBJECTS,
    ]


def _assert_entities_single_tokens(tokenizer):
    unk = tokenizer.unk_token_id
    ids = {}
    for word in _entities():
        for spelled in (word, " " + word):
            got = tokenizer(spelled, add_special_tokens=False)["input_ids"]
            assert len(got) == 1 and got[0] != unk, (spelled, got)
        ids[word] = got[0]
    assert len(set(ids.values())) == len(ids), "two entities share a token"


def _assert_one_token_per_word(model, prompt):
    str_tokens = model.to_str_tokens(prompt)
    assert str_tokens[0] == "<bos>"
    assert str_tokens[1:] == prompt.split()
    assert model.to_tokens(prompt).shape == (1, len(prompt.split()) + 1)
    assert model.tokenizer.unk_token_id not in model.to_tokens(prompt)[0].tolist()


# ------------------------------------------------------------------- toy model


def test_load_toy_model(toy_model):
    model, tokenizer = toy_model
    _assert_frozen(model)
    assert tokenizer is model.tokenizer
    assert model.cfg.d_vocab == len(tokenizer)
    with torch.no_grad():
        logits = model(model.to_tokens(TOY_PROMPT))
    assert logits.shape == (1, len(TOY_PROMPT.split()) + 1, len(tokenizer))
    assert torch.isfinite(logits).all()


def test_toy_model_str_tokens(toy_model):
    model, _ = toy_model
    for prompt in (TOY_PROMPT, "When Mary and John went to the store , John gave a book to"):
        _assert_one_token_per_word(model, prompt)


def test_toy_model_entities_are_single_tokens(toy_model):
    _assert_entities_single_tokens(toy_model[1])


def test_toy_model_fingerprint_is_stable(toy_model):
    from interventions.models import load_toy

    model, _ = toy_model
    again = freeze(load_toy())
    assert model_fingerprint(model) == model_fingerprint(again)


def test_tiny_model_str_tokens(tiny_model):
    """The same tokenizer on the tiny bridge (runs without the checkpoint)."""
    _assert_one_token_per_word(tiny_model, TOY_PROMPT)
    _assert_frozen(tiny_model)


def test_built_toy_tokenizer_entities_are_single_tokens(toy_tokenizer):
    _assert_entities_single_tokens(toy_tokenizer)


def test_missing_toy_checkpoint_is_a_model_error(tmp_path):
    from interventions.models import load_toy

    with pytest.raises(
        ModelError, match=r"no toy checkpoint.*python -m interventions toyworld train --out DIR"
    ):
        load_toy(tmp_path)


# ------------------------------------------------------------------- fingerprints


def test_fingerprint_differs_between_seeds_and_is_stable(toy_tokenizer, tiny_model):
    other = build_tiny_model(toy_tokenizer, seed=1)
    same = build_tiny_model(toy_tokenizer, seed=0)
    fp = model_fingerprint(tiny_model)
    assert isinstance(fp, str) and len(fp) == 16
    assert model_fingerprint(tiny_model) == fp
    assert model_fingerprint(same) == fp  # computed afresh on an identical model
    assert model_fingerprint(other) != fp


def test_tokenizer_identity(toy_tokenizer, bpe_tokenizer):
    a = tokenizer_identity(toy_tokenizer)
    assert a["vocab_size"] == len(toy_tokenizer)
    assert a == tokenizer_identity(toy_tokenizer)
    b = tokenizer_identity(bpe_tokenizer)
    assert b["vocab_size"] == len(bpe_tokenizer) and b["vocab_hash"] != a["vocab_hash"]


# ------------------------------------------------------------------- HF folder (offline)


@pytest.fixture(scope="module")
def gpt2_folders(tmp_path_factory, bpe_tokenizer):
    """Two randomly initialised GPT-2-shaped models saved with save_pretrained, with a
    byte-level BPE tokenizer (tests/bpe.py)."""
    out = {}
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"gpt2_seed{seed}")
        out[seed] = (folder, save_tiny_gpt2(folder, bpe_tokenizer, seed))
    return out


@pytest.fixture
def offline(monkeypatch):
    hub_offline(monkeypatch)


def test_local_hf_folder_matches_hf_logits(gpt2_folders, offline, bpe_tokenizer):
    folder, hf = gpt2_folders[0]
    model, tokenizer = load_model(str(folder))
    _assert_frozen(model)
    assert tokenizer is model.tokenizer and len(tokenizer) == len(bpe_tokenizer)
    prompt = "The capital of France is Paris, and the capital of Italy is"
    tokens = model.to_tokens(prompt)
    assert tokens.shape[1] > 5
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_local_hf_fingerprints(gpt2_folders, offline):
    a, _ = load_model(str(gpt2_folders[0][0]))
    a_again, _ = load_model(str(gpt2_folders[0][0]))
    b, _ = load_model(str(gpt2_folders[1][0]))
    assert model_fingerprint(a) == model_fingerprint(a) == model_fingerprint(a_again)
    assert model_fingerprint(a) != model_fingerprint(b)


def test_local_hf_folder_dtype(gpt2_folders, offline):
    model, _ = load_model(str(gpt2_folders[0][0]), dtype="bfloat16")
    _assert_frozen(model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def _activations(model) -> list[str]:
    return [type(m).__name__ + getattr(m, "approximate", "") for m in model.original_model.modules()
            if "GELU" in type(m).__name__]  # fmt: skip


def test_fused_gelu_computes_gpt2s_gelu_new_in_one_kernel_with_the_same_logits_and_gradients(gpt2_folders, offline):
    from transformers.activations import NewGELUActivation

    from interventions.sites import hook_name

    x = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    torch.testing.assert_close(torch.nn.GELU(approximate="tanh")(x), NewGELUActivation()(x), atol=1e-12, rtol=0)

    fused, _ = load_model(str(gpt2_folders[0][0]))
    hf_gelu, _ = load_model(str(gpt2_folders[0][0]), fused_gelu=False)
    assert _activations(fused) == ["GELUtanh"] * 2  # both layers
    assert _activations(hf_gelu) == ["NewGELUActivation"] * 2
    assert fuse_gelu(fused) == 0  # nothing left to swap
    _assert_frozen(fused)
    assert model_fingerprint(fused) == model_fingerprint(hf_gelu)  # no weight changed

    tokens = fused.to_tokens("The capital of France is Paris, and the capital of Italy is")
    outputs = []
    for model in (fused, hf_gelu):
        scale = torch.ones((), requires_grad=True)  # gradients reach the hooked activation only
        hooks = [(hook_name("mlpOut", layer), lambda act, hook: act * scale) for layer in range(2)]
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        logits[0, -1].logsumexp(-1).backward()
        outputs.append((logits.detach(), scale.grad))
    (a, grad_a), (b, grad_b) = outputs
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_a, grad_b, atol=1e-5, rtol=1e-5)


def test_fused_gelu_leaves_other_activations_alone(toy_model, hf_neox, hf_llama):
    assert fuse_gelu(toy_model[0]) == fuse_gelu(hf_neox) == fuse_gelu(hf_llama) == 0


def test_unknown_hub_name_suggests_a_local_folder(offline):
    with pytest.raises(ModelError) as info:
        load_model("definitely-not-a-model-xyz")
    message = str(info.value)
    assert "'definitely-not-a-model-xyz'" in message
    assert "--local-dir" in message and "model.name=DIR" in message


def test_folder_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"no config\.json.*save_pretrained"):
        load_model(str(tmp_path))


def test_folder_without_tokenizer_files(tmp_path, offline):
    save_tiny_gpt2(tmp_path, None, seed=0, n_layer=1, n_embd=16)  # weights only, no tokenizer
    with pytest.raises(ModelError, match="tokenizer"):
        load_model(str(tmp_path))


def test_unknown_dtype():
    with pytest.raises(
        ModelError, match=r"unknown dtype 'float64'; allowed: float32, float16, bfloat16"
    ):
        load_model("toy", dtype="float64")


def test_model_errors_are_interventions_errors():
    with pytest.raises(InterventionsError):
        load_model("toy", dtype="fp8")


def test_the_model_config_group_reaches_load_model(monkeypatch):
    from types import SimpleNamespace

    from interventions import evaluation
    from interventions.spec import ModelSpec

    calls = []
    monkeypatch.setattr(evaluation, "load_model", lambda name, **kwargs: calls.append((name, kwargs)) or (None, None))
    export = SimpleNamespace(meta={"model": {"name": "gpt2"}}, to=lambda model: None)
    evaluation.exported_model(export, ModelSpec(name=None, dtype="bfloat16", fused_gelu=False), check=False)
    evaluation.exported_model(export, ModelSpec(name="other", device="cuda", dtype="bfloat16"), check=False)  # fused_gelu's default
    assert calls == [
        ("gpt2", {"device": "cpu", "dtype": "bfloat16", "fused_gelu": False}),
        ("other", {"device": "cuda", "dtype": "bfloat16", "fused_gelu": True}),
    ]


def test_evaluate_generalization_loads_models_as_the_model_config_group_says(monkeypatch, tmp_path):
    from interventions.runs import evaluate as runs
    from interventions.spec import GeneralizationConfig, ModelSpec

    calls = []
    monkeypatch.setattr(runs, "generalization", lambda runs, **kwargs: calls.append((runs, kwargs)) or {})
    monkeypatch.setattr(runs, "write_generalization", lambda summary, out: (f"{out}/g.json", f"{out}/g.md"))
    monkeypatch.setattr(runs, "markdown", lambda summary: "")
    model = ModelSpec(name=None, device="cpu", dtype="float16", fused_gelu=False)
    runs.generalization_run(GeneralizationConfig(generalization=["/a"], model=model, run_dir=str(tmp_path)))
    assert calls == [(["/a"], {"templates": None, "split": "test", "n": None, "check_model": True, "model": model})]


def test_a_prompts_length_from_the_tokenizer_alone_is_the_bridges(gpt2_folders, offline):
    """What an export records of its model's tokenization (`added_tokens`) gives each prompt's
    length from the tokenizer alone (`tokenizer.model_tokenizer`, no model): the check of
    evaluate.py generate='s prompts before the model loads (cli.preflight). GPT-2's tokenizer
    adds no BOS; TransformerBridge prepends one."""
    folder = str(gpt2_folders[0][0])
    model, _ = load_model(folder)
    tokenizer = model_tokenizer(folder)
    added = added_tokens(model, model.tokenizer)
    assert added == 1
    prompts = ["The capital of France is", " leading space", "Zürich's café — 3.14!", "a  b\nc", "x" * 300]
    for prompt, ids in zip(prompts, prompt_token_ids(model, prompts)):
        assert own_token_count(tokenizer, prompt) + added == len(ids)
