"""Speed and memory of the training step, side by side in one process, as ratios.

    python benchmarks/run.py step      [--models toy,gpt2-small] [--repeats 20]
    python benchmarks/run.py scaling   [--model toy|gpt2-small]
    python benchmarks/run.py fused     (K = 16 configurations: fused vs separate runs)
    python benchmarks/run.py prefix    [--models toy,gpt2-small,hf-gpt2-small] (intervening on the last
                                       layer: prefix skipped vs full; hf-* = Hugging Face GPT-2)
    python benchmarks/run.py peer      (ActivScalar epoch: ours vs pyvene; needs `pip install -e .[bench]`)
    python benchmarks/run.py progress  (a toy training step with no progress bar, Lightning's, the CLI's)

`step` times, on the same doubled batch (β = +1 and β = -1):
  bare      one forward + backward of the frozen model with gradients flowing only to the
            hooked activations (the floor: a hook multiplies each hooked activation by a
            leaf of ones; backward from the last-position logits)
  ours      the product's training step: one batched β pass, hooks, clean log-probs
            precomputed, no weight gradients, last-position unembedding, objective, Adam
  naive     a straightforward step: two separate β passes, clean logits recomputed every
            step, model weights left requiring grad, logits at every position, plain Adam
  without_<x>  ours with one optimization x switched off (OPTIMIZATIONS: frozen_weights,
            cached_clean, one_pass, last_logits): what each one buys
  skip_unread  ours with `skip_unread=True` (the last block's MLP at the read position only)
  fit       ours inside `lightning.Trainer.fit` (its loop, logging and optimizer closure)
and reports ours / bare (goal ≤ 1.15) and every other variant / ours.
`prefix` times a step with and without the prefix skip, also in alternation. `scaling` runs
each point in a fresh subprocess and reports the median epoch after a warm-up step, the
peak RSS while training and its rise above the RSS before the first step, as prompts,
layers and positions grow. `fused` alternates fused and separate trainings 5 times after a warm-up
at the measured sizes and reports medians, with the defaults, with `skip_unread` on both
sides, and intervening only on the last layer (both sides skip the prefix). `peer` trains ActivScalar for 3 epochs on a random HF GPT-2 (toy and
GPT-2-small shapes) with `train_intervention` (also with `skip_unread`) and with the pyvene
peer (benchmarks/pyvene_peer.py), from the same initial α on the same batches, and reports
median epoch times, the HF floor and the final parameter difference. Absolute times are
noisy on a shared machine; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interventions.cli import quiet_libraries  # noqa: E402

GPT2_SMALL = dict(d_model=768, n_layers=12, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=128,
                  act_fn="gelu_new", normalization_type="LN")  # fmt: skip


def build(model_name: str, n_layers: int | None = None):
    """(frozen model, d_vocab): the toy checkpoint, or a random GPT-2-small-shaped native model."""
    from interventions.models import freeze, load_model

    if model_name == "toy" and not n_layers:
        model, _ = load_model("toy")
        return model, model.cfg.d_vocab
    import transformer_lens.model_bridge.sources.native  # noqa: F401
    from transformer_lens.model_bridge import TransformerBridge

    from interventions.toyworld.train import MODEL_CONFIG

    # a random model of the requested depth (toy-shaped, or GPT-2-small-shaped)
    cfg = dict(MODEL_CONFIG, d_vocab=195, seed=0) if model_name == "toy" else dict(GPT2_SMALL, seed=0)
    if n_layers:
        cfg["n_layers"] = n_layers
    return freeze(TransformerBridge.boot_native(cfg)), cfg["d_vocab"]


def build_hf(shape: str):
    """(GPT2LMHeadModel, frozen TransformerBridge over the same weights): a random HF GPT-2
    of `shape` ("toy": the toy model's sizes, or "gpt2-small"), saved with the toy tokenizer
    (toy-world prompts; the model's vocabulary may be larger) and loaded with `load_model`."""
    import tempfile

    from transformers import GPT2Config, GPT2LMHeadModel

    from interventions.models import load_model
    from interventions.toyworld.train import MODEL_CONFIG

    _, tokenizer = load_model("toy")
    if shape == "toy":
        c = MODEL_CONFIG
        config = GPT2Config(n_layer=c["n_layers"], n_head=c["n_heads"], n_embd=c["d_model"], n_inner=c["d_mlp"],
                            vocab_size=len(tokenizer), n_positions=c["n_ctx"])  # fmt: skip
    else:
        config = GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=128)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        os.environ["HF_HUB_OFFLINE"] = "1"
        model, _ = load_model(folder)
    return hf, model


def make_batch(model, d_vocab: int, batch: int, pos: int, seed: int = 0) -> dict:
    """A random unpadded training batch [batch, pos] with its clean log-probs under `model`."""
    from interventions.forward import last_position_logits

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, d_vocab, (batch, pos), generator=g)
    last_index = torch.full((batch,), pos - 1)
    with torch.no_grad():
        clean = torch.log_softmax(last_position_logits(model, ids, None, last_index), -1)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "last_index": last_index,
        "correct": torch.randint(4, d_vocab, (batch,), generator=g),
        "wrong": torch.randint(4, d_vocab, (batch,), generator=g),
        "clean_logprobs": clean,
    }


