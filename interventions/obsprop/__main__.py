"""Observable propagation from the command line.

    python -m interventions.obsprop analyze --model toy --task pronouns --out runs/obsprop \\
        --observable she-he --other-observable her-him

writes into --out:
    report.json                      every number below, plus conventions and data scales
    norm_<obs>_<mode>.png            ‖y‖ per head (layer × head), per LayerNorm mode
    svd_best_cos_<obs>.png           max |cos| of y with the input singular vectors of W_OV
    cosine_<a>__<b>_<mode>.png       cos(y_a, y_b) per head           (with --other-observable)
    coupling_<a>_to_<b>.png, ...     C(y_a, y_b) = y_a·y_b/‖y_a‖² per head (both directions)

Options:
    --model NAME          "toy", a Hugging Face name or a local folder (as load_model)
    --task NAME           ccc, ioi, pronouns, bias, or jsonl/csv with --task-path FILE;
                          its prompts estimate LayerNorm scales and MLP decision points
    --template T --split S --n N --seed K --bias-pair P    which data points
    --observable SPEC     'A-B' (e_A − e_B), 'A:1,B:-1' (weights) or '+A+B-C' (signs);
                          default: the task's answer pair (mean of e_correct − e_wrong;
                          when the pairs cancel, as for pronouns, the task's most common
                          pair as first seen, with a note)
    --other-observable SPEC   a second observable: cosines, couplings, Theorem-2 bounds
    --ln-mode MODE        approximate (default) or exact: the main LayerNorm handling
                          (ignore is always reported too)
    --top K               heads listed per ranking (default 5)
    --path P [P ...]      virtual-head paths to report, deepest first, e.g. L3H1,L1H0
    --no-mlp              skip the MLP features (decision points)

Besides the data-free numbers, report.json holds each head's measured direct
contribution to n · logits on the task's prompts (RMS, mean) and its Spearman rank
correlation with the feature norms (attribution_rms_<obs>.png).

User errors (a multi-token observable, an unknown task) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from interventions.errors import InterventionsError


def _default_observable(task, tokenizer):
    from interventions.obsprop.observables import Observable, observable_for_task
    from interventions.errors import TaskError

    try:
        return observable_for_task(task, tokenizer), None
    except TaskError as error:
        if "cancel out" not in str(error):
            raise
    unordered = Counter(frozenset((p.correct, p.wrong)) for p in task)
    top = unordered.most_common(1)[0][0]
    first = next(p for p in task if frozenset((p.correct, p.wrong)) == top)
    obs = Observable.from_pair(tokenizer, first.correct, first.wrong)
    note = (
        f"note: the task's answer pairs cancel out on average; using its most common pair "
        f"{obs.label!r} (pass --observable to choose)"
    )
    return obs, note


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m interventions.obsprop", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="feature norms, cosines, couplings, SVD comparison per head",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)  # fmt: skip
    a.add_argument("--model", default="toy")
    a.add_argument("--task", required=True)
    a.add_argument("--task-path", default=None)
    a.add_argument("--template", default="0")
    a.add_argument("--split", default="train")
    a.add_argument("--n", type=int, default=256)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--bias-pair", default="stereotype")
    a.add_argument("--observable", default=None)
    a.add_argument("--other-observable", default=None)
    a.add_argument("--ln-mode", default="approximate", choices=("approximate", "exact"))
    a.add_argument("--top", type=int, default=5)
    a.add_argument("--path", nargs="*", default=[])
    a.add_argument("--no-mlp", action="store_true")
    a.add_argument("--out", required=True)
    a.add_argument("--device", default="cpu")
    a.add_argument("--logger", default="wandb", choices=("wandb", "none"),
                   help="also log the heatmaps and numbers to a W&B run (offline) in --out")
    return parser


def analyze_command(args) -> dict:
    import torch

    from interventions.models import load_model
    from interventions.obsprop.analysis import analyze, cosine, write_report
    from interventions.obsprop.features import ActivationData, path_feature
    from interventions.obsprop.observables import Observable
    from interventions.tasks import load_task
    from interventions.tasks.datamodule import encode

    model, tokenizer = load_model(args.model, device=args.device)
    task = load_task(args.task, model=model, split=args.split, template=args.template, n=args.n, seed=args.seed,
                     path=args.task_path, bias_pair=args.bias_pair)  # fmt: skip
    if args.observable:
        obs = Observable.parse(args.observable, tokenizer)
    else:
        obs, note = _default_observable(task, tokenizer)
        if note:
            print(note, file=sys.stderr)
    other = Observable.parse(args.other_observable, tokenizer) if args.other_observable else None
    enc = encode(model, task)
    data = ActivationData.collect(model, enc["input_ids"], enc["attention_mask"], enc["last_index"], seed=args.seed)
    with torch.no_grad():
        report = analyze(model, obs, other, data=data, ln_modes=("ignore", args.ln_mode), top=args.top,
                         mlp=not args.no_mlp)  # fmt: skip
    from interventions.obsprop.analysis import _grid, head_attributions, rank_correlation

    for o in [obs] + ([other] if other else []):
        contrib = head_attributions(model, o, enc["input_ids"], enc["attention_mask"], enc["last_index"])
        rms = contrib.pow(2).mean(0).sqrt()
        norms = report["_tensors"][o.label][args.ln_mode].norm(dim=-1)
        report["observables"][o.label]["attribution"] = {
            "what": "direct contribution of each head to n·logits at the last position (frozen ln_final scale)",
            "rms": _grid(rms),
            "mean": _grid(contrib.mean(0)),
            "spearman_with_feature_norm": round(rank_correlation(rms, norms), 4),
        }
    report["data"] = {"task": args.task, "template": str(args.template), "split": args.split, "n": len(task),
                      "seed": args.seed, "model": args.model}  # fmt: skip
    if args.path:
        report["paths"] = []
        for spec in args.path:
            comps = [c for c in spec.split(",") if c.strip()]
            entry = {"path": comps}
            vecs = {}
            for o in [obs] + ([other] if other else []):
                pf = path_feature(model, comps, o, ln_mode=args.ln_mode, data=data, input_space="normalized")
                vecs[o.label] = pf.vector
                entry[f"norm {o.label}"] = round(float(pf.vector.norm()), 6)
                for name, m in pf.mlp.items():
                    entry[f"{name} |g(x0)| {o.label}"] = abs(m.value)
            if other is not None:
                entry["cosine"] = round(float(cosine(vecs[obs.label], vecs[other.label])), 6)
            report["paths"].append(entry)
    files = write_report(report, args.out)
    _print_summary(report)
    print(f"wrote {len(files)} files to {Path(args.out)}")
    _log_to_wandb(args, report)
    return report


def _log_to_wandb(args, report: dict) -> None:
    """The PNG heatmaps as images and every number of the report as W&B summary values."""
    if args.logger == "none":
        return
    from interventions.loggers import finish, log_files, make_logger
    from interventions.metrics import flatten

    out = Path(args.out)
    logger = make_logger("wandb", out, name=f"obsprop-{args.task}", config=vars(args))
    numbers = {k: v for k, v in flatten(report).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        log_files(logger, {p.stem: p for p in sorted(out.glob("*.png"))}, None, numbers)
    finally:
        finish(logger)


def _print_summary(report: dict) -> None:
    main = report["main_mode"]
    for label, rep in report["observables"].items():
        heads = ", ".join(f"L{h['layer']}H{h['head']} {h['norm']:.4g}" for h in rep["ranking"][main])
        print(f"top heads by ‖y‖ for {label} ({main} LN, normalised input): {heads}")
        if "attribution" in rep:
            print(f"  Spearman(‖y‖, RMS direct contribution on data) = {rep['attribution']['spearman_with_feature_norm']:+.3f}")
    pair = report.get("pair")
    if pair:
        a, b = pair["first"], pair["second"]
        print(f"cos(W_U n_{a}, W_U n_{b}) = {pair['cosine_of_W_U_n']:.4f}")
        for h in pair["top_heads"]:
            print(f"  L{h['layer']}H{h['head']}: cos {h['cosine']:+.4f}  C({a}->{b}) {h[f'coupling {a} -> {b}']:+.4f}"
                  f"  C({b}->{a}) {h[f'coupling {b} -> {a}']:+.4f}")  # fmt: skip


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "analyze":
            analyze_command(args)
    except InterventionsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
