"""Generalization of trained interventions (the paper's Table 2).

For each run: effectiveness on A: its training split, B: its test split (both as measured
at the end of training, from the run's metrics.json), and C: the test split of each other
template of the same task (evaluated here, with the export as saved). ActivScalar and
SteerVec are tied to the token length they were trained on: on a template of another
length, C is reported as not applicable, with the reason. DynScalar applies to any length.

    python evaluate.py generalization=<multirun dir | run dir | [dir,dir]> [task.template=2]
    python -m interventions generalization RUN_OR_SWEEP... [--templates 1 2] [--out DIR]

Writes generalization.json and generalization.md into the output directory (evaluate.py:
its run_dir). With several runs of one method (a sweep), the per-method table shows the
run with the best TRAIN effectiveness (selection never looks at B or C); every run is in
the per-run table.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

from interventions.errors import ConfigError, InterventionsError, LengthError
from interventions.evaluation import evaluate_export, exported_model, export_task
from interventions.export import META_FILE, load_intervention
from interventions.io import atomic_write_text, write_json
from interventions.rundir import METRICS_FILE
from interventions.methods.registry import method_label
from interventions.spec import ModelSpec
from interventions.sweeps.jobs import run_dirs
from interventions.toyworld.world import TEMPLATES

log = logging.getLogger(__name__)


def find_runs(paths) -> list[tuple[str, Path]]:
    """(name, folder) of the finished runs in run folders, exports or sweep folders (in that
    order); a run found in a sweep is named as in its pareto.json ("<job>/<k>" for a setting
    of a fused multirun job), a run given directly by its folder's name."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(str(raw))
        if path.is_file() and path.name in (META_FILE, "intervention.safetensors"):
            path = path.parent
        if not path.exists():
            raise ConfigError(f"generalization: {path} does not exist; pass run folders or a multirun folder")
        if (path / META_FILE).exists():
            runs.append((path.name, path))
            continue
        found = [(n, p) for n, p in run_dirs(path) if (p / META_FILE).exists() and (p / METRICS_FILE).exists()]
        if not found:
            raise ConfigError(f"generalization: {path} holds no finished run (no {META_FILE} + {METRICS_FILE})")
        runs.extend(found)
    return runs


def _other_templates(task: dict) -> list:
    if task.get("name") not in TEMPLATES:
        return []
    trained = task.get("template")
    if trained == "all":
        return []
    trained = set(trained) if isinstance(trained, list) else {trained}
    return [t for t in range(len(TEMPLATES[task["name"]])) if t not in trained]


def scores(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ("effectiveness", "flip_accuracy", "faithfulness", "n")}


def generalization(runs, templates=None, split: str = "test", n: int | None = None, model: ModelSpec | None = None,
                   check_model: bool = True, verbose: bool = True) -> dict:  # fmt: skip
    """The generalization table of `runs` (run folders, exports or sweep folders).

    Args:
        runs: paths (see `find_runs`).
        templates: the C templates (an index or a list); default: every other template of
            each run's task.
        split: the split of the C templates (default test).
        n: at most this many data points for C (default: the run's n_<split>).
        model: which model each run is applied to and how it loads (default: each run's own
            model, on the CPU in float32).
        check_model: refuse a model whose weights differ from a run's.

    Returns:
        {"runs": [...], "by_method": {...}, "columns": {...}}, also what generalization.json holds.
    """
    model = model or ModelSpec(name=None)
    models: dict[str, object] = {}
    records = []
    for name, run_dir in find_runs(runs):
        iv = load_intervention(run_dir)
        meta = iv.meta
        metrics = json.loads((run_dir / METRICS_FILE).read_text()) if (run_dir / METRICS_FILE).exists() else {}
        task = dict(meta.get("task") or {})
        task_spec = export_task(iv)
        c_templates = _other_templates(task) if templates is None else (
            list(templates) if isinstance(templates, (list, tuple)) else [templates])  # fmt: skip
        record = {
            "run": str(run_dir),
            "name": name,
            "method": meta["method"],
            "task": task.get("name"),
            "template": task.get("template"),
            "seq_len": meta["grid"].get("seq_len"),
            "objective": meta.get("objective"),
            "lr": (meta.get("intervention") or {}).get("lr"),
            "A": scores(metrics["train"]) if "train" in metrics else None,
            "B": scores(metrics["test"]) if "test" in metrics else None,
            "C": {},
        }
        if not c_templates:
            record["C_note"] = f"no other template of task {task.get('name')!r} to evaluate on"
        for t in c_templates:
            task_c = replace(task_spec, template=t, **({f"n_{split}": n} if n is not None else {}))
            try:
                frozen = exported_model(iv, model, check_model, models)
                result = scores(evaluate_export(iv, frozen, task_c, split, meta.get("seed", 0)))
            except InterventionsError as error:  # e.g. a position-tied method on another length
                result = not_applicable(iv, error)
            record["C"][str(t)] = result
        records.append(record)
        if verbose:
            log.info(f"generalization: {run_dir}: {_row_text(record)}")
    return {"split_C": split, "runs": records, "by_method": _by_method(records), "columns": _columns(records, split)}


