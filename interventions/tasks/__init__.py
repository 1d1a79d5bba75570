"""Tasks: data points (prompt, correct, wrong), their sources, validation and batching.

    >>> task = load_task("ccc", model=model, split="train", template=0, n=128, seed=0)
    >>> task[0].prompt, task[0].correct, task[0].wrong
"""

from __future__ import annotations

import warnings
from dataclasses import replace

from interventions.errors import EmptySplitError, TaskError
from interventions.tasks.datapoint import DataPoint, Task
from interventions.tasks.files import all_file_points, sampled_file_points
from interventions.tasks.generators import toy_points
from interventions.tasks.tokenize import prompt_token_ids
from interventions.tasks.validation import answer_ids, check_context, check_fixed_length, check_points
from interventions.spec import FILE_TASKS, SPLITS, TASKS, TOY_TASKS, TaskSpec
from interventions.toyworld.world import COMPLETION_SUFFIX


def load_task(
    name: str,
    model=None,
    split: str = "train",
    template=0,
    n: int | None = None,
    seed: int = 0,
    path: str | None = None,
    bias_pair: str = "stereotype",
    fixed_length: bool = False,
    hold_pair: str | None = None,
    tokenizer=None,
    multi_token: bool = False,
) -> Task:
    """Load and validate a task.

    Args:
        name: "ccc", "ioi", "pronouns", "bias" (toy-world generators) or "jsonl"/"csv"
            (a user file with fields prompt, correct, wrong).
        model: a TransformerBridge (or pass `tokenizer`) to check that answers are single
            tokens and, with `fixed_length`, that prompts share one token length; a model
            also refuses a prompt longer than its context (ContextError).
        split: "train", "val" or "test"; deterministic and disjoint.
        template: a template index, a list of them, or "all" (toy tasks).
        n: at most this many data points (toy default 512; files: all).
        seed: which `n` are sampled.
        path: the user file; "{split}" in it is replaced by the split, otherwise the file
            is split by a hash of each prompt (70/10/20).
        bias_pair: for "bias": "stereotype" (nurse/programmer) or "grammatical" (actress/actor).
        hold_pair: for "bias": a second pair every data point carries, to hold fixed
            while the first is steered (`objective.lambda_hold`); e.g. "grammatical".
        fixed_length: require all prompts to have the same token length.
        multi_token: answers may have several tokens, scored by their log-probability
            (docs/method.md §6). The toy tasks then answer with the answer and the token that
            closes it in the toy corpus (" Paris ."); without it, a toy data point whose
            answer is not one token is dropped (with a warning) and a file's is refused.

    Returns:
        A `Task`: a sequence of `DataPoint`s with its name, split and template.
    """
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    info: dict = {}
    if name in TOY_TASKS:
        points = toy_points(name, split, template, n, seed, bias_pair=bias_pair, hold_pair=hold_pair)
        source = f"task {name!r} (split {split}, template {template})"
        if multi_token:
            suffix = COMPLETION_SUFFIX[name]
            points = [replace(p, correct=p.correct + suffix, wrong=p.wrong + suffix) for p in points]
        elif tok is not None:
            points, dropped = _drop_multi_token(points, tok)
            if dropped:
                info["dropped_multi_token_answers"] = dropped
                warnings.warn(
                    f"{source}: dropped {len(dropped)} data points whose answers are not single "
                    f"tokens for this tokenizer (e.g. {dropped[0]!r}); task.multi_token=true keeps them",
                    stacklevel=2,
                )
    elif name in FILE_TASKS:
        if not path:
            raise TaskError(f"task {name!r} needs a file: task.path=data.{name}")
        try:
            points = sampled_file_points(path, split, n, seed)
        except EmptySplitError:  # a file too small for its splits: a data error in it is said first
            check_points(all_file_points(path), tok, str(path), multi_token)
            raise
        source = f"{path} (split {split})"
    else:
        raise TaskError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    check_points(points, tok, source, multi_token)
    if multi_token:
        info["multi_token"] = True
    lengths = None
    if model is not None or (fixed_length and tok is not None):
        lengths = [len(ids) for ids in prompt_token_ids(model if model is not None else tok, [p.prompt for p in points])]
    if model is not None:
        check_context(lengths, points, tok, model.cfg.n_ctx, source, multi_token)
    if fixed_length and lengths is not None:
        info["length"] = check_fixed_length(lengths, source, from_file=name in FILE_TASKS)
    return Task(name, split, str(template), tuple(points), info)


def load_splits(task: TaskSpec, model, seed: int, fixed_length: bool, splits=SPLITS) -> dict[str, Task | None]:
    """The task's splits as validated `Task`s ({split: Task}; None for an empty `val`, which
    is optional)."""
    out = {}
    for split in splits:
        try:
            out[split] = load_task(
                task.name, model=model, split=split, template=task.template, n=task.n(split), seed=seed,
                path=task.path, bias_pair=task.bias_pair, fixed_length=fixed_length, hold_pair=task.hold_pair,
                multi_token=task.multi_token,
            )  # fmt: skip
        except EmptySplitError:
            if split != "val":
                raise
            out[split] = None
    return out


def _drop_multi_token(points, tokenizer):
    kept, dropped = [], []
    for p in points:
        if len(answer_ids(tokenizer, p.correct)) == 1 and len(answer_ids(tokenizer, p.wrong)) == 1:
            kept.append(p)
        else:
            dropped.append(p.correct if len(answer_ids(tokenizer, p.correct)) != 1 else p.wrong)
    return kept, dropped


__all__ = ["DataPoint", "Task", "load_task", "load_splits", "TASKS", "SPLITS"]
