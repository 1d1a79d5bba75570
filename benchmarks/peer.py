"""`python benchmarks/run.py peer`: one ActivScalar epoch of ours against the pyvene peer
(benchmarks/pyvene_peer.py; needs `pip install -e .[bench]`).

Both train for 3 epochs on a random HF GPT-2 (toy and GPT-2-small shapes) from the same
initial α on the same batches, every side once per round in alternation (3 rounds on the
toy shape, 1 on the GPT-2 shape); reported: median epoch times, the HF floor, the final
parameter difference, and the time of the matrix products alone in one profiled epoch of
ours with `skip_unread` (what no implementation of the same float32 products, run by the
same BLAS, can go below).
"""

from __future__ import annotations

import statistics

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness import EpochTimer, alternated, build_hf, device_sync
from benchmarks.pyvene_peer import bare_epoch, build_peer, train_peer
from interventions import load_task, train_intervention
from interventions.methods import METHODS
from interventions.objective import Objective
from interventions.methods.registry import intervention_spec
from interventions.spec import RunSpec
from interventions.training.setup import initialized_method, prepare

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
    rounds = rounds or (3 if shape == "toy" else 1)
    hf, model = build_hf(shape, device)
    models = {False: model, True: build_hf(shape, device, fused_gelu=False)[1]}  # by hf_gelu
    sync = device_sync(device)
    train = load_task("ccc", model=model, split="train", n=n_train, seed=0)
    objective, lr = Objective(), METHODS["activscalar"].default_lr
    spec = intervention_spec("activscalar")
    dm, seq_len = prepare(model, train, None, None, spec, RunSpec(batch_size=4, seed=0))
    init = initialized_method(spec, model, dm, train[0].prompt, seq_len, 0).flat_params()
    params = {}

    def train_ours(callback: L.Callback, skip_unread: bool = False, hf_gelu: bool = False, epochs: int = epochs):
        run = RunSpec(epochs=epochs, skip_unread=skip_unread)
        return train_intervention(models[hf_gelu], train, intervention="activscalar", objective=objective, run=run,
                                  trainer_kwargs={"callbacks": [callback]})  # fmt: skip

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
