"""The command lines besides train.py and evaluate.py, in one place:

    python -m interventions toyworld report                  the toy model's behaviour table
    python -m interventions toyworld train --out DIR         retrain the toy model into a new folder
    python -m interventions obsprop analyze --task T --out DIR   observable-propagation analyses
    python -m interventions heads --task ioi --out DIR       ActivScalar on each head's o vs DLA (Fig. 7/8)
    python -m interventions geometry --task ccc --out DIR    SteerVec geometry over seeds (Fig. 4)
    python -m interventions illusion --task ccc --out DIR    a SteerVec and its subspace-illusion diagnostic
    python -m interventions generalization RUN...            Table 2: effectiveness on train / test / templates
    python -m interventions task-matrix RUN...               each run on each toy task (Fig. 6)
    python -m interventions write-mixed DIR                  data/{train,val,test}.jsonl mixing the toy tasks
    python -m interventions control-vector RUN OUT.gguf      a steervec_shared run on residPost as a llama.cpp control vector
    python -m interventions circuits score --out DIR         every method's location scores against known circuits
    python -m interventions circuits check                   the benchmarks' truths, checked by ablation
    python -m interventions circuits front --out DIR         ActivScalar's localization over (λ_F, λ_M)
    python -m interventions circuits merge --from A,B --out DIR   score runs of other benchmarks as one result
    python -m interventions circuits compile --out DIR       compile the RASP programs (the `tracr` extra)
    python -m interventions circuits plant --out DIR         fine-tune the planted-circuit toy model

This module only parses: usage errors and --help answer at once. What each command does
is in `interventions.cli.actions` (`interventions.cli.circuits` for `circuits`), imported
once a command is known (it loads torch and the models: about 5 s).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from interventions.errors import InterventionsError
from interventions.toyworld import CHECKPOINT, TRAINING_DEFAULTS


def _toyworld(sub) -> None:
    toy = sub.add_parser("toyworld", help="the toy world's model: its behaviour report, or retrain it")
    actions = toy.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train the toy model into a new checkpoint folder")
    train.add_argument("--out", required=True, help="a new folder (one that holds a checkpoint is refused)")
    for key, value in TRAINING_DEFAULTS.items():
        train.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    train.add_argument("--no-report", action="store_true", help="skip the behaviour report")
    report = actions.add_parser("report", help="the behaviour report of a checkpoint")
    report.add_argument("--checkpoint", default=None, help=f"a checkpoint folder (default: the committed {CHECKPOINT})")
    report.add_argument("--json", default=None, help="also write the report to this file")


def _obsprop(sub) -> None:
    obsprop = sub.add_parser("obsprop", help="observable propagation from the weights")
    actions = obsprop.add_subparsers(dest="action", required=True)
    a = actions.add_parser("analyze", help="feature norms, cosines, couplings, SVD comparison per head; writes "
                           "report.json and layer × head heatmaps into --out")  # fmt: skip
    a.add_argument("--model", default="toy", help='"toy", a Hugging Face name or a local folder')
    a.add_argument("--task", required=True, help="its prompts estimate LayerNorm scales and MLP decision points")
    a.add_argument("--task-path", default=None, help="the data file of task jsonl / csv")
    a.add_argument("--template", default="0")
    a.add_argument("--split", default="train")
    a.add_argument("--n", type=int, default=256)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--bias-pair", default="stereotype")
    a.add_argument("--observable", default=None, help="'A-B', 'A:1,B:-1' or '+A+B-C' (default: the task's pair)")
    a.add_argument("--other-observable", default=None, help="a second observable: cosines, couplings, bounds")
    a.add_argument("--ln-mode", default="approximate", choices=("approximate", "exact"))
    a.add_argument("--top", type=int, default=5, help="heads listed per ranking")
    a.add_argument("--path", nargs="*", default=[], help="virtual-head paths, deepest first, e.g. L3H1,L1H0")
    a.add_argument("--no-mlp", action="store_true", help="skip the MLP features (decision points)")
    a.add_argument("--out", required=True)
    a.add_argument("--device", default="cpu")
    a.add_argument("--logger", default="wandb", choices=("wandb", "none"), help="also an offline W&B run in --out")


def _training(parser, task: str, epochs: int = 25) -> None:
    """The options of a command that trains on a toy (or file) task."""
    parser.add_argument("--model", default="toy", help="model name or folder (default: toy)")
    parser.add_argument("--task", default=task)
    parser.add_argument("--template", default="0")
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")


def _steervec(parser) -> None:
    """The options of a command that trains a SteerVec."""
    parser.add_argument("--lr", type=float, default=None, help="Adam step size (default: the method's)")
    parser.add_argument("--sites", default="attnOut,mlpOut")


def _reports(sub) -> None:
    heads = sub.add_parser("heads", help="ActivScalar on each head's output o at the last position vs DLA (Fig. 7/8)")
    _training(heads, "ioi")
    geometry = sub.add_parser("geometry", help="SteerVec geometry over seeds: norm change, cosine distance, Kendall τ")
    _training(geometry, "ccc")
    _steervec(geometry)
    geometry.add_argument("--path", default=None, help="data file for task jsonl/csv")
    geometry.add_argument("--n-seeds", type=int, default=5)
    geometry.add_argument("--batch-size", type=int, default=4)
    geometry.add_argument("--layers", default="all")
    geometry.add_argument("--positions", default="all")
    geometry.add_argument("--lambda-f", type=float, default=0.1)
    geometry.add_argument("--lambda-m", type=float, default=0.0)
    geometry.add_argument("--margin", type=float, default=1.0)
    geometry.add_argument("--data-split", choices=("train", "test"), default="test")
    illusion = sub.add_parser("illusion", help="train a SteerVec and run the subspace-illusion diagnostic on it")
    _training(illusion, "ccc")
    _steervec(illusion)
    illusion.add_argument("--split", choices=("train", "test"), default="test")
    illusion.add_argument("--max-prompts", type=int, default=None)


def _generalization(sub) -> None:
    table = sub.add_parser("generalization", help="Table 2: effectiveness on A: train, B: test, C: other templates")
    matrix = sub.add_parser("task-matrix", help="each run on each toy task (task_matrix.json and .png)")
    for parser in (table, matrix):
        parser.add_argument("runs", nargs="+", help="run folders, exports or multirun folders")
        parser.add_argument("--split", default="test", choices=("train", "val", "test"))
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--out", default=".", help="output folder (default: here)")
    table.add_argument("--templates", nargs="*", type=int, default=None, help="C templates (default: all others)")
    table.add_argument("--n", type=int, default=None, help="at most this many data points for C")
    matrix.add_argument("--n", type=int, default=64, help="data points per task")
    mixed = sub.add_parser("write-mixed", help="DIR/{train,val,test}.jsonl mixing the toy tasks (DynScalar data)")
    mixed.add_argument("out", metavar="DIR")


def _control_vector(sub) -> None:
    gguf = sub.add_parser("control-vector", help="a steervec_shared run on residPost as a llama.cpp control-vector GGUF")
    gguf.add_argument("run", help="a run folder or its intervention.json")
    gguf.add_argument("out", help="the .gguf file to write")
    gguf.add_argument("--scale", type=float, default=1.0, help="multiplies every vector (llama.cpp strength s: β = s·scale)")
    gguf.add_argument("--model-hint", default=None, help="controlvector.model_hint (default: the export's model name)")


def _names(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _circuits(sub) -> None:
    circuits = sub.add_parser("circuits", help="localization against known circuits (compiled programs, a planted circuit)")
    actions = circuits.add_subparsers(dest="action", required=True)
    score = actions.add_parser("score", help="every method's location scores against the benchmarks' truths: node AUROC, "
                               "average precision, precision@|G| (results.json, results.md, roc.png)")  # fmt: skip
    score.add_argument("--benchmarks", type=_names, default=["all"], help="comma-separated, or all (default)")
    score.add_argument("--methods", type=_names, default=["all"], help="comma-separated method names and random, or all")
    score.add_argument("--granularities", type=_names, default=["all"], help="site, head, position (default: all)")
    front = actions.add_parser("front", help="ActivScalar over a (λ_F, λ_M) grid: localization along the Pareto front")
    front.add_argument("--benchmark", default="planted_ioi")
    front.add_argument("--granularities", type=_names, default=["all"])
    front.add_argument("--lambda-f", type=lambda t: [float(x) for x in _names(t)], default=None, help="e.g. 0,0.1,1")
    front.add_argument("--lambda-m", type=lambda t: [float(x) for x in _names(t)], default=None, help="e.g. 0,0.001,0.01")
    for parser in (score, front):
        parser.add_argument("--quick", action="store_true", help="2 seeds and few epochs: a smoke test of the whole pipeline")
        parser.add_argument("--seeds", type=int, default=5, help="seeds per trained method (default 5)")
        parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: each benchmark's own)")
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument("--logger", default="none", choices=("wandb", "none"), help="an offline W&B run in --out")
        parser.add_argument("--device", default="cpu")
    merge = actions.add_parser("merge", help="the results of `score` runs on different benchmarks as one (results.json, "
                               "results.md, roc.png): benchmarks scored as separate jobs")  # fmt: skip
    merge.add_argument("--from", dest="sources", type=_names, required=True, help="comma-separated score output folders")
    merge.add_argument("--out", required=True, help="output folder (not one of --from)")
    check = actions.add_parser("check", help="ablate each benchmark's truth and the rest (zero and mean ablation)")
    check.add_argument("--benchmarks", type=_names, default=["all"])
    compile_ = actions.add_parser("compile", help="compile the RASP programs with tracr and convert them (needs the tracr "
                                  "extra: pip install -e '.[tracr]')")  # fmt: skip
    plant = actions.add_parser("plant", help="fine-tune the toy model so that toy IOI runs through a chosen circuit")
    plant.add_argument("--steps", type=int, default=1500)
    plant.add_argument("--seed", type=int, default=0)
    for parser in (compile_, plant, check):
        parser.add_argument("--out" if parser is not check else "--root", required=parser is not check, default=None,
                            help="a folder of benchmark folders (check: default the committed ones)")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m interventions", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    _toyworld(sub)
    _obsprop(sub)
    _reports(sub)
    _generalization(sub)
    _control_vector(sub)
    _circuits(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Parse, then run the command; a user error is one line on stderr and exit status 2."""
    args = parser().parse_args(argv)
    # this package's progress lines; other libraries' only from warnings up (transformers
    # announces an installed JAX at INFO)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("interventions").setLevel(logging.INFO)
    # loads torch: after parsing (module doc)
    actions = importlib.import_module("interventions.cli.circuits" if args.command == "circuits" else "interventions.cli.actions")
    name = args.command.replace("-", "_") + (f"_{args.action}" if getattr(args, "action", None) else "")
    try:
        return getattr(actions, name)(args) or 0
    except InterventionsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
