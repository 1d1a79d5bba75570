"""Speed and memory of the training step, side by side in one process, as ratios.

    python benchmarks/run.py step      [--models toy,gpt2-small] [--repeats 20]
    python benchmarks/run.py scaling   [--model toy|gpt2-small]
    python benchmarks/run.py fused     (K = 16 configurations: fused vs separate runs)
    python benchmarks/run.py prefix    [--models toy,gpt2-small,hf-gpt2-small] (intervening on the last
                                       layer: prefix skipped vs full; hf-* = Hugging Face GPT-2)
    python benchmarks/run.py peer      (ActivScalar epoch: ours vs pyvene; needs `pip install -e .[bench]`)
    python benchmarks/run.py gelu      (our step on HF GPT-2 with load_model's fused GELU vs HF's gelu_new)
    python benchmarks/run.py progress  (a toy training step with no progress bar, Lightning's, the CLI's)
    python benchmarks/run.py summary   (every goal's ratio from the results files, as one table; nothing timed)
    python benchmarks/run.py all       (all of the above in turn, with the same --device, --threads and --out,
                                       then the summary)

`step` times, on the same doubled batch (β = +1 and β = -1):
  bare      one forward + backward of the frozen model with gradients flowing only to the
            hooked activations (the floor: a hook multiplies each hooked activation by a
            leaf of ones; backward from the last-position logits)
  ours      the product's training step: one batched β pass, hooks, clean log-probs
            precomputed, no weight gradients, last-position unembedding, objective, Adam
  naive     a straightforward step: two separate β passes, clean logits recomputed every
            step, model weights left requiring grad, logits at every position, plain Adam
  without_<x>  ours with one optimization x switched off (OPTIMIZATIONS: frozen_weights,
            cached_clean, one_pass, last_logits, shared_attention): what each one buys
  skip_unread  ours with `skip_unread=True` (the last block's MLP at the read position only)
  fit       ours inside `lightning.Trainer.fit` (its loop, logging and optimizer closure)
and reports ours / bare (goal ≤ 1.15) and every other variant / ours.
`prefix` times a step with and without the prefix skip, also in alternation. `scaling` runs
each point in a fresh subprocess and reports the median epoch after a warm-up step, the
peak RSS while training and its rise above the RSS before the first step, as prompts,
layers and positions grow. `fused` alternates fused and separate trainings 5 times after a
warm-up at the measured sizes and reports medians, with the defaults, with `skip_unread` on
both sides, and intervening only on the last layer (both sides skip the prefix). `peer`
trains ActivScalar for 3 epochs on a random HF GPT-2 (toy and GPT-2-small shapes) with `train_intervention` (also with `skip_unread`) and with the pyvene
peer (benchmarks/pyvene_peer.py), from the same initial α on the same batches, every side
once per round in alternation (3 rounds on the toy shape, 1 on the GPT-2 shape), and reports
median epoch times, the HF floor, the final parameter difference, and the time of the matrix
products alone in one profiled epoch of ours with `skip_unread` (what no implementation of the
same float32 products, run by the same BLAS, can go below). Absolute times are
noisy on a shared machine; read the ratios.

`--device cuda[:N]` (all but `progress`) builds the models and batches on that GPU, waits
for it (`device_sync`) before every clock reading, trains with Lightning there, reads GPU
memory from torch's allocator in `scaling`, and writes `<name>_cuda.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from interventions.console import configure_cli  # noqa: E402
from benchmarks.summary import summary  # noqa: E402
from interventions.forward import model_device  # noqa: E402

GPT2_SMALL = dict(d_model=768, n_layers=12, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=128,
                  act_fn="gelu_new", normalization_type="LN")  # fmt: skip


def device_sync(device: torch.device):
    """What to call before reading the clock on `device`: CUDA kernels run asynchronously,
    so without a synchronize a timer stops before the GPU has finished; nothing on the CPU."""
    if torch.device(device).type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


def build(model_name: str, n_layers: int | None = None, device: str = "cpu"):
    """(frozen model on `device`, d_vocab): the toy checkpoint, or a random
    GPT-2-small-shaped native model."""
    from interventions.models import freeze, load_model

    if model_name == "toy" and not n_layers:
        model, _ = load_model("toy", device=device)
        return model, model.cfg.d_vocab
    import transformer_lens.model_bridge.sources.native  # noqa: F401
    from transformer_lens.model_bridge import TransformerBridge

    from interventions.toyworld.train import MODEL_CONFIG

    # a random model of the requested depth (toy-shaped, or GPT-2-small-shaped)
    cfg = dict(MODEL_CONFIG, d_vocab=195, seed=0) if model_name == "toy" else dict(GPT2_SMALL, seed=0)
    if n_layers:
        cfg["n_layers"] = n_layers
    return freeze(TransformerBridge.boot_native(cfg).to(device)), cfg["d_vocab"]


def build_hf(shape: str, device: str = "cpu", fused_gelu: bool = True):
    """(GPT2LMHeadModel, frozen TransformerBridge over the same weights), both on `device`: a
    random HF GPT-2 of `shape` ("toy": the toy model's sizes, or "gpt2-small"), saved with the
    toy tokenizer (toy-world prompts; the model's vocabulary may be larger) and loaded with
    `load_model(folder, fused_gelu=fused_gelu)`. The same `shape` always gives the same weights."""
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
        model, _ = load_model(folder, device=device, fused_gelu=fused_gelu)
    return hf.to(device), model


def make_batch(model, d_vocab: int, batch: int, pos: int, seed: int = 0) -> dict:
    """A random unpadded training batch [batch, pos] with its clean log-probs under `model`,
    on the model's device (drawn on the CPU: the same batch on every device)."""
    from interventions.forward import last_position_logits

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, d_vocab, (batch, pos), generator=g)
    tensors = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "last_index": torch.full((batch,), pos - 1),
        "correct": torch.randint(4, d_vocab, (batch,), generator=g),
        "wrong": torch.randint(4, d_vocab, (batch,), generator=g),
    }
    tensors = {k: v.to(model_device(model)) for k, v in tensors.items()}
    with torch.no_grad():
        logits = last_position_logits(model, tensors["input_ids"], None, tensors["last_index"])
    return {**tensors, "clean_logprobs": torch.log_softmax(logits, -1)}


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
        leaf = torch.ones((), device=act.device, requires_grad=True)
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
    "shared_attention": "the first block's attention run on both β copies, not once",
}


