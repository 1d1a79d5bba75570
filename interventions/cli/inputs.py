"""The data a command reads, checked before any model loads (`cli.preflight`): a user
file's records, its prompts against the model's context, and `evaluate.py generate=`'s
prompts against what the export was trained on. Each problem is one line.

A prompt's length comes from the model's tokenizer alone (`tokenizer.model_tokenizer`, no
weights): its own tokens, plus the tokens an export recorded its model adds (a BOS;
`tokenization` in intervention.json). train.py has no export yet, so there the added
tokens count as none: a prompt whose own tokens already exceed the context is refused
here, and one that a BOS tips over once the model is loaded (`tasks.load_task`). Only a
command with a data file or prompts to measure loads a tokenizer (about 2 s with torch);
every other mistake is still reported without torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from interventions.errors import ConfigError, EmptySplitError
from interventions.spec import FILE_TASKS, SPLITS, EvaluateConfig, GenerateConfig, TaskSpec, TrainConfig, exported_task_spec
from interventions.tasks.datapoint import DataPoint
from interventions.tasks.files import all_file_points, sampled_file_points
from interventions.tasks.tokenize import own_token_count
from interventions.tasks.validation import check_context, check_points, check_prompt_lengths
from interventions.toyworld import model_config

# config.json keys that hold a model's context length: TransformerLens-native, then Hugging Face's
CONTEXT_KEYS = ("n_ctx", "max_position_embeddings", "n_positions", "max_sequence_length")


def export_meta(path: str) -> dict | None:
    """An export's intervention.json (`path`: its run folder or one of its files), or None
    where it cannot be read (loading the export then says what is wrong with it)."""
    folder = Path(path)
    try:
        return json.loads((folder if folder.is_dir() else folder.parent).joinpath("intervention.json").read_text())
    except (OSError, ValueError):
        return None


def model_context(name: str) -> int | None:
    """The context length in a model's config.json ("toy", a native or Hugging Face folder),
    or None where there is no local config to read (a hub name)."""
    config = model_config(name) or {}
    return next((config[key] for key in CONTEXT_KEYS if isinstance(config.get(key), int)), None)


def tokenizer_of(name: str, cache: dict):
    """The tokenizer of model `name`, loaded once per preflight; None where it cannot be
    loaded (loading the model then says why, in its own words)."""
    if ("tokenizer", name) not in cache:
        # here: transformers' tokenizers load torch (1.6 s), which no other one-line error waits for
        from interventions.tokenizer import model_tokenizer

        try:
            cache[("tokenizer", name)] = model_tokenizer(name)
        except (OSError, ValueError):  # no such folder, or a hub name without the network
            cache[("tokenizer", name)] = None
    return cache[("tokenizer", name)]


def task_file_points(task: TaskSpec, splits, seed: int, cache: dict, tokenizer=None) -> dict[str, list[DataPoint]]:
    """A user file's data points per split (as `tasks.load_task` draws them), refusing in one
    line what needs no model: no path, no file, no data points, a malformed line, a missing
    field, an empty answer, a split left empty (after the file's own errors: with `tokenizer`,
    answers that are not single tokens too). {} for a generated task; each (file, split) is
    read once."""
    if task.name not in FILE_TASKS:
        return {}
    if not task.path:
        raise ConfigError(f"task {task.name!r} needs a file: task.path=data.{task.name}")
    found = {}
    for split in splits:
        key = ("points", task.path, split, task.n(split), seed)
        if key not in cache:
            try:
                cache[key] = sampled_file_points(task.path, split, task.n(split), seed)
            except EmptySplitError:
                if split != "val":  # an optional split
                    check_points(all_file_points(task.path), tokenizer, task.path, task.multi_token)
                    raise
                cache[key] = []
        if cache[key]:
            found[split] = cache[key]
    return found


def check_points_fit(task: TaskSpec, points: dict[str, list[DataPoint]], tokenizer, added: int, n_ctx: int) -> None:
    """Each split's prompts, with `added` tokens and the answer tokens fed back (multi-token
    answers), must fit the context of `n_ctx` tokens (`validation.check_context`)."""
    if tokenizer is None:
        return
    for split, split_points in points.items():
        lengths = [own_token_count(tokenizer, p.prompt) + added for p in split_points]
        check_context(lengths, split_points, tokenizer, n_ctx, f"{task.path} (split {split})", task.multi_token)


def check_generate_prompts(spec: GenerateConfig, meta: dict, prompts: list[str], cache: dict) -> None:
    """Prompts an export cannot continue: longer, with max_new_tokens, than its model's
    context, or (a position-tied export) of another length than it was trained on."""
    record = meta.get("tokenization") or {}
    tokenizer = tokenizer_of(meta["model"]["name"], cache)
    if tokenizer is None:
        return
    lengths = [own_token_count(tokenizer, p) + record["added_tokens"] for p in prompts]
    tied = (meta["method"], meta["grid"]["seq_len"]) if meta.get("position_tied") else None
    check_prompt_lengths(lengths, prompts, spec.max_new_tokens, record["n_ctx"], tied)


def check_exported_inputs(spec: EvaluateConfig | GenerateConfig, cache: dict) -> None:
    """evaluate.py: the export's task file (with evaluate's task keys) and, for generate=,
    the prompts given or the file's. Lengths need the export's record of its model's
    tokenization; an export written before it, another model (model.name), and a
    generated task's prompts are checked once the model is loaded, before any forward."""
    meta = export_meta(spec.intervention if isinstance(spec, EvaluateConfig) else spec.generate)
    if meta is None:
        return  # loading the export says what is wrong with it
    generating = isinstance(spec, GenerateConfig)
    task = None
    if generating and spec.prompts is not None:
        points, prompts = {}, list(spec.prompts)
    else:
        task = exported_task_spec(meta.get("task"), spec.task, spec.split, spec.n)
        points = task_file_points(task, (spec.split,), spec.seed, cache)
        prompts = [p.prompt for p in points.get(spec.split, [])]
    record = meta.get("tokenization") or {}
    name = meta.get("model", {}).get("name")
    if record.get("added_tokens") is None or spec.model.name not in (None, name) or not (points or prompts):
        return
    if points:
        check_points_fit(task, points, tokenizer_of(name, cache), record["added_tokens"], record["n_ctx"])
    if generating:
        check_generate_prompts(spec, meta, prompts, cache)


def check_inputs(spec, cache: dict) -> None:
    """The data the command of `spec` reads, before any model loads (module docstring)."""
    if isinstance(spec, (EvaluateConfig, GenerateConfig)):
        check_exported_inputs(spec, cache)
    elif isinstance(spec, TrainConfig):
        local = spec.task.name in FILE_TASKS and model_context(spec.model.name) is not None
        points = task_file_points(spec.task, SPLITS, spec.seed, cache, tokenizer_of(spec.model.name, cache) if local else None)
        n_ctx = model_context(spec.model.name) if points else None
        if n_ctx is not None:  # a local model: its config says its context
            check_points_fit(spec.task, points, tokenizer_of(spec.model.name, cache), 0, n_ctx)
