"""model.dtype=bfloat16 / float16: the frozen model runs in half precision, the intervention's
parameters and the objective stay in float32; training, export and apply work, on a native
model and on a Hugging Face Llama (through the bridge and as a plain model)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_CONFIG, build_tiny_model, hub_offline

from interventions import hf
from interventions.evaluation import exported_model
from interventions.export import load_intervention, save_intervention
from interventions.models import load_model
from interventions.spec import ModelSpec, RunSpec, TrainedInterventionSpec
from interventions.tasks import load_task
from interventions.training.train import train_intervention


@pytest.fixture(scope="module")
def folders(tmp_path_factory, toy_tokenizer):
    """{"native": a tiny native checkpoint, "llama": a tiny random Llama}, both saved to disk."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    native = tmp_path_factory.mktemp("native_half")
    toy_tokenizer.save_pretrained(str(native))
    model = build_tiny_model(toy_tokenizer, seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(native / "model.safetensors"))
    (native / "config.json").write_text(json.dumps(dict(TINY_CONFIG, d_vocab=len(toy_tokenizer))))
    llama = tmp_path_factory.mktemp("llama_half")
    torch.manual_seed(4)
    LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                 intermediate_size=64, vocab_size=len(toy_tokenizer),
                                 max_position_embeddings=64)).save_pretrained(str(llama))  # fmt: skip
    toy_tokenizer.save_pretrained(str(llama))
    return {"native": native, "llama": llama}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("arch", ["native", "llama"])
@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
def test_half_precision_trains_exports_and_applies(folders, tmp_path, arch, dtype, name):
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        model, _ = load_model(str(folders[arch]), dtype=dtype)
    assert next(model.parameters()).dtype == getattr(torch, dtype)
    train, test = (load_task("ccc", model=model, split=s, n=8) for s in ("train", "test"))
    spec = TrainedInterventionSpec(method=name, lr=0.05, init_scale=1e-2)
    out = train_intervention(model, train, test, intervention=spec, run=RunSpec(epochs=1, batch_size=4))
    assert all(p.dtype == torch.float32 for p in out.method.parameters())
    batch = next(iter(out.datamodule.loader("test")))
    (pos, neg), _ = out.module.steered(batch)
    assert pos.dtype == neg.dtype == torch.float32  # the objective's inputs
    metrics = out.evaluate("test")
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if isinstance(v, float))
    save_intervention(tmp_path, out.method, model, str(folders[arch]), {})
    iv = load_intervention(tmp_path)
    assert iv.meta["model"]["dtype"] == dtype
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        again = exported_model(iv, ModelSpec(name=None))  # the export's model, in its own precision
    assert next(again.parameters()).dtype == getattr(torch, dtype)
    ids = batch["input_ids"][:1]
    with iv.apply(again, beta=1.0):
        steered = again(ids)
    assert steered.dtype == getattr(torch, dtype) and bool(torch.isfinite(steered).all())
    if arch == "llama":  # the plain Hugging Face model in the same precision gives the same logits
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_pretrained(str(folders[arch]), dtype=getattr(torch, dtype)).eval()
        with torch.no_grad(), hf.apply(plain, iv, beta=1.0):
            got = plain(ids).logits
        torch.testing.assert_close(got.float(), steered.float(), atol=0.05, rtol=0.02)
