"""`python benchmarks/run.py summary` reads the goals off the results files, and `all` runs
the benchmark commands of docs/benchmarks.md in turn; pyvene missing is refused before any work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

from benchmarks import run as bench  # noqa: E402  (the command line)
from benchmarks.summary import exponent, summary, sweeps  # noqa: E402


def step_result(model: str, ours_over_bare: float) -> dict:
    ratios = {"ours_bridge_over_bare": 1.3, "naive_over_ours_bridge": 2.0, "skip_unread_over_ours_bridge": 0.9,
              "fit_over_ours": 1.05, "without_one_pass_over_ours_bridge": 1.2}  # fmt: skip
    return {"model": model, "batch": 4, "positions": 17, "ours_over_bare": ours_over_bare, **ratios}


def fused_result(ratio: float, diff: float) -> dict:
    return {"k": 16, "layers": "all", "skip_unread": False, "fused_over_separate": ratio,
            "per_round": [ratio - 0.01, ratio + 0.02], "max_abs_param_diff": diff}  # fmt: skip


def row_of(table: str, *needles: str) -> list[str]:
    """The cells of the one row containing every needle."""
    rows = [line for line in table.splitlines() if all(n in line for n in needles)]
    assert len(rows) == 1, rows
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_summary_marks_each_ratio_against_its_goal(tmp_path):
    (tmp_path / "step.json").write_text(json.dumps([step_result("toy", 1.099), step_result("gpt2-small", 1.101)]))
    (tmp_path / "fused.json").write_text(json.dumps([fused_result(0.26, 0.0)]))
    table = summary(tmp_path)
    assert row_of(table, "a. step: ours / bare", "toy,")[2:5] == ["1.099", "≤ 1.1", "met"]
    assert row_of(table, "a. step: ours / bare", "gpt2-small")[2:5] == ["1.101", "≤ 1.1", "**not met**"]
    assert row_of(table, "without one_pass", "toy,")[2:5] == ["1.200", "", ""]  # reported, no goal
    assert row_of(table, "fused / separate")[2:6] == ["0.260", "≤ 0.25", "**not met**", "rounds 0.250–0.280"]
    assert row_of(table, "parameter difference")[4] == "met"
    # a file not written is named, not silently left out
    assert row_of(table, "`peer.json` is missing")[2] == "not run"
    assert "`step_cuda.json` is missing" in summary(tmp_path, "_cuda")


def test_a_results_file_lacking_a_ratio_is_named_as_out_of_date(tmp_path):
    result = step_result("toy", 1.1)
    del result["fit_over_ours"]  # as written before the benchmark measured it
    (tmp_path / "step.json").write_text(json.dumps([result]))
    (tmp_path / "fused.json").write_text(json.dumps([fused_result(0.2, 0.0)]))
    table = summary(tmp_path)
    assert row_of(table, "`step.json` has no 'fit_over_ours'")[2] == "out of date"
    assert row_of(table, "fused / separate")[4] == "met"  # the other files are still read


def test_fused_parameters_off_by_more_than_1e_5_are_flagged(tmp_path):
    (tmp_path / "fused.json").write_text(json.dumps([fused_result(0.3, 2e-5)]))
    assert row_of(summary(tmp_path), "parameter difference")[2:5] == ["2.0e-05", "≤ 1e-05", "**not met**"]


@pytest.mark.parametrize("power", [0.0, 1.0, 2.0])
def test_exponent_recovers_a_power_law(power):
    assert exponent([(x, 3.0 * x**power) for x in (8, 16, 32, 64)]) == pytest.approx(power)


def test_scaling_sweeps_share_the_base_point_as_its_median():
    def point(prompts, layers, positions, seconds):
        return {"model": "toy", "prompts": prompts, "layers": layers, "positions": positions, "epoch_s": seconds,
                "training_rss_mb": 10.0}  # fmt: skip

    results = [point(32, 4, 16, 1.0), point(64, 4, 16, 2.0), point(128, 4, 16, 4.0),
               point(64, 2, 16, 1.0), point(64, 4, 16, 2.2), point(64, 8, 16, 4.0),
               point(64, 4, 8, 1.0), point(64, 4, 16, 2.4), point(64, 4, 32, 4.0)]  # fmt: skip
    groups = sweeps(results)
    assert [p["prompts"] for p in groups["prompts"]] == [32, 64, 128]
    assert [p["layers"] for p in groups["layers"]] == [2, 4, 8]
    assert [p["epoch_s"] for p in groups["positions"]] == [1.0, 2.2, 4.0]  # the base: median of 2.0, 2.2, 2.4


def test_peer_without_pyvene_is_refused_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(bench.peer, "bench_peer", lambda *a, **k: pytest.fail("benchmark started"))
    monkeypatch.setattr(bench, "run_all", lambda *a, **k: pytest.fail("benchmarks started"))
    for what in ("peer", "all"):
        with pytest.raises(SystemExit) as exit_info:
            bench.main([what])
        assert exit_info.value.code == 2
        assert "pip install -e .[bench]" in capsys.readouterr().err


def test_all_runs_every_benchmark_with_the_same_flags_then_the_summary(monkeypatch):
    calls = []
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: object())
    real_main = bench.main

    def main(argv=None):
        if argv and argv[0] == "all":
            return real_main(argv)
        calls.append(argv)
        return 0

    monkeypatch.setattr(bench, "main", main)
    assert bench.main(["all", "--threads", "3", "--out", "/tmp/x"]) == 0
    whats = [argv[0] for argv in calls]
    assert whats == ["step", "floor", "fused", "prefix", "peer", "gelu", "generate", "scaling", "scaling", "progress", "summary"]
    assert all(argv[argv.index("--threads") + 1] == "3" for argv in calls[:-1])
    assert all(argv[argv.index("--out") + 1] == "/tmp/x" for argv in calls)
    assert ["--model", "gpt2-small"] == calls[8][1:3]


def test_generate_rows_name_each_ratio_and_the_goal():
    from benchmarks.summary import generate_rows

    rows = generate_rows([
        {"model": "toy", "method": "dynscalar", "batch": 8, "prompt_tokens": 17, "new_tokens": 16,
         "hooked_over_plain": 1.2, "noop_over_plain": 1.01},
        {"model": "gpt2-small", "method": "activscalar", "batch": 8, "prompt_tokens": 20, "new_tokens": 16,
         "hooked_over_plain": 1.05, "noop_over_plain": 1.0},
        {"model": "toy", "batch": 16, "positions": 17, "answer_tokens": 3, "multi_over_single": 1.07},
        {"model": "toy", "method": "dynscalar", "backend": "hf", "batch": 8, "prompt_tokens": 17, "new_tokens": 16,
         "hooked_over_plain": 1.3},
    ])  # fmt: skip
    assert len(rows) == 6
    assert "bridge (no cache)" in rows[0] and "key-value cache (backend=hf)" in rows[5] and "1.300" in rows[5]
    assert "1.200" in rows[0] and "**not met**" in rows[0] and "≤ 1.1" in rows[0]
    assert "1.050" in rows[2] and "| met |" in rows[2]
    assert "answers of 3 tokens" in rows[4] and "1.070" in rows[4]


def test_the_gpu_script_parses_names_real_tests_and_refuses_bad_usage():
    """benchmarks/gpu.sh (run on a CUDA machine; none has been lent here): valid bash, its
    test ids exist, and a wrong call is one usage line with status 2."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for test_id in ("tests/test_api.py::test_train_intervention_on_a_gpu_matches_the_cpu",
                    "tests/test_benchmarks.py::test_step_variants_on_a_gpu_compute_the_cpus_loss"):  # fmt: skip
        assert test_id in script.read_text()
        path, name = test_id.split("::")
        assert f"def {name}(" in (root / path).read_text()
    wrong = subprocess.run(["bash", str(script), "fly"], capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage:")
