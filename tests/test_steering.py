"""The steering score (interventions.steering; docs/method.md §11): every part against values
computed by hand on tiny tensors, the model-level parts against a naive computation prompt by
prompt, exact zeros at β = 0, the one-line refusals before any model loads, and a tiny run on
the toy model through train.py's and evaluate.py's flows (fused, hinge and preference)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from interventions import steering
from interventions.cli.preflight import CONF_DIR, EVALUATE_CONF_DIR, compose_config, preflight
from interventions.errors import ConfigError
from interventions.generation import generate_tokens
from interventions.methods import METHODS
from interventions.objective import Objective
from interventions.sites import build_grid, hook_name
from interventions.spec import SteeringSpec
from interventions.steering import (
    continuation_nll, direction_parts, distinct_2, end_aligned_positions, fluency_scores, harmonic_mean,
    off_target_kl, off_target_prompts, scored_directions, starts_with, steering_metrics, wrong_way,
)  # fmt: skip
from interventions.tasks.datamodule import TaskDataModule
from interventions.tasks.datapoint import DataPoint, Task
from interventions.tasks.tokenize import prompt_token_ids
from interventions.training.module import InterventionModule

PROMPTS = ["When Mary and John went to the store , John gave a drink to",
           "So , Anna really is a great friend , isn't", "My friend Tom is an excellent"]  # fmt: skip


def random_method(model, name: str, seq_len: int | None = None, scale: float = 1.0, sites=("attnOut", "mlpOut")):
    """A method with large random parameters (seed 0): steering visibly changes the outputs."""
    grid = build_grid(model.cfg, sites=list(sites), positions=None if seq_len is None else "all", seq_len=seq_len)
    method = METHODS[name](grid, model.cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return method


def kl_by_hand(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """KL(p ‖ q) = Σ_v p_v (log p_v - log q_v), in float64."""
    logp, logq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return float((logp.exp() * (logp - logq)).sum())


# -- the parts, by hand ------------------------------------------------------------------------


def test_harmonic_mean_by_hand():
    assert harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4), abs=1e-15)
    assert harmonic_mean([0.8, 0.8, 0.8]) == pytest.approx(0.8, abs=1e-15)
    assert harmonic_mean([1.0, 0.0, 1.0]) == 0.0  # any part at 0 gives 0


def test_fluency_is_exp_of_minus_the_positive_nll_increase():
    nll, clean = torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64), torch.tensor([1.5, 1.5, 3.0], dtype=torch.float64)
    assert fluency_scores(nll, clean).tolist() == pytest.approx([math.exp(-0.5), 1.0, 1.0], abs=1e-15)


def test_distinct_2_counts_distinct_bigrams():
    tokens = torch.tensor([[1, 2, 1, 2], [5, 5, 5, 5], [1, 2, 3, 4]])
    # (1,2), (2,1), (1,2): 2 distinct of 3; (5,5) three times: 1 of 3; all distinct: 3 of 3
    assert distinct_2(tokens).tolist() == pytest.approx([2 / 3, 1 / 3, 1.0], abs=1e-15)


def test_success_needs_every_token_of_the_answer():
    tokens = torch.tensor([[3, 4, 5], [3, 9, 9], [7, 4, 5]])
    assert starts_with(tokens, [[3, 4], [3, 4], [7]]).tolist() == [True, False, True]


def test_wrong_way_is_against_the_sign_of_beta():
    ld, zero = torch.tensor([1.0, 3.0, 2.0]), torch.tensor([2.0, 2.0, 2.0])
    assert wrong_way(ld, zero, 0.5).tolist() == [True, False, False]  # down at β > 0
    assert wrong_way(ld, zero, -2.0).tolist() == [False, True, False]  # up at β < 0
    assert wrong_way(ld, zero, 0.0).tolist() == [False, False, False]


def test_direction_parts_by_hand():
    tokens = torch.tensor([[3, 4, 3, 4], [3, 8, 8, 8]])
    nll, clean = torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 1.5], dtype=torch.float64)
    kl = torch.tensor([0.1, 0.3])
    parts = direction_parts(tokens, nll, clean, [[3, 4], [3, 4]], kl)
    success, fluency, off_target = 0.5, (math.exp(-1.0) + 1.0) / 2, math.exp(-0.2)
    assert parts["success"] == 0.5
    assert parts["fluency"] == pytest.approx(fluency, abs=1e-12)
    assert parts["delta_nll"] == pytest.approx((1.0 - 0.5) / 2, abs=1e-12)
    assert parts["distinct_2"] == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-12)
    assert parts["off_target_kl"] == pytest.approx(0.2, abs=1e-7)
    assert parts["off_target"] == pytest.approx(off_target, abs=1e-7)
    assert parts["score"] == pytest.approx(3 / (1 / success + 1 / fluency + 1 / off_target), abs=1e-7)


def test_end_aligned_positions_by_hand():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    # a grid of 4 positions: each row's last token is position 3
    assert end_aligned_positions(mask, 4).tolist() == [[-1, 2, 3], [1, 2, 3]]
    # a grid of 2: the first token of the full row lies before it
    assert end_aligned_positions(mask, 2).tolist() == [[-1, 0, 1], [-1, 0, 1]]


# -- the model-level parts against a naive computation ---------------------------------------------


def test_continuation_nll_equals_teacher_forcing_prompt_by_prompt(tiny_model):
    ids = prompt_token_ids(tiny_model, PROMPTS)  # three lengths: a left-padded batch
    tokens = torch.tensor([[5, 9, 12], [7, 7, 30], [40, 2, 11], [5, 9, 12], [7, 7, 30], [41, 2, 11]])
    got = continuation_nll(tiny_model, ids, tokens)  # rows: prompts 0, 1, 2, 0, 1, 2
    for row, continuation in enumerate(tokens.tolist()):
        prompt = ids[row % len(ids)]
        with torch.no_grad():
            logits = tiny_model(torch.tensor([prompt + continuation]))[0].double()
        logp = torch.log_softmax(logits, -1)
        want = -sum(float(logp[len(prompt) - 1 + t, y]) for t, y in enumerate(continuation)) / len(continuation)
        assert float(got[row]) == pytest.approx(want, abs=1e-5)  # measured: within 3e-7
    assert got[0] == got[3] and got[1] == got[4]  # the same text gets the same value, to the bit
    assert got[2] != got[5]


def test_off_target_kl_equals_each_prompt_alone(tiny_model):
    """DynScalar acts on every position: KL(p_0 ‖ p_β) of each prompt run alone, unpadded."""
    method = random_method(tiny_model, "dynscalar", scale=0.5)
    ids = prompt_token_ids(tiny_model, PROMPTS)
    got = off_target_kl(tiny_model, method, ids, (0.0, 1.0, -2.0))
    assert got[0].tolist() == [0.0, 0.0, 0.0]
    for n, prompt in enumerate(ids):
        with torch.no_grad():
            clean = tiny_model(torch.tensor([prompt]))[0, -1]
            for k, beta in enumerate((1.0, -2.0), start=1):
                with tiny_model.hooks(fwd_hooks=method.hooks(beta)):
                    steered = tiny_model(torch.tensor([prompt]))[0, -1]
                assert float(got[k, n]) == pytest.approx(kl_by_hand(clean, steered), abs=1e-5)
    assert float(got[1:].min()) > 1e-3  # steering moved every prompt (measured: more than 0.01)


def test_a_position_tied_method_acts_on_other_prompts_aligned_to_their_end(tiny_model):
    """ActivScalar with α only at its last trained position scales each prompt's last position,
    whatever its length."""
    ids = prompt_token_ids(tiny_model, PROMPTS)
    trained = len(ids[0]) + 2  # longer than every prompt
    method = random_method(tiny_model, "activscalar", seq_len=trained, sites=("mlpOut",))
    with torch.no_grad():
        for p in method.params.values():
            p[:-1] = 0.0  # [positions]: α at the last one only
    got = off_target_kl(tiny_model, method, ids, (0.0, 1.0))
    for n, prompt in enumerate(ids):
        hooks = [(hook_name("mlpOut", layer), lambda h, hook, a=method.param("mlpOut", layer)[-1]: torch.cat(
            [h[:, :-1], h[:, -1:] * (1 + a)], 1)) for layer in method.grid.layers]  # fmt: skip
        with torch.no_grad():
            clean = tiny_model(torch.tensor([prompt]))[0, -1]
            with tiny_model.hooks(fwd_hooks=hooks):
                steered = tiny_model(torch.tensor([prompt]))[0, -1]
        assert float(got[1, n]) == pytest.approx(kl_by_hand(clean, steered), abs=1e-5)
        assert float(got[1, n]) > 1e-3  # aligned to the start, α would fall past these prompts: KL 0


def test_beta_zero_gives_exactly_zero_nll_increase_and_off_target_kl(tiny_model):
    method = random_method(tiny_model, "dynscalar", scale=0.5)
    points = tuple(DataPoint(p, " Mary", " John") for p in PROMPTS)
    found = scored_directions(tiny_model, method, Task("t", "val", "0", points), PROMPTS[::-1], [0.0, 1.0], 3)
    for name in ("pos", "neg"):
        assert found[0.0][name]["delta_nll"] == 0.0 and found[0.0][name]["off_target_kl"] == 0.0
        assert found[0.0][name]["fluency"] == 1.0 and found[0.0][name]["off_target"] == 1.0
        assert found[0.0][name]["distinct_2"] == found[0.0]["clean"]["distinct_2"]
        # steering does change the other prompts' distributions (measured: KL 0.024 and 0.055)
        assert found[1.0][name]["off_target_kl"] > 1e-3
    assert found[1.0]["pos"]["delta_nll"] != 0.0 or found[1.0]["neg"]["delta_nll"] != 0.0


def test_the_score_is_assembled_as_the_method_says(tiny_model):
    """β chosen on one split, reported on the other; score = mean of the directions' harmonic
    means; the curve and the wrong-way fractions from the steered logit differences."""
    method = random_method(tiny_model, "dynscalar", scale=0.3)
    tokenizer = tiny_model.tokenizer
    greedy = generate_tokens(tiny_model, None, prompt_token_ids(tiny_model, PROMPTS), (0.0,), 1)[0, :, 0].tolist()
    other = next(i for i in range(20, 40) if i not in greedy)
    # the clean model's own next token as c (β > 0 keeps it), another token as w
    points = tuple(DataPoint(p, tokenizer.decode([g]), tokenizer.decode([other])) for p, g in zip(PROMPTS, greedy))
    val, test = Task("t", "val", "0", points), Task("t", "test", "0", points)
    dm = TaskDataModule(tiny_model, None, None, test, padding_side="left")
    dm.setup()
    spec = SteeringSpec(betas=[0.5, 1.0], curve=[-1.0, 0.0, 1.0], max_new_tokens=3)
    off = {"val": PROMPTS[:2], "test": PROMPTS[1:]}
    module = InterventionModule(tiny_model, method, Objective())
    found = steering_metrics(module, val, test, dm.datasets["test"], spec, off_target=off)
    parts = found["steering"]
    beta = parts["beta"]
    assert beta == max((b for b in (0.5, 1.0)), key=lambda b: (parts["selection"][f"{b:g}"], -b))
    again = scored_directions(tiny_model, method, test, off["test"], [beta], 3)[beta]
    for name in ("pos", "neg"):
        assert parts[f"score_{name}"] == harmonic_mean([parts[f"success_{name}"], parts[f"fluency_{name}"],
                                                        parts[f"off_target_{name}"]])  # fmt: skip
        assert parts[f"score_{name}"] == again[name]["score"]
    assert found["steering_score"] == (parts["score_pos"] + parts["score_neg"]) / 2 > 0.1  # measured: 0.499
    assert list(parts["curve"]) == ["-1", "0", "1"] and parts["curve"]["0"]["wrong_way"] == 0.0
    ld = steering.logit_differences(module, dm.loader("test"), (-beta, 0.0, beta))
    pos, neg = (ld[2] < ld[1]), (ld[0] > ld[1])
    assert parts["wrong_way_pos"] == float(pos.double().mean()) and parts["wrong_way_neg"] == float(neg.double().mean())
    assert parts["wrong_way"] == float((pos | neg).double().mean())
    assert parts["n"] == 3 and parts["n_off_target"] == 2


# -- bad input: one line before any model loads ----------------------------------------------------


@pytest.mark.parametrize("argv, must_contain", [
    (["steering.betas=[]"], ["steering.betas", "non-empty"]),
    (["steering.betas=[nan,1]"], ["steering.betas", "finite"]),
    (["steering.betas=[0,1]"], ["steering.betas", "> 0"]),
    (["steering.curve=[]"], ["steering.curve", "non-empty"]),
    (["steering.curve=[-1,inf]"], ["steering.curve", "finite"]),
    (["steering.max_new_tokens=1"], ["steering.max_new_tokens", ">= 2"]),
    (["steering.bogus=1"], ["steering.bogus", "betas", "off_target"]),
    (["steering_eval=maybe"], ["steering_eval", "true or false"]),
    (["steering.off_target=[ccc,moon]"], ["steering.off_target", "moon", "ioi"]),
    (["steering_eval=true", "steering.off_target=[ccc]"], ["steering.off_target", "ccc", "other than"]),
    (["steering_eval=true", "task=jsonl", "task.path=x.jsonl"], ["steering.off_target", "jsonl", "ioi"]),
])  # fmt: skip
def test_bad_steering_options_are_one_line_before_any_model_loads(argv, must_contain):
    with pytest.raises(ConfigError) as info:
        preflight(argv, "train")
    message = str(info.value)
    assert "\n" not in message
    for text in must_contain:
        assert text in message, f"{text!r} not in {message!r}"


def test_other_toy_tasks_named_are_accepted():
    preflight(["task=ioi", "steering_eval=true", "steering.off_target=[ccc,bias]", "steering.betas=[0.1,1]"], "train")


def test_evaluate_refuses_an_export_of_a_task_without_other_tasks(tmp_path):
    (tmp_path / "intervention.json").write_text(json.dumps({"task": {"name": "jsonl", "path": "x.jsonl"}}))
    with pytest.raises(ConfigError) as info:
        preflight([f"intervention={tmp_path}", "steering_eval=true"], "evaluate")
    assert "jsonl" in str(info.value) and "steering.off_target" in str(info.value)
    with pytest.raises(ConfigError):
        off_target_prompts(SteeringSpec(), "jsonl")  # the library's path says the same
    prompts = off_target_prompts(replace(SteeringSpec(), n_off_target=2), "ccc")  # 2 of each of ioi, pronouns, bias
    assert {split: len(found) for split, found in prompts.items()} == {"val": 6, "test": 6}


# -- end to end on the toy model -----------------------------------------------------------------------


SMALL = ["task.n_train=12", "task.n_val=6", "task.n_test=6", "trainer.max_epochs=1", "logger=none",
         "steering.betas=[0.5,1]", "steering.curve=[-1,0,1]", "steering.max_new_tokens=2", "steering.n_off_target=3"]  # fmt: skip


def test_train_and_evaluate_report_the_steering_score(toy_model, tmp_path):
    """train.py steering_eval=true with the hinge and the preference objective fused: each
    setting's metrics.json and the sweep's pareto.json carry the score; evaluate.py on an
    export computes the same."""
    from interventions.runs import evaluate_run, train_run

    out = tmp_path / "fused"
    train_run(compose_config(CONF_DIR, "train", ["steering_eval=true", *SMALL, f"run_dir={out}",
                                                 "fused=[{effectiveness:hinge},{effectiveness:preference}]"]))  # fmt: skip
    pareto = json.loads((out / "pareto.json").read_text())
    assert [r["hparams"]["effectiveness"] for r in pareto["runs"]] == ["hinge", "preference"]
    assert "steering" in (out / "pareto.md").read_text()
    for run in pareto["runs"]:
        test = json.loads((out / run["run"] / "metrics.json").read_text())["test"]
        assert 0.0 <= test["steering_score"] <= 1.0 and test["steering_score"] == run["test"]["steering_score"]
        assert test["steering"]["beta"] in (0.5, 1.0) and list(test["steering"]["curve"]) == ["-1", "0", "1"]
    assert json.loads((out / "1" / "intervention.json").read_text())["objective"]["effectiveness"] == "preference"
    evaluated = tmp_path / "eval"
    cfg = compose_config(EVALUATE_CONF_DIR, "evaluate", [f"intervention={out / '1'}", f"run_dir={evaluated}",
                                                             "steering_eval=true", *SMALL[4:]])  # fmt: skip
    evaluate_run(cfg)
    got = json.loads((evaluated / "metrics.json").read_text())["test"]
    want = json.loads((out / "1" / "metrics.json").read_text())["test"]
    # the same computation in another process can round otherwise (measured: 3e-10 apart)
    assert got["steering_score"] == pytest.approx(want["steering_score"], abs=1e-6)
    for key in ("beta", "success_neg", "fluency_neg", "off_target_neg"):  # beta: val scores 1e-5 apart
        assert got["steering"][key] == pytest.approx(want["steering"][key], abs=1e-6), key


# -- the comparison's bookkeeping (benchmarks/steering.py) and the cost row of the benchmark summary ----


def test_comparison_table_goals_and_cost_row_from_records(tmp_path):
    import sys

    sys.path.insert(0, str(CONF_DIR.parent))
    from benchmarks import steering as comparison
    from benchmarks.summary import summary

    def record(method, objective, task, seed, score, wrong=0.0, selection=0.5):
        return {"method": method, "objective": objective, "task": task, "seed": seed, "score": score, "n_params": 10,
                "sites": ["z"], "layers": "all", "selection": {"1": selection}, "clock": {"total": 3.0, "generation": 2.0},
                **{k: score for k in ("score_pos", "score_neg", "success_pos", "success_neg", "fluency_pos",
                                      "fluency_neg", "off_target_pos", "off_target_neg", "distinct_2_neg")},
                "wrong_way": wrong, "wrong_way_pos": wrong, "wrong_way_neg": 0.0, "beta": 1.0}  # fmt: skip

    records = [record("activscalar", "hinge", "ccc", s, v) for s, v in ((0, 0.6), (1, 0.8))]
    records += [record("activscalar", "preference", "ccc", s, v, wrong=0.25) for s, v in ((0, 0.9), (1, 0.9))]
    records += [record("diffmean", "fitted", "ccc", s, 0.35) for s in (0, 1)]
    rows = comparison.aggregate(records)
    hinge = next(r for r in rows if r["objective"] == "hinge")
    assert hinge["score"] == pytest.approx(0.7) and hinge["score_sd"] == pytest.approx(math.sqrt(0.02))
    goals = comparison.goals(rows, records)
    assert goals["best_learned_ccc"]["objective"] == "preference"
    assert goals["learned_over_diffmean_ccc"] == pytest.approx(0.9 / 0.35)
    assert goals["best_preference_over_hinge"][0] == pytest.approx(0.9 / 0.7)
    assert goals["best_ccc"]["wrong_way"] == 0.25 and goals["scoring_over_generation"] == 1.5
    # step 1: the sites with the best validation score
    pilot = [{**record("dynscalar", "hinge", "ccc", 0, 0.5, selection=v), "sites": [s]} for s, v in (("z", 0.8), ("mlpOut", 0.9))]
    assert comparison.best_sites(pilot) == {"dynscalar": (["mlpOut"], "all")}
    table = comparison.markdown(rows, ("ccc",))
    assert "| ActivScalar | preference | z (all) | 10 | 0.900 ± 0.000 |" in table
    sizes = {"n_val": 32, "n_test": 64, "steering": {"betas": [0.5, 1.0], "max_new_tokens": 4}}
    cost = {"case": "defaults", "scoring_over_generation": 1.51, "per_round": [1.5, 1.52]}
    (tmp_path / "steering.json").write_text(json.dumps({"sizes": sizes, "goals": goals, "cost": cost}))
    lines = [line for line in summary(tmp_path).splitlines() if "scoring / generation" in line]
    assert [cells.split("|")[4:6] for cells in lines] == [[" ≤ 1.5 ", " **not met** "], [" ≤ 1.5 ", " met "]]
