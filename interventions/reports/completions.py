"""Steered completions side by side: one row per prompt, one column per β.

    completions.jsonl   one line per (prompt, β): prompt, beta, text, tokens
    completions.md      a markdown table, prompt | β = -1 | β = 0 | β = +1 ...
"""

from __future__ import annotations

import json
from pathlib import Path

from interventions.generation import Completion
from interventions.io import atomic_write_text

COMPLETIONS_JSONL = "completions.jsonl"
COMPLETIONS_MD = "completions.md"


def beta_label(beta: float) -> str:
    return f"β = {beta:+g}" if beta else "β = 0"


def side_by_side(completions: list[Completion]) -> list[dict]:
    """One dict per prompt: {"prompt": ..., "β = -1": text, ...} in the order given."""
    rows: dict[str, dict] = {}
    for c in completions:
        rows.setdefault(c.prompt, {"prompt": c.prompt})[beta_label(c.beta)] = c.text
    return list(rows.values())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "⏎")


def markdown(completions: list[Completion], title: str = "") -> str:
    rows = side_by_side(completions)
    columns = list(rows[0])
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_completions(completions: list[Completion], out_dir: str | Path, title: str = "") -> tuple[Path, Path]:
    """completions.jsonl and completions.md in `out_dir`."""
    out_dir = Path(out_dir)
    jsonl, md = out_dir / COMPLETIONS_JSONL, out_dir / COMPLETIONS_MD
    atomic_write_text(jsonl, "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in completions))
    atomic_write_text(md, markdown(completions, title))
    return jsonl, md