def make_module(model, seq_len: int, method: str = "activscalar", skip_unread: bool = False):
    from interventions.methods import METHODS
    from interventions.module import InterventionModule
    from interventions.objective import Objective
    from interventions.sites import build_grid

    grid = build_grid(model.cfg, seq_len=seq_len)
    m = METHODS[method](grid, model.cfg)
    m.initialize("normal", 1e-3, seed=0)
    return InterventionModule(model, m, Objective(lambda_f=1.0, lambda_m=0.01, margin=1.0), lr=1e-2, skip_unread=skip_unread)


def step_ours(module, optimizer, batch):
    logits_pos, logits_neg = module.steered_logits(batch)
    loss, _ = module.objective(logits_pos, logits_neg, batch["correct"], batch["wrong"],
                               batch["clean_logprobs"], module.method.flat_params())  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def step_bare(model, batch, hook_names):
    from interventions.forward import last_position_logits

    ids = batch["input_ids"].repeat(2, 1)
    leaves = []

    def hook(act, hook):
        leaf = torch.ones((), requires_grad=True)
        leaves.append(leaf)
        return act * leaf

    logits = last_position_logits(model, ids, None, batch["last_index"].repeat(2), fwd_hooks=[(n, hook) for n in hook_names])
    logits.sum().backward()


# The optimizations of the product's step that `step_variant` can switch off, one at a time.
OPTIMIZATIONS = {
    "frozen_weights": "weights left requiring grad (backward also computes their gradients)",
    "cached_clean": "clean log-probs recomputed every step (one more no-grad forward)",
    "one_pass": "β = +1 and β = -1 as two separate forwards",
    "last_logits": "final LayerNorm and unembedding at every position",
}


def step_variant(module, optimizer, batch, without=()) -> torch.Tensor:
    """The product's training step written out, with the optimizations named in `without`
    (keys of OPTIMIZATIONS) switched off; all of them off is the naive step. Returns the
    loss, detached (the same loss for every `without`, up to rounding)."""
    from interventions.forward import repeated_batch_logits

    model, method = module.model, module.method

    def logits(reps: int, hooks: list) -> torch.Tensor:  # [reps · B, vocab], as the product reads them
        if "last_logits" not in without:
            return repeated_batch_logits(model, batch, reps, hooks)
        ids = batch["input_ids"].repeat(reps, 1)
        with model.hooks(fwd_hooks=hooks):
            return model(ids)[torch.arange(ids.shape[0]), batch["last_index"].repeat(reps)]

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
            pos, neg = logits(2, method.hooks(torch.tensor([1.0, -1.0]).repeat_interleave(b))).split(b)
        loss, _ = module.objective(pos, neg, batch["correct"], batch["wrong"], clean, method.flat_params())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    finally:
        model.requires_grad_(False)
    return loss.detach()


class EpochTimer(L.Callback):
    """A Lightning callback recording each training epoch's wall time."""

    def __init__(self):
        self.seconds = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds.append(time.perf_counter() - self._start)


def fit_epoch(module, batch: dict, steps: int, progress_bar=None) -> float:
    """Seconds per step of ours inside `Trainer.fit` (Lightning's loop, logging and optimizer
    closure included): one epoch of `steps` copies of `batch`, timed from epoch start to end
    (the Trainer's setup excluded), with `progress_bar` (a callback) or none."""
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=bool(progress_bar),
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[timer, *([progress_bar] if progress_bar else [])])  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    return timer.seconds[0] / steps


