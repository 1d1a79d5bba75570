"""`python benchmarks/run.py prefix`: a training step intervening on the last layer only, with
the unchanged prefix skipped (its clean residual cached) against the full forward, side by
side; `hf-*` models are Hugging Face GPT-2s through TransformerBridge."""

from __future__ import annotations

from functools import partial

import torch

from benchmarks.harness import build, build_hf, device_sync, make_batch, side_by_side, step_ours
from interventions.models import model_device
from interventions.methods import METHODS
from interventions.training.module import InterventionModule
from interventions.objective import Objective
from interventions.sites import build_grid
from interventions.tasks.datamodule import clean_residual

def bench_prefix(model_name: str = "toy", layer: int | None = None, repeats: int = 20, device: str = "cpu") -> dict:
    """A training step intervening only from `layer` (default: the last) with the prefix
    skipped (cached residual) vs the full forward, side by side."""
    if model_name.startswith("hf-"):  # a Hugging Face GPT-2 through TransformerBridge
        model = build_hf(model_name[3:], device)[1]
        d_vocab = model.cfg.d_vocab
    else:
        model, d_vocab = build(model_name, device=device)
    layer = model.cfg.n_layers - 1 if layer is None else layer
    batch = make_batch(model, d_vocab, 32, 17 if model_name == "toy" else 20)
    batch["resid_pre"] = clean_residual(model, {**batch, "index": torch.arange(32)}, layer).to(model_device(model))
    steps = {}
    for name, prefix in (("full", 0), ("skip", layer)):
        grid = build_grid(model.cfg, layers=[layer], seq_len=batch["input_ids"].shape[1])
        m = METHODS["activscalar"](grid, model.cfg)
        m.initialize("normal", 1e-3, seed=0)
        module = InterventionModule(model, m, Objective(1.0, 0.01, 1.0), lr=1e-2, prefix_layer=prefix)
        optimizer = module.configure_optimizers()
        steps[name] = partial(step_ours, module, optimizer, batch)
    t = side_by_side(steps, repeats, device_sync(device))
    return {"model": model_name, "device": str(device), "layer": layer, "n_layers": model.cfg.n_layers,
            "full_ms": round(t["full"] * 1e3, 2), "skip_ms": round(t["skip"] * 1e3, 2),
            "skip_over_full": round(t["skip"] / t["full"], 3)}  # fmt: skip
