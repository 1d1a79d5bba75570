"""The localization benchmarks: a model, a contrastive task, and the truth set of the nodes
that carry its behaviour at each granularity (docs/circuits.md).

    reverse, sort, count_x, rev_count   tracr-compiled programs (`circuits.programs`): exact truth
    planted_ioi                         the toy model fine-tuned so that toy IOI runs through two
                                        chosen heads (`circuits.planted`)

Each benchmark is a committed folder under interventions/circuits/models/: the model as a
native checkpoint (`load_model(folder)` loads it), `truth.json` (the truth per granularity,
how it was derived, and its ablation check as measured when the folder was written) and,
for the compiled programs, `data.jsonl` (every input of the program's domain; also usable
as `train.py model=<folder> task=jsonl task.path=<folder>/data.jsonl`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from interventions.circuits.ablation import check_truth, unneeded
from interventions.circuits.granularity import GRANULARITIES
from interventions.circuits.programs import PROGRAMS
from interventions.errors import ConfigError
from interventions.io import write_json
from interventions.models import load_model
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.tasks.datapoint import Task

MODELS = Path(__file__).parent / "models"
PLANTED = "planted_ioi"
BENCHMARKS = (*PROGRAMS, PLANTED)
SPLITS = ("train", "val", "test")


@dataclass
class Benchmark:
    """A loaded benchmark: its model, its data (`splits`; `all`: what the truth is checked on)
    and its truth nodes per granularity (`truth`; `nodes`: every node of that granularity)."""

    name: str
    model: object
    splits: dict[str, Task]
    truth: dict[str, list[str]]
    nodes: dict[str, list[str]]
    info: dict

    @property
    def all(self) -> Task:
        first = self.splits["train"]
        points = tuple(p for split in SPLITS for p in self.splits[split])
        return Task(first.name, "all", first.template, points, dict(first.info))

    @property
    def seq_len(self) -> int:
        return int(self.info["seq_len"])

    @property
    def granularities(self) -> tuple[str, ...]:
        return tuple(self.truth)


def folder(name: str, root: str | Path | None = None) -> Path:
    return Path(root or MODELS) / name


def check_benchmarks(names: list[str]) -> list[str]:
    """The names, or one ConfigError naming the benchmarks there are (before any model loads)."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)} (or all)")
    return names


def truth_record(name: str, root: str | Path | None = None) -> dict:
    """The benchmark's truth.json."""
    path = folder(name, root) / "truth.json"
    if not path.exists():
        raise ConfigError(f"benchmark {name!r} has no {path}; write it with: python -m interventions circuits "
                          f"{'plant' if name == PLANTED else 'compile'}")  # fmt: skip
    return json.loads(path.read_text())


def load_benchmark(name: str, device: str = "cpu", root: str | Path | None = None) -> Benchmark:
    """Load a committed benchmark (module docstring) with its data splits; `root`: a folder
    holding benchmark folders instead of the committed ones."""
    check_benchmarks([name])
    record = truth_record(name, root)
    model, _ = load_model(str(folder(name, root)), device=device)
    if name == PLANTED:
        data = record["data"]
        splits = {split: load_task("ioi", model, split=split, template=data["template"], n=data["n"][split],
                                   fixed_length=True) for split in SPLITS}  # fmt: skip
    else:
        path = str(folder(name, root) / "data.jsonl")
        splits = {split: load_task("jsonl", model, split=split, path=path, fixed_length=True) for split in SPLITS}
    cfg = model.cfg
    nodes = {level: GRANULARITIES[level].nodes(cfg.n_layers, cfg.n_heads, record["seq_len"]) for level in record["truth"]}
    return Benchmark(name, model, splits, record["truth"], nodes, record)


def verify(benchmark: Benchmark) -> dict[str, dict]:
    """The ablation check of each granularity's truth on all of the benchmark's data
    (`ablation.check_truth`): {granularity: report}."""
    batch = encode(benchmark.model, benchmark.all, fixed_length=True)
    return {level: check_truth(benchmark.model, batch, benchmark.truth[level], benchmark.nodes[level], level)
            for level in benchmark.truth}  # fmt: skip


def refine(name: str, root: str | Path) -> dict:
    """Drop from a compiled benchmark's truth (written from its weights) the nodes its data
    never need (`ablation.unneeded`), in its truth.json: "truth" the rest, "from_weights" the
    weights' sets, "unneeded" what was dropped and why."""
    path = folder(name, root) / "truth.json"
    record = json.loads(path.read_text())
    bench = load_benchmark(name, root=root)
    batch = encode(bench.model, bench.all, fixed_length=True)
    record["from_weights"] = record["truth"]
    record["unneeded"] = {level: unneeded(bench.model, batch, truth, bench.nodes[level], level)
                          for level, truth in record["truth"].items()}  # fmt: skip
    record["truth"] = {level: [n for n in truth if n not in record["unneeded"][level]] for level, truth in record["truth"].items()}
    write_json(path, record)
    return record
