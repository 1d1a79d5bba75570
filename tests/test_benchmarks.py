"""The benchmark runner's plumbing (no timing assertions): alternated timing and one tiny
`step` run, so that `python benchmarks/run.py step` keeps working."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

import torch  # noqa: E402

from benchmarks import harness, run, step  # noqa: E402
from benchmarks.fused import bench_fused  # noqa: E402
from benchmarks.gelu import bench_gelu  # noqa: E402
from benchmarks.harness import alternated, make_batch, make_module, side_by_side  # noqa: E402
from benchmarks.progress import bench_progress  # noqa: E402
from benchmarks.step import OPTIMIZATIONS, bench_step, step_variant  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_side_by_side_alternates_and_takes_reported_seconds():
    calls = []
    medians = side_by_side({"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or 0.25}, rounds=3)
    assert calls == ["a", "b"] * 4  # a warm-up call of each, then one of each per round
    assert medians["b"] == 0.25 and 0 <= medians["a"] < 0.25


def test_alternated_keeps_every_rounds_seconds_and_can_skip_the_warm_up():
    calls = []
    seconds = iter([0.1, 0.2, 0.3])
    times = alternated({"a": lambda: calls.append("a") or next(seconds), "b": lambda: calls.append("b")}, rounds=3,
                       warmup=False)  # fmt: skip
    assert calls == ["a", "b"] * 3
    assert times["a"] == [0.1, 0.2, 0.3] and len(times["b"]) == 3


def test_side_by_side_synchronizes_around_every_timed_call():
    """On a GPU the clock must not stop before the queued kernels finish: `sync` runs right
    before and right after each timed call (not around the warm-up)."""
    events = []
    side_by_side({"a": lambda: events.append("a"), "b": lambda: events.append("b")}, rounds=2,
                 sync=lambda: events.append("sync"))  # fmt: skip
    assert events == ["a", "b"] + ["sync", "a", "sync", "sync", "b", "sync"] * 2


def test_device_sync_is_cudas_synchronize_on_a_gpu_and_nothing_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    harness.device_sync(torch.device("cpu"))()
    assert calls == []
    harness.device_sync(torch.device("cuda:1"))()
    assert calls == [torch.device("cuda:1")]


def test_gpu_memory_is_read_from_torchs_allocator(monkeypatch):
    """RSS does not see GPU memory: on cuda, the peak is torch's max_memory_allocated since
    the reset, in MB."""
    state = {"reset": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: state.update(reset=state["reset"] + 1))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 5 * 2**20)
    cuda = torch.device("cuda")
    harness.reset_memory_peak(cuda)
    assert state["reset"] == 1
    assert harness.memory_mb(cuda) == 3 and harness.memory_mb(cuda, peak=True) == 5


def test_cpu_memory_peak_is_the_resident_high_water_mark():
    cpu = torch.device("cpu")
    harness.reset_memory_peak(cpu)
    now = harness.memory_mb(cpu)
    block = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
    assert harness.memory_mb(cpu, peak=True) >= now + 60
    del block


@pytest.mark.parametrize("argv, gpus, message", [
    (["step", "--device", "cuda"], 0, "torch sees no GPU"),
    (["step", "--device", "cuda:2"], 1, "torch sees 1 GPU"),
    (["progress", "--device", "cuda"], 1, "CPU-side cost"),
    (["step", "--device", "tpu"], 0, "cpu or cuda"),
    (["step", "--device", "nonsense"], 0, "not a torch device"),
])  # fmt: skip
def test_an_unusable_device_is_refused_before_any_work(monkeypatch, capsys, argv, gpus, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(step, "bench_step", lambda *a, **k: pytest.fail("benchmark started"))
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_step_benchmark_runs_every_variant(toy_model):
    result = bench_step("toy", batch_size=2, pos=17, repeats=1)
    assert result["device"] == "cpu"
    variants = ["skip_unread", "naive", *(f"without_{name}" for name in OPTIMIZATIONS)]  # through the bridge
    for name in ("bare", "ours", "ours_bridge", "fit", *variants):
        assert result[f"{name}_ms"] > 0
    assert {"ours_over_bare", "ours_bridge_over_bare", "fit_over_ours",
            *(f"{name}_over_ours_bridge" for name in variants)} <= set(result)  # fmt: skip


@pytest.mark.parametrize("without", [(), *((name,) for name in OPTIMIZATIONS), tuple(OPTIMIZATIONS)])
def test_every_step_variant_computes_the_products_loss_and_update(toy_model, without):
    """Switching an optimization off must change only the cost: the same first-step loss
    and parameters after the step as the product's module."""
    model, _ = toy_model
    batch = make_batch(model, model.cfg.d_vocab, 3, 17)
    ours, variant = make_module(model, 17), make_module(model, 17)
    logits_pos, logits_neg = ours.steered_logits(batch)
    expected, _ = ours.objective(logits_pos, logits_neg, batch["correct"], batch["wrong"],
                                 batch["clean_logprobs"], ours.method.flat_params())  # fmt: skip
    optimizer = ours.configure_optimizers()
    expected.backward()
    optimizer.step()
    loss = step_variant(variant, variant.configure_optimizers(), batch, without)
    assert abs(float(loss) - expected.item()) < 1e-5
    assert (variant.method.flat_params() - ours.method.flat_params()).abs().max() < 1e-6
    assert not any(p.requires_grad for p in model.parameters())  # the variant froze them again


