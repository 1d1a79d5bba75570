"""The toy model's behaviour report: per task and template, on held-out (test) prompts.

For each task and template: n, accuracy (correct logit > wrong logit) and the mean logit
difference (correct - wrong). For bias, the grammatical pair (actress/actor) and the
planted skew (nurse/programmer): per gender, the fraction of prompts whose logits prefer
the corpus-majority occupation.

Targets (issue 2): IOI, CCC, pronouns accuracy >= 0.95; bias grammatical >= 0.95 and
skew present in >= 0.8 of each gender's prompts.
"""

from __future__ import annotations

from pathlib import Path

import torch

from interventions.forward import last_position_logits
from interventions.models import freeze, load_toy
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.toyworld import world

TARGETS = {"accuracy": 0.95, "skew": 0.8}


@torch.no_grad()
def logit_diffs(model, task, batch_size: int = 256) -> torch.Tensor:
    """[N] correct - wrong logit at each prompt's last position."""
    enc = encode(model, task)
    out = []
    for start in range(0, len(task), batch_size):
        sl = slice(start, start + batch_size)
        logits = last_position_logits(
            model, enc["input_ids"][sl], enc["attention_mask"][sl], enc["last_index"][sl]
        )
        rows = torch.arange(logits.shape[0])
        out.append(logits[rows, enc["correct"][sl]] - logits[rows, enc["wrong"][sl]])
    return torch.cat(out)


def _summary(diffs: torch.Tensor) -> dict:
    return {
        "n": len(diffs),
        "accuracy": round(float((diffs > 0).float().mean()), 4),
        "mean_logit_diff": round(float(diffs.mean()), 3),
    }


def behaviour_report(checkpoint: str | Path | None = None, model=None, split: str = "test") -> dict:
    """The report as {task: {template: {...}}} for a checkpoint folder or a loaded model."""
    if model is None:
        model = freeze(load_toy(checkpoint) if checkpoint else load_toy())
    report: dict = {}
    for task in ("ccc", "ioi", "pronouns"):
        report[task] = {}
        for index, template in enumerate(world.TEMPLATES[task]):
            data = load_task(task, model=model, split=split, template=index, n=256)
            report[task][str(index)] = {"template": template.text, **_summary(logit_diffs(model, data))}
    report["bias"] = {}
    for index, template in enumerate(world.TEMPLATES["bias"]):
        grammatical = load_task("bias", model=model, split=split, template=index, bias_pair="grammatical")
        stereo = load_task("bias", model=model, split=split, template=index, bias_pair="stereotype")
        d = logit_diffs(model, stereo)  # stereotype - anti-stereotype, positive = skew present
        female = torch.tensor([p.correct.strip() == world.STEREOTYPE["female"] for p in stereo])
        report["bias"][str(index)] = {
            "template": template.text,
            "grammatical": _summary(logit_diffs(model, grammatical)),
            "skew_female": round(float((d[female] > 0).float().mean()), 4),
            "skew_male": round(float((d[~female] > 0).float().mean()), 4),
            "skew_mean_logit_diff": round(float(d.mean()), 3),
            "n": len(d),
        }
    return report


def passes(report: dict) -> dict[str, bool]:
    """Which targets the report meets, per task."""
    ok = {}
    for task in ("ccc", "ioi", "pronouns"):
        ok[task] = all(r["accuracy"] >= TARGETS["accuracy"] for r in report[task].values())
    ok["bias"] = all(
        r["grammatical"]["accuracy"] >= TARGETS["accuracy"]
        and min(r["skew_female"], r["skew_male"]) >= TARGETS["skew"]
        for r in report["bias"].values()
    )
    return ok


def format_report(report: dict) -> str:
    lines = ["task      tpl    n  accuracy  logit_diff  notes"]
    for task in ("ccc", "ioi", "pronouns"):
        for index, r in report[task].items():
            lines.append(f"{task:<9} {index:>3} {r['n']:>4}  {r['accuracy']:>8.3f}  {r['mean_logit_diff']:>10.2f}")
    for index, r in report["bias"].items():
        g = r["grammatical"]
        lines.append(
            f"{'bias':<9} {index:>3} {r['n']:>4}  {g['accuracy']:>8.3f}  {g['mean_logit_diff']:>10.2f}  "
            f"actress/actor; nurse/programmer skew F {r['skew_female']:.2f} M {r['skew_male']:.2f} "
            f"(mean {r['skew_mean_logit_diff']:.2f})"
        )
    verdict = passes(report)
    lines.append("targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in verdict.items()))
    return "\n".join(lines)