def side_by_side(fns: dict, rounds: int) -> dict:
    """Median seconds of each function, called in alternation (one call of each per round,
    after a warm-up call of each) so that a drifting machine affects all of them alike. A
    function may return its own measured seconds; otherwise its wall time counts."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            measured = fn()
            times[name].append(measured if measured is not None else time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_step(model_name: str, batch_size: int, pos: int, repeats: int) -> dict:
    from interventions.sites import hook_name

    model, d_vocab = build(model_name)
    batch = make_batch(model, d_vocab, batch_size, pos)
    without = {f"without_{name}": (name,) for name in OPTIMIZATIONS}
    names = ["ours", "skip_unread", "naive", "fit", *without]
    modules = {name: make_module(model, pos, skip_unread=name == "skip_unread") for name in names}
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
        "skip_unread": lambda: step_ours(modules["skip_unread"], optimizers["skip_unread"], batch),
        "naive": variant("naive", tuple(OPTIMIZATIONS)),
        "fit": lambda: fit_epoch(modules["fit"], batch, fit_steps),
        **{name: variant(name, off) for name, off in without.items()},
    }, repeats)  # fmt: skip
    return {
        "model": model_name, "batch": batch_size, "positions": pos, "rounds": repeats,
        **{f"{name}_ms": round(seconds * 1e3, 2) for name, seconds in t.items()},
        "ours_over_bare": round(t["ours"] / t["bare"], 3),
        **{f"{name}_over_ours": round(t[name] / t["ours"], 3) for name in names if name != "ours"},
    }  # fmt: skip


def bench_progress(batch_size: int = 4, steps: int = 64, rounds: int = 7) -> dict:
    """Seconds per step inside `Trainer.fit` on the toy model without a progress bar, with
    Lightning's TQDM bar (redrawn every batch) and with the CLI's throttled bar."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from interventions.progress import ThrottledProgressBar

    model, d_vocab = build("toy")
    batch = make_batch(model, d_vocab, batch_size, 17)
    module = make_module(model, 17)
    t = side_by_side({
        "no_bar": lambda: fit_epoch(module, batch, steps),
        "lightning_bar": lambda: fit_epoch(module, batch, steps, TQDMProgressBar()),
        "throttled_bar": lambda: fit_epoch(module, batch, steps, ThrottledProgressBar()),
    }, rounds)  # fmt: skip
    return {"batch": batch_size, "steps": steps, "rounds": rounds, **{f"{k}_ms": round(v * 1e3, 2) for k, v in t.items()},
            "lightning_bar_over_no_bar": round(t["lightning_bar"] / t["no_bar"], 3),
            "throttled_bar_over_no_bar": round(t["throttled_bar"] / t["no_bar"], 3)}  # fmt: skip


def rss_mb(field: str) -> float:
    """This process's resident memory from /proc/self/status: "VmRSS" (now) or "VmHWM" (peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def scaling_point(model_name: str, n_prompts: int, n_layers: int | None, pos: int, batch_size: int,
                  epochs: int = 3) -> dict:  # fmt: skip
    """Training at one size, run in a fresh process so that its memory is its own: one
    warm-up step, then `epochs` epochs (median seconds). Memory: the peak resident set
    while training (the kernel's high-water mark is reset once the model and data are
    built, so building them does not count) and its rise above the resident set just
    before the first step: what the steps' activations, gradients and Adam state add."""
    model, d_vocab = build(model_name, n_layers)
    data = make_batch(model, d_vocab, n_prompts, pos)
    module = make_module(model, pos)
    optimizer = module.configure_optimizers()
    batches = [{k: v[i : i + batch_size] for k, v in data.items()} for i in range(0, n_prompts, batch_size)]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux)
    before = rss_mb("VmRSS")
    step_ours(module, optimizer, batches[0])  # warm-up: first-call costs
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in batches:
            step_ours(module, optimizer, batch)
        seconds.append(time.perf_counter() - start)
    peak = rss_mb("VmHWM")
    return {
        "model": model_name, "prompts": n_prompts, "layers": model.cfg.n_layers, "positions": pos,
        "epoch_s": round(statistics.median(seconds), 3), "peak_rss_mb": round(peak, 1),
        "training_rss_mb": round(peak - before, 1),
    }  # fmt: skip


def run_scaling(model_name: str) -> list[dict]:
    base = dict(prompts=64, layers=None, positions=16)
    points = [dict(base, prompts=p) for p in (32, 64, 128, 256)]
    layers = (2, 4, 8) if model_name == "toy" else (3, 6, 12)
    points += [dict(base, layers=l) for l in layers]
    points += [dict(base, positions=p) for p in (8, 16, 32, 64)]
    results = []
    for point in points:
        cmd = [sys.executable, __file__, "_point", model_name, str(point["prompts"]), str(point["layers"] or 0), str(point["positions"])]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    return results