def not_applicable(iv, error: InterventionsError) -> dict:
    """A cell that could not be evaluated: the reason (and, for a prompt length the method is
    not tied to, a short form for tables)."""
    if isinstance(error, LengthError):
        return {"effectiveness": None, "short": f"n/a ({error.got} tokens ≠ {error.trained})",
                "not_applicable": f"not applicable: {method_label(iv.name)} is tied to {error.trained}-token prompts "
                                  f"and this template has {error.got} tokens; DynScalar accepts any length"}  # fmt: skip
    return {"effectiveness": None, "not_applicable": f"not applicable: {error}"}


def _columns(records, split: str) -> dict:
    templates = sorted({t for r in records for t in r["C"]}, key=lambda t: (len(t), t))
    cols = {"A": "effectiveness on the training split (trained template)",
            "B": "effectiveness on the test split (trained template)"}  # fmt: skip
    for t in templates:
        cols[f"C:{t}"] = f"effectiveness on the {split} split of template {t}"
    return cols


def _task_label(record) -> str:
    return f"{record['task']} (template {record['template']})"


def _by_method(records) -> dict:
    """One row per method (per task and method when the runs were trained on several tasks):
    keys are the method, or "<task (template)>/<method>"."""
    out = {}
    several = len({_task_label(r) for r in records}) > 1
    groups = sorted({(_task_label(r), r["method"]) for r in records})  # by task, then method name
    for task, method in groups:
        rs = [r for r in records if r["method"] == method and _task_label(r) == task]
        best = max(rs, key=lambda r: _num((r["A"] or {}).get("effectiveness")))
        out[f"{task}/{method}" if several else method] = {
            "method": method, "task": task, "run": best["run"], "n_runs": len(rs),
            "selected_by": "best train effectiveness (A)", "A": best["A"], "B": best["B"], "C": best["C"],
        }  # fmt: skip
    return out


def _num(value) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def cell_text(result) -> str:
    if not result:
        return "-"
    if result.get("effectiveness") is None:
        return result.get("short") or result.get("not_applicable", "n/a").replace("|", "/")
    return f"{result['effectiveness']:.2f}"


def _row_text(record) -> str:
    parts = [f"{record['method']} A {cell_text(record['A'])}", f"B {cell_text(record['B'])}"]
    parts += [f"C(template {t}) {cell_text(v)}" for t, v in record["C"].items()]
    return ", ".join(parts)


def markdown(summary: dict) -> str:
    """Table 2 (one row per method) and the per-run table, in Markdown."""
    templates = [c.split(":", 1)[1] for c in summary["columns"] if c.startswith("C:")]
    head = ["method", "A: train", "B: test"] + [f"C: template {t}" for t in templates]
    lines = ["Effectiveness score −E₀ (0 is best) on A: the training split, B: the test split, "
             f"C: the {summary['split_C']} split of another template of the same task.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for key, row in summary["by_method"].items():
        method = row.get("method", key)
        label = method_label(method) + (f" on {row['task']}" if "/" in key else "")
        cells = [label, cell_text(row["A"]), cell_text(row["B"])] + [cell_text(row["C"].get(t)) for t in templates]
        lines.append("| " + " | ".join(cells) + " |")
    if any("short" in c for r in summary["runs"] for c in r["C"].values()):
        lines += ["", "n/a (k tokens ≠ L): ActivScalar and SteerVec are tied to the L-token prompts they were "
                  "trained on; this template's prompts have k tokens. DynScalar accepts any length."]  # fmt: skip
    if len(summary["runs"]) > len(summary["by_method"]):
        lines += ["", "Per method (and task), the run with the best train effectiveness (A). Every run:", "",
                  "| run | task | method | λ_F | λ_M | m | A | B | " + " | ".join(f"C: {t}" for t in templates) + " |",
                  "|" + "---|" * (8 + len(templates))]  # fmt: skip
        for r in summary["runs"]:
            o = r.get("objective") or {}
            cells = [r["name"], _task_label(r), method_label(r["method"]), str(o.get("lambda_f")),
                     str(o.get("lambda_m")), str(o.get("margin")), cell_text(r["A"]), cell_text(r["B"])]  # fmt: skip
            cells += [cell_text(r["C"].get(t)) for t in templates]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_generalization(summary: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "generalization.json", summary)
    atomic_write_text(out_dir / "generalization.md", markdown(summary))
    return out_dir / "generalization.json", out_dir / "generalization.md"
