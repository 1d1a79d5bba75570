"""`python benchmarks/run.py gelu`: our step with `load_model`'s fused GELU against the same
step with Hugging Face's own `gelu_new` module, on random HF GPT-2s, side by side."""

from __future__ import annotations

from benchmarks.harness import build_hf, device_sync, make_batch, make_module, side_by_side, step_ours

def bench_gelu(shape: str, batch_size: int, pos: int, repeats: int, device: str = "cpu") -> dict:
    """Our training step on a random HF GPT-2 of `shape` ("toy" or "gpt2-small") loaded with
    `load_model`'s fused GELU vs the same weights with HF's own gelu_new module, side by side."""
    models = {"fused": build_hf(shape, device)[1], "hf_gelu": build_hf(shape, device, fused_gelu=False)[1]}
    batch = make_batch(models["fused"], models["fused"].cfg.d_vocab, batch_size, pos)
    modules = {name: make_module(model, pos) for name, model in models.items()}
    optimizers = {name: module.configure_optimizers() for name, module in modules.items()}
    t = side_by_side({name: lambda name=name: step_ours(modules[name], optimizers[name], batch) for name in modules},
                     repeats, device_sync(device))  # fmt: skip
    return {"model": f"hf-{shape}", "device": str(device), "batch": batch_size, "positions": pos, "rounds": repeats,
            **{f"{name}_ms": round(seconds * 1e3, 2) for name, seconds in t.items()},
            "fused_over_hf_gelu": round(t["fused"] / t["hf_gelu"], 3)}  # fmt: skip
