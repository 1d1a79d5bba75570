"""`python benchmarks/run.py fused`: K objective settings trained fused (one batched pass)
against K separate runs on the toy model, alternated after a warm-up at the measured sizes;
medians of each side, with the defaults, with `skip_unread` on both sides, and intervening
only on the last layer (both sides skip the prefix)."""

from __future__ import annotations

import itertools
import statistics

from benchmarks.harness import alternated, device_sync
from interventions import load_model, load_task, train_intervention
from interventions.training.fused import train_fused
from interventions.objective import Objective
from interventions.methods.registry import intervention_spec
from interventions.spec import RunSpec

def bench_fused(k: int = 16, epochs: int = 3, n_train: int = 64, method: str = "activscalar", rounds: int = 5,
                skip_unread: bool = False, layers="all", device: str = "cpu") -> dict:  # fmt: skip
    """K objective configurations trained fused (one batched pass) vs K separate runs on the
    toy model on `device`, alternated `rounds` times after a warm-up; medians of each side.
    `skip_unread` and `layers` (the intervened layers; deep ones let both sides skip the
    prefix) are given to both sides."""
    model, _ = load_model("toy", device=device)
    sync = device_sync(device)
    train = load_task("ccc", model=model, split="train", template=0, n=n_train)
    grid = list(itertools.product((0.0, 0.1, 1.0, 10.0), (0.0, 0.01), (1.0, 2.0)))[:k]
    objectives = [Objective(lambda_f=f, lambda_m=m, margin=g) for f, m, g in grid]
    # warm-up at the measured sizes, so neither side pays first-call costs (allocator, lazy
    # imports, kernels)
    spec = intervention_spec(method, layers=layers)
    warm, timed = RunSpec(epochs=1, skip_unread=skip_unread), RunSpec(epochs=epochs, skip_unread=skip_unread)
    train_fused(model, train, objectives, spec, warm)
    train_intervention(model, train, intervention=spec, objective=objectives[0], run=warm)
    trained = {}

    def fused():
        trained["fused"] = train_fused(model, train, objectives, spec, timed)

    def separate():
        trained["separate"] = [train_intervention(model, train, intervention=spec, objective=o, run=timed).method
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
