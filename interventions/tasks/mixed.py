"""Data files that mix the toy tasks, for training DynScalar across tasks (the paper's Fig. 6).

    python -m interventions write-mixed data      # data/{train,val,test}.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from interventions.io import atomic_write_text, write_json
from interventions.tasks import load_task
from interventions.spec import TOY_TASKS

# Written next to the files: a run trained on them is labelled by the tasks they mix.
MIXED_MARKER = "mixed.json"


def write_mixed_task(out_dir: str | Path, tasks=TOY_TASKS, n: dict | None = None, template="all",
                     seed: int = 0, model=None) -> str:  # fmt: skip
    """Write train/val/test.jsonl mixing the toy tasks (each split from that task's split, so the
    test prompts stay unseen); returns the task.path to train on ("<dir>/{split}.jsonl").

        python train.py intervention=dynscalar task=jsonl 'task.path="<dir>/{split}.jsonl"'
    """
    n = {"train": 64, "val": 16, "test": 64, **(n or {})}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, count in n.items():
        points = []
        for task in tasks:
            points += list(load_task(task, model=model, split=split, template=template, n=count, seed=seed))
        random.Random(seed).shuffle(points)
        if model is not None:  # the longest prompt first: plots label positions with the first prompt's tokens
            lengths = [len(model.to_str_tokens(p.prompt)) for p in points]
            first = max(range(len(points)), key=lengths.__getitem__)
            points.insert(0, points.pop(first))
        text = "".join(json.dumps({"prompt": p.prompt, "correct": p.correct, "wrong": p.wrong}) + "\n" for p in points)
        atomic_write_text(out_dir / f"{split}.jsonl", text)
    write_json(out_dir / MIXED_MARKER, {"tasks": list(tasks), "template": template, "n_per_task": n, "seed": seed})
    return str(out_dir / "{split}.jsonl")
