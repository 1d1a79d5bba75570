"""Checks on a dataset against a tokenizer, each failing with one actionable line.

All run before any model forward pass, so a bad dataset never costs a training run.
"""

from __future__ import annotations

import warnings
from collections import Counter

from interventions.errors import EmptySplitError, TaskError
from interventions.tasks.datapoint import DataPoint


MULTI_TOKEN_HINT = "; or set task.multi_token=true to score answers of several tokens by their log-probability"


def answer_ids(tokenizer, answer: str) -> list[int]:
    return tokenizer(answer, add_special_tokens=False)["input_ids"]


def describe_tokens(tokenizer, ids: list[int]) -> str:
    return "[" + ", ".join(repr(tokenizer.decode([i])) for i in ids) + "]"


def single_token_id(tokenizer, answer: str, where: str = "", what: str = "answer") -> int:
    """The id of `answer` (an answer, or `what` else), or a TaskError showing how it tokenizes."""
    ids = answer_ids(tokenizer, answer)
    if len(ids) == 1:
        return ids[0]
    hint = ""
    if not answer.startswith(" ") and len(answer_ids(tokenizer, " " + answer)) == 1:
        hint = f"; with a leading space {' ' + answer!r} is one token (BPE tokenizers need it)"
    elif answer.startswith(" ") and len(answer_ids(tokenizer, answer.lstrip())) == 1:
        hint = f"; without the leading space {answer.lstrip()!r} is one token"
    raise TaskError(
        f"{what} {answer!r}{where} is not a single token: it tokenizes as "
        f"{describe_tokens(tokenizer, ids)} ({len(ids)} tokens){hint}{MULTI_TOKEN_HINT if what == 'answer' else ''}"
    )


def check_answers(tokenizer, p: DataPoint, where: str, multi_token: bool) -> None:
    """Single-token answers that differ, or (`multi_token`) non-empty token sequences that differ."""
    if not multi_token:
        if single_token_id(tokenizer, p.correct, where) == single_token_id(tokenizer, p.wrong, where):
            raise TaskError(f"correct {p.correct!r} and wrong {p.wrong!r} are the same token{where}")
        return
    correct, wrong = answer_ids(tokenizer, p.correct), answer_ids(tokenizer, p.wrong)
    for name, ids in (("correct", correct), ("wrong", wrong)):
        if not ids:
            raise TaskError(f"{name} answer {getattr(p, name)!r} has no tokens{where}")
    if correct == wrong:
        raise TaskError(f"correct {p.correct!r} and wrong {p.wrong!r} are the same tokens{where}")


def check_points(points: list[DataPoint], tokenizer, source: str, multi_token: bool = False) -> None:
    """Non-empty answers, single tokens unless `multi_token`, correct != wrong; warns about
    duplicate prompts."""
    if not points:
        raise EmptySplitError(f"{source} has no data points; check the file, split and template")
    for i, p in enumerate(points):
        where = f" (data point {i} of {source}: {p.prompt[:60]!r})"
        if p.correct == p.wrong:
            raise TaskError(f"correct and wrong answers are both {p.correct!r}{where}")
        if not p.prompt.strip():
            raise TaskError(f"empty prompt{where}")
        for name in ("correct", "wrong"):
            if not getattr(p, name).strip():
                raise TaskError(f"empty {name} answer{where}")
        if tokenizer is not None:
            check_answers(tokenizer, p, where, multi_token)
            for held in (p.hold_correct, p.hold_wrong):
                if held is not None:
                    single_token_id(tokenizer, held, where, what="held answer")
    counts = Counter(p.prompt for p in points)
    duplicates = {k: v for k, v in counts.items() if v > 1}
    if duplicates:
        example = next(iter(duplicates))
        warnings.warn(
            f"{source}: {sum(duplicates.values()) - len(duplicates)} duplicate prompts "
            f"(e.g. {example[:60]!r} x{duplicates[example]}); they count more than once",
            stacklevel=3,
        )


def length_histogram(lengths: list[int]) -> dict[int, int]:
    return dict(sorted(Counter(lengths).items()))


def check_fixed_length(lengths: list[int], source: str) -> int:
    """The one token length of all prompts, or a TaskError with the length histogram."""
    histogram = length_histogram(lengths)
    if len(histogram) != 1:
        shown = ", ".join(f"{k} tokens: {v}" for k, v in histogram.items())
        raise TaskError(
            f"{source}: prompts have unequal token lengths ({shown}), but ActivScalar and "
            "SteerVec tie parameters to positions; use one template of one length "
            "(e.g. task.template=0) or intervention=dynscalar, which accepts any length"
        )
    return next(iter(histogram))
