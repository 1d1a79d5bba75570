"""The localization benchmarks: the compiled models compute their programs, every truth passes
its ablation check, the truth from weights and the metrics match hand computations, node
scores aggregate by their maximum, and the scoring command runs end to end."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli
from interventions.circuits.ablation import ablation_hooks, check_truth, mean_activations, targets
from interventions.circuits.benchmarks import BENCHMARKS, MODELS, load_benchmark, verify
from interventions.circuits.compiled import mismatches, position_truth, truth
from interventions.circuits.front import front_rows, front_summary
from interventions.circuits.granularity import GRANULARITIES, node_scores, random_scores
from interventions.circuits.localization import localization, mean_sd, precision_at_k
from interventions.circuits.programs import PROGRAMS, balanced_inputs, records
from interventions.circuits.study import Settings, fit_method
from interventions.errors import ConfigError
from interventions.models import load_toy
from interventions.sites import hook_name
from interventions.tasks.datamodule import encode


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_each_compiled_model_computes_its_program_on_its_whole_domain(name):
    program = PROGRAMS[name]
    model = load_toy(MODELS / name)
    domain = records(program, program.domain())
    assert len(domain) == len(program.domain()) >= 81
    assert mismatches(model, domain) == []


def test_a_model_that_differs_from_its_program_is_caught():
    program = PROGRAMS["reverse"]
    model = load_toy(MODELS / "reverse")
    wrong = [dict(r, outputs=list(reversed(r["outputs"]))) for r in records(program, program.domain())[:20]]
    assert len(mismatches(model, wrong)) == sum(r["outputs"] != r["outputs"][::-1] for r in wrong) > 0


def test_benchmark_data_has_every_answer_equally_often():
    for program in PROGRAMS.values():
        answers = [r["correct"] for r in records(program, balanced_inputs(program))]
        counts = {a: answers.count(a) for a in set(answers)}
        assert len(counts) >= 2 and len(set(counts.values())) == 1, (program.name, counts)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_truth_passes_its_ablation_check_and_matches_its_record(name):
    bench = load_benchmark(name)
    checks = verify(bench)
    recorded = json.loads((MODELS / name / "truth.json").read_text())["check"]
    assert set(checks) == set(bench.truth) == set(recorded)
    for level, check in checks.items():
        assert check["passed"], (level, check)
        for kind in ("zero", "mean"):
            assert check[kind]["truth_ablated"] <= 0.10 and check[kind]["rest_ablated"] >= 0.90
            # the recorded figures are this computation's (rounding of another machine aside)
            for key in ("truth_ablated", "rest_ablated"):
                assert check[kind][key] == pytest.approx(recorded[level][kind][key], abs=1e-3)


def test_a_wrong_truth_fails_the_check():
    bench = load_benchmark("reverse")
    batch = encode(bench.model, bench.all, fixed_length=True)
    nodes = bench.nodes["site"]
    wrong = [n for n in nodes if n not in bench.truth["site"]][:1] + ["mlpOut_0"]  # misses attnOut_3
    report = check_truth(bench.model, batch, wrong, nodes, "site")
    assert not report["passed"] and report["zero"]["rest_ablated"] < 0.5  # ablating attnOut_3 as "rest" breaks it


def test_truth_from_weights_names_the_nonzero_heads_and_mlps():
    n_heads, d_head, d = 2, 3, 6
    state = {}
    for layer in range(2):
        state[f"blocks.{layer}.attn.v.weight"] = torch.zeros(n_heads * d_head, d)
        state[f"blocks.{layer}.attn.o.weight"] = torch.zeros(d, n_heads * d_head)
        state[f"blocks.{layer}.mlp.out.weight"] = torch.zeros(d, 4)
        state[f"blocks.{layer}.mlp.out.bias"] = torch.zeros(d)
    state["blocks.0.attn.v.weight"][d_head:] = 1.0  # head 1 of layer 0 reads ...
    state["blocks.0.attn.o.weight"][:, d_head:] = 1.0  # ... and writes
    state["blocks.1.attn.v.weight"][:d_head] = 1.0  # head 0 of layer 1 reads but writes nothing
    state["blocks.1.mlp.out.bias"][0] = 0.5
    found = truth(state, {"n_heads": n_heads, "d_head": d_head, "n_layers": 2})
    assert found == {"site": ["attnOut_0", "mlpOut_1"], "head": ["L0H1"]}
    assert position_truth(["attnOut_0", "mlpOut_1"], ("attnOut_0",), 4) == ["L0P1", "L0P2", "L0P3", "L1P3"]


def test_localization_metrics_equal_hand_values():
    # G = {a, c}; pairs (a,b) (a,d) (c,d) won, (c,b) tied: AUROC 3.5/4; AP: a at recall 1/2
    # with precision 1, then {b, c} tied: recall 1 at precision 2/3; precision@2: a, then
    # half of the tied pair
    scores = {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}
    result = localization(scores, ["a", "c"])
    assert result["auroc"] == pytest.approx(0.875)
    assert result["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-6)
    assert result["precision_at_k"] == pytest.approx(0.75)
    inverted = localization({"a": 0.1, "b": 0.9, "c": 0.3, "d": 0.2}, ["a", "c"])
    assert inverted["auroc"] == pytest.approx(0.25) and inverted["precision_at_k"] == pytest.approx(0.5)
    assert localization(dict.fromkeys("abcd", 1.0), ["a"])["auroc"] == pytest.approx(0.5)
    assert precision_at_k(torch.tensor([5.0, 4.0, 3.0]), torch.tensor([1, 0, 1])) == pytest.approx(0.5)
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))


def test_a_truth_without_negatives_is_refused():
    with pytest.raises(ConfigError):
        localization({"a": 1.0, "b": 0.0}, ["a", "b"])


class _Method:
    """What node_scores reads: a name, a grid and localization scores."""

    name = "activscalar"

    def __init__(self, values: dict):
        self.values = values
        self.grid = SimpleNamespace(layers=(0, 1), positions=(0, 1, 2), head_indices=(0, 1))

    def localization_scores(self, site, layer):
        return self.values[(site, layer)]


def test_node_scores_take_the_maximum_over_the_finer_locations():
    values = {(s, l): torch.tensor([0.1, 0.5 * (l + 1), 0.2]) * (2 if s == "mlpOut" else 1)
              for s in ("attnOut", "mlpOut") for l in (0, 1)}  # fmt: skip
    method = _Method(values)
    assert node_scores(method, GRANULARITIES["site"]) == pytest.approx(
        {"attnOut_0": 0.5, "mlpOut_0": 1.0, "attnOut_1": 1.0, "mlpOut_1": 2.0})
    by_position = node_scores(method, GRANULARITIES["position"])
    assert by_position["L1P1"] == pytest.approx(2.0) and by_position["L0P2"] == pytest.approx(0.4)
    heads = _Method({("z", l): torch.tensor([[0.1, 0.7], [0.3, 0.2], [0.0, 0.1]]) * (l + 1) for l in (0, 1)})
    assert node_scores(heads, GRANULARITIES["head"]) == pytest.approx({"L0H0": 0.3, "L0H1": 0.7, "L1H0": 0.6, "L1H1": 1.4})
    drawn = random_scores(["x", "y", "z"], seed=3)
    assert drawn == random_scores(["x", "y", "z"], seed=3) != random_scores(["x", "y", "z"], seed=4)


def test_ablation_hooks_replace_what_their_nodes_name(tiny_model):
    ids = tiny_model.to_tokens(["When Anne met Tom", "When Tom met Mary", "Then Mary met Anne"])
    names = [hook_name("attnOut", 0), hook_name("z", 1), hook_name("mlpOut", 0)]  # L0P2: attnOut_0 and mlpOut_0
    means = mean_activations(tiny_model, {"input_ids": ids}, names)
    seen = {}

    def keep(name):
        def hook(h, hook=None):
            seen[name] = h.detach().clone()
            return h

        return hook

    for kind in ("zero", "mean"):
        hooks = ablation_hooks(["L1H0"], GRANULARITIES["head"], kind, means)
        hooks += ablation_hooks(["L0P2"], GRANULARITIES["position"], kind, means)
        with tiny_model.hooks(fwd_hooks=hooks + [(n, keep(n)) for n in names]):
            tiny_model(ids)
        z, attn = seen[names[1]], seen[names[0]]
        expected_z = torch.zeros_like(z[:, :, 0]) if kind == "zero" else means[names[1]][:, 0].expand_as(z[:, :, 0])
        expected_attn = torch.zeros_like(attn[:, 2]) if kind == "zero" else means[names[0]][2].expand_as(attn[:, 2])
        torch.testing.assert_close(z[:, :, 0], expected_z)
        torch.testing.assert_close(attn[:, 2], expected_attn)
        mlp = seen[names[2]]
        torch.testing.assert_close(mlp[:, 2], torch.zeros_like(mlp[:, 2]) if kind == "zero" else means[names[2]][2].expand_as(mlp[:, 2]))
        assert not torch.equal(z[:, :, 1], torch.zeros_like(z[:, :, 1]))  # other heads untouched
    assert targets("mlpOut_3", GRANULARITIES["site"]) == [(hook_name("mlpOut", 3), None, None)]
    assert targets("L2P5", GRANULARITIES["position"]) == [(hook_name("attnOut", 2), 5, None), (hook_name("mlpOut", 2), 5, None)]


def _cli(*args):
    return run_cli("-m", "interventions", "circuits", *args)


@pytest.mark.parametrize("args, says", [
    (["score", "--benchmarks", "nope", "--out", "x"], "unknown benchmark 'nope'; choose from reverse"),
    (["score", "--methods", "obsprop_steer", "--out", "x"], "obsprop_steer has no score per location"),
    (["score", "--methods", "dynscalar", "--granularities", "position", "--out", "x"], "not tied to positions"),
    (["score", "--granularities", "layer", "--out", "x"], "unknown granularity 'layer'; choose from site, head, position"),
    (["score", "--methods", "nope", "--out", "x"], "nope"),
])  # fmt: skip
def test_bad_input_is_one_line_before_any_model_loads(args, says, tmp_path, monkeypatch, capsys):
    from interventions.cli import circuits, commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(circuits, "load_benchmark", lambda *a, **k: pytest.fail("a model loaded"))
    assert commands.main(["circuits", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert not (tmp_path / "x").exists()


def test_compile_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    from interventions.cli import circuits, commands

    real = importlib.util.find_spec
    monkeypatch.setattr(circuits.importlib.util, "find_spec", lambda name, *a: None if name == "tracr" else real(name, *a))
    assert commands.main(["circuits", "compile", "--out", "unused"]) == 2
    assert "pip install -e '.[tracr]'" in capsys.readouterr().err


def test_compiling_again_gives_the_committed_models(tmp_path):
    pytest.importorskip("tracr", reason="the tracr extra (pip install -e '.[tracr]') compiles the programs")
    from safetensors.torch import load_file

    from interventions.circuits.compiled import build
    from interventions.circuits.rasp import compile_program

    assembled, output = compile_program("count_x")
    build(assembled, PROGRAMS["count_x"], output, tmp_path)
    fresh, committed = load_file(tmp_path / "count_x" / "model.safetensors"), load_file(MODELS / "count_x" / "model.safetensors")
    assert fresh.keys() == committed.keys() and all(torch.equal(fresh[k], committed[k]) for k in fresh)
    assert (tmp_path / "count_x" / "data.jsonl").read_text() == (MODELS / "count_x" / "data.jsonl").read_text()


def test_quick_scoring_writes_the_tables_and_finds_count_x_by_patching(tmp_path, capsys):
    out = _cli("score", "--benchmarks", "count_x", "--methods", "activscalar,activpatch,random", "--quick",
               "--out", str(tmp_path / "study"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "study" / "results.json").read_text())
    summary = {(e["method"], e["granularity"]): e for e in result["summary"]}
    assert set(summary) == {(m, g) for m in ("activscalar", "activpatch", "random") for g in ("site", "head", "position")}
    # activation patching reads the exact effect of each node: every used one moves the answer
    assert summary[("activpatch", "site")]["auroc_mean"] == 1.0
    assert summary[("activscalar", "site")]["n_seeds"] == 2 and summary[("activpatch", "site")]["n_seeds"] == 1
    assert all(0.0 <= e["auroc_mean"] <= 1.0 for e in summary.values())
    assert "| count_x | site |" in (tmp_path / "study" / "results.md").read_text()
    assert (tmp_path / "study" / "roc.png").stat().st_size > 0
    assert result["checks"]["count_x"]["site"]["passed"]

    # merging: another benchmark's results (here the same, renamed) join without changing these
    other = tmp_path / "other"
    other.mkdir()
    renamed = json.loads(json.dumps(result).replace('"count_x"', '"count_y"'))
    (other / "results.json").write_text(json.dumps(renamed))
    merged = _cli("merge", "--from", f"{tmp_path / 'study'},{other}", "--out", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    both = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert [e for e in both["summary"] if e["benchmark"] == "count_x"] == result["summary"]
    assert {e["benchmark"] for e in both["summary"]} == {"count_x", "count_y"} and set(both["checks"]) == {"count_x", "count_y"}
    from interventions.cli import commands

    for args, says in [((f"{tmp_path / 'study'},{tmp_path / 'study'}", tmp_path / "again"), "scores count_x again"),
                       ((str(tmp_path / "study"), tmp_path / "study"), "is one of --from"),
                       ((str(tmp_path / "nothing"), tmp_path / "again"), "no results.json in")]:  # fmt: skip
        assert commands.main(["circuits", "merge", "--from", args[0], "--out", str(args[1])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "again").exists() and json.loads((tmp_path / "study" / "results.json").read_text()) == result


def test_the_front_trains_every_setting_and_scores_each_run():
    bench = load_benchmark("count_x")
    settings = Settings(epochs=2, seeds=(0,))
    rows = front_rows(bench, ["site", "position"], lambda_f=(0.0, 1.0), lambda_m=(0.0, 0.1), settings=settings)
    assert [(r["lambda_f"], r["lambda_m"]) for r in rows] == [(0.0, 0.0), (0.0, 0.1), (1.0, 0.0), (1.0, 0.1)]
    for row in rows:
        assert set(row["test"]) == {"attnOut,mlpOut"} and 0.0 <= row["site"]["auroc"] <= 1.0
    # each fused setting is the run train_intervention would give: the same scores
    alone = fit_method(bench, "activscalar", ("attnOut", "mlpOut"), 0, replace(settings, lambda_f=1.0, lambda_m=0.1))
    assert rows[3]["site"] == localization(node_scores(alone, GRANULARITIES["site"]), bench.truth["site"])
    summary = front_summary(rows, ["site", "position"])
    assert set(summary) == {"site", "position"} and summary["site"]["best"]["lambda_f"] in (0.0, 1.0)


def test_a_compiled_program_trains_and_exports_like_any_model(tmp_path):
    """Its context (6 tokens) is shorter than the export's 8-token logits probe: the probe is
    cut to fit, and a plain export of it is checked against it (docs/circuits.md trains one)."""
    from interventions import RunSpec, load_intervention, train_intervention
    from interventions.export import model_probe, probe_ids

    bench = load_benchmark("reverse")
    n_ctx = bench.model.cfg.n_ctx
    assert n_ctx < 8 and probe_ids(bench.model.cfg.d_vocab, n_ctx).shape == (1, n_ctx)
    assert probe_ids(195).shape == (1, 8)  # every other model's probe, as before
    trained = train_intervention(bench.model, bench.splits["train"], intervention="activscalar", run=RunSpec(epochs=1))
    iv = load_intervention(trained.save(tmp_path / "run"))
    assert iv.meta["model"]["config"]["n_ctx"] == n_ctx
    assert iv.meta["model"]["probe"] == model_probe(bench.model)