def bench_fused(k: int = 16, epochs: int = 3, n_train: int = 64, method: str = "activscalar", rounds: int = 5,
                skip_unread: bool = False, layers="all") -> dict:  # fmt: skip
    """K objective configurations trained fused (one batched pass) vs K separate runs,
    alternated `rounds` times after a warm-up; medians of each side. `skip_unread` and
    `layers` (the intervened layers; deep ones let both sides skip the prefix) are given
    to both sides."""
    import itertools

    from interventions import load_model, load_task, train_intervention
    from interventions.fused import train_fused
    from interventions.objective import Objective

    model, _ = load_model("toy")
    train = load_task("ccc", model=model, split="train", template=0, n=n_train)
    grid = list(itertools.product((0.0, 0.1, 1.0, 10.0), (0.0, 0.01), (1.0, 2.0)))[:k]
    objectives = [Objective(lambda_f=f, lambda_m=m, margin=g) for f, m, g in grid]
    # warm-up at the measured sizes, so neither side pays first-call costs (allocator, lazy
    # imports, kernels)
    options = dict(method=method, layers=layers, skip_unread=skip_unread)
    train_fused(model, train, objectives, epochs=1, **options)
    train_intervention(model, train, objective=objectives[0], epochs=1, **options)
    fused_times, separate_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        fused = train_fused(model, train, objectives, epochs=epochs, **options)
        fused_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        separate = [train_intervention(model, train, objective=o, epochs=epochs, **options).method for o in objectives]
        separate_times.append(time.perf_counter() - start)
    fused_s, separate_s = statistics.median(fused_times), statistics.median(separate_times)
    diff = max(float((a.flat_params() - b.flat_params()).detach().abs().max()) for a, b in zip(fused, separate))
    return {"k": k, "method": method, "epochs": epochs, "n_train": n_train, "rounds": rounds, "skip_unread": skip_unread,
            "layers": layers,
            "fused_s": round(fused_s, 2), "separate_s": round(separate_s, 2),
            "fused_over_separate": round(fused_s / separate_s, 3),
            "per_round": [round(f / s, 3) for f, s in zip(fused_times, separate_times)],
            "max_abs_param_diff": diff}  # fmt: skip


def bench_prefix(model_name: str = "toy", layer: int | None = None, repeats: int = 20) -> dict:
    """A training step intervening only from `layer` (default: the last) with the prefix
    skipped (cached residual) vs the full forward, side by side."""
    from interventions.methods import METHODS
    from interventions.module import InterventionModule
    from interventions.objective import Objective
    from interventions.sites import build_grid
    from interventions.tasks.datamodule import clean_residual

    if model_name.startswith("hf-"):  # a Hugging Face GPT-2 through TransformerBridge
        model = build_hf(model_name[3:])[1]
        d_vocab = model.cfg.d_vocab
    else:
        model, d_vocab = build(model_name)
    layer = model.cfg.n_layers - 1 if layer is None else layer
    batch = make_batch(model, d_vocab, 32, 17 if model_name == "toy" else 20)
    batch["resid_pre"] = clean_residual(model, {**batch, "index": torch.arange(32)}, layer)
    steps = {}
    for name, prefix in (("full", 0), ("skip", layer)):
        grid = build_grid(model.cfg, layers=[layer], seq_len=batch["input_ids"].shape[1])
        m = METHODS["activscalar"](grid, model.cfg)
        m.initialize("normal", 1e-3, seed=0)
        module = InterventionModule(model, m, Objective(1.0, 0.01, 1.0), lr=1e-2, prefix_layer=prefix)
        optimizer = module.configure_optimizers()
        steps[name] = partial(step_ours, module, optimizer, batch)
    t = side_by_side(steps, repeats)
    return {"model": model_name, "layer": layer, "n_layers": model.cfg.n_layers, "full_ms": round(t["full"] * 1e3, 2),
            "skip_ms": round(t["skip"] * 1e3, 2), "skip_over_full": round(t["skip"] / t["full"], 3)}  # fmt: skip


