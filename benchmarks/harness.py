"""The benchmarks' shared harness: models and batches to time, the timing loops, memory.

Every benchmark runs its sides side by side in one process and reports ratios: absolute
times on a shared machine are noisy. `alternated` calls the sides in alternation (one call
of each per round), so a drifting machine affects all of them alike; on a GPU every clock
reading waits for the device (`device_sync`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
from transformer_lens.model_bridge import TransformerBridge
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from interventions.forward import last_position_logits  # noqa: E402

from interventions.models import model_device  # noqa: E402
from interventions.io import write_json  # noqa: E402
from interventions.methods import METHODS  # noqa: E402
from interventions.models import freeze, load_model  # noqa: E402
from interventions.training.module import InterventionModule  # noqa: E402
from interventions.objective import Objective  # noqa: E402
from interventions.sites import build_grid  # noqa: E402
from interventions.toyworld.train import MODEL_CONFIG  # noqa: E402
from interventions.training.train import lightning_device  # noqa: E402

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
    if model_name == "toy" and not n_layers:
        model, _ = load_model("toy", device=device)
        return model, model.cfg.d_vocab

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


def make_module(model, seq_len: int, method: str = "activscalar", skip_unread: bool = False, forward: str = "auto"):
    grid = build_grid(model.cfg, seq_len=seq_len)
    m = METHODS[method](grid, model.cfg)
    m.initialize("normal", 1e-3, seed=0)
    return InterventionModule(model, m, Objective(lambda_f=1.0, lambda_m=0.01, margin=1.0), lr=1e-2,
                              skip_unread=skip_unread, forward=forward)  # fmt: skip


def step_ours(module, optimizer, batch):
    logits_pos, logits_neg = module.steered_logits(batch)
    loss, _ = module.objective(logits_pos, logits_neg, batch["correct"], batch["wrong"],
                               batch["clean_logprobs"], module.method.flat_params())  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def step_bare(model, batch, hook_names):
    ids = batch["input_ids"].repeat(2, 1)
    leaves = []

    def hook(act, hook):
        leaf = torch.ones((), device=act.device, requires_grad=True)
        leaves.append(leaf)
        return act * leaf

    logits = last_position_logits(model, ids, None, batch["last_index"].repeat(2), fwd_hooks=[(n, hook) for n in hook_names])
    logits.sum().backward()


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


def fit_epoch(module, batch: dict, steps: int, progress_bar=None) -> float:
    """Seconds per step of ours inside `Trainer.fit` (Lightning's loop, logging and optimizer
    closure included): one epoch of `steps` copies of `batch`, timed from epoch start to end
    (the Trainer's setup excluded), with `progress_bar` (a callback) or none; on the model's
    device."""
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


def printed(result):
    print(json.dumps(result), flush=True)
    return result


def write_results(out: str | Path, name: str, results) -> Path:
    """`<out>/<name>.json` (strict JSON: non-finite numbers as null)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", results)
    return out / f"{name}.json"
