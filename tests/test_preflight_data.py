"""The data a command reads is checked before any model loads (cli.preflight.check_inputs):
a user file's records for train.py and evaluate.py, and evaluate.py generate='s prompts
against the export's trained length and its model's context. Each problem is one line."""

from __future__ import annotations

import json

import pytest
from conftest import fake_hub_cache, toy_records, write_jsonl

from interventions.cli.preflight import preflight
from interventions.errors import ConfigError, ContextError, EmptySplitError, InterventionsError, LengthError, TaskError
from interventions.export import save_intervention
from interventions.methods import METHODS
from interventions.sites import build_grid
from interventions.tasks.tokenize import prompt_token_ids

PROMPT = "The capital of France is"


def one_line_error(argv: list[str], entry: str) -> InterventionsError:
    with pytest.raises(InterventionsError) as info:
        preflight(argv, entry)
    message = str(info.value)
    assert message and "\n" not in message, repr(message)
    return info.value


@pytest.mark.parametrize(
    "records, kind, must_contain",
    [
        ([{"prompt": "a b", "correct": " x", "wrong": " "}], TaskError, ["line 1", "'wrong' is empty"]),
        ([{"prompt": "a b", "correct": " x"}], TaskError, ["line 1", "missing field 'wrong'"]),
        (toy_records(1), EmptySplitError, ["split by prompt hash", "{split}"]),
    ],
)
def test_train_refuses_a_bad_file_before_the_model_loads(tmp_path, records, kind, must_contain):
    path = write_jsonl(tmp_path / "data.jsonl", records)
    error = one_line_error(["task=jsonl", f"task.path={path}", f"hydra.run.dir={tmp_path / 'run'}"], "train")
    assert isinstance(error, kind)
    for text in must_contain:
        assert text in str(error)


def test_a_small_file_says_its_own_data_error_before_its_size(tmp_path, toy_tokenizer):
    """Issue 28: a JSONL file too small for its splits hid its real error (an answer of two
    tokens, correct == wrong) behind "left none for test"."""
    from interventions.tasks import load_task

    run = f"hydra.run.dir={tmp_path / 'run'}"
    two_tokens = write_jsonl(tmp_path / "two.jsonl", [dict(toy_records(1)[0], correct=" Paris France")])
    error = one_line_error(["task=jsonl", f"task.path={two_tokens}", run], "train")  # the toy tokenizer is read
    assert "' Paris France'" in str(error) and "not a single token" in str(error)
    with pytest.raises(TaskError, match="not a single token"):
        load_task("jsonl", split="test", path=str(two_tokens), tokenizer=toy_tokenizer)
    same = write_jsonl(tmp_path / "same.jsonl", [dict(toy_records(1)[0], wrong=" Paris")])
    assert "correct and wrong answers are both ' Paris'" in str(one_line_error(["task=jsonl", f"task.path={same}", run],
                                                                              "train"))  # fmt: skip
    with pytest.raises(TaskError, match="both ' Paris'"):
        load_task("jsonl", split="test", path=str(same))


