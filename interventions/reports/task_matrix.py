"""Each trained intervention on each toy task (the paper's Fig. 6: DynScalar across tasks).

Rows: the task a run was trained on; columns: the task it is evaluated on. Position-tied
methods are not applicable to mixed lengths (template "all"): their cells carry the reason.

    python -m interventions task-matrix RUN... [--out DIR]    # task_matrix.json and .png
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from interventions.errors import InterventionsError
from interventions.evaluation import evaluate_export, exported_model, export_task
from interventions.export import load_intervention
from interventions.io import save_figure, write_json
from interventions.reports.generalization import cell_text, find_runs, not_applicable, scores
from interventions.spec import ModelSpec
from interventions.reports.plots import plt
from interventions.spec import TOY_TASKS
from interventions.tasks.mixed import MIXED_MARKER

log = logging.getLogger(__name__)


def _train_label(task: dict) -> str:
    path = task.get("path")
    if task.get("name") in TOY_TASKS:
        return str(task["name"])
    if path and (Path(str(path)).parent / MIXED_MARKER).exists():
        tasks = json.loads((Path(str(path)).parent / MIXED_MARKER).read_text())["tasks"]
        return "all (" + "+".join(tasks) + ")"
    return f"{task.get('name')}: {path}"


def task_matrix(runs, tasks=TOY_TASKS, template="all", split: str = "test", n: int | None = 64,
                device: str = "cpu", verbose: bool = True) -> dict:  # fmt: skip
    """Effectiveness of each run (rows: the task it was trained on) on each toy task (columns).

    Position-tied methods are not applicable to mixed lengths (template="all"): their cells
    carry the reason. Returns {"rows", "columns", "effectiveness", "flip_accuracy", "cells"}.
    """
    models: dict[str, object] = {}
    rows, eff, flip, cells = [], [], [], []
    for _, run_dir in find_runs(runs):
        iv = load_intervention(run_dir)
        meta = iv.meta
        model = exported_model(iv, ModelSpec(name=None, device=device), cache=models)
        base = export_task(iv)
        rows.append(_train_label(meta.get("task") or {}))
        row_e, row_f, row_c = [], [], []
        for task in tasks:
            try:
                task_spec = replace(base, name=task, template=template, path=None, **{f"n_{split}": n})
                result = scores(evaluate_export(iv, model, task_spec, split, meta.get("seed", 0)))
            except InterventionsError as error:
                result = {"flip_accuracy": None, **not_applicable(iv, error)}
            row_e.append(result["effectiveness"])
            row_f.append(result["flip_accuracy"])
            row_c.append(dict(result, run=str(run_dir)))
        eff.append(row_e)
        flip.append(row_f)
        cells.append(row_c)
        if verbose:
            log.info(f"task matrix: {run_dir} ({rows[-1]}): " + ", ".join(
                f"{t} {cell_text({'effectiveness': e})}" for t, e in zip(tasks, row_e)))  # fmt: skip
    return {"rows": rows, "columns": list(tasks), "template": template, "split": split,
            "effectiveness": eff, "flip_accuracy": flip, "cells": cells}  # fmt: skip


def task_matrix_heatmap(matrix: dict, key: str = "effectiveness"):
    """A heatmap of the task matrix (rows: trained on, columns: evaluated on)."""
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix[key]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(matrix["columns"]), 1.2 + 0.6 * len(matrix["rows"])))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(matrix["columns"])), matrix["columns"])
    ax.set_yticks(range(len(matrix["rows"])), matrix["rows"])
    ax.set_xlabel(f"evaluated on ({matrix['split']} split, template {matrix['template']})")
    ax.set_ylabel("trained on")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            bright = not np.isnan(v) and im.norm(v) > 0.6  # dark text on the light end of viridis
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="black" if bright else "white", fontsize=8)  # fmt: skip
    fig.colorbar(im, ax=ax, label=key + (" −E₀ (0 is best)" if key == "effectiveness" else ""))
    ax.set_title("DynScalar across tasks")
    fig.tight_layout()
    return fig


def write_task_matrix(matrix: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "task_matrix.json", matrix)
    save_figure(task_matrix_heatmap(matrix), out_dir / "task_matrix.png")
    return out_dir / "task_matrix.json", out_dir / "task_matrix.png"


