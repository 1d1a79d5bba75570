"""The benchmarks' command line: speed and memory of the training step, as ratios.

    python benchmarks/run.py step      [--models toy,gpt2-small] [--repeats 20]   (step.py)
    python benchmarks/run.py floor     (the step's forward + backward through the bridge vs through the plain
                                       Hugging Face model of the same toy weights with the same hooks; floor.py)
    python benchmarks/run.py scaling   [--model toy|gpt2-small]                   (scaling.py)
    python benchmarks/run.py fused     (K = 16 configurations: fused vs separate runs; fused.py)
    python benchmarks/run.py prefix    [--models toy,gpt2-small,hf-gpt2-small] (intervening on the last
                                       layer: prefix skipped vs full; hf-* = Hugging Face GPT-2; prefix.py)
    python benchmarks/run.py peer      (ActivScalar epoch: ours vs pyvene; needs `pip install -e .[bench]`; peer.py)
    python benchmarks/run.py gelu      (our step on HF GPT-2 with load_model's fused GELU vs HF's gelu_new; gelu.py)
    python benchmarks/run.py progress  (a toy training step with no progress bar, Lightning's, the CLI's; progress.py)
    python benchmarks/run.py generate  [--models toy,gpt2-small] (greedy generation with the hooks at β = 0 vs
                                       without; the step on 3-token answers vs single tokens; generate.py)
    python benchmarks/run.py steering  (the methods compared by their steering score, hinge vs preference, on the
                                       four toy tasks over 3 seeds, and the score's cost over its generation
                                       time; about an hour on 2 CPU cores, not part of `all`; steering.py)
    python benchmarks/run.py summary   (every goal's ratio from the results files, as one table; nothing timed)
    python benchmarks/run.py all       (all of the above in turn, with the same --device, --threads and --out,
                                       then the summary)

Each writes `<--out>/<name>.json` (benchmarks/results by default). `--device cuda[:N]` (all but
`progress`) builds the models and batches on that GPU, waits for it before every clock
reading, trains with Lightning there, reads GPU memory from torch's allocator in `scaling`,
and writes `<name>_cuda.json`. `--quick` runs every benchmark at tiny sizes (the toy model,
one round; seconds, not minutes) and writes `<name>_quick.json`: it checks that a command
works, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import floor, fused, gelu, generate, peer, prefix, progress, scaling, steering, step  # noqa: E402
from benchmarks.harness import printed, write_results  # noqa: E402
from benchmarks.summary import summary  # noqa: E402
from interventions.console import configure_cli  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark runs: the measured sizes, or `--quick`'s tiny ones."""

    repeats: int
    models: tuple[str, ...]
    gelu_shapes: tuple[tuple[str, int], ...] = (("toy", 4), ("toy", 32), ("gpt2-small", 32))
    fused: dict | None = None  # bench_fused's k, epochs, n_train, rounds
    peer: dict | None = None  # bench_peer's n_train, epochs, rounds
    progress: dict | None = None  # bench_progress's steps, rounds
    quick: bool = False


def sizes(args) -> Sizes:
    if not args.quick:
        return Sizes(repeats=args.repeats, models=tuple(args.models.split(",")), fused={}, peer={}, progress={})
    return Sizes(repeats=1, models=("toy",), gelu_shapes=(("toy", 4),), fused=dict(k=2, epochs=1, n_train=8, rounds=1),
                 peer=dict(n_train=8, epochs=2, rounds=1), progress=dict(steps=4, rounds=1), quick=True)  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py")
    parser.add_argument("what", choices=["step", "floor", "scaling", "fused", "prefix", "peer", "gelu", "progress",
                                         "generate", "steering", "summary", "all", "_point"])  # fmt: skip
    parser.add_argument("args", nargs="*")
    parser.add_argument("--models", default="toy,gpt2-small")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; GPU results go to <name>_cuda.json")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check a command works (<name>_quick.json)")
    args = parser.parse_args(argv)
    suffix = ("_cuda" if args.device.startswith("cuda") else "") + ("_quick" if args.quick else "")
    if args.what == "summary":  # reads files only: no GPU needed to read a GPU run's results
        print(summary(Path(args.out), suffix))
        return 0
    device = checked_device(args.device, args.what)
    if args.what in ("peer", "all") and importlib.util.find_spec("pyvene") is None:
        refuse(f"{args.what}: the pyvene peer needs pyvene; install it with `pip install -e .[bench]`")
    if args.what == "all":
        return run_all(args)
    torch.set_num_threads(args.threads)
    configure_cli()  # hundreds of Trainer start-up lines would bury the results
    if args.what == "steering":
        size, figure = (steering.QUICK, Path(args.out) / "steering_quick.png") if args.quick else (steering.Sizes(), steering.FIGURE)
        steering.run_comparison(Path(args.out) / f"steering{suffix}.json", size, figure, device)
        return 0
    if args.what == "_point":
        model_name, prompts, layers, pos = args.args
        point = scaling.scaling_point(model_name, int(prompts), int(layers) or None, int(pos), batch_size=16,
                                      device=device)  # fmt: skip
        print(json.dumps(point))
        return 0
    name, run = plan(args, sizes(args), device)[args.what]
    write_results(args.out, f"{name}{suffix}", run())
    return 0


