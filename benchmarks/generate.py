"""`python benchmarks/run.py generate`: steered generation and multi-token training, side by side.

- Greedy generation with an intervention's hooks at β = 0 (so the tokens are the unhooked
  model's, checked) against the same generation without hooks: the hooks' cost per token,
  through the bridge (no cache) and through Hugging Face's key-value cache (`backend=hf`).
- The training step on answers of three tokens (B prompts of P tokens: 2B teacher-forced
  sequences of P + 2 tokens) against the single-token step on 2B prompts of P + 2 tokens:
  the same number of tokens per forward.
"""

from __future__ import annotations

import torch

from benchmarks.harness import build, device_sync, make_batch, make_module, side_by_side
from interventions.generation import generate_tokens
from interventions.hf import cached_tokens
from interventions.methods import METHODS
from interventions.sites import build_grid
from interventions.tasks.datamodule import clean_tails
from interventions.toyworld.hf_form import hf_form


def bench_generation(model_name: str, batch: int, prompt_len: int, new_tokens: int, rounds: int,
                     device: str = "cpu", method_name: str = "dynscalar", backend: str = "bridge") -> dict:  # fmt: skip
    """Hooked (`method_name` on attnOut and mlpOut of every layer, β = 0) over unhooked greedy
    generation of `new_tokens` tokens for `batch` random prompts of `prompt_len` tokens.
    DynScalar acts on every position of every step; ActivScalar on the prompt's.

    backend "bridge": through TransformerBridge, each step the whole sequence (no cache), with
    a no-op floor (hooks at the same points that return the activation unchanged);
    "hf": the model's GPT-2 form (`toyworld.hf_form`) with Hugging Face's key-value cache,
    one token per step, the hooks on its modules (`hf.cached_tokens`)."""
    model, d_vocab = build(model_name, device=device)
    ids = torch.randint(4, d_vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0)).tolist()
    positions = None if method_name == "dynscalar" else "all"
    grid = build_grid(model.cfg, positions=positions, seq_len=prompt_len)
    method = METHODS[method_name](grid, model.cfg).to(device)
    method.initialize("normal", 1e-2, seed=0)
    if backend == "hf":
        form = hf_form(model)

        def run(steering) -> None:  # returns nothing: `alternated` would read a return value as seconds
            cached_tokens(form, steering, ids, (0.0,), new_tokens)

        variants = {"hooked": lambda: run(method), "plain": lambda: run(None)}
        hooked, plain = (cached_tokens(form, m, ids, (0.0,), new_tokens) for m in (method, None))
    else:
        def run(steering) -> None:
            generate_tokens(model, steering, ids, (0.0,), new_tokens)

        def noop_hooked() -> None:  # the floor: hooks at the same points that return the activation unchanged
            with model.hooks(fwd_hooks=[(name, lambda h, hook: h) for name, _ in method.hooks(0.0)]):
                run(None)

        variants = {"hooked": lambda: run(method), "plain": lambda: run(None), "noop": noop_hooked}
        hooked, plain = (generate_tokens(model, m, ids, (0.0,), new_tokens) for m in (method, None))
    assert torch.equal(hooked, plain), "β = 0 must generate the unhooked model's tokens"
    t = side_by_side(variants, rounds, device_sync(device))
    result = {"model": model_name, "method": method_name, "backend": backend, "device": str(device), "batch": batch,
              "prompt_tokens": prompt_len, "new_tokens": new_tokens, "rounds": rounds,
              **{f"{k}_s": round(v, 4) for k, v in t.items()}, "hooked_over_plain": round(t["hooked"] / t["plain"], 3)}  # fmt: skip
    if "noop" in t:
        result["noop_over_plain"] = round(t["noop"] / t["plain"], 3)
    return result


def multi_token_batch(model, d_vocab: int, batch: int, pos: int, answer_len: int) -> dict:
    """A random training batch whose answers have `answer_len` tokens (with its clean tails)."""
    out = make_batch(model, d_vocab, batch, pos)
    g = torch.Generator().manual_seed(1)
    answers = torch.randint(4, d_vocab, (batch, 2, answer_len), generator=g).to(out["input_ids"].device)
    out.update(answer_ids=answers, answer_len=torch.full((batch, 2), answer_len, device=answers.device),
               correct=answers[:, 0, 0], wrong=answers[:, 1, 0], index=torch.arange(batch))  # fmt: skip
    out["clean_tail"] = clean_tails(model, out).to(answers.device)
    return out


def step(module, optimizer, batch) -> None:
    """One training step through the module's own path (`InterventionModule.steered`)."""
    (pos, neg), tails = module.steered(batch)
    loss, _ = module.objective(pos, neg, batch["correct"], batch["wrong"], batch["clean_logprobs"],
                               module.method.flat_params(), tails=tails)  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_multi_token_step(model_name: str, batch: int, pos: int, rounds: int, answer_len: int = 3,
                           device: str = "cpu") -> dict:  # fmt: skip
    """ActivScalar's step on answers of `answer_len` tokens over the single-token step with as
    many tokens per forward (2·batch prompts of pos + answer_len - 1 tokens)."""
    model, d_vocab = build(model_name, device=device)
    longer = pos + answer_len - 1
    batches = {"multi": multi_token_batch(model, d_vocab, batch, pos, answer_len),
               "single": make_batch(model, d_vocab, 2 * batch, longer)}  # fmt: skip
    modules = {"multi": make_module(model, pos), "single": make_module(model, longer)}
    optimizers = {name: m.configure_optimizers() for name, m in modules.items()}
    t = side_by_side({name: lambda name=name: step(modules[name], optimizers[name], batches[name]) for name in modules},
                     rounds, device_sync(device))  # fmt: skip
    return {"model": model_name, "device": str(device), "batch": batch, "positions": pos, "answer_tokens": answer_len,
            "rounds": rounds, **{f"{k}_ms": round(v * 1e3, 2) for k, v in t.items()},
            "multi_over_single": round(t["multi"] / t["single"], 3)}  # fmt: skip