def bench_peer(shape: str, n_train: int = 128, epochs: int = 3) -> dict:
    """One ActivScalar epoch on a random HF GPT-2 of `shape` ("toy" or "gpt2-small"):
    `train_intervention` (Lightning, our hooks on the TransformerBridge) vs the pyvene peer
    (benchmarks/pyvene_peer.py) on the same HF weights, data, order, init and objective."""
    from benchmarks.pyvene_peer import bare_epoch, build_peer, train_peer
    from interventions import load_task, train_intervention
    from interventions.methods import METHODS
    from interventions.objective import Objective
    from interventions.training import initialized_method, prepare

    hf, model = build_hf(shape)
    train = load_task("ccc", model=model, split="train", n=n_train, seed=0)
    objective, lr = Objective(), METHODS["activscalar"].default_lr

    timer = EpochTimer()
    ours = train_intervention(model, train, method="activscalar", objective=objective, epochs=epochs,
                              trainer_kwargs={"callbacks": [timer]}).method.flat_params()  # fmt: skip
    dm, seq_len = prepare(model, train, None, None, "activscalar", batch_size=4, padding_side="right", seed=0)
    grid = dict(sites=("attnOut", "mlpOut"), layers="all", positions="all", heads="all")
    init = initialized_method("activscalar", model, dm, train[0].prompt, seq_len, grid, "normal", 1e-5, 0).flat_params()
    result = {"shape": shape, "n_train": n_train, "batch": 4, "positions": seq_len, "epochs": epochs,
              "ours_epoch_s": round(statistics.median(timer.seconds[1:]), 3)}  # fmt: skip
    bare_epoch(hf, dm)  # warm-up
    result["hf_bare_epoch_s"] = round(statistics.median(bare_epoch(hf, dm) for _ in range(2)), 3)
    result["ours_over_hf_bare"] = round(result["ours_epoch_s"] / result["hf_bare_epoch_s"], 3)
    timer = EpochTimer()
    train_intervention(model, train, method="activscalar", objective=objective, epochs=epochs, skip_unread=True,
                       trainer_kwargs={"callbacks": [timer]})  # fmt: skip
    result["ours_skip_unread_epoch_s"] = round(statistics.median(timer.seconds[1:]), 3)
    for keep, label in ((0, "pyvene"), (1, "pyvene_last_logits")):
        peer, interventions = build_peer(hf, seq_len, init)
        seconds = train_peer(peer, interventions, dm, objective, lr=lr, epochs=epochs, logits_to_keep=keep)
        theirs = torch.cat([iv.alpha.detach() for iv in interventions])
        result[f"{label}_epoch_s"] = round(statistics.median(seconds[1:]), 3)
        result[f"ours_over_{label}"] = round(result["ours_epoch_s"] / result[f"{label}_epoch_s"], 3)
        result[f"ours_skip_unread_over_{label}"] = round(result["ours_skip_unread_epoch_s"] / result[f"{label}_epoch_s"], 3)
        result[f"{label}_over_hf_bare"] = round(result[f"{label}_epoch_s"] / result["hf_bare_epoch_s"], 3)
        result[f"{label}_max_abs_param_diff"] = float((theirs - ours.detach()).abs().max())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py")
    parser.add_argument("what", choices=["step", "scaling", "fused", "prefix", "peer", "progress", "_point"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--models", default="toy,gpt2-small")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_libraries()  # hundreds of Trainer start-up lines would bury the results
    if args.what == "_point":
        model_name, prompts, layers, pos = args.args
        print(json.dumps(scaling_point(model_name, int(prompts), int(layers) or None, int(pos), batch_size=16)))
        return 0
    models = args.models.split(",")

    def step(name, batch):
        pos = 17 if name == "toy" else 20
        return bench_step(name, batch, pos, repeats=args.repeats if name == "toy" else max(3, args.repeats // 4))

    shapes = [(name, batch) for name in models for batch in ((32, 4) if name == "toy" else (32,))]
    runs = {  # subcommand: (results file, one result per model | one result)
        "step": ("step.json", lambda: [printed(step(name, batch)) for name, batch in shapes]),
        "prefix": ("prefix.json", lambda: [printed(bench_prefix(n, repeats=3 if "gpt2" in n else args.repeats)) for n in models]),
        "peer": ("peer.json", lambda: [printed(bench_peer(name)) for name in models]),
        "fused": ("fused.json", lambda: [
            printed(bench_fused(**options)) for options in ({}, {"skip_unread": True}, {"layers": [3]})  # 3: the toy's last
        ]),
        "progress": ("progress.json", lambda: printed(bench_progress())),
        "scaling": (f"scaling_{args.model}.json", lambda: run_scaling(args.model)),
    }
    filename, run = runs[args.what]
    results = run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / filename).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def printed(result):
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
