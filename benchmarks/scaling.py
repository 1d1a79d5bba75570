"""`python benchmarks/run.py scaling --model toy|gpt2-small`: epoch time and memory as prompts,
layers and positions grow.

Each point runs in a fresh subprocess (`run.py _point ...`), so that its memory is its own,
and reports the median epoch after a warm-up step, the peak memory while training and its
rise above the memory in use before the first step.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.harness import ROOT, build, device_sync, make_batch, make_module, memory_mb, reset_memory_peak, step_ours
from interventions.models import model_device

SIZES = {"prompts": (32, 64, 128, 256), "positions": (8, 16, 32, 64), "layers": {"toy": (2, 4, 8), "gpt2-small": (3, 6, 12)}}
QUICK_SIZES = {"prompts": (8,), "positions": (), "layers": {"toy": (), "gpt2-small": ()}}


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


def run_scaling(model_name: str, device: str = "cpu", quick: bool = False) -> list[dict]:
    """Every point of the sweep (`SIZES`, or `QUICK_SIZES`: one small point), each in its own
    process; one printed line each."""
    sizes = QUICK_SIZES if quick else SIZES
    base = dict(prompts=64, layers=None, positions=16)
    points = [dict(base, prompts=p) for p in sizes["prompts"]]
    points += [dict(base, layers=l) for l in sizes["layers"][model_name]]
    points += [dict(base, positions=p) for p in sizes["positions"]]
    results = []
    for point in points:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "_point", model_name, str(point["prompts"]),
               str(point["layers"] or 0), str(point["positions"]), "--device", str(device)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    return results
