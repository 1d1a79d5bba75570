"""Pareto fronts over a sweep's runs (docs/method.md §5, the paper's Fig. 2).

Conventions (every score is oriented so that the front is the set of non-dominated points):
- effectiveness (= −E_0, ≤ 0): higher is better.
- faithfulness (= −F, ≤ 0): higher is better.
- minimality (count of parameters with |θ| ≥ 0.01): LOWER is better (fewer parameters).

A point is on the front when no other point is at least as good on both axes and strictly
better on one. Identical points (ties, duplicates) do not dominate each other, so all of
them are on the front together. Points with a missing or non-finite coordinate are never
on the front and never dominate.
"""

from __future__ import annotations

import math
from typing import Sequence

# The two fronts of a sweep: (name, x metric, y metric, y direction).
FRONTS = {
    "faithfulness": ("effectiveness", "faithfulness", "max"),
    "minimality": ("effectiveness", "minimality", "min"),
}
DIRECTION = {"effectiveness": "max", "faithfulness": "max", "minimality": "min"}


def _usable(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_mask(points: Sequence[Sequence[float | None]], directions: Sequence[str]) -> list[bool]:
    """For each point, whether it is on the Pareto front.

    Args:
        points: one tuple of objective values per point (None/NaN: not comparable).
        directions: "max" or "min" per objective.

    Returns:
        A list of booleans, True for non-dominated points.
    """
    for d in directions:
        if d not in ("max", "min"):
            raise ValueError(f"direction {d!r} must be 'max' or 'min'")
    signs = [1.0 if d == "max" else -1.0 for d in directions]
    oriented: list[tuple[float, ...] | None] = []
    for p in points:
        if len(p) != len(directions):
            raise ValueError(f"point {p!r} has {len(p)} values, expected {len(directions)}")
        oriented.append(tuple(s * v for s, v in zip(signs, p)) if all(_usable(v) for v in p) else None)
    mask = []
    for i, p in enumerate(oriented):
        if p is None:
            mask.append(False)
            continue
        dominated = False
        for j, q in enumerate(oriented):
            if j == i or q is None:
                continue
            if all(b >= a for a, b in zip(p, q)) and any(b > a for a, b in zip(p, q)):
                dominated = True
                break
        mask.append(not dominated)
    return mask


def front_of(records: list[dict], x: str, y: str, split: str = "test") -> list[bool]:
    """Front membership of sweep records (dicts with record[split][metric]) on (x, y)."""
    points = [
        ((r.get(split) or {}).get(x), (r.get(split) or {}).get(y)) if r.get("status") == "finished" else (None, None)
        for r in records
    ]  # fmt: skip
    return pareto_mask(points, (DIRECTION[x], DIRECTION[y]))


def front_order(points: list[tuple[float, float]], y_direction: str) -> list[tuple[float, float]]:
    """Front points sorted by x, for drawing the front as a line."""
    return sorted(points, key=lambda p: (p[0], p[1] if y_direction == "max" else -p[1]))
