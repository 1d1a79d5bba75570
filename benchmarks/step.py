"""`python benchmarks/run.py step`: the product's training step against the floor and a naive step.

On the same doubled batch (β = +1 and β = -1), side by side:
  bare      one forward + backward of the frozen model with gradients flowing only to the
            hooked activations (the floor: a hook multiplies each hooked activation by a
            leaf of ones; backward from the last-position logits)
  ours      the product's training step: one batched β pass, hooks, clean log-probs
            precomputed, no weight gradients, last-position unembedding, objective, Adam;
            through the model's plain Hugging Face form where it has one (`interventions.plain`)
  ours_bridge  the same step through the bridge (`forward="bridge"`), which the variants
            below are written against: their ratios are over it
  naive     a straightforward step: two separate β passes, clean logits recomputed every
            step, model weights left requiring grad, logits at every position, plain Adam
  without_<x>  ours with one optimization x switched off (OPTIMIZATIONS): what each one buys
  skip_unread  ours with `skip_unread=True` (the last block's MLP at the read position only)
  fit       ours inside `lightning.Trainer.fit` (its loop, logging and optimizer closure)
and reports ours / bare (goal ≤ 1.10 at batch 4), ours_bridge / bare, fit / ours and every
bridge variant / ours_bridge.
"""

from __future__ import annotations

import torch

from benchmarks.harness import build, device_sync, fit_epoch, make_batch, make_module, side_by_side, step_bare, step_ours
from interventions.forward import repeated_batch_logits
from interventions.models import model_device
from interventions.sites import hook_name

# The optimizations of the product's step that `step_variant` can switch off, one at a time.
OPTIMIZATIONS = {
    "frozen_weights": "weights left requiring grad (backward also computes their gradients)",
    "cached_clean": "clean log-probs recomputed every step (one more no-grad forward)",
    "one_pass": "β = +1 and β = -1 as two separate forwards",
    "last_logits": "final LayerNorm and unembedding at every position",
    "shared_attention": "the first block's attention run on both β copies, not once",
}


def step_variant(module, optimizer, batch, without=()) -> torch.Tensor:
    """The product's training step written out, with the optimizations named in `without`
    (keys of OPTIMIZATIONS) switched off; all of them off is the naive step. Returns the
    loss, detached (the same loss for every `without`, up to rounding)."""
    model, method = module.model, module.method
    device = model_device(model)

    def logits(reps: int, hooks: list) -> torch.Tensor:  # [reps · B, vocab], as the product reads them
        if "last_logits" not in without:
            return repeated_batch_logits(model, batch, reps, hooks, share_attention="shared_attention" not in without)
        ids = batch["input_ids"].repeat(reps, 1)
        with model.hooks(fwd_hooks=hooks):
            return model(ids)[torch.arange(ids.shape[0], device=device), batch["last_index"].repeat(reps)]

    model.requires_grad_("frozen_weights" in without)
    try:
        clean = batch["clean_logprobs"]
        if "cached_clean" in without:
            with torch.no_grad():
                clean = torch.log_softmax(logits(1, []), -1)
        if "one_pass" in without:
            pos, neg = (logits(1, method.hooks(beta)) for beta in (1.0, -1.0))
        else:
            b = batch["input_ids"].shape[0]
            pos, neg = logits(2, method.hooks(torch.tensor([1.0, -1.0], device=device).repeat_interleave(b))).split(b)
        loss, _ = module.objective(pos, neg, batch["correct"], batch["wrong"], clean, method.flat_params())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    finally:
        model.requires_grad_(False)
    return loss.detach()


def bench_step(model_name: str, batch_size: int, pos: int, repeats: int, device: str = "cpu") -> dict:
    model, d_vocab = build(model_name, device=device)
    batch = make_batch(model, d_vocab, batch_size, pos)
    without = {f"without_{name}": (name,) for name in OPTIMIZATIONS}
    names = ["ours", "ours_bridge", "skip_unread", "naive", "fit", *without]
    on_bridge = {"ours_bridge", "skip_unread", "naive", *without}
    modules = {name: make_module(model, pos, skip_unread=name == "skip_unread",
                                 forward="bridge" if name in on_bridge else "auto") for name in names}  # fmt: skip
    optimizers = {name: m.configure_optimizers() for name, m in modules.items()}  # the product's Adam (foreach)
    optimizers["naive"] = torch.optim.Adam(modules["naive"].method.parameters(), lr=1e-2)  # plain, per tensor
    hooked = [hook_name(s, l) for s in modules["ours"].method.grid.sites for l in modules["ours"].method.grid.layers]
    fit_steps = 10 if model_name == "toy" else 3

    def variant(name, switched_off):
        def step():  # returns None: side_by_side would take a returned value for its seconds
            step_variant(modules[name], optimizers[name], batch, switched_off)

        return step

    t = side_by_side({
        "bare": lambda: step_bare(model, batch, hooked),
        "ours": lambda: step_ours(modules["ours"], optimizers["ours"], batch),
        "ours_bridge": lambda: step_ours(modules["ours_bridge"], optimizers["ours_bridge"], batch),
        "skip_unread": lambda: step_ours(modules["skip_unread"], optimizers["skip_unread"], batch),
        "naive": variant("naive", tuple(OPTIMIZATIONS)),
        "fit": lambda: fit_epoch(modules["fit"], batch, fit_steps),
        **{name: variant(name, off) for name, off in without.items()},
    }, repeats, device_sync(device))  # fmt: skip
    return {
        "model": model_name, "device": str(device), "batch": batch_size, "positions": pos, "rounds": repeats,
        **{f"{name}_ms": round(seconds * 1e3, 2) for name, seconds in t.items()},
        "ours_over_bare": round(t["ours"] / t["bare"], 3),
        "ours_bridge_over_bare": round(t["ours_bridge"] / t["bare"], 3),
        "fit_over_ours": round(t["fit"] / t["ours"], 3),
        **{f"{name}_over_ours_bridge": round(t[name] / t["ours_bridge"], 3) for name in on_bridge - {"ours_bridge"}},
    }  # fmt: skip