def step_variant(module, optimizer, batch, without=()) -> torch.Tensor:
    """The product's training step written out, with the optimizations named in `without`
    (keys of OPTIMIZATIONS) switched off; all of them off is the naive step. Returns the
    loss, detached (the same loss for every `without`, up to rounding)."""
    from interventions.forward import repeated_batch_logits

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


class EpochTimer(L.Callback):
    """A Lightning callback recording each training epoch's wall time (with `sync`, a
    `device_sync`, called before each clock reading)."""

    def __init__(self, sync=lambda: None):
        self.seconds = []
        self.sync = sync

    def on_train_epoch_start(self, trainer, module):
        self.sync()
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.sync()
        self.seconds.append(time.perf_counter() - self._start)


GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")  # the matrix products; none calls another


def gemm_seconds(events, cuda: bool = False) -> float:
    """Seconds spent in matrix products (GEMMS) among a profiler's `key_averages()`: on the
    CPU their self time (the BLAS call, which uses every intra-op thread), on a GPU their
    kernels' device time (not yet run on a GPU)."""
    return sum(e.device_time_total if cuda else e.self_cpu_time_total for e in events if e.key in GEMMS) / 1e6


class EpochGemmTimer(L.Callback):
    """A Lightning callback recording each training epoch's `gemm_seconds`, profiled on
    `device`: the time no implementation of the same products, run by the same BLAS or GPU
    library in the same precision, can go below, whatever its overhead. The profiler slows
    everything else down, so time epochs with an `EpochTimer` in a separate run."""

    def __init__(self, device="cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds = []
        self._profile = None

    def on_train_epoch_start(self, trainer, module):
        from torch.profiler import ProfilerActivity, profile

        self._profile = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else []))
        self._profile.start()

    def on_train_epoch_end(self, trainer, module):
        self._profile.stop()
        self.seconds.append(gemm_seconds(self._profile.key_averages(), self.cuda))
        self._profile = None

    def on_exception(self, trainer, module, exception):
        if self._profile is not None:
            self._profile.stop()
            self._profile = None


def fit_epoch(module, batch: dict, steps: int, progress_bar=None) -> float:
    """Seconds per step of ours inside `Trainer.fit` (Lightning's loop, logging and optimizer
    closure included): one epoch of `steps` copies of `batch`, timed from epoch start to end
    (the Trainer's setup excluded), with `progress_bar` (a callback) or none; on the model's
    device."""
    from interventions.training import lightning_device

    device = model_device(module.model)
    timer = EpochTimer(device_sync(device))
    trainer = L.Trainer(max_epochs=1, **lightning_device(device), logger=False, enable_progress_bar=bool(progress_bar),
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[timer, *([progress_bar] if progress_bar else [])])  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    return timer.seconds[0] / steps


