"""`python benchmarks/run.py floor`: the training step's forward + backward through the bridge
against the same step through the plain Hugging Face model of the same weights.

The toy model has a plain `GPT2LMHeadModel` form (`toyworld.hf_form`), and `interventions.hf`
attaches any method's hooks to it. Side by side on the same doubled batch (β = +1 and -1), the
same ActivScalar (the default sites) and the same objective, each a forward + backward without
the optimizer:
  ours       the product's step as it trains: `InterventionModule.steered_logits` (bridge,
             first block's attention shared by the two β copies, last-position unembedding)
  hf         the hooks on the HF model (`hf.attached`), its forward with `logits_to_keep=1`
             (the last position's logits only: the prompts are unpadded), then the objective
  bridge     the bridge's own forward with the same hooks (`model.hooks`), last position read
             from full logits: the path without the project's forward optimizations
The ratio ours / hf is the issue's "step over the real floor" (goal ≤ 1.05). The logits of the
three are checked to agree (1e-4) before anything is timed. A last point times the fused
step (K = 16 settings) against its own floor (`bench_fused_floor`).
"""

from __future__ import annotations

import torch

from benchmarks.harness import make_batch, make_module, side_by_side
from interventions.hf import attached
from interventions.models import load_model
from interventions.plain import plain_logits
from interventions.toyworld.hf_form import hf_form
from interventions.training.fused import fused_step_logits, stack_parameters


def _paths(module, hf_model, batch: dict) -> dict:
    """{name: fn() -> (logits⁺ [B, vocab], logits⁻ [B, vocab])} for each side."""
    model, method = module.model, module.method
    b = batch["input_ids"].shape[0]
    beta = torch.tensor([1.0, -1.0]).repeat_interleave(b)
    ids = batch["input_ids"].repeat(2, 1)

    def hf():
        with attached(hf_model, method, beta):
            return hf_model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().split(b)

    def bridge():
        with model.hooks(fwd_hooks=method.hooks(beta)):
            return model(ids)[:, -1].float().split(b)

    return {"ours": lambda: tuple(module.steered_logits(batch)), "hf": hf, "bridge": bridge}


def _forward_backward(module, logits_fn, batch: dict):
    def step():
        pos, neg = logits_fn()
        loss, _ = module.objective(pos, neg, batch["correct"], batch["wrong"], batch["clean_logprobs"],
                                   module.method.flat_params())  # fmt: skip
        module.method.zero_grad(set_to_none=True)
        loss.backward()

    return step


def bench_floor(batch_size: int, repeats: int) -> dict:
    model, _ = load_model("toy")
    hf_model = hf_form(model)
    pos = 17
    batch = make_batch(model, model.cfg.d_vocab, batch_size, pos)
    module = make_module(model, pos)
    paths = _paths(module, hf_model, batch)
    with torch.no_grad():
        reference = torch.cat(paths["ours"]())
        for name, fn in paths.items():
            torch.testing.assert_close(torch.cat(fn()), reference, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
    times = side_by_side({name: _forward_backward(module, fn, batch) for name, fn in paths.items()}, repeats)
    return {"batch": batch_size, "positions": pos, "ms": {k: v * 1e3 for k, v in times.items()},
            "ours_over_hf": times["ours"] / times["hf"], "bridge_over_hf": times["bridge"] / times["hf"]}  # fmt: skip


def bench_fused_floor(k: int, batch_size: int, repeats: int) -> dict:
    """The fused step's forward + backward (K settings × β = ±1 over a batch of `batch_size`:
    2·K·B rows, on the plain form as the fused trainer runs it) against the plain form's
    forward + backward of the same 2·K·B rows with one setting's hooks (its floor: the model's
    work for those rows), and against one separate run's step forward + backward (2·B rows)."""
    model, _ = load_model("toy")
    batch = make_batch(model, model.cfg.d_vocab, batch_size, 17)
    modules = [make_module(model, 17) for _ in range(k)]
    stacked = stack_parameters([m.method for m in modules])
    plain, proto = modules[0]._frozen.plain, modules[0].method
    rows = {key: batch[key].repeat(2 * k, *([1] * (batch[key].dim() - 1))) for key in ("input_ids", "attention_mask", "last_index")}
    beta = torch.ones(2 * k * batch_size)

    def fused():
        pos, neg = fused_step_logits(model, proto, stacked, batch, plain=plain)
        (pos.logsumexp(-1).mean() - neg.logsumexp(-1).mean()).backward()
        for values in stacked.values():
            values.grad = None

    def floor():
        plain_logits(plain, proto.hooks(beta), rows, 1, proto.cfg_dims["n_heads"]).logsumexp(-1).mean().backward()
        proto.zero_grad(set_to_none=True)

    def separate():
        pos, neg = modules[1].steered_logits(batch)
        (pos.logsumexp(-1).mean() - neg.logsumexp(-1).mean()).backward()
        modules[1].method.zero_grad(set_to_none=True)

    times = side_by_side({"fused": fused, "floor": floor, "separate": separate}, repeats)
    return {"k": k, "batch": batch_size, "positions": 17, "ms": {name: t * 1e3 for name, t in times.items()},
            "fused_over_floor": times["fused"] / times["floor"],
            "fused_over_k_separate": times["fused"] / (k * times["separate"])}  # fmt: skip


def run(repeats: int, batches=(4, 32), fused_k: int = 16) -> list[dict]:
    return [*(bench_floor(b, repeats) for b in batches), bench_fused_floor(fused_k, 4, repeats)]
