"""The illusion diagnostic's report (`reports.illusion.diagnose_illusion`) as text and as a
file: illusion.json and the lines a run prints."""

from __future__ import annotations

from pathlib import Path

from interventions.io import write_json
from interventions.reports.illusion import fmt_number


def format_illusion(report: dict, top: int = 10) -> str:
    """A readable summary: the message, the whole intervention, the strongest locations."""
    s, g, t = report["summary"], report["global"], report["thresholds"]
    lines = [
        s["message"],
        f"thresholds: variance {t['variance']:g}, out-of-span share >= {t['out_share_threshold']:g}, "
        f"ablation < {t['ablation_fraction']:g}x steering, location share >= {t['min_share']:g}; "
        f"{s['n_prompts']} prompts, clean logit diff {s['clean_logit_diff']:.3f}",
        *([f"note: {s['note']}"] if "note" in s else []),
        f"whole intervention ({g['n_locations']} locations): out-of-span fraction of ‖v‖² "
        f"{g['out_of_span_fraction']:.3f} (a random direction: {g['chance_out_of_span_fraction']:.3f}); steering effect S full {g['effect']['full']['steering_effect']:.3f}, "
        f"in-span {g['effect']['in_span']['steering_effect']:.3f}, out-of-span "
        f"{g['effect']['out_of_span']['steering_effect']:.3f}; effectiveness full "
        f"{g['effect']['full']['effectiveness']:.3f} / in {g['effect']['in_span']['effectiveness']:.3f} / "
        f"out {g['effect']['out_of_span']['effectiveness']:.3f}; mean-ablation |ΔLD| "
        f"{g['ablation']['mean_abs_change']:.3f}; flag {g['flag']}",
    ]
    rows = [e for e in report["locations"] if "effect" in e][:top]
    if rows:
        lines.append(
            f"{'location':<34} {'‖v‖':>7} {'dim':>4} {'out‖v‖²':>8} {'S full':>7} {'S in':>7} "
            f"{'S out':>7} {'share':>6} {'abl/S':>6} flag"
        )
        for e in rows:
            ef = e["effect"]
            lines.append(
                f"{e['label'][:34]:<34} {e['v_norm']:>7.3f} {e['span_dim']:>4d} {e['out_of_span_fraction']:>8.3f} "
                f"{ef['full']['steering_effect']:>7.3f} {ef['in_span']['steering_effect']:>7.3f} "
                f"{ef['out_of_span']['steering_effect']:>7.3f} {fmt_number(e['out_of_span_share']):>6} "
                f"{fmt_number(e['ablation_ratio']):>6} {'FLAG' if e['flag'] else ''}"
            )
    return "\n".join(lines)


def write_illusion(path: str | Path, report: dict) -> Path:
    """Write the report as JSON (e.g. illusion.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return path