def alternated(fns: dict, rounds: int, sync=lambda: None, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each call of each function, called in alternation (one call of each per
    round, after a warm-up call of each unless `warmup` is False) so that a drifting machine
    affects all of them alike. A function may return its own measured seconds; otherwise its
    wall time counts, between two calls of `sync` (a `device_sync`: the GPU's queued work
    belongs to the call)."""
    if warmup:
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            measured = fn()
            sync()
            times[name].append(measured if measured is not None else time.perf_counter() - start)
    return times


def side_by_side(fns: dict, rounds: int, sync=lambda: None) -> dict:
    """Median seconds of each function over `alternated` calls (after a warm-up)."""
    return {name: statistics.median(values) for name, values in alternated(fns, rounds, sync).items()}


def bench_step(model_name: str, batch_size: int, pos: int, repeats: int, device: str = "cpu") -> dict:
    from interventions.sites import hook_name

    model, d_vocab = build(model_name, device=device)
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
    }, repeats, device_sync(device))  # fmt: skip
    return {
        "model": model_name, "device": str(device), "batch": batch_size, "positions": pos, "rounds": repeats,
        **{f"{name}_ms": round(seconds * 1e3, 2) for name, seconds in t.items()},
        "ours_over_bare": round(t["ours"] / t["bare"], 3),
        **{f"{name}_over_ours": round(t[name] / t["ours"], 3) for name in names if name != "ours"},
    }  # fmt: skip


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


def reset_memory_peak(device: torch.device) -> None:
    """Start a new peak for `memory_mb(device, peak=True)`."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)


def memory_mb(device: torch.device, peak: bool = False) -> float:
    """Memory in use now, or its peak since `reset_memory_peak`, in MB: on a GPU what torch
    has allocated there (the process's resident set would not see it), on the CPU the
    process's resident set."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / 2**20
    return rss_mb("VmHWM" if peak else "VmRSS")


def scaling_point(model_name: str, n_prompts: int, n_layers: int | None, pos: int, batch_size: int,
                  epochs: int = 3, device: str = "cpu") -> dict:  # fmt: skip
    """Training at one size, run in a fresh process so that its memory is its own: one
    warm-up step, then `epochs` epochs (median seconds). Memory (`memory_mb`: the resident
    set on the CPU, "rss", torch's allocations on a GPU, "cuda"): the peak while training
    (reset once the model and data are built, so building them does not count) and its rise
    above the memory in use just before the first step: what the steps' activations,
    gradients and Adam state add."""
    model, d_vocab = build(model_name, n_layers, device)
    device = model_device(model)
    sync = device_sync(device)
    data = make_batch(model, d_vocab, n_prompts, pos)
    module = make_module(model, pos)
    optimizer = module.configure_optimizers()
    batches = [{k: v[i : i + batch_size] for k, v in data.items()} for i in range(0, n_prompts, batch_size)]
    reset_memory_peak(device)
    before = memory_mb(device)
    step_ours(module, optimizer, batches[0])  # warm-up: first-call costs
    seconds = []
    for _ in range(epochs):
        sync()
        start = time.perf_counter()
        for batch in batches:
            step_ours(module, optimizer, batch)
        sync()
        seconds.append(time.perf_counter() - start)
    peak, kind = memory_mb(device, peak=True), "cuda" if device.type == "cuda" else "rss"
    return {
        "model": model_name, "device": str(device), "prompts": n_prompts, "layers": model.cfg.n_layers,
        "positions": pos, "epoch_s": round(statistics.median(seconds), 3), f"peak_{kind}_mb": round(peak, 1),
        f"training_{kind}_mb": round(peak - before, 1),
    }  # fmt: skip


def run_scaling(model_name: str, device: str = "cpu") -> list[dict]:
    base = dict(prompts=64, layers=None, positions=16)
    points = [dict(base, prompts=p) for p in (32, 64, 128, 256)]
    layers = (2, 4, 8) if model_name == "toy" else (3, 6, 12)
    points += [dict(base, layers=l) for l in layers]
    points += [dict(base, positions=p) for p in (8, 16, 32, 64)]
    results = []
    for point in points:
        cmd = [sys.executable, __file__, "_point", model_name, str(point["prompts"]), str(point["layers"] or 0),
               str(point["positions"]), "--device", str(device)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    return results


def bench_fused(k: int = 16, epochs: int = 3, n_train: int = 64, method: str = "activscalar", rounds: int = 5,
                skip_unread: bool = False, layers="all", device: str = "cpu") -> dict:  # fmt: skip
    """K objective configurations trained fused (one batched pass) vs K separate runs on the
    toy model on `device`, alternated `rounds` times after a warm-up; medians of each side.
    `skip_unread` and `layers` (the intervened layers; deep ones let both sides skip the
    prefix) are given to both sides."""
    import itertools

    from interventions import load_model, load_task, train_intervention
    from interventions.fused import train_fused
    from interventions.objective import Objective

    model, _ = load_model("toy", device=device)
    sync = device_sync(device)
    train = load_task("ccc", model=model, split="train", template=0, n=n_train)
    grid = list(itertools.product((0.0, 0.1, 1.0, 10.0), (0.0, 0.01), (1.0, 2.0)))[:k]
    objectives = [Objective(lambda_f=f, lambda_m=m, margin=g) for f, m, g in grid]
    # warm-up at the measured sizes, so neither side pays first-call costs (allocator, lazy
    # imports, kernels)
    options = dict(method=method, layers=layers, skip_unread=skip_unread)
    train_fused(model, train, objectives, epochs=1, **options)
    train_intervention(model, train, objective=objectives[0], epochs=1, **options)
    trained = {}

    def fused():
        trained["fused"] = train_fused(model, train, objectives, epochs=epochs, **options)

    def separate():
        trained["separate"] = [train_intervention(model, train, objective=o, epochs=epochs, **options).method
                               for o in objectives]  # fmt: skip

    times = alternated({"fused": fused, "separate": separate}, rounds, sync, warmup=False)
    fused_times, separate_times = times["fused"], times["separate"]
    fused_s, separate_s = statistics.median(fused_times), statistics.median(separate_times)
    diff = max(float((a.flat_params() - b.flat_params()).detach().abs().max())
               for a, b in zip(trained["fused"], trained["separate"]))  # fmt: skip
    return {"k": k, "device": str(device), "method": method, "epochs": epochs, "n_train": n_train, "rounds": rounds,
            "skip_unread": skip_unread, "layers": layers,
            "fused_s": round(fused_s, 2), "separate_s": round(separate_s, 2),
            "fused_over_separate": round(fused_s / separate_s, 3),
            "per_round": [round(f / s, 3) for f, s in zip(fused_times, separate_times)],
            "max_abs_param_diff": diff}  # fmt: skip


def bench_prefix(model_name: str = "toy", layer: int | None = None, repeats: int = 20, device: str = "cpu") -> dict:
    """A training step intervening only from `layer` (default: the last) with the prefix
    skipped (cached residual) vs the full forward, side by side."""
    from interventions.methods import METHODS
    from interventions.module import InterventionModule
    from interventions.objective import Objective
    from interventions.sites import build_grid
    from interventions.tasks.datamodule import clean_residual

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


def bench_peer(shape: str, n_train: int = 128, epochs: int = 3, rounds: int | None = None, device: str = "cpu") -> dict:
    """One ActivScalar epoch on a random HF GPT-2 of `shape` ("toy" or "gpt2-small"):
    `train_intervention` (Lightning, our hooks on the TransformerBridge; also with
    `skip_unread`, and with HF's own gelu_new module instead of the fused GELU `load_model`
    puts in) vs the pyvene peer (benchmarks/pyvene_peer.py; also with `logits_to_keep=1`, and
    with pyvene's default of weights requiring grad) on the same HF weights, data, order,
    init and objective, and the HF floor. Each round runs every side once, in alternation,
    for `epochs` epochs (the first a warm-up); a side's time is the median over rounds of its
    rounds' median epoch. `rounds`: 3 on the toy shape, 1 on the GPT-2-small shape (3 epochs
    take minutes there). Then one epoch of ours with `skip_unread` under the profiler, for the
    seconds its matrix products take (`EpochGemmTimer`)."""
    from benchmarks.pyvene_peer import bare_epoch, build_peer, train_peer
    from interventions import load_task, train_intervention
    from interventions.methods import METHODS
    from interventions.objective import Objective
    from interventions.training import initialized_method, prepare

    rounds = rounds or (3 if shape == "toy" else 1)
    hf, model = build_hf(shape, device)
    models = {False: model, True: build_hf(shape, device, fused_gelu=False)[1]}  # by hf_gelu
    sync = device_sync(device)
    train = load_task("ccc", model=model, split="train", n=n_train, seed=0)
    objective, lr = Objective(), METHODS["activscalar"].default_lr
    dm, seq_len = prepare(model, train, None, None, "activscalar", batch_size=4, padding_side="right", seed=0)
    grid = dict(sites=("attnOut", "mlpOut"), layers="all", positions="all", heads="all")
    init = initialized_method("activscalar", model, dm, train[0].prompt, seq_len, grid, "normal", 1e-5, 0).flat_params()
    params = {}

    def train_ours(callback: L.Callback, skip_unread: bool = False, hf_gelu: bool = False, epochs: int = epochs):
        return train_intervention(models[hf_gelu], train, method="activscalar", objective=objective, epochs=epochs,
                                  skip_unread=skip_unread, trainer_kwargs={"callbacks": [callback]})  # fmt: skip

    def ours(label: str, skip_unread: bool = False, hf_gelu: bool = False) -> float:
        timer = EpochTimer(sync)
        params[label] = train_ours(timer, skip_unread, hf_gelu).method.flat_params().detach()
        return statistics.median(timer.seconds[1:])

    def pyvene(label: str, keep: int = 0, model_gradients: bool = False) -> float:
        peer, interventions = build_peer(hf, seq_len, init, model_gradients=model_gradients)
        try:
            seconds = train_peer(peer, interventions, dm, objective, lr=lr, epochs=epochs, logits_to_keep=keep,
                                 sync=sync)  # fmt: skip
        finally:
            hf.requires_grad_(False).zero_grad(set_to_none=True)
        params[label] = torch.cat([iv.alpha.detach() for iv in interventions])
        return statistics.median(seconds[1:])

    bare_epoch(hf, dm, sync=sync)  # warm-up
    sides = {
        "ours": lambda: ours("ours"),
        "hf_bare": lambda: statistics.median(bare_epoch(hf, dm, sync=sync) for _ in range(2)),
        "pyvene": lambda: pyvene("pyvene"),
        "ours_skip_unread": lambda: ours("ours_skip_unread", skip_unread=True),
        "pyvene_last_logits": lambda: pyvene("pyvene_last_logits", keep=1),
        "ours_hf_gelu": lambda: ours("ours_hf_gelu", hf_gelu=True),
        "pyvene_model_grads": lambda: pyvene("pyvene_model_grads", model_gradients=True),
    }
    times = alternated(sides, rounds, sync, warmup=False)  # each side warms up in its first epoch
    t = {name: statistics.median(values) for name, values in times.items()}
    # The matrix products alone of an epoch of the side that computes the fewest (skip_unread), after the
    # timed rounds (the profiler slows the rest): ours / pyvene cannot go below this over pyvene's epoch.
    gemm = EpochGemmTimer(device)
    train_ours(gemm, skip_unread=True, epochs=1)
    result = {"shape": shape, "device": str(device), "n_train": n_train, "batch": 4, "positions": seq_len,
              "epochs": epochs, "rounds": rounds,
              **{f"{name}_epoch_s": round(t[name], 3) for name in sides},
              **{f"{name}_epoch_s_rounds": [round(x, 3) for x in times[name]] for name in sides if rounds > 1},
              "ours_over_hf_bare": round(t["ours"] / t["hf_bare"], 3),
              "ours_skip_unread_gemm_epoch_s": round(gemm.seconds[0], 3)}  # fmt: skip
    for label in ("pyvene", "pyvene_last_logits", "pyvene_model_grads"):
        for mine in ("ours", "ours_skip_unread", "ours_hf_gelu"):
            result[f"{mine}_over_{label}"] = round(t[mine] / t[label], 3)
        result[f"{label}_over_hf_bare"] = round(t[label] / t["hf_bare"], 3)
        result[f"ours_skip_unread_gemm_over_{label}"] = round(gemm.seconds[0] / t[label], 3)
        # against ours with HF's own GELU: the same function computed by the same modules
        result[f"{label}_max_abs_param_diff"] = float((params[label] - params["ours_hf_gelu"]).abs().max())
    result["ours_hf_gelu_over_ours"] = round(t["ours_hf_gelu"] / t["ours"], 3)
    result["ours_max_abs_param_diff"] = float((params["ours"] - params["ours_hf_gelu"]).abs().max())  # fused GELU
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py")
    parser.add_argument("what", choices=["step", "scaling", "fused", "prefix", "peer", "gelu", "progress", "summary",
                                         "all", "_point"])  # fmt: skip
    parser.add_argument("args", nargs="*")
    parser.add_argument("--models", default="toy,gpt2-small")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; GPU results go to <name>_cuda.json")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    suffix = "_cuda" if args.device.startswith("cuda") else ""  # the CPU results stay next to the GPU's
    if args.what == "summary":  # reads files only: no GPU needed to read a GPU run's results
        print(summary(Path(args.out), suffix))
        return 0
    device = checked_device(parser, args.device, args.what)
    if args.what in ("peer", "all") and importlib.util.find_spec("pyvene") is None:
        parser.error(f"{args.what}: the pyvene peer needs pyvene; install it with `pip install -e .[bench]`")
    if args.what == "all":
        return run_all(args)
    torch.set_num_threads(args.threads)
    configure_cli()  # hundreds of Trainer start-up lines would bury the results
    if args.what == "_point":
        model_name, prompts, layers, pos = args.args
        point = scaling_point(model_name, int(prompts), int(layers) or None, int(pos), batch_size=16, device=device)
        print(json.dumps(point))
        return 0
    models = args.models.split(",")

    def step(name, batch):
        pos = 17 if name == "toy" else 20
        return bench_step(name, batch, pos, repeats=args.repeats if name == "toy" else max(3, args.repeats // 4),
                          device=device)  # fmt: skip

    def prefix(name):
        return bench_prefix(name, repeats=3 if "gpt2" in name else args.repeats, device=device)

    shapes = [(name, batch) for name in models for batch in ((32, 4) if name == "toy" else (32,))]

    def gelu(shape, batch):
        toy = shape == "toy"
        return bench_gelu(shape, batch, 17 if toy else 20, args.repeats if toy else max(3, args.repeats // 4), device)

    fused_options = ({}, {"skip_unread": True}, {"layers": [3]})  # 3: the toy's last layer
    runs = {  # subcommand: (results file, one result per model | one result)
        "step": ("step", lambda: [printed(step(name, batch)) for name, batch in shapes]),
        "prefix": ("prefix", lambda: [printed(prefix(name)) for name in models]),
        "peer": ("peer", lambda: [printed(bench_peer(name, device=device)) for name in models]),
        "fused": ("fused", lambda: [printed(bench_fused(**options, device=device)) for options in fused_options]),
        "gelu": ("gelu", lambda: [printed(gelu(shape, batch)) for shape, batch in (("toy", 4), ("toy", 32),
                                                                                    ("gpt2-small", 32))]),  # fmt: skip
        "progress": ("progress", lambda: printed(bench_progress())),
        "scaling": (f"scaling_{args.model}", lambda: run_scaling(args.model, device)),
    }
    name, run = runs[args.what]
    results = run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def run_all(args) -> int:
    """Every benchmark in turn (the README's commands), then the summary of their files."""
    common = ["--device", args.device, "--threads", str(args.threads), "--out", args.out,
              "--repeats", str(args.repeats)]  # fmt: skip
    plan = [["step"], ["fused"], ["prefix", "--models", "toy,hf-toy,gpt2-small,hf-gpt2-small"], ["peer"], ["gelu"],
            ["scaling", "--model", "toy"], ["scaling", "--model", "gpt2-small"]]  # fmt: skip
    if torch.device(args.device).type == "cpu":
        plan.append(["progress"])  # a CPU-side cost; refused on a GPU
    for what in plan:
        print(f"== python benchmarks/run.py {' '.join(what + common)}", flush=True)
        main(what + common)
    return main(["summary", "--device", args.device, "--out", args.out])


def checked_device(parser: argparse.ArgumentParser, name: str, what: str) -> torch.device:
    """`--device` as a torch device; a device torch cannot use is refused before any work."""
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device {name}: not a torch device; use cpu or cuda[:N]")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {name}: the benchmarks run on cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {name}: torch sees no GPU (torch {torch.__version__}, CUDA build: "
                         f"{torch.version.cuda or 'no'})")  # fmt: skip
        if (device.index or 0) >= torch.cuda.device_count():
            parser.error(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s)")
        if what == "progress":
            parser.error("--device: `progress` measures the CPU-side cost of progress bars; run it without --device")
    return device


def printed(result):
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
