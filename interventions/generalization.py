"""Generalization of trained interventions (the paper's Table 2).

For each run: effectiveness on A: its training split, B: its test split (both as measured
at the end of training, from the run's metrics.json), and C: the test split of each other
template of the same task (evaluated here, with the export as saved). ActivScalar and
SteerVec are tied to the token length they were trained on: on a template of another
length, C is reported as not applicable, with the reason. DynScalar applies to any length.

    python evaluate.py generalization=<multirun dir | run dir | [dir,dir]> [task.template=2]
    python -m interventions.generalization RUN_OR_SWEEP... [--templates 1 2] [--out DIR]

Writes generalization.json and generalization.md into the output directory (evaluate.py:
its run_dir). With several runs of one method (a sweep), the per-method table shows the
run with the best TRAIN effectiveness (selection never looks at B or C); every run is in
the per-run table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from interventions.errors import ConfigError, ExportError, InterventionsError
from interventions.export import META_FILE
from interventions.io import atomic_write_text, save_figure, write_json
from interventions.sweep import run_dirs

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
LABELS = {"activscalar": "ActivScalar", "steervec": "SteerVec", "dynscalar": "DynScalar"}
ORDER = ("activscalar", "steervec", "dynscalar")


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
    from interventions.toyworld.world import TEMPLATES

    if task.get("name") not in TEMPLATES:
        return []
    trained = task.get("template")
    if trained == "all":
        return []
    trained = set(trained) if isinstance(trained, list) else {trained}
    return [t for t in range(len(TEMPLATES[task["name"]])) if t not in trained]


def _scores(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ("effectiveness", "flip_accuracy", "faithfulness", "n")}


def evaluate_export(iv, model, task_cfg, split: str, seed: int) -> dict:
    """Metrics of a loaded export on one split of a task."""
    from interventions.pipeline import export_module

    module, dm = export_module(iv, model, task_cfg, split, seed)
    return module.evaluate(dm.loader(split))


def generalization(runs, templates=None, split: str = "test", n: int | None = None, device: str = "cpu",
                   dtype: str = "float32", check_model: bool = True, verbose: bool = True,
                   fused_gelu: bool = True) -> dict:  # fmt: skip
    """The generalization table of `runs` (run folders, exports or sweep folders).

    Args:
        runs: paths (see `find_runs`).
        templates: the C templates (an index or a list); default: every other template of
            each run's task.
        split: the split of the C templates (default test).
        n: at most this many data points for C (default: the run's n_<split>).
        device, dtype, fused_gelu: how each run's model is loaded (`load_model`).

    Returns:
        {"runs": [...], "by_method": {...}, "columns": {...}}, also what generalization.json holds.
    """
    from omegaconf import OmegaConf

    from interventions.export import load_intervention
    from interventions.models import load_model

    models: dict[str, object] = {}
    records = []
    for name, run_dir in find_runs(runs):
        iv = load_intervention(run_dir)
        meta = iv.meta
        metrics = json.loads((run_dir / METRICS_FILE).read_text()) if (run_dir / METRICS_FILE).exists() else {}
        task = dict(meta.get("task") or {})
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
            "A": _scores(metrics["train"]) if "train" in metrics else None,
            "B": _scores(metrics["test"]) if "test" in metrics else None,
            "C": {},
        }
        if not c_templates:
            record["C_note"] = f"no other template of task {task.get('name')!r} to evaluate on"
        name = meta["model"]["name"]
        for t in c_templates:
            task_cfg = OmegaConf.create(dict(task, template=t))
            if n is not None:
                task_cfg[f"n_{split}"] = n
            try:
                if name not in models:
                    models[name] = load_model(name, device=device, dtype=dtype, fused_gelu=fused_gelu)[0]
                model = models[name]
                if check_model:
                    iv.check_model(model)
                iv.to(model)
                result = _scores(evaluate_export(iv, model, task_cfg, split, meta.get("seed", 0)))
            except ExportError as error:  # a position-tied method on another length
                result = {"effectiveness": None, "not_applicable": _reason(iv, str(error))}
                got = _tokens_in(str(error))
                if got is not None:
                    result["short"] = f"n/a ({got} tokens ≠ {iv.method.grid.seq_len})"
            except InterventionsError as error:
                result = {"effectiveness": None, "not_applicable": str(error)}
            record["C"][str(t)] = result
        records.append(record)
        if verbose:
            log.info(f"generalization: {run_dir}: {_row_text(record)}")
    return {"split_C": split, "runs": records, "by_method": _by_method(records), "columns": _columns(records, split)}


def _tokens_in(message: str) -> int | None:
    import re

    got = re.search(r"tied to \d+-token prompts but got (\d+)-token", message)
    return int(got.group(1)) if got else None


def _reason(iv, message: str) -> str:
    got = _tokens_in(message)
    if got is not None:
        return (f"not applicable: {LABELS.get(iv.name, iv.name)} is tied to {iv.method.grid.seq_len}-token prompts "
                f"and this template has {got} tokens; DynScalar accepts any length")  # fmt: skip
    return f"not applicable: {message}"


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
    groups = sorted({(_task_label(r), r["method"]) for r in records},
                    key=lambda g: (g[0], ORDER.index(g[1]) if g[1] in ORDER else 9, g[1]))  # fmt: skip
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


def _cell(result) -> str:
    if not result:
        return "-"
    if result.get("effectiveness") is None:
        return result.get("short") or result.get("not_applicable", "n/a").replace("|", "/")
    return f"{result['effectiveness']:.2f}"


def _row_text(record) -> str:
    parts = [f"{record['method']} A {_cell(record['A'])}", f"B {_cell(record['B'])}"]
    parts += [f"C(template {t}) {_cell(v)}" for t, v in record["C"].items()]
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
        label = LABELS.get(method, method) + (f" on {row['task']}" if "/" in key else "")
        cells = [label, _cell(row["A"]), _cell(row["B"])] + [_cell(row["C"].get(t)) for t in templates]
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
            cells = [r["name"], _task_label(r), LABELS.get(r["method"], r["method"]), str(o.get("lambda_f")),
                     str(o.get("lambda_m")), str(o.get("margin")), _cell(r["A"]), _cell(r["B"])]  # fmt: skip
            cells += [_cell(r["C"].get(t)) for t in templates]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_generalization(summary: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "generalization.json", summary)
    atomic_write_text(out_dir / "generalization.md", markdown(summary))
    return out_dir / "generalization.json", out_dir / "generalization.md"


def generalization_from_config(cfg) -> dict:
    """evaluate.py generalization=<...>: task.template (if set) picks the C templates."""
    from omegaconf import OmegaConf

    from interventions.pipeline import model_options

    runs = cfg.generalization
    runs = OmegaConf.to_container(runs) if OmegaConf.is_config(runs) else runs
    templates = cfg.task.get("template")
    templates = OmegaConf.to_container(templates) if OmegaConf.is_config(templates) else templates
    summary = generalization(
        runs, templates=templates, split=cfg.split, n=cfg.n, check_model=cfg.check_model, **model_options(cfg.model)
    )  # fmt: skip
    json_path, md_path = write_generalization(summary, cfg.run_dir)
    log.info(f"\n{markdown(summary)}\n{json_path}\n{md_path}")
    return summary


# -- DynScalar across tasks (the paper's Fig. 6) ----------------------------------------------------

TOY_TASKS = ("ccc", "ioi", "pronouns", "bias")
MIXED_MARKER = "mixed.json"


def write_mixed_task(out_dir: str | Path, tasks=TOY_TASKS, n: dict | None = None, template="all",
                     seed: int = 0, model=None) -> str:  # fmt: skip
    """Write train/val/test.jsonl mixing the toy tasks (each split from that task's split, so the
    test prompts stay unseen); returns the task.path to train on ("<dir>/{split}.jsonl").

        python train.py intervention=dynscalar task=jsonl 'task.path="<dir>/{split}.jsonl"'
    """
    import random

    from interventions.tasks import load_task

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
    from omegaconf import OmegaConf

    from interventions.export import load_intervention
    from interventions.models import load_model

    models: dict[str, object] = {}
    rows, eff, flip, cells = [], [], [], []
    for _, run_dir in find_runs(runs):
        iv = load_intervention(run_dir)
        meta = iv.meta
        name = meta["model"]["name"]
        if name not in models:
            models[name] = load_model(name, device=device)[0]
        model = models[name]
        iv.check_model(model)
        iv.to(model)
        base = dict(meta.get("task") or {})
        rows.append(_train_label(base))
        row_e, row_f, row_c = [], [], []
        for task in tasks:
            task_cfg = OmegaConf.create(dict(base, name=task, template=template, path=None, **{f"n_{split}": n}))
            try:
                result = _scores(evaluate_export(iv, model, task_cfg, split, meta.get("seed", 0)))
            except InterventionsError as error:
                result = {"effectiveness": None, "flip_accuracy": None, "not_applicable": _reason(iv, str(error))}
            row_e.append(result["effectiveness"])
            row_f.append(result["flip_accuracy"])
            row_c.append(dict(result, run=str(run_dir)))
        eff.append(row_e)
        flip.append(row_f)
        cells.append(row_c)
        if verbose:
            log.info(f"task matrix: {run_dir} ({rows[-1]}): " + ", ".join(
                f"{t} {_cell({'effectiveness': e})}" for t, e in zip(tasks, row_e)), flush=True)  # fmt: skip
    return {"rows": rows, "columns": list(tasks), "template": template, "split": split,
            "effectiveness": eff, "flip_accuracy": flip, "cells": cells}  # fmt: skip


def task_matrix_heatmap(matrix: dict, key: str = "effectiveness"):
    """A heatmap of the task matrix (rows: trained on, columns: evaluated on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m interventions.generalization", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders, exports or multirun folders")
    parser.add_argument("--templates", nargs="*", type=int, default=None, help="C templates (default: all others)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--n", type=int, default=None, help="at most this many data points for C")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=".", help="where generalization.json and .md go (default: here)")
    parser.add_argument("--task-matrix", action="store_true",
                        help="instead: each run on each toy task (task_matrix.json and .png)")  # fmt: skip
    parser.add_argument("--write-mixed", metavar="DIR", default=None,
                        help="instead: write DIR/{train,val,test}.jsonl mixing the toy tasks")  # fmt: skip
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] or ["--help"])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.write_mixed:
            from interventions.models import load_model

            path = write_mixed_task(args.write_mixed, model=load_model("toy")[0])
            print(f"wrote the mixed toy tasks; train on them with\n  python train.py intervention=dynscalar "
                  f"task=jsonl 'task.path=\"{path}\"'")  # fmt: skip
            return
        if not args.runs:
            parser.error("which runs? pass run folders or a multirun folder")
        if args.task_matrix:
            matrix = task_matrix(args.runs, n=args.n or 64, split=args.split, device=args.device)
            for path in write_task_matrix(matrix, args.out):
                print(path)
            return
        summary = generalization(args.runs, templates=args.templates, split=args.split, n=args.n, device=args.device)
    except InterventionsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    json_path, md_path = write_generalization(summary, args.out)
    print(f"\n{markdown(summary)}\n{json_path}\n{md_path}")


if __name__ == "__main__":
    main()
