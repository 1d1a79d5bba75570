"""A data point of a task: a prompt and two answers (single tokens, or token sequences with
`task.multi_token`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataPoint:
    """`prompt` should be continued by `correct` rather than `wrong`.

    Answers are strings, each a single token of the model's tokenizer unless the task takes
    answers of several tokens (`task.multi_token`, docs/method.md §6); with a BPE tokenizer
    (GPT-2) that usually means a leading space: " Paris". `corrupted`, if
    given, is the prompt with its key entity swapped (same token length), used by the
    patching baselines instead of the toy tasks' built-in corruption.
    """

    prompt: str
    correct: str
    wrong: str
    corrupted: str | None = None
    # A second answer pair to hold fixed while steering the first (multi-observable
    # objective, e.g. debiasing: move nurse/programmer, keep actress/actor).
    hold_correct: str | None = None
    hold_wrong: str | None = None


@dataclass(frozen=True)
class Task(Sequence):
    """A validated, ordered sequence of data points and where they came from."""

    name: str
    split: str
    template: str
    points: tuple[DataPoint, ...]
    info: dict = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i):
        return self.points[i]

    def __iter__(self):
        return iter(self.points)

    @property
    def prompts(self) -> list[str]:
        return [p.prompt for p in self.points]

    def __repr__(self) -> str:
        return f"Task({self.name!r}, split={self.split!r}, template={self.template!r}, n={len(self)})"
