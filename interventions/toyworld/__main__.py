"""python -m interventions.toyworld {train,report} — train the toy model, print its behaviour."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from interventions.io import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interventions.toyworld")
    sub = parser.add_subparsers(dest="command", required=True)
    from interventions.toyworld.train import CHECKPOINT_DIR, DEFAULTS

    p_train = sub.add_parser("train", help="train the toy model and write a checkpoint folder")
    p_train.add_argument("--out", required=True,
                         help="a new checkpoint folder (one that holds a checkpoint is refused; the committed one is "
                              f"{CHECKPOINT_DIR})")  # fmt: skip
    for key, value in DEFAULTS.items():
        p_train.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    p_train.add_argument("--no-report", action="store_true", help="skip the behaviour report")

    p_report = sub.add_parser("report", help="the behaviour report of a checkpoint")
    p_report.add_argument("--checkpoint", default=str(CHECKPOINT_DIR))
    p_report.add_argument("--json", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    from interventions.toyworld.report import behaviour_report, format_report

    if args.command == "train":
        from interventions.toyworld.train import train

        if (Path(args.out) / "model.safetensors").exists():
            print(f"error: --out {args.out} already holds a checkpoint (model.safetensors); choose a new folder",
                  file=sys.stderr)  # fmt: skip
            return 2

        kwargs = {k: getattr(args, k) for k in DEFAULTS}
        summary = train(args.out, **kwargs)
        print(json.dumps(summary, indent=2))
        if args.no_report:
            return 0
        checkpoint = args.out
    else:
        checkpoint = args.checkpoint
    report = behaviour_report(checkpoint)
    print(format_report(report))
    if getattr(args, "json", None):
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
