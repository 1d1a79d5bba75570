"""Answers of several tokens (docs/method.md §6): scores by teacher forcing, the objective and
the metrics on them, data that carry them, and bit-identity for single-token data."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import toy_records, write_csv, write_jsonl

from interventions.cli.preflight import preflight
from interventions.errors import ConfigError, TaskError
from interventions.forward import answer_sequences, answer_tails
from interventions.methods import METHODS
from interventions.metrics import InterventionMetrics
from interventions.objective import Objective, hinge_terms, score_diff
from interventions.sites import build_grid, hook_name
from interventions.spec import ObjectiveSpec, RunSpec, TrainedInterventionSpec
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.tasks.datapoint import DataPoint, Task
from interventions.tasks.validation import answer_ids
from interventions.training.fused import train_fused
from interventions.training.train import train_intervention


def test_score_difference_hinge_and_objective_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0, 0.0], [0.0, 3.0, 0.0, 1.0]])
    correct, wrong = torch.tensor([0, 1]), torch.tensor([2, 3])
    tail = torch.tensor([-1.5, 0.5])
    # f_c - f_w = [1, 2]; plus the tails: [-0.5, 2.5]
    assert score_diff(logits, correct, wrong, tail).tolist() == [-0.5, 2.5]
    assert score_diff(logits, correct, wrong).tolist() == [1.0, 2.0]
    neg_logits = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])  # f_c - f_w = [-1, 0]
    neg_tail = torch.tensor([0.25, -0.75])  # score differences [-0.75, -0.75]
    pos, neg = hinge_terms(logits, neg_logits, correct, wrong, 1.0, (tail, neg_tail))
    # β=+1: max(0, -Δ⁺ + m) = [1.5, 0];  β=-1: max(0, Δ⁻ + m) = [0.25, 0.25]
    assert pos.tolist() == [1.5, 0.0] and neg.tolist() == [0.25, 0.25]
    clean = torch.log_softmax(logits, -1)
    objective = Objective(lambda_f=0.0, lambda_m=2.0, margin=1.0)
    params = torch.tensor([0.5, -0.25])
    total, parts = objective(logits, neg_logits, correct, wrong, clean, params, tails=(tail, neg_tail))
    assert float(parts["effectiveness"]) == pytest.approx((1.5 + 0.25 + 0.0 + 0.25) / 2)
    assert float(total) == pytest.approx(1.0 + 2.0 * 0.75)


def test_metrics_use_sequence_score_differences():
    logits_pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    logits_neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    correct, wrong = torch.tensor([0, 0]), torch.tensor([1, 1])
    clean = torch.log_softmax(torch.tensor([[1.0, 0.0], [0.0, 0.5]]), -1)
    tails = (torch.tensor([-3.0, 0.0]), torch.tensor([0.0, -2.0]), torch.tensor([0.5, 1.0]))
    metric = InterventionMetrics()
    metric.update(logits_pos, logits_neg, clean, correct, wrong, tails=tails)
    values = metric.compute()
    # Δ⁺ = [2 - 3, -1 + 0] = [-1, -1]; Δ⁻ = [-1 + 0, 1 - 2] = [-1, -1]; Δ⁰ = [1 + 0.5, -0.5 + 1] = [1.5, 0.5]
    assert values["logit_diff"] == pytest.approx({"-1": -1.0, "0": 1.0, "+1": -1.0})
    assert values["flip_accuracy_pos"] == 0.0 and values["flip_accuracy_neg"] == 1.0
    assert values["effectiveness"] == pytest.approx(-(1.0 + 0.0))
    assert values["clean_accuracy"] == 1.0


def test_answer_sequences_by_hand():
    """Right- and left-padded prompts, answers of lengths 1..3 in one batch."""
    batch = {
        "input_ids": torch.tensor([[5, 6, 0], [0, 7, 8]]),
        "attention_mask": torch.tensor([[1, 1, 0], [0, 1, 1]]),
        "last_index": torch.tensor([1, 2]),
        "answer_ids": torch.tensor([[[20, 21, 22], [30, 0, 0]], [[40, 41, 0], [50, 51, 52]]]),
        "answer_len": torch.tensor([[3, 1], [2, 3]]),
    }
    ids, mask, read, answers, lengths = answer_sequences(batch)
    # rows: correct of 0, correct of 1, wrong of 0, wrong of 1; each prompt + answer[:-1]
    want = [[5, 6, 20, 21, 0], [0, 7, 8, 40, 0], [5, 6, 0, 0, 0], [0, 7, 8, 50, 51]]
    assert (ids * mask).tolist() == want  # masked positions hold anything
    assert mask.tolist() == [[1, 1, 1, 1, 0], [0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 1, 1, 1, 1]]
    assert read.tolist() == [[1, 2, 3], [2, 3, 4], [1, 2, 3], [2, 3, 4]]
    assert lengths.tolist() == [3, 2, 1, 3]
    assert answers[0].tolist() == [20, 21, 22] and answers[2].tolist() == [30, 0, 0]


def _steered_method(model, name, seq_len):
    grid = build_grid(model.cfg, sites=("attnOut", "residPost"), positions=None if name == "dynscalar" else "all",
                      seq_len=seq_len)  # fmt: skip
    method = METHODS[name](grid, model.cfg, model.W_O)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return method


def _direct_log_prob(model, method, name, prompt_ids, answer, beta):
    """s^β(a | x) by the definition: one full forward of x ⊕ a[:-1] with the parameters on the
    prompt positions only (position-tied) or everywhere (DynScalar), summing log σ."""
    seq = torch.tensor([prompt_ids + answer[:-1]])
    n_prompt = len(prompt_ids)

    def direct(site, layer):
        param = method.param(site, layer).detach()

        def fn(h, hook):
            if name == "dynscalar":
                return method(h, beta, site, layer)
            pad = param.new_zeros(h.shape[1] - n_prompt, *param.shape[1:])
            full = torch.cat([param, pad])
            return h * (1 + beta * full[:, None]) if name == "activscalar" else h + beta * full

        return hook_name(site, layer), fn

    hooks = [direct(s, layer) for s in method.grid.sites for layer in method.grid.layers]
    with model.hooks(fwd_hooks=hooks):
        logp = torch.log_softmax(model(seq)[0].double(), -1).detach()
    return sum(float(logp[n_prompt - 1 + t, a]) for t, a in enumerate(answer)), logp[n_prompt - 1]


@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
def test_answer_tails_are_teacher_forced_log_probabilities(tiny_model, toy_tokenizer, name):
    """s̃(c) - s̃(w) from one batched forward equals the definition, computed one data point
    and one answer at a time, for answers of 1, 2 and 3 tokens in one batch."""
    records = [
        {"prompt": "Tell me about item 1 : it is", "correct": " Paris France", "wrong": " Berlin"},
        {"prompt": "Tell me about item 2 : it is", "correct": " Rome", "wrong": " Tokyo Japan Paris"},
        {"prompt": "Tell me about item 3 : it is", "correct": " Paris Rome", "wrong": " Paris Tokyo"},
    ]
    task = Task("t", "train", "0", tuple(DataPoint(**r) for r in records), {"multi_token": True})
    tensors = encode(tiny_model, task)
    seq_len = tensors["input_ids"].shape[1]
    method = _steered_method(tiny_model, name, seq_len)
    results = answer_tails(tiny_model, tensors, (1.0, -1.0, 0.0), method)
    for (first, tail), beta in zip(results, (1.0, -1.0, 0.0)):
        for i, r in enumerate(records):
            prompt_ids = tensors["input_ids"][i, : int(tensors["last_index"][i]) + 1].tolist()
            c, w = answer_ids(toy_tokenizer, r["correct"]), answer_ids(toy_tokenizer, r["wrong"])
            s_c, first_logp = _direct_log_prob(tiny_model, method, name, prompt_ids, c, beta)
            s_w, _ = _direct_log_prob(tiny_model, method, name, prompt_ids, w, beta)
            got = float(score_diff(first[i : i + 1].detach(), tensors["correct"][i : i + 1], tensors["wrong"][i : i + 1],
                                   tail[i : i + 1].detach()))  # fmt: skip
            assert got == pytest.approx(s_c - s_w, abs=2e-5), (beta, i)
            torch.testing.assert_close(torch.log_softmax(first[i].double(), -1), first_logp, atol=2e-5, rtol=0)


def _train(model, tmp_path, multi: bool, name: str = "activscalar"):
    path = str(tmp_path / "{split}.jsonl")
    tasks = [load_task("jsonl", model=model, split=s, path=path, fixed_length=True, multi_token=multi)
             for s in ("train", "test")]  # fmt: skip
    out = train_intervention(model, *tasks, intervention=name, objective=ObjectiveSpec(lambda_f=1.0, lambda_m=0.01, margin=1.0),
                             run=RunSpec(epochs=2, batch_size=8, seed=0))  # fmt: skip
    return out, out.evaluate("test")


@pytest.mark.parametrize("name", ["activscalar", "dynscalar"])
def test_single_token_data_are_bit_identical_through_the_multi_token_path(tiny_model, tmp_path, name):
    """task.multi_token=true on data whose answers are single tokens: the same parameters,
    loss terms and metrics, bit for bit, as the single-token path."""
    records = toy_records(24)
    for i, r in enumerate(records):  # two answer pairs, so that the data are not all alike
        if i % 2:
            r["correct"], r["wrong"] = " Rome", " Tokyo"
    write_jsonl(tmp_path / "train.jsonl", records[:16])
    write_jsonl(tmp_path / "test.jsonl", records[16:])
    single, single_metrics = _train(tiny_model, tmp_path, False, name)
    multi, multi_metrics = _train(tiny_model, tmp_path, True, name)
    assert "answer_ids" in multi.datamodule.datasets["train"].tensors
    assert torch.equal(single.method.flat_params(), multi.method.flat_params())
    assert single_metrics == multi_metrics
    assert single.method.flat_params().abs().max() > 1e-3  # it trained


def test_multi_token_training_raises_the_correct_answers_score(toy_model):
    """DynScalar on the toy CCC task with two-token answers (" Budapest ." / " Helsinki ."):
    training moves s(c) - s(w) well below zero at β = -1 and keeps it above at β = +1 (the
    clean model already prefers the memorised capital by more than the margin).

    Margins, measured with 1 and 2 threads and with torch.use_deterministic_algorithms(True)
    (all four agree to 3e-4): s(c) - s(w) at β = -1 is -3.18 through the bridge and -3.17 on
    the plain form, where the teacher-forced forward runs since 2026-12-08 (asserted < -1);
    the flip accuracies are 0.94 and 1.00 on both (asserted > 0.75 and > 0.9). A margin of 3 makes the hinge
    push far past zero, so the result does not hang on the last rounding of a short run
    (with margin 1 the β = -1 flips sat at 0.48-0.63 depending on the machine)."""
    model, tokenizer = toy_model
    train, test = (load_task("ccc", model=model, split=s, n=64, multi_token=True) for s in ("train", "test"))
    assert all(len(answer_ids(tokenizer, p.correct)) == 2 and p.correct.endswith(" .") for p in train)
    out = train_intervention(model, train, test, intervention=TrainedInterventionSpec(method="dynscalar", lr=0.05),
                             objective=ObjectiveSpec(lambda_f=0.0, lambda_m=0.0, margin=3.0),
                             run=RunSpec(epochs=6, batch_size=8, seed=0))  # fmt: skip
    metrics = out.evaluate("test")
    ld = metrics["logit_diff"]
    assert ld["0"] > 3 and ld["-1"] < -1 and ld["+1"] > 1
    assert metrics["flip_accuracy_neg"] > 0.75 and metrics["flip_accuracy_pos"] > 0.9


def test_files_take_answers_of_several_tokens_only_when_asked(tiny_model, tmp_path):
    records = toy_records(40)
    records[0]["correct"] = " Paris France"
    for writer, suffix in ((write_jsonl, "jsonl"), (write_csv, "csv")):
        path = writer(tmp_path / f"data.{suffix}", records)
        with pytest.raises(TaskError, match=r"' Paris France'.*not a single token.*task.multi_token=true"):
            load_task(suffix, model=tiny_model, split="train", path=str(path))
        kept = load_task(suffix, model=tiny_model, split="train", path=str(path), multi_token=True)
        assert kept.info["multi_token"] is True
    empty = [dict(records[1], wrong="")]
    with pytest.raises(TaskError, match="field 'wrong' is empty"):
        load_task("jsonl", split="train", path=str(write_jsonl(tmp_path / "empty.jsonl", empty * 30)))
    same = [dict(r, wrong=r["correct"] + " ") for r in records]
    with pytest.raises(TaskError, match="same tokens"):
        load_task("jsonl", model=tiny_model, split="train", path=str(write_jsonl(tmp_path / "same.jsonl", same)),
                  multi_token=True)  # fmt: skip


def test_toy_tasks_answer_with_the_token_that_closes_the_answer(toy_model):
    model, tokenizer = toy_model
    single = load_task("ccc", model=model, split="test", n=20)
    multi = load_task("ccc", model=model, split="test", n=20, multi_token=True)
    assert [p.prompt for p in single] == [p.prompt for p in multi]  # the same held-out split
    for a, b in zip(single, multi):
        assert b.correct == a.correct + " ." and b.wrong == a.wrong + " ."
        assert answer_ids(tokenizer, b.correct) == answer_ids(tokenizer, a.correct) + answer_ids(tokenizer, " .")


@pytest.mark.parametrize("baseline", ["dla", "activpatch", "attrpatch", "obsprop_steer"])
def test_training_free_methods_are_refused_in_one_line_before_any_model(baseline):
    with pytest.raises(ConfigError, match=f"intervention={baseline}: its parameters are fitted") as error:
        preflight(["task.multi_token=true", f"intervention={baseline}", "hydra.run.dir=/tmp/never-written"], "train")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["activscalar", "steervec", "dynscalar"])
def test_fused_training_gives_the_parameters_of_separate_runs_with_multi_token_answers(tiny_model, name):
    """K settings trained together on answers of 1-3 tokens follow their separate runs."""
    train = load_task("ccc", model=tiny_model, split="train", n=12, multi_token=True)
    train = Task(train.name, train.split, train.template, tuple(
        DataPoint(p.prompt, p.correct + (" Paris" if i % 3 == 0 else ""), p.wrong) for i, p in enumerate(train)
    ), train.info)  # fmt: skip
    objectives = [ObjectiveSpec(0.0, 0.0, 1.0), ObjectiveSpec(1.0, 0.01, 2.0)]
    spec = TrainedInterventionSpec(method=name, init_scale=1e-2, lr=0.05)
    fused = train_fused(tiny_model, train, objectives, intervention=spec, run=RunSpec(epochs=2))
    for objective, got in zip(objectives, fused):
        separate = train_intervention(tiny_model, train, intervention=spec, objective=objective, run=RunSpec(epochs=2))
        torch.testing.assert_close(got.flat_params(), separate.method.flat_params(), atol=1e-5, rtol=0)
    assert not torch.equal(fused[0].flat_params(), fused[1].flat_params())


def test_generation_flip_accuracy_reaches_metrics_and_pareto_json(tmp_path, model_args):
    """train.py generation_eval=true: each setting's metrics.json and the sweep's pareto.json
    carry the generation flip accuracy (on answers of two tokens here); evaluate.py on one of
    the exports reproduces its test metrics."""
    from conftest import describe, run_cli

    out = tmp_path / "sweep"
    result = run_cli("train.py", "generation_eval=true", "task.multi_token=true", "task.n_train=16", "task.n_val=4",
                     "task.n_test=8", "trainer.max_epochs=1", "fused=[{lambda_f:0},{lambda_f:1}]", "logger=none",
                     f"run_dir={out}", *model_args, hydra_dir=tmp_path / "hydra")  # fmt: skip
    assert result.returncode == 0, describe(result)
    pareto = json.loads((out / "pareto.json").read_text())
    for run in pareto["runs"]:
        metrics = json.loads((out / run["run"] / "metrics.json").read_text())
        for split in ("train", "test"):
            value = metrics[split]["generation_flip_accuracy"]
            assert 0 <= value <= 1 and value == run[split]["generation_flip_accuracy"]
            assert value == (metrics[split]["generation_flip_accuracy_pos"] + metrics[split]["generation_flip_accuracy_neg"]) / 2
    # the export evaluates on answers of two tokens again, to the same numbers (evaluate.py's path)
    from interventions.evaluation import evaluate_export, export_task, exported_model
    from interventions.export import load_intervention
    from interventions.spec import ModelSpec

    iv = load_intervention(out / "0")
    again = evaluate_export(iv, exported_model(iv, ModelSpec(name=None)), export_task(iv), "test", seed=0)
    trained = json.loads((out / "0" / "metrics.json").read_text())["test"]
    assert again["logit_diff"] == pytest.approx(trained["logit_diff"], abs=1e-5)
    assert again["n"] == trained["n"] == 8


def test_runs_recorded_before_new_task_keys_are_still_the_same_run():
    """A finished run's identity written before task.multi_token and generation_eval existed
    is the run asked for with their defaults, and not with other values."""
    from interventions.sweeps.jobs import same_results

    old = {"model": {"name": "toy"}, "task": {"name": "ccc", "template": 0}, "intervention": {"method": "activscalar"},
           "objective": {"lambda_f": 0.1}, "trainer": {}, "seed": 0}  # fmt: skip
    new = {**old, "task": {**old["task"], "multi_token": False}, "generation_eval": False}
    assert same_results(old, new)
    assert not same_results(old, {**new, "task": {**new["task"], "multi_token": True}})
    assert not same_results(old, {**new, "generation_eval": True})
