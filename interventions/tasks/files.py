"""User datasets as JSONL or CSV files with the fields prompt, correct, wrong (and
optionally corrupted: the prompt with its key entity swapped, for the patching baselines)."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

from interventions.errors import EmptySplitError, TaskError
from interventions.tasks.datapoint import DataPoint
from interventions.tasks.validation import check_points

FIELDS = ("prompt", "correct", "wrong")
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1


def _point(record, where: str) -> DataPoint:
    if not isinstance(record, dict):
        raise TaskError(f"{where}: expected an object with fields {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in record or record[f] is None]
    if missing:
        raise TaskError(f"{where}: missing field {missing[0]!r} (each record needs {', '.join(FIELDS)})")
    bad = [f for f in FIELDS if not isinstance(record[f], str)]
    if bad:
        raise TaskError(f"{where}: field {bad[0]!r} must be a string, got {record[bad[0]]!r}")
    empty = [f for f in ("correct", "wrong") if not record[f].strip()]  # an empty prompt: `check_points`
    if empty:
        raise TaskError(f"{where}: field {empty[0]!r} is empty; each answer needs at least one token")
    corrupted = record.get("corrupted") or None  # optional: for activpatch / attrpatch
    if corrupted is not None and not isinstance(corrupted, str):
        raise TaskError(f"{where}: field 'corrupted' must be a string, got {corrupted!r}")
    return DataPoint(record["prompt"], record["correct"], record["wrong"], corrupted)


def read_points(path: str | Path) -> list[DataPoint]:
    """All data points of a .jsonl or .csv file, in file order."""
    path = Path(path)
    if not path.exists():
        raise TaskError(f"dataset file {path} does not exist")
    suffix = path.suffix.lower()
    points = []
    if suffix in (".jsonl", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            points.append(_point(record, f"{path} line {number}"))
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(FIELDS) <= set(reader.fieldnames):
                raise TaskError(
                    f"{path} line 1: the header must name the columns {', '.join(FIELDS)}, "
                    f"got {reader.fieldnames}"
                )
            for record in reader:
                points.append(_point(record, f"{path} line {reader.line_num}"))
    else:
        raise TaskError(f"{path}: unknown file type {suffix!r}; use .jsonl or .csv")
    if not points:
        raise TaskError(f"{path} holds no data points; each needs the fields {', '.join(FIELDS)}"
                        f"{' (one JSON object per line)' if suffix != '.csv' else ''}")  # fmt: skip
    return points


def split_of(prompt: str) -> str:
    """Deterministic split of a user data point: 70% train, 10% val, 20% test by prompt hash."""
    u = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + VAL_FRACTION:
        return "val"
    return "train"


def all_file_points(path: str) -> list[DataPoint]:
    """Every data point of a task's file (of each split's file that exists, with "{split}")."""
    if "{split}" not in str(path):
        return read_points(path)
    files = [str(path).format(split=split) for split in ("train", "val", "test")]
    return [p for file in files if Path(file).exists() for p in read_points(file)]


def file_points(path: str, split: str) -> list[DataPoint]:
    """Data points of `split`: from `path` with "{split}" filled in if it has one, else by hash.
    A file whose hash split leaves `split` empty is checked for errors in its records first
    (`validation.check_points`, without a tokenizer), so that those are said before its size."""
    if "{split}" in str(path):
        return read_points(str(path).format(split=split))
    points = read_points(path)
    chosen = [p for p in points if split_of(p.prompt) == split]
    if not chosen:
        check_points(points, None, str(path))
        raise EmptySplitError(
            f"{path} has {len(points)} data points, and its split by prompt hash ({1 - TEST_FRACTION - VAL_FRACTION:.0%} "
            f"train, {VAL_FRACTION:.0%} val, {TEST_FRACTION:.0%} test) left none for {split}; add more data points (a few "
            "dozen at least), or give one file per split with {split} in the path ('task.path=\"data/{split}.jsonl\"')"
        )
    return chosen


def sampled_file_points(path: str, split: str, n: int | None, seed: int) -> list[DataPoint]:
    """`file_points`, at most `n` of them drawn with `seed` (the same draw for every caller)."""
    points = file_points(path, split)
    if n is not None and len(points) > n:
        points = random.Random(seed).sample(points, n)
    return points