def test_progress_benchmark_runs_every_bar(toy_model):
    result = bench_progress(batch_size=2, steps=2, rounds=1)
    assert all(result[f"{name}_ms"] > 0 for name in ("no_bar", "lightning_bar", "throttled_bar"))


def test_fused_benchmark_trains_both_sides_to_the_same_parameters(toy_model):
    result = bench_fused(k=2, epochs=1, n_train=8, rounds=1, layers=[3])
    assert result["fused_s"] > 0 and result["separate_s"] > 0
    assert result["max_abs_param_diff"] <= 1e-5


@needs_cuda
def test_step_variants_on_a_gpu_compute_the_cpus_loss():
    """Only where torch sees a GPU: the benchmarked step on cuda computes what it does on the
    CPU (the same batch: drawn on the CPU, then moved), so GPU ratios compare the same work."""
    losses = {}
    for device in ("cpu", "cuda"):
        model, d_vocab = harness.build("toy", device=device)
        batch = make_batch(model, d_vocab, 3, 17)
        module = make_module(model, 17)
        losses[device] = [float(step_variant(module, module.configure_optimizers(), batch, off))
                          for off in ((), tuple(OPTIMIZATIONS))]  # fmt: skip
        assert not any(p.requires_grad for p in model.parameters())
    assert losses["cuda"] == pytest.approx(losses["cpu"], abs=1e-4)
    result = bench_step("toy", batch_size=2, pos=17, repeats=1, device="cuda")
    assert result["device"] == "cuda" and result["ours_ms"] > 0


def test_gelu_benchmark_times_both_activations_on_the_same_weights():
    from benchmarks.summary import gelu_rows

    result = bench_gelu("toy", batch_size=2, pos=17, repeats=1)
    assert result["fused_ms"] > 0 and result["hf_gelu_ms"] > 0
    assert result["fused_over_hf_gelu"] == pytest.approx(result["fused_ms"] / result["hf_gelu_ms"], rel=0.01)
    assert len(gelu_rows([result])) == 1


