"""The performance goals read off the benchmark results: one table, nothing timed.

    python benchmarks/run.py summary [--out DIR] [--device cuda]

Reads the JSON files the other subcommands wrote into DIR (benchmarks/results by default;
with `--device cuda` the `_cuda` files) and prints one markdown row per measured ratio: its
value, its goal where the issue sets one, and whether the value meets it. A missing file is
named in the table, not skipped silently, and so is one written by an older version of its
benchmark (a ratio it lacks).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

# The issue's goals: each ratio at most this; the fused parameters equal to the separate runs' within FUSED_EXACT.
STEP_GOAL, FUSED_GOAL, PEER_GOAL, FUSED_EXACT, GENERATE_GOAL = 1.10, 0.25, 0.5, 1e-5, 1.10  # step and fused: issue 34
STEERING_GOAL = 1.5  # scoring a run (steering_eval) over the time it spends generating
FLOOR_GOAL, WHOLE_RUN_GOAL = 1.05, 0.75  # the step over the plain HF model's; today's run over 83bbf46's


def row(what: str, case: str, value: float, goal: float | None = None, note: str = "", fmt: str = ".3f") -> str:
    """One table row; with a goal, whether `value` is at most it."""
    met = "" if goal is None else "met" if value <= goal else "**not met**"
    target = "" if goal is None else f"≤ {goal:g}"
    return f"| {what} | {case} | {value:{fmt}} | {target} | {met} | {note} |"


def step_rows(results: list[dict]) -> list[str]:
    rows = []
    for r in results:
        case = f"{r['model']}, {r['batch']} × {r['positions']}"
        rows.append(row("a. step: ours / bare", case, r["ours_over_bare"], STEP_GOAL))
        rows.append(row("step: ours through the bridge / bare", case, r["ours_bridge_over_bare"]))
        rows.append(row("b. step: naive / ours through the bridge", case, r["naive_over_ours_bridge"]))
        for key in sorted(k for k in r if k.startswith("without_") and k.endswith("_over_ours_bridge")):
            name = key.removeprefix("without_").removesuffix("_over_ours_bridge")
            rows.append(row(f"b. step: without {name} / ours through the bridge", case, r[key]))
        rows.append(row("step: skip_unread / ours through the bridge", case, r["skip_unread_over_ours_bridge"]))
        rows.append(row("step: fit / ours", case, r["fit_over_ours"]))
    return rows


def floor_rows(results: list[dict]) -> list[str]:
    rows = []
    for r in results:
        if "fused_over_floor" in r:  # the fused step against the model's work for its rows
            case = f"toy, K = {r['k']}, {r['batch']} × {r['positions']}"
            rows.append(row("fused fwd+bwd: fused / plain HF of its rows", case, r["fused_over_floor"]))
            rows.append(row("fused fwd+bwd: fused / K separate", case, r["fused_over_k_separate"]))
        else:
            rows.append(row("step fwd+bwd: ours / plain HF", f"toy, {r['batch']} × {r['positions']}", r["ours_over_hf"],
                            FLOOR_GOAL))  # fmt: skip
    return rows


def whole_run_rows(result: dict) -> list[str]:
    note = f"median of {len(result['ratios'])} pairs against {result['commits']['ref'][:7]}"
    return [row("whole run: this / ref", "train.py defaults", result["median_ratio"], WHOLE_RUN_GOAL, note)]


def fused_rows(results: list[dict]) -> list[str]:
    rows = []
    for r in results:
        case = f"K = {r['k']}, layers {r['layers']}" + (", skip_unread" if r["skip_unread"] else "")
        rows.append(row("c. fused / separate", case, r["fused_over_separate"], FUSED_GOAL,
                        f"rounds {min(r['per_round']):.3f}–{max(r['per_round']):.3f}"))  # fmt: skip
        rows.append(row("c. fused: max abs parameter difference", case, r["max_abs_param_diff"], FUSED_EXACT,
                        fmt=".1e"))  # fmt: skip
    return rows


def peer_rows(results: list[dict]) -> list[str]:
    rows = []
    for r in results:
        case = f"{r['shape']} shape"
        rows.append(row("d. peer: ours / pyvene", case, r["ours_over_pyvene"], PEER_GOAL,
                        f"parameters agree to {r['pyvene_max_abs_param_diff']:.1e} (ours with HF's GELU); the "
                        f"fused GELU moves ours by {r['ours_max_abs_param_diff']:.1e}"))  # fmt: skip
        rows.append(row("d. peer: ours (skip_unread) / pyvene", case, r["ours_skip_unread_over_pyvene"], PEER_GOAL))
        rows.append(row("d. peer: ours with HF's gelu_new / pyvene", case, r["ours_hf_gelu_over_pyvene"], PEER_GOAL))
        rows.append(row("d. peer: ours / pyvene with logits_to_keep=1", case, r["ours_over_pyvene_last_logits"],
                        PEER_GOAL))  # fmt: skip
        rows.append(row("d. peer: ours / pyvene with weights requiring grad (its default)", case,
                        r["ours_over_pyvene_model_grads"], PEER_GOAL))  # fmt: skip
        rows.append(row("d. peer: the matrix products alone of ours (skip_unread) / pyvene", case,
                        r["ours_skip_unread_gemm_over_pyvene"], None,
                        "profiled: how low ours / pyvene could go with this arithmetic and no overhead"))  # fmt: skip
        rows.append(row("d. peer: ours / HF floor", case, r["ours_over_hf_bare"]))
        rows.append(row("d. peer: pyvene / HF floor", case, r["pyvene_over_hf_bare"]))
    return rows


def gelu_rows(results: list[dict]) -> list[str]:
    return [row("step: fused GELU / HF's gelu_new", f"{r['model']}, {r['batch']} × {r['positions']}",
                r["fused_over_hf_gelu"]) for r in results]  # fmt: skip


def generate_rows(results: list[dict]) -> list[str]:
    rows = []
    for r in results:
        if "hooked_over_plain" in r:
            cached = ", key-value cache (backend=hf)" if r.get("backend") == "hf" else ", bridge (no cache)"
            case = (f"{r['model']}, {r.get('method', 'dynscalar')}, {r['batch']} prompts × {r['prompt_tokens']} + "
                    f"{r['new_tokens']} new tokens{cached}")  # fmt: skip
            rows.append(row("generation: hooks (β = 0) / none", case, r["hooked_over_plain"], GENERATE_GOAL))
            if "noop_over_plain" in r:
                rows.append(row("generation: no-op hooks at the same points / none", case, r["noop_over_plain"],
                                note="the floor TransformerLens's hook calls set"))  # fmt: skip
        else:
            case = f"{r['model']}, {r['batch']} × {r['positions']}, answers of {r['answer_tokens']} tokens"
            rows.append(row("step: multi-token / single-token, same tokens", case, r["multi_over_single"]))
    return rows


def steering_rows(result: dict) -> list[str]:
    """The steering score's cost: at steering_eval's defaults, and over every scoring of the
    comparison (its smaller sizes, its wider β grid)."""
    cost, sizes = result["cost"], result["sizes"]
    spread = f"rounds {min(cost['per_round']):.3f}–{max(cost['per_round']):.3f}"
    low, median, high = result["goals"]["scoring_over_generation_range"]
    case = (f"the comparison's scorings: {sizes['n_val']} val and {sizes['n_test']} test prompts at most, "
            f"{len(sizes['steering']['betas'])} magnitudes of β, {sizes['steering']['max_new_tokens']} tokens")  # fmt: skip
    return [row("steering: scoring / generation", cost["case"], cost["scoring_over_generation"], STEERING_GOAL, spread),
            row("steering: scoring / generation", case, result["goals"]["scoring_over_generation"], STEERING_GOAL,
                f"all its time over all generation; per scoring {low:.2f}–{high:.2f}, median {median:.2f}")]  # fmt: skip


def prefix_rows(results: list[dict]) -> list[str]:
    return [row("prefix skipped / full", f"{r['model']}, layer {r['layer']} of {r['n_layers']}", r["skip_over_full"])
            for r in results]  # fmt: skip


def exponent(points: list[tuple[float, float]]) -> float:
    """The slope of log(y) over log(x): 1 for y ∝ x, 0 for a constant, 2 for y ∝ x²."""
    xs, ys = zip(*((math.log(x), math.log(max(y, 1e-9))) for x, y in points))
    return statistics.linear_regression(xs, ys).slope


def sweeps(results: list[dict]) -> dict[str, list[dict]]:
    """The scaling points grouped by the quantity they vary. The base point (each quantity's
    most common value: 64 prompts, all layers, 16 positions) belongs to every sweep; its
    repeats enter each one once, as their median."""
    base = {k: statistics.mode(r[k] for r in results) for k in ("prompts", "layers", "positions")}
    groups = {}
    for varies in base:
        others = [k for k in base if k != varies]
        chosen = [r for r in results if all(r[k] == base[k] for k in others)]
        by_value = {}
        for r in chosen:
            by_value.setdefault(r[varies], []).append(r)
        groups[varies] = [
            {varies: value, **{k: statistics.median(p[k] for p in ps) for k in ps[0] if k.endswith(("_s", "_mb"))}}
            for value, ps in sorted(by_value.items())
        ]
    return groups


def scaling_rows(results: list[dict]) -> list[str]:
    rows = []
    memory = "training_cuda_mb" if "training_cuda_mb" in results[0] else "training_rss_mb"
    for varies, points in sweeps(results).items():
        case = f"{results[0]['model']}, {varies} {'/'.join(str(p[varies]) for p in points)}"
        if len({p[varies] for p in points}) < 2:  # a --quick sweep: one point has no slope
            rows.append(f"| e. scaling | {case} | - | | | one point: no exponent |")
            continue
        time = exponent([(p[varies], p["epoch_s"]) for p in points])
        last = exponent([(p[varies], p["epoch_s"]) for p in points[-2:]])
        rows.append(row("e. scaling: epoch time exponent", case, time, None, f"last step {last:.2f} (1 = linear)"))
        mem = exponent([(p[varies], p[memory]) for p in points])
        last = exponent([(p[varies], p[memory]) for p in points[-2:]])
        rows.append(row(f"e. scaling: {memory} exponent", case, mem, None, f"last step {last:.2f}"))
    return rows


SECTIONS = {  # file stem -> rows
    "whole_run": whole_run_rows, "step": step_rows, "floor": floor_rows, "fused": fused_rows, "peer": peer_rows, "gelu": gelu_rows, "prefix": prefix_rows,
    "generate": generate_rows, "steering": steering_rows,
    "scaling_toy": scaling_rows, "scaling_gpt2-small": scaling_rows,
}  # fmt: skip


def summary(results_dir: Path, suffix: str = "") -> str:
    """The markdown table of every ratio in `results_dir`'s `<stem><suffix>.json` files."""
    lines = ["| ratio | case | value | goal | | note |", "|---|---|---|---|---|---|"]
    for stem, rows in SECTIONS.items():
        path = Path(results_dir) / f"{stem}{suffix}.json"
        if not path.exists():
            lines.append(f"| {stem} | | not run | | | `{path.name}` is missing |")
            continue
        try:
            lines += rows(json.loads(path.read_text()))
        except KeyError as missing:  # written by an older version of its benchmark
            lines.append(f"| {stem} | | out of date | | | `{path.name}` has no {missing}: run its benchmark again |")
    return "\n".join(lines)
