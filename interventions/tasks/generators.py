"""Data points of the toy world's tasks (ccc, ioi, pronouns, bias) by split and template.

Splits are deterministic and disjoint: `test` is the part of the prompt space that the
toy corpus never contains (`world.is_test`); `val` is a fixed hash-selected tenth of the
rest; `train` is what remains. Answers carry a leading space (" Paris"), which the
toy tokenizer ignores and BPE tokenizers need.
"""

from __future__ import annotations

import hashlib
import random

from interventions.errors import TaskError
from interventions.tasks.datapoint import DataPoint
from interventions.spec import SPLITS, TOY_TASKS
from interventions.toyworld import world

VAL_FRACTION = 0.1
DEFAULT_N = 512


def _in_val(prompt: str) -> bool:
    digest = hashlib.sha256(("val:" + prompt).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < VAL_FRACTION


def parse_templates(task: str, template) -> list[int]:
    """`template` as a list of indices: an int, "all", or a list/comma string of ints."""
    count = len(world.TEMPLATES[task])
    if template in ("all", None):
        return list(range(count))
    raw = template
    items = [t for t in template.split(",") if t.strip()] if isinstance(template, str) else template
    items = items if isinstance(items, (list, tuple)) else [items]
    try:
        indices = [int(t) for t in items]
    except (TypeError, ValueError):
        raise TaskError(
            f"task.template={raw!r} is not a template index; "
            f"{task} has templates 0..{count - 1} (or 'all')"
        ) from None
    for i in indices:
        if not 0 <= i < count:
            raise TaskError(
                f"task.template={i} does not exist; {task} has templates 0..{count - 1} (or 'all')"
            )
    return indices


def toy_points(
    task: str,
    split: str = "train",
    template=0,
    n: int | None = None,
    seed: int = 0,
    bias_pair: str = "stereotype",
    hold_pair: str | None = None,
) -> list[DataPoint]:
    """Up to `n` (default DEFAULT_N) data points of a toy task, sampled with `seed`."""
    if task not in world.TEMPLATES:
        raise TaskError(f"unknown toy task {task!r}; allowed: {', '.join(TOY_TASKS)}")
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    for key, pair in (("bias_pair", bias_pair), ("hold_pair", hold_pair)):
        if pair is not None and pair not in world.BIAS_PAIRS:
            raise TaskError(f"unknown {key} {pair!r}; allowed: {', '.join(world.BIAS_PAIRS)}")
    if hold_pair is not None and task != "bias":
        raise TaskError(f"task.hold_pair is defined for the bias task, not {task!r}")
    indices = parse_templates(task, template)
    limit = DEFAULT_N if n is None else n
    rng = random.Random(seed)

    def point(slots, index):
        """The data point of (slots, template index) if it belongs to `split`, else None."""
        tpl = world.TEMPLATES[task][index]
        full = world.fill(task, slots, bias_pair=bias_pair)
        prompt = tpl.prompt(full)
        if world.is_test(task, slots, index) != (split == "test"):
            return None
        if split != "test" and _in_val(prompt) != (split == "val"):
            return None
        hold = (None, None)
        if hold_pair is not None:
            held = world.fill(task, slots, bias_pair=hold_pair)
            hold = (" " + held[tpl.answer], " " + held[tpl.foil])
        return DataPoint(prompt, " " + full[tpl.answer], " " + full[tpl.foil], None, *hold)

    if task == "ioi":  # too many combinations to enumerate: sample without replacement
        seen: dict[str, DataPoint] = {}
        for _ in range(50 * limit):
            p = point(world.random_slots(task, rng), rng.choice(indices))
            if p is not None:
                seen.setdefault(p.prompt, p)
                if len(seen) == limit:
                    break
        return list(seen.values())
    candidates = [p for s in world.free_slots(task) for i in indices if (p := point(s, i))]
    if len(candidates) > limit:
        candidates = rng.sample(candidates, limit)
    return candidates
