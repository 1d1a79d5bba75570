"""The localization study's files: results.json (every row, the summary, the truth checks and
the settings), results.md (a table per metric: benchmark and granularity by method, mean ±
sd over seeds) and roc.png (each method's ROC curve, first seed, per benchmark and
granularity); and the same table to W&B when a logger is on.
"""

from __future__ import annotations

from pathlib import Path

from interventions.circuits.localization import METRICS
from interventions.io import atomic_write_text, save_figure, write_json
from interventions.loggers import finish, log_files
from interventions.reports.plots import plt

TITLES = {"auroc": "node AUROC", "average_precision": "average precision", "precision_at_k": "precision@|G|"}


def _cell(entry: dict | None, metric: str) -> str:
    if entry is None:
        return ""
    if "skipped" in entry:
        return "n/a"
    mean, sd = entry[f"{metric}_mean"], entry[f"{metric}_sd"]
    return f"{mean:.3f}" if entry["deterministic"] else f"{mean:.3f} ± {sd:.3f}"


def markdown(summary: list[dict], checks: dict | None = None) -> str:
    """A table per metric (rows: benchmark, granularity; columns: methods), the reasons for
    each "n/a", and the truth checks."""
    methods = list(dict.fromkeys(e["method"] for e in summary))
    cases = list(dict.fromkeys((e["benchmark"], e["granularity"]) for e in summary))
    index = {(e["benchmark"], e["granularity"], e["method"]): e for e in summary}
    lines = []
    for metric in METRICS:
        lines += [f"### {TITLES[metric]}", "", "| benchmark | granularity | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]  # fmt: skip
        for bench, level in cases:
            cells = [_cell(index.get((bench, level, m)), metric) for m in methods]
            lines.append(f"| {bench} | {level} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Mean ± sd over seeds; a training-free method that draws nothing at random is one fit (no sd).")
    unreached = [f"- {e['method']}, {e['benchmark']} {e['granularity']}: {', '.join(e['truth_unreached'])}"
                 for e in summary if e.get("truth_unreached")]  # fmt: skip
    if unreached:
        lines += ["", "Truth nodes no gradient reached in training (in some seed; their score is their initial value):",
                  *unreached]  # fmt: skip
    reasons = sorted({f"- {e['method']} at {e['granularity']}: {e['skipped']}" for e in summary if "skipped" in e})
    if reasons:
        lines += ["", "n/a:", *reasons]
    if checks:
        lines += ["", "### Truth checks (fraction of the clean logit difference left)", "",
                  "| benchmark | granularity | truth | zero: truth ablated | zero: rest ablated | mean: truth ablated | "
                  "mean: rest ablated | passed |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for bench, levels in checks.items():
            for level, c in levels.items():
                lines.append(f"| {bench} | {level} | {', '.join(c['truth'])} | {c['zero']['truth_ablated']:.3f} | "
                             f"{c['zero']['rest_ablated']:.3f} | {c['mean']['truth_ablated']:.3f} | "
                             f"{c['mean']['rest_ablated']:.3f} | {'yes' if c['passed'] else 'no'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def roc_figure(rows: list[dict]):
    """One panel per (benchmark, granularity): each method's ROC curve for its first seed."""
    cases = list(dict.fromkeys((r["benchmark"], r["granularity"]) for r in rows if "roc" in r))
    cols = min(3, len(cases))
    n_rows = -(-len(cases) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.8 * n_rows), squeeze=False)
    for ax, (bench, level) in zip(axes.flat, cases):
        seen = set()
        for r in rows:
            if (r["benchmark"], r["granularity"]) != (bench, level) or "roc" not in r or r["method"] in seen:
                continue
            seen.add(r["method"])
            fpr, tpr = r["roc"]
            ax.plot(fpr, tpr, label=f"{r['method']} ({r['auroc']:.2f})", drawstyle="steps-post", alpha=0.8)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
        ax.set_title(f"{bench}, {level}", fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def write_results(out: str | Path, rows: list[dict], summary: list[dict], checks: dict, settings: dict,
                  logger=None) -> dict[str, Path]:  # fmt: skip
    """results.json, results.md and roc.png in `out` (module docstring); W&B gets the summary
    table and the figure when `logger` is one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "roc": out / "roc.png"}
    write_json(paths["json"], {"settings": settings, "summary": summary, "checks": checks, "rows": rows})
    atomic_write_text(paths["markdown"], markdown(summary, checks))
    save_figure(roc_figure(rows), paths["roc"])
    table = [{k: e.get(k, "") for k in ("benchmark", "granularity", "method", *(f"{m}_{s}" for m in METRICS for s in ("mean", "sd")))}
             for e in summary if "skipped" not in e]  # fmt: skip
    try:
        log_files(logger, {"roc": paths["roc"]}, table, None, table_key="localization")
    finally:
        finish(logger)
    return paths
