"""Does the observable-propagation init reach flip accuracy ≥ 0.95 in fewer epochs?

    python benchmarks/obsprop_init.py [--tasks ccc,ioi] [--methods activscalar,steervec,dynscalar]
                                      [--seeds 0,1,2] [--epochs 25]

For each task, method and seed, trains with `init=normal` (the paper's 1e-5 noise) and
`init=obsprop` (scale `--obsprop-scale`), evaluates train flip accuracy after every epoch
on the whole train split, and reports the first epoch at which it reaches the target
(or "never"). Same data, same seeds, same defaults otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning as L
import torch
from interventions.methods.registry import intervention_spec
from interventions.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class FlipAccuracyPerEpoch(L.Callback):
    def __init__(self, loader):
        self.loader = loader
        self.history: list[float] = []

    def on_train_epoch_end(self, trainer, module):
        self.history.append(module.evaluate(self.loader)["flip_accuracy"])


def first_epoch(history: list[float], target: float) -> int | None:
    return next((i + 1 for i, acc in enumerate(history) if acc >= target), None)


def main(argv=None) -> int:
    from interventions import load_model, load_task
    from interventions.tasks.datamodule import TaskDataModule
    from interventions.training.train import train_intervention

    parser = argparse.ArgumentParser(prog="python benchmarks/obsprop_init.py")
    parser.add_argument("--tasks", default="ccc,ioi")
    parser.add_argument("--methods", default="activscalar,steervec,dynscalar")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--obsprop-scale", type=float, default=0.1)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "obsprop_init.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_model("toy")
    results = []
    for task_name in args.tasks.split(","):
        train = load_task(task_name, model=model, split="train", template=0, n=args.n_train)
        for method in args.methods.split(","):
            for seed in map(int, args.seeds.split(",")):
                for init, scale in (("normal", 1e-5), ("obsprop", args.obsprop_scale)):
                    eval_dm = TaskDataModule(model, train, batch_size=64, fixed_length=method != "dynscalar")
                    callback = FlipAccuracyPerEpoch(eval_dm.loader("train"))
                    train_intervention(model, train, intervention=intervention_spec(method, init=init, init_scale=scale), run=RunSpec(epochs=args.epochs, seed=seed), trainer_kwargs={"callbacks": [callback]})  # fmt: skip
                    row = {
                        "task": task_name, "method": method, "seed": seed, "init": init, "init_scale": scale,
                        "epochs_to_target": first_epoch(callback.history, args.target),
                        "final_flip_accuracy": callback.history[-1], "history": callback.history,
                    }  # fmt: skip
                    results.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
