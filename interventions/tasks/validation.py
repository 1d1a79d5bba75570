"""Checks on a dataset against a tokenizer, each failing with one actionable line.

All run before any model forward pass, so a bad dataset never costs a training run.
"""

from __future__ import annotations

import warnings
from collections import Counter

from interventions.errors import ContextError, EmptySplitError, LengthError, TaskError
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


def check_fixed_length(lengths: list[int], source: str, from_file: bool = False) -> int:
    """The one token length of all prompts, or a TaskError with the length histogram and the
    fix (a toy task: one template; a user's file, `from_file`: prompts of one length)."""
    histogram = length_histogram(lengths)
    if len(histogram) != 1:
        shown = ", ".join(f"{k} tokens: {v}" for k, v in histogram.items())
        fix = ("give every prompt of the file the same token length" if from_file
               else "use one template of one length (e.g. task.template=0)")  # fmt: skip
        raise TaskError(
            f"{source}: prompts have unequal token lengths ({shown}), but ActivScalar and "
            f"SteerVec tie parameters to positions; {fix} or intervention=dynscalar, which accepts any length"
        )
    return next(iter(histogram))


def check_context(lengths: list[int], points: list[DataPoint], tokenizer, n_ctx: int, source: str,
                  multi_token: bool) -> None:  # fmt: skip
    """Each prompt, with the answer tokens fed back under teacher forcing (all but the last
    of the longer answer, `multi_token`), must fit the model's context of `n_ctx` tokens."""
    for i, (length, p) in enumerate(zip(lengths, points)):
        fed = max(len(answer_ids(tokenizer, a)) for a in (p.correct, p.wrong)) - 1 if multi_token else 0
        if length + fed > n_ctx:
            answers = f" and {fed} answer tokens fed back" if fed else ""
            raise ContextError(
                f"data point {i} of {source} ({p.prompt[:60]!r}): its prompt has {length} tokens{answers}, more than "
                f"the model's context of {n_ctx} tokens; shorten or drop it",
                n_ctx=n_ctx, got=length + fed,
            )  # fmt: skip


def check_prompt_lengths(lengths: list[int], prompts: list[str], max_new_tokens: int, n_ctx: int,
                         tied: tuple[str, int] | None = None) -> None:  # fmt: skip
    """One line for a prompt that a position-tied method (`tied`: its name and trained
    prompt length) was not trained on (LengthError), or one the model's context of `n_ctx`
    tokens cannot hold with `max_new_tokens` more (ContextError)."""
    for length, prompt in zip(lengths, prompts):
        if tied is not None and length != tied[1]:
            raise LengthError(
                f"prompt {prompt[:60]!r} has {length} tokens but this {tied[0]} intervention is tied to "
                f"{tied[1]}-token prompts; use prompts of the trained template, or an intervention "
                "that is not tied to positions (intervention=dynscalar)",
                trained=tied[1], got=length,
            )  # fmt: skip
        if length + max_new_tokens > n_ctx:
            raise ContextError(
                f"prompt {prompt[:60]!r} has {length} tokens; with max_new_tokens={max_new_tokens} that is "
                f"{length + max_new_tokens}, more than the model's context of {n_ctx} tokens",
                n_ctx=n_ctx, got=length + max_new_tokens,
            )  # fmt: skip
