"""End to end: `python train.py` and `python evaluate.py` in subprocesses (PRODUCT.md).

The runs use the committed toy model when its checkpoint is present. While it is absent
they use a tiny random checkpoint in the same (native) format, written to a temporary
folder and passed as model.name=<folder>, so that the entry points, the files they
leave and the one-line errors are still checked end to end.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from conftest import describe, run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["task.n_train=64", "task.n_val=16", "task.n_test=64"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {"effectiveness", "faithfulness", "minimality", "n_params", "flip_accuracy", "logit_diff"}




@pytest.fixture(scope="module")
def train_run(tmp_path_factory, model_args):
    base = tmp_path_factory.mktemp("train_cli")
    run_dir = base / "run"
    result = run_cli(
        "train.py", "trainer.max_epochs=2", "logger=csv", f"run_dir={run_dir}", *SMALL, *model_args,
        hydra_dir=base / "hydra",
    )  # fmt: skip
    return result, run_dir


def test_train_exits_zero_and_writes_every_file(train_run):
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    for name in ("intervention.safetensors", "intervention.json", "metrics.json", "scalars.csv",
                 "heatmap.png", "beta_curve.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    for name in ("heatmap.png", "beta_curve.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG_MAGIC, name


def test_a_run_records_the_threads_it_used(train_run):
    """intervention.json says how many threads torch used and why (interventions.threads)."""
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    threads = json.loads((run_dir / "intervention.json").read_text())["threads"]
    assert threads["threads"] >= 1 and threads["source"] in ("threads", "SLURM_CPUS_PER_TASK", "torch's default",
                                                                "the CPUs this process may run on")
    assert f"threads: {threads['threads']} ({threads['source']})" in result.stdout


def test_train_metrics_json(train_run):
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test"}  # val: what an adaptive sweep is guided by
    tensors = load_file(str(run_dir / "intervention.safetensors"))
    flat = torch.cat([t.reshape(-1) for t in tensors.values()])
    for split, values in metrics.items():
        assert METRIC_KEYS <= set(values), split
        assert set(values["logit_diff"]) == {"-1", "0", "+1"}
        assert values["effectiveness"] <= 0 and values["faithfulness"] <= 0
        assert 0 <= values["flip_accuracy"] <= 1
        assert values["n_params"] == flat.numel()
        assert values["minimality"] == int((flat.abs() >= 0.01).sum())
        assert values["n"] == (16 if split == "val" else 64)
        for v in values["logit_diff"].values():
            assert math.isfinite(v)


def test_train_intervention_json(train_run):
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    meta = json.loads((run_dir / "intervention.json").read_text())
    tensors = load_file(str(run_dir / "intervention.safetensors"))
    assert meta["method"] == "activscalar"
    grid = meta["grid"]
    n_layers = meta["model"]["config"]["n_layers"]
    assert grid["sites"] == ["attnOut", "mlpOut"]
    assert grid["layers"] == list(range(n_layers))
    seq_len = grid["seq_len"]
    assert grid["positions"] == list(range(seq_len))
    # the tokens of a ccc template-0 prompt: "The capital of X is Z . Q: What is ... ? A:"
    tokens = grid["tokens"]
    assert len(tokens) == seq_len and tokens[0] == "<bos>"
    assert tokens[1:4] == ["The", "capital", "of"] and tokens[-1] == "A:"
    assert set(tensors) == {f"{s}_{l}" for s in grid["sites"] for l in grid["layers"]}
    assert all(tuple(t.shape) == (seq_len,) for t in tensors.values())
    model = meta["model"]
    assert isinstance(model["fingerprint"], str) and model["fingerprint"]
    assert model["name"]
    assert meta["tokenizer"]["vocab_size"] > 0 and meta["tokenizer"]["vocab_hash"]
    assert meta["objective"] == dict(OmegaConf.load(ROOT / "conf" / "objective" / "default.yaml"))
    assert meta["seed"] == 0
    for pkg in ("python", "torch", "transformer_lens", "lightning"):
        assert meta["versions"][pkg], pkg
    assert meta["metrics"] == json.loads((run_dir / "metrics.json").read_text())
    assert meta["task"]["name"] == "ccc" and meta["task"]["n_test"] == 64


def test_train_scalars_csv_one_row_per_location(train_run):
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    meta = json.loads((run_dir / "intervention.json").read_text())
    tensors = load_file(str(run_dir / "intervention.safetensors"))
    with (run_dir / "scalars.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["layer", "site", "position", "token", "head", "value", "received_gradient"]
        rows = list(reader)
    grid = meta["grid"]
    assert len(rows) == len(grid["sites"]) * len(grid["layers"]) * len(grid["positions"])
    seen = set()
    for row in rows:
        layer, pos = int(row["layer"]), int(row["position"])
        seen.add((row["site"], layer, pos))
        assert row["token"] == grid["tokens"][pos]
        assert row["head"] == ""
        assert float(row["value"]) == pytest.approx(tensors[f"{row['site']}_{layer}"][pos].item(), abs=1e-7)
    assert len(seen) == len(rows)


def test_run_files_share_the_same_permissions(train_run):
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    umask = os.umask(0)
    os.umask(umask)
    if 0o666 & ~umask == 0o600:
        pytest.skip("the umask already makes new files private; nothing to compare")
    want = stat.S_IMODE((run_dir / "heatmap.png").stat().st_mode)
    for name in ("intervention.json", "intervention.safetensors", "metrics.json", "scalars.csv"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == want, name


# -- evaluate ---------------------------------------------------------------------------------


def evaluate_in_process(run_dir: Path, out_dir: Path, **overrides) -> dict:
    """evaluate.py's work without its command line: conf/evaluate/evaluate.yaml composed with
    the overrides, then runs.evaluate_run."""
    from interventions.cli.preflight import EVALUATE_CONF_DIR, compose_config
    from interventions.runs import evaluate_run

    given = [f"{key}={value}" for key, value in overrides.items()]
    cfg = compose_config(EVALUATE_CONF_DIR, "evaluate", [f"intervention={run_dir}", f"run_dir={out_dir}", "logger=none",
                                                          *given])  # fmt: skip
    evaluate_run(cfg)
    return json.loads((out_dir / "metrics.json").read_text())


def assert_same_metrics(got: dict, want: dict) -> None:
    for key in ("effectiveness", "faithfulness", "flip_accuracy", "flip_accuracy_pos", "flip_accuracy_neg",
                "clean_accuracy", "minimality", "n_params"):  # fmt: skip
        assert got[key] == pytest.approx(want[key], abs=1e-5), key
    for beta in ("-1", "0", "+1"):
        assert got["logit_diff"][beta] == pytest.approx(want["logit_diff"][beta], abs=1e-5), beta


def test_evaluate_cli_recomputes_training_test_metrics(train_run, tmp_path):
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    out = tmp_path / "eval"
    ev = run_cli(
        "evaluate.py", f"intervention={run_dir}", "logger=none", "task.template=0", "n=64", f"run_dir={out}",
        hydra_dir=tmp_path / "hydra",
    )  # fmt: skip
    assert ev.returncode == 0, describe(ev)
    got = json.loads((out / "metrics.json").read_text())["test"]
    want = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert_same_metrics(got, want)


def test_evaluate_pipeline_recomputes_training_test_metrics(train_run, tmp_path):
    """An independent recomputation: a fresh model load, the export read from disk."""
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    metrics = evaluate_in_process(run_dir, tmp_path / "eval", **{"task.template": 0, "n": 64})
    want = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert_same_metrics(metrics["test"], want)
    assert metrics["test"]["n"] == 64
    for name in ("scalars.csv", "heatmap.png", "beta_curve.png"):
        assert (tmp_path / "eval" / name).is_file(), name


def test_evaluate_defaults_reproduce_training_test_metrics(train_run, tmp_path):
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    metrics = evaluate_in_process(run_dir, tmp_path / "eval", **{"task.template": 0})
    want = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert metrics["test"]["n"] == want["n"]
    assert_same_metrics(metrics["test"], want)


# -- errors -----------------------------------------------------------------------------------


def assert_one_error_line(result) -> str:
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, describe(result)
    return errors[0]


def test_bad_override_exits_2_quickly_with_one_line(tmp_path):
    result = run_cli("train.py", "intervention=foo", f"run_dir={tmp_path / 'run'}", hydra_dir=tmp_path / "hydra")
    line = assert_one_error_line(result)
    assert result.stderr.strip() == line  # nothing else on stderr
    assert "intervention" in line and "foo" in line and "activscalar" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "hydra").exists()


@pytest.mark.parametrize(
    "override, must_contain",
    [("objective.lambda_f=-1", "objective.lambda_f"), ("task.tempate=1", "task.tempate")],
)
def test_bad_value_exits_2_before_anything_runs(tmp_path, override, must_contain):
    result = run_cli("train.py", override, f"run_dir={tmp_path / 'run'}", hydra_dir=tmp_path / "hydra")
    line = assert_one_error_line(result)
    assert must_contain in line
    assert not (tmp_path / "run").exists()


def test_mixed_lengths_with_activscalar_exits_2_suggesting_dynscalar(tmp_path, model_args):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py", "task.template=all", "logger=none", "trainer.max_epochs=1", f"run_dir={run_dir}",
        *SMALL, *model_args, hydra_dir=tmp_path / "hydra",
    )  # fmt: skip
    line = assert_one_error_line(result)
    assert "dynscalar" in line and "length" in line
    assert "Epoch" not in result.stdout and "Epoch" not in result.stderr  # before training
    for name in ("intervention.safetensors", "intervention.json", "metrics.json"):
        assert not (run_dir / name).exists(), name


def test_layer_the_model_does_not_have_exits_2(tmp_path, model_args):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py", "intervention.layers=[0,9]", "logger=none", "trainer.max_epochs=1", f"run_dir={run_dir}",
        *SMALL, *model_args, hydra_dir=tmp_path / "hydra",
    )  # fmt: skip
    line = assert_one_error_line(result)
    assert "intervention.layers" in line and "9" in line
    assert not (run_dir / "metrics.json").exists()


def test_logger_none_dynscalar_on_mixed_lengths(tmp_path, model_args):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py", "logger=none", "intervention=dynscalar", "task.template=all", "trainer.max_epochs=1",
        f"run_dir={run_dir}", *SMALL, *model_args, hydra_dir=tmp_path / "hydra",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    for name in ("intervention.safetensors", "intervention.json", "metrics.json", "scalars.csv",
                 "heatmap.png", "beta_curve.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "wandb").exists() and not (run_dir / "csv").exists()
    meta = json.loads((run_dir / "intervention.json").read_text())
    assert meta["method"] == "dynscalar" and meta["grid"]["positions"] is None
    d_model = meta["model"]["config"]["d_model"]
    tensors = load_file(str(run_dir / "intervention.safetensors"))
    assert all(tuple(t.shape) == (d_model,) for t in tensors.values())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n_params"] == 2 * meta["model"]["config"]["n_layers"] * d_model


def test_evaluate_generate_writes_completions_side_by_side(train_run, tmp_path):
    """evaluate.py generate=<run>: completions.jsonl (one line per prompt and β),
    completions.md (one row per prompt, one column per β) and metrics.json with the
    generation flip accuracy of the task prompts."""
    result, run_dir = train_run
    assert result.returncode == 0, describe(result)
    out = tmp_path / "gen"
    gen = run_cli("evaluate.py", f"generate={run_dir}", "n=3", "max_new_tokens=4", "logger=none", f"run_dir={out}",
                  hydra_dir=tmp_path / "hydra")  # fmt: skip
    assert gen.returncode == 0, describe(gen)
    lines = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [line["beta"] for line in lines] == [-1.0, 0.0, 1.0] * 3
    assert all(len(line["tokens"]) <= 4 for line in lines)
    table = (out / "completions.md").read_text().splitlines()
    assert "| prompt | β = -1 | β = 0 | β = +1 |" in table and len([t for t in table if t.startswith("| ")]) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 3 and 0 <= metrics["test"]["generation_flip_accuracy"] <= 1
    bad = run_cli("evaluate.py", f"generate={run_dir}", "betas=[a,1]", f"run_dir={tmp_path / 'bad'}",
                  hydra_dir=tmp_path / "hydra2")  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "betas" in bad.stderr, describe(bad)