def plan(args, size: Sizes, device) -> dict:
    """Each subcommand: (results file name, a function running it at `size`)."""

    def step_point(name, batch):
        pos = 17 if name == "toy" else 20
        repeats = size.repeats if name == "toy" else max(1 if size.quick else 3, size.repeats // 4)
        return step.bench_step(name, batch, pos, repeats=repeats, device=device)

    def prefix_point(name):
        return prefix.bench_prefix(name, repeats=3 if "gpt2" in name else size.repeats, device=device)

    def gelu_point(shape, batch):
        toy = shape == "toy"
        return gelu.bench_gelu(shape, batch, 17 if toy else 20, size.repeats if toy else max(3, size.repeats // 4), device)

    def generate_points(name):
        rounds = 1 if size.quick else (15 if name == "toy" else 3)  # the toy's ratios move by ±0.03 over 5 rounds
        toy = name == "toy"
        # 8 prompts, and on the toy also the command line's default forward (16 prompts × 3 βs)
        batches = (8, 48) if toy and not size.quick else (8,)
        return [*(printed(generate.bench_generation(name, batch, 17 if toy else 20, 4 if size.quick else 16, rounds,
                                                    device, method, backend))
                  for backend in ("bridge", "hf") for batch in batches for method in ("dynscalar", "activscalar")),
                printed(generate.bench_multi_token_step(name, 16, 17 if name == "toy" else 20,
                                                        size.repeats if name == "toy" else max(1, size.repeats // 4),
                                                        device=device))]  # fmt: skip

    shapes = [(name, batch) for name in size.models for batch in ((32, 4) if name == "toy" else (32,))]
    fused_options = ({}, {"skip_unread": True}, {"layers": [3]})  # 3: the toy's last layer
    return {
        "step": ("step", lambda: [printed(step_point(name, batch)) for name, batch in shapes]),
        "floor": ("floor", lambda: [printed(point) for point in floor.run(size.repeats, *(((4,), 2) if size.quick else ((4, 32), 16)))]),
        "prefix": ("prefix", lambda: [printed(prefix_point(name)) for name in size.models]),
        "peer": ("peer", lambda: [printed(peer.bench_peer(name, device=device, **size.peer)) for name in size.models]),
        "fused": ("fused", lambda: [printed(fused.bench_fused(**options, **size.fused, device=device))
                                    for options in fused_options]),  # fmt: skip
        "gelu": ("gelu", lambda: [printed(gelu_point(shape, batch)) for shape, batch in size.gelu_shapes]),
        "progress": ("progress", lambda: printed(progress.bench_progress(**size.progress))),
        "generate": ("generate", lambda: [r for name in size.models for r in generate_points(name)]),
        "scaling": (f"scaling_{args.model}", lambda: scaling.run_scaling(args.model, device, quick=size.quick)),
    }


def run_all(args) -> int:
    """Every benchmark in turn (the commands of docs/benchmarks.md), then the summary of their files."""
    common = ["--device", args.device, "--threads", str(args.threads), "--out", args.out,
              "--repeats", str(args.repeats), *(["--quick"] if args.quick else [])]  # fmt: skip
    todo = [["step"], ["floor"], ["fused"], ["prefix", "--models", "toy,hf-toy,gpt2-small,hf-gpt2-small"], ["peer"], ["gelu"],
            ["generate"], ["scaling", "--model", "toy"], ["scaling", "--model", "gpt2-small"]]  # fmt: skip
    if args.quick:
        todo = [what for what in todo if what[-1] != "gpt2-small"]
    if torch.device(args.device).type == "cpu":
        todo.append(["progress"])  # a CPU-side cost; refused on a GPU
    for what in todo:
        print(f"== python benchmarks/run.py {' '.join(what + common)}", flush=True)
        main(what + common)
    return main(["summary", "--device", args.device, "--out", args.out, *(["--quick"] if args.quick else [])])


def refuse(message: str) -> None:
    """A mistake on the command line as one line (argparse's `error` prints its usage block
    first) and exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def checked_device(name: str, what: str) -> torch.device:
    """`--device` as a torch device; a device torch cannot use is refused before any work."""
    try:
        device = torch.device(name)
    except RuntimeError:
        refuse(f"--device {name}: not a torch device; use cpu or cuda[:N]")
    if device.type not in ("cpu", "cuda"):
        refuse(f"--device {name}: the benchmarks run on cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            refuse(f"--device {name}: torch sees no GPU (torch {torch.__version__}, CUDA build: "
                         f"{torch.version.cuda or 'no'})")  # fmt: skip
        if (device.index or 0) >= torch.cuda.device_count():
            refuse(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s)")
        if what == "progress":
            refuse("--device: `progress` measures the CPU-side cost of progress bars; run it without --device")
    return device


if __name__ == "__main__":
    raise SystemExit(main())
