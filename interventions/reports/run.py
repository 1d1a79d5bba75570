"""The report files of one run: scalars.csv, heatmap.png, beta_curve.png, the printed summary,
and the illusion diagnostic of a vector intervention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from interventions.io import save_figure
from interventions.reports.illusion import diagnose_illusion
from interventions.reports.locations import location_rows, write_scalars_csv
from interventions.reports.plots import beta_curve, heatmap
from interventions.tasks.datamodule import TaskDataModule
from interventions.training.module import InterventionModule

BETAS = tuple(round(-1 + 0.2 * i, 1) for i in range(11))


@torch.no_grad()
def beta_curve_values(module: InterventionModule, loader, betas=BETAS) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's logit of its correct and of its wrong answer at each β: two [n, len(betas)]."""
    correct, wrong = [], []
    for batch in loader:
        batch = {k: v.to(module.device) for k, v in batch.items()}
        rows = torch.arange(len(batch["correct"]), device=module.device)
        logits = module.steered_logits(batch, betas=betas)
        correct.append(torch.stack([l[rows, batch["correct"]] for l in logits], 1).double().cpu())
        wrong.append(torch.stack([l[rows, batch["wrong"]] for l in logits], 1).double().cpu())
    return torch.cat(correct).numpy(), torch.cat(wrong).numpy()


def position_labels(model, batch: dict) -> list[str]:
    """One token label per position of a padded batch: the tokens of its longest prompt."""
    row = int(batch["attention_mask"].sum(1).argmax())
    return model.to_str_tokens(batch["input_ids"][row][batch["attention_mask"][row].bool()])


DYNAMIC_PROMPTS = 256  # DynScalar's heatmap: mean α over at most this many prompts


def one_length_prompts(dm: TaskDataModule, split: str, limit: int = DYNAMIC_PROMPTS) -> tuple[dict, int]:
    """The split's prompts of its most common token length (at most `limit`), unpadded,
    so that position i is the same token slot in each: (batch, index of the first prompt)."""
    tensors = dm.datasets[split].tensors
    lengths = tensors["attention_mask"].sum(1)
    length = int(torch.mode(lengths).values)
    rows = (lengths == length).nonzero().flatten()[:limit]
    cut = slice(0, length) if dm.padding_side == "right" else slice(tensors["input_ids"].shape[1] - length, None)
    batch = {"input_ids": tensors["input_ids"][rows, cut], "attention_mask": tensors["attention_mask"][rows, cut]}
    return batch, int(rows[0])


def location_values(module: InterventionModule, dm: TaskDataModule, split: str) -> tuple[list[dict], str]:
    """The rows of scalars.csv and the heatmap, and a caption saying what the labels are."""
    method, model = module.method, module.model
    if method.position_tied:
        caption = (f"token labels: the prompt the intervention's {method.grid.seq_len} positions were trained on "
                   "(train data point 0)")  # fmt: skip
        return location_rows(method), caption
    if not method.dynamic:
        return location_rows(method), "values: ‖v‖ of each layer's one vector, added at every position"
    batch, first = one_length_prompts(dm, split)
    batch = {k: v.to(module.device) for k, v in batch.items()}
    n, length = batch["input_ids"].shape
    caption = (f"values: mean α over the {n} {split} prompts of {length} tokens (of {len(dm.tasks[split])}); "
               f"token labels: {split} data point {first}")  # fmt: skip
    return location_rows(method, model, batch, position_labels(model, batch)), caption


def write_plots(run_dir: Path, module: InterventionModule, dm: TaskDataModule, split: str, title: str) -> dict:
    """scalars.csv, heatmap.png and beta_curve.png; returns {"heatmap": path, ...} and the rows."""
    rows, caption = location_values(module, dm, split)
    write_scalars_csv(run_dir / "scalars.csv", rows)
    save_figure(heatmap(rows, module.method, title, caption), run_dir / "heatmap.png")
    correct, wrong = beta_curve_values(module, dm.loader(split))
    save_figure(beta_curve(BETAS, correct, wrong, split, title), run_dir / "beta_curve.png")
    return {"heatmap": run_dir / "heatmap.png", "beta_curve": run_dir / "beta_curve.png"}, rows


def summary_table(metrics: dict) -> str:
    """The printed summary: one row per metric, one column per split."""
    splits = list(metrics)
    lines = [f"{'metric':<22}" + "".join(f"{s:>12}" for s in splits)]
    for key in ("effectiveness", "faithfulness", "flip_accuracy", "flip_accuracy_pos", "flip_accuracy_neg",
                "minimality", "n_params", "clean_accuracy"):  # fmt: skip
        lines.append(f"{key:<22}" + "".join(f"{_fmt(metrics[s].get(key)):>12}" for s in splits))
    for beta in ("-1", "0", "+1"):
        lines.append(f"{'logit_diff β=' + beta:<22}" + "".join(f"{_fmt(metrics[s]['logit_diff'][beta]):>12}" for s in splits))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "-" if value is None else f"{value:.4f}"


def illusion_report(setting, model, method, dm) -> dict | None:
    """Illusion diagnostics of a vector intervention on the test split, if `setting` asks:
    "auto" runs the methods that declare it automatic (`Method.illusion`), true those that
    offer it on request too, false none."""
    setting = str(setting).lower()
    if method.illusion is None or setting == "false" or (setting == "auto" and method.illusion != "auto"):
        return None
    return diagnose_illusion(model, method, dm.loader("test"))
