"""Pareto fronts over a sweep's runs (docs/method.md §5, the paper's Fig. 2), and the
hypervolume that compares two searches (below).

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


# -- hypervolume (docs/sweeps.md) -------------------------------------------------------------
# Each objective is normalised to [0, 1] over a set of runs U (worst = 0, best = 1); the
# hypervolume of a set of runs is the volume dominated by their normalised points, measured
# from the origin. Comparing two searches needs the same U: pass the union of their points.


def bounds(points: Sequence[Sequence[float | None]], directions: Sequence[str]) -> list[tuple[float, float]]:
    """(worst, best) of each objective over the usable points (all values finite).

    Returns:
        One (worst, best) pair per objective; (0.0, 0.0) where no point is usable.
    """
    usable = [p for p in points if all(_usable(v) for v in p)]
    out = []
    for i, d in enumerate(directions):
        values = [p[i] for p in usable]
        if not values:
            out.append((0.0, 0.0))
        else:
            out.append((min(values), max(values)) if d == "max" else (max(values), min(values)))
    return out


def normalize(point: Sequence[float | None], limits: Sequence[tuple[float, float]]) -> tuple[float, ...] | None:
    """`point` in U's unit cube: worst -> 0, best -> 1, clipped to [0, 1] (None if unusable).
    An objective on which every point of U is equal maps to 1: it separates no run, and the
    hypervolume becomes that of the other objectives."""
    if not all(_usable(v) for v in point):
        return None
    out = []
    for value, (worst, best) in zip(point, limits):
        out.append(1.0 if best == worst else min(1.0, max(0.0, (value - worst) / (best - worst))))
    return tuple(out)


def hypervolume(unit_points: Sequence[tuple[float, ...] | None]) -> float:
    """The volume dominated by `unit_points` (maximised, in [0, 1]^d) from the origin: the
    union of the boxes [0, p]. None entries are skipped; dominated points add nothing.
    Exact, by slicing along the last objective (O(n² log n) for 3 objectives)."""
    points = [p for p in unit_points if p is not None]
    if not points:
        return 0.0
    if len(points[0]) == 1:
        return max(p[0] for p in points)
    if len(points[0]) == 2:  # a staircase: sweep x from the right, keeping the highest y so far
        area, best_y = 0.0, 0.0
        ordered = sorted(points, reverse=True)
        for i, (x, y) in enumerate(ordered):
            best_y = max(best_y, y)
            next_x = ordered[i + 1][0] if i + 1 < len(ordered) else 0.0
            area += (x - next_x) * best_y
        return area
    ordered = sorted(points, key=lambda p: p[-1], reverse=True)
    volume = 0.0
    for i, p in enumerate(ordered):  # the slab between this point's last coordinate and the next one down
        below = ordered[i + 1][-1] if i + 1 < len(ordered) else 0.0
        if p[-1] > below:
            volume += (p[-1] - below) * hypervolume([q[:-1] for q in ordered[: i + 1]])
    return volume


def hypervolume_curve(points: Sequence[Sequence[float | None]], limits: Sequence[tuple[float, float]]) -> list[float]:
    """The hypervolume of the first n points, for n = 1..len(points) (runs in the order they
    ran), normalised with `limits` (`bounds` over U)."""
    unit = [normalize(p, limits) for p in points]
    curve, front = [], []
    for p in unit:
        if p is not None and not any(all(b >= a for a, b in zip(p, q)) for q in front):
            front = [q for q in front if not all(b >= a for a, b in zip(q, p))] + [p]  # the front so far, unchanged HV
        curve.append(hypervolume(front))
    return curve
