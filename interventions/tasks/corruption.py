"""Corrupted prompts: a data point's prompt with its key entity swapped, of the same token
length, for the patching baselines (activation and attribution patching)."""

from __future__ import annotations

from interventions.errors import TaskError
from interventions.tasks.datapoint import DataPoint, Task
from interventions.toyworld import world


def _swap_words(prompt: str, mapping: dict[str, str]) -> str:
    return " ".join(mapping.get(word, word) for word in prompt.split(" "))


def corrupt_point(task: str, point: DataPoint, index: int = 0) -> str:
    """The corrupted prompt of a toy data point, of the same token length.

    ccc: another country (both mentions); ioi: another name triple (both names replaced,
    every mention); pronouns and bias: a name of the other gender. `index` varies the
    replacement deterministically across data points.
    """
    words = point.prompt.split(" ")
    if task == "ccc":
        country = next(w for w in words if w in world.CAPITALS)
        others = [c for c in world.COUNTRIES if c != country and world.CAPITALS[c] not in words]
        return _swap_words(point.prompt, {country: others[index % len(others)]})
    if task == "ioi":
        names = list(dict.fromkeys(w for w in words if w in world.GENDER))
        others = [n for n in world.NAMES if n not in names]
        k = (2 * index) % (len(others) - 1)
        return _swap_words(point.prompt, {names[0]: others[k], names[1]: others[k + 1]})
    if task in ("pronouns", "bias"):
        name = next(w for w in words if w in world.GENDER)
        pool = world.MALE_NAMES if world.GENDER[name] == "female" else world.FEMALE_NAMES
        return _swap_words(point.prompt, {name: pool[index % len(pool)]})
    raise TaskError(
        f"no corrupted prompt for a data point of task {task!r}: add a 'corrupted' field (the "
        "prompt with its key entity swapped, same token length) to each record of your file"
    )


def corrupted_task(task: Task) -> Task:
    """A task whose prompts are the corrupted ones (answers unchanged): each data point's
    own `corrupted` prompt if it has one (user files), else the toy task's corruption."""
    points = tuple(
        DataPoint(p.corrupted or corrupt_point(task.name, p, i), p.correct, p.wrong) for i, p in enumerate(task)
    )
    return Task(task.name, task.split, task.template, points, {"corrupted_from": task.split})