def test_an_empty_file_is_refused_before_the_model_loads(tmp_path):
    """Issue 28: an empty JSONL file was caught only once the model had loaded."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    error = one_line_error(["task=jsonl", f"task.path={empty}", f"hydra.run.dir={tmp_path / 'run'}"], "train")
    assert str(error).startswith(f"{empty} holds no data points")


def test_the_hints_for_a_files_splits_parse_as_printed(tmp_path):
    """Issue 28: the suggested task.path='data/{split}.jsonl' did not parse, and Hydra's error
    for an unquoted {split} did not say to quote it."""
    import re
    import shlex

    from interventions.cli.preflight import expand_sweeps

    path = write_jsonl(tmp_path / "one.jsonl", toy_records(1))
    hint = re.search(r"\('(.*)'\)", str(one_line_error(["task=jsonl", f"task.path={path}"], "train"))).group(1)
    assert expand_sweeps(shlex.split(f"'{hint}'")) == [[hint]]  # the printed override, pasted into a shell
    for given in ("task.path=data/{split}.jsonl", "task.path=a=b.jsonl"):
        message = str(one_line_error(["task=jsonl", given], "train"))
        assert message.startswith(f"cannot parse {given!r}") and "quote a value" in message
        suggested = re.search(r"e\.g\. (\S+)$", message).group(1)
        assert expand_sweeps(shlex.split(suggested)) == [shlex.split(suggested)]


def test_a_file_of_unequal_lengths_is_told_to_make_them_equal(tmp_path, tiny_model):
    from interventions.tasks import load_task

    records = toy_records(40) + toy_records(40, prefix="Item")  # 9 and 6 tokens
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    with pytest.raises(TaskError) as info:
        load_task("jsonl", model=tiny_model, split="train", path=str(path), fixed_length=True)
    assert "give every prompt of the file the same token length or intervention=dynscalar" in str(info.value)
    assert "task.template" not in str(info.value)


def test_train_refuses_a_missing_file_or_path_and_accepts_a_good_one(tmp_path):
    run = f"hydra.run.dir={tmp_path / 'run'}"
    assert "does not exist" in str(one_line_error(["task=jsonl", f"task.path={tmp_path / 'no.jsonl'}", run], "train"))
    assert isinstance(one_line_error(["task=jsonl", run], "train"), ConfigError)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"\n')
    assert "not valid JSON" in str(one_line_error(["task=jsonl", f"task.path={tmp_path / 'bad.jsonl'}", run], "train"))
    good = write_jsonl(tmp_path / "good.jsonl", toy_records(80))
    preflight(["task=jsonl", f"task.path={good}", run], "train")  # no error


@pytest.fixture
def export(tmp_path, tiny_model):
    """Write a real export of `name` from the tiny model (its tokenizer is the toy model's,
    so the recorded model name "toy" gives the same tokenizer); returns its folder."""

    def write(name: str, task: dict | None = None, folder: str = "run"):
        seq_len = len(prompt_token_ids(tiny_model, [PROMPT])[0])
        grid = build_grid(tiny_model.cfg, sites=["attnOut"], positions=None if name == "dynscalar" else "all",
                          seq_len=seq_len)  # fmt: skip
        method = METHODS[name](grid, tiny_model.cfg)
        task = task or {"name": "ccc", "template": 0}
        return save_intervention(tmp_path / folder, method, tiny_model, "toy", {"task": task})

    return write


def test_exports_record_what_the_model_adds_and_its_context(export, tiny_model):
    meta = json.loads((export("activscalar") / "intervention.json").read_text())
    assert meta["tokenization"] == {"added_tokens": 1, "n_ctx": tiny_model.cfg.n_ctx}


def test_generate_refuses_prompts_the_export_cannot_take_before_the_model_loads(export, tmp_path, monkeypatch):
    tied, free = export("activscalar", folder="tied"), export("dynscalar", folder="free")
    out = f"run_dir={tmp_path / 'out'}"
    error = one_line_error([f"generate={tied}", 'prompts=["a b c"]', out], "evaluate")
    assert isinstance(error, LengthError) and (error.got, error.trained) == (4, 6)
    assert "4 tokens" in str(error) and "6-token prompts" in str(error)
    error = one_line_error([f"generate={free}", f'prompts=["{PROMPT}"]', "max_new_tokens=60", out], "evaluate")
    assert isinstance(error, ContextError) and (error.got, error.n_ctx) == (66, 64)
    preflight([f"generate={free}", f'prompts=["{PROMPT}"]', "max_new_tokens=58", out], "evaluate")  # 64 fits
    preflight([f"generate={tied}", f'prompts=["{PROMPT}"]', out], "evaluate")  # the trained length
    # another model: its tokenizer may add other tokens, so this waits for the model (a hub
    # model in the local cache: the hub is not asked)
    fake_hub_cache(monkeypatch, tmp_path / "hf", "gpt2")
    preflight([f"generate={tied}", 'prompts=["a b c"]', "model.name=gpt2", out], "evaluate")
    # a model that is not there: loading it says so, in its own line
    meta = json.loads((tied / "intervention.json").read_text())
    (tied / "intervention.json").write_text(json.dumps({**meta, "model": {**meta["model"], "name": str(tmp_path / "no")}}))
    preflight([f"generate={tied}", 'prompts=["a b c"]', out], "evaluate")
    # an export written before the record: checked once the model is loaded
    del meta["tokenization"]
    (tied / "intervention.json").write_text(json.dumps(meta))
    preflight([f"generate={tied}", 'prompts=["a b c"]', out], "evaluate")


def test_generate_and_evaluate_check_the_exports_task_file(export, tmp_path):
    """The export's own task file (or task.path given to evaluate.py): an empty answer, and for
    generate= its prompts against a position-tied export's length."""
    bad = write_jsonl(tmp_path / "test.jsonl", [{"prompt": PROMPT, "correct": "", "wrong": " x"}])
    run = export("activscalar", task={"name": "jsonl", "path": str(tmp_path / "{split}.jsonl")})
    out = f"run_dir={tmp_path / 'out'}"
    for argv in ([f"generate={run}", out], [f"intervention={run}", out]):
        error = one_line_error(argv, "evaluate")
        assert isinstance(error, TaskError) and "'correct' is empty" in str(error)
    write_jsonl(bad, [{"prompt": "a b c", "correct": " x", "wrong": " y"}])
    error = one_line_error([f"generate={run}", out], "evaluate")
    assert isinstance(error, LengthError) and "'a b c' has 4 tokens" in str(error)
    preflight([f"intervention={run}", out], "evaluate")  # evaluation's own check says it after loading
    other = write_jsonl(tmp_path / "other.jsonl", [{"prompt": PROMPT, "correct": " x", "wrong": " y"}] * 3)
    preflight([f"generate={run}", f"task.path={other}", "split=train", out], "evaluate")  # its task.path wins