def test_gemm_seconds_counts_each_matrix_product_once_and_nothing_else():
    from torch.profiler import profile

    from benchmarks.peer import gemm_seconds

    x, w, b = torch.randn(64, 128), torch.randn(256, 128), torch.randn(256)
    with profile() as prof:
        torch.nn.functional.linear(x, w, b)  # aten::linear -> aten::t, aten::addmm
    events = prof.key_averages()
    addmm = next(e for e in events if e.key == "aten::addmm")
    assert {"aten::linear", "aten::addmm"} <= {e.key for e in events}
    assert gemm_seconds(events) == addmm.self_cpu_time_total / 1e6 > 0  # not linear's total as well
    with profile() as prof:
        x @ w.T, torch.bmm(x[None], w.T[None]), torch.baddbmm(b[None, None], x[None], w.T[None])
    assert {"aten::mm", "aten::bmm", "aten::baddbmm"} <= {e.key for e in prof.key_averages()}
    assert gemm_seconds(prof.key_averages()) > 0
    with profile() as prof:
        (x.exp() * 2).softmax(-1).sum()
    assert gemm_seconds(prof.key_averages()) == 0


def test_epoch_gemm_timer_profiles_each_epoch_and_always_stops():
    import lightning as L

    from benchmarks.peer import EpochGemmTimer

    class Matmuls(L.LightningModule):
        def __init__(self, fail=False):
            super().__init__()
            self.w, self.fail = torch.nn.Parameter(torch.randn(64, 64)), fail

        def training_step(self, batch, _):
            if self.fail:
                raise RuntimeError("boom")
            return (batch @ self.w).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(module, timer):
        trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False, callbacks=[timer])  # fmt: skip
        trainer.fit(module, torch.utils.data.DataLoader(torch.randn(8, 32, 64), batch_size=None))

    timer = EpochGemmTimer()
    fit(Matmuls(), timer)
    assert len(timer.seconds) == 2 and all(s > 0 for s in timer.seconds) and not torch.autograd.profiler._is_profiler_enabled
    timer = EpochGemmTimer()
    with pytest.raises(RuntimeError, match="boom"):
        fit(Matmuls(fail=True), timer)
    assert timer.seconds == [] and not torch.autograd.profiler._is_profiler_enabled


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_asked_of_a_machine_without_one_is_one_line(capsys):
    """Issue 28: `--device cuda` without a GPU printed argparse's 5-line usage block first."""
    with pytest.raises(SystemExit) as exited:
        run.main(["step", "--device", "cuda"])
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: torch sees no GPU")


def test_the_floor_benchmark_times_three_paths_that_give_the_same_logits(toy_model):
    from benchmarks.floor import bench_floor

    point = bench_floor(batch_size=2, repeats=1)  # asserts the three paths' logits agree before timing
    assert set(point["ms"]) == {"ours", "hf", "bridge"} and all(v > 0 for v in point["ms"].values())
    assert point["ours_over_hf"] == point["ms"]["ours"] / point["ms"]["hf"]


def test_the_fused_floor_point_times_the_fused_step_its_floor_and_a_separate_step(toy_model):
    from benchmarks.floor import bench_fused_floor

    point = bench_fused_floor(k=2, batch_size=2, repeats=1)
    assert set(point["ms"]) == {"fused", "floor", "separate"} and all(v > 0 for v in point["ms"].values())
    assert point["fused_over_k_separate"] == point["ms"]["fused"] / (2 * point["ms"]["separate"])


@pytest.mark.slow
def test_the_whole_run_benchmark_times_both_sides_and_profiles_their_phases(tmp_path):
    import json
    import subprocess

    out = tmp_path / "whole_run.json"
    done = subprocess.run([sys.executable, "benchmarks/whole_run.py", "--quick", "--ref", "HEAD", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["ratios"]) == 1 and result["ratios"][0] > 0
    for side in ("ref", "this"):
        phases = {row["phase"]: row["seconds"] for row in result["phases"][side]}
        assert phases["training epochs (Lightning fit)"] > 0 and phases["model load"] > 0 and phases["export"] > 0
        # the phases and "other" add up to the profiled run
        assert abs(sum(phases.values()) - result["profiled_seconds"][side]) < 1e-6
    assert "| start-up and imports |" in result["table"]