def test_a_file_prompt_longer_than_the_context_is_refused_before_the_model_loads(export, tmp_path):
    """train.py: a prompt whose own tokens exceed the model's context (config.json's n_ctx; no
    BOS counted yet). evaluate.py: with the tokens the export recorded its model adds."""
    run = f"hydra.run.dir={tmp_path / 'run'}"
    long = {"prompt": " ".join(["a"] * 65), "correct": " x", "wrong": " y"}  # 65 own tokens: over 64
    write_jsonl(tmp_path / "train.jsonl", [long])
    write_jsonl(tmp_path / "val.jsonl", [long])
    write_jsonl(tmp_path / "test.jsonl", [{**long, "prompt": " ".join(["a"] * 63)}])  # 63 + BOS = 64: fits
    files = f'task.path="{tmp_path}/{{split}}.jsonl"'
    error = one_line_error(["task=jsonl", files, run], "train")
    assert isinstance(error, ContextError) and (error.got, error.n_ctx) == (65, 64) and "(split train)" in str(error)
    exported = export("dynscalar", task={"name": "jsonl", "path": str(tmp_path / "{split}.jsonl")})
    preflight([f"intervention={exported}", f"run_dir={tmp_path / 'out'}"], "evaluate")  # the test split fits
    write_jsonl(tmp_path / "test.jsonl", [{**long, "prompt": " ".join(["a"] * 64)}])  # 64 + BOS = 65
    error = one_line_error([f"intervention={exported}", f"run_dir={tmp_path / 'out'}"], "evaluate")
    assert isinstance(error, ContextError) and error.got == 65


def test_load_task_refuses_a_prompt_longer_than_the_context(tmp_path, tiny_model):
    """TransformerBridge's `to_tokens` cuts a prompt at the context by default; a training set's
    prompt must be refused, not trained on cut short. With several answer tokens, the ones fed
    back count too."""
    from interventions.tasks import load_task

    n_ctx = tiny_model.cfg.n_ctx
    words = " ".join(["a"] * (n_ctx - 2))  # BOS + n_ctx - 2 words + "is" = n_ctx tokens
    records = [{"prompt": f"{words} is", "correct": " Paris", "wrong": " Berlin"}]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    task = load_task("jsonl", model=tiny_model, split="train", path=str(tmp_path / "{split}.jsonl"))
    assert len(prompt_token_ids(tiny_model, task.prompts)[0]) == n_ctx
    write_jsonl(path, [{**records[0], "correct": " Paris .", "wrong": " Berlin ."}])
    with pytest.raises(ContextError, match=f"{n_ctx} tokens and 1 answer tokens fed back") as info:
        load_task("jsonl", model=tiny_model, split="train", path=str(tmp_path / "{split}.jsonl"), multi_token=True)
    assert info.value.got == n_ctx + 1
    write_jsonl(path, [{**records[0], "prompt": f"a {words} is"}])
    with pytest.raises(ContextError, match=f"{n_ctx + 1} tokens, more than the model's context of {n_ctx}"):
        load_task("jsonl", model=tiny_model, split="train", path=str(tmp_path / "{split}.jsonl"))
