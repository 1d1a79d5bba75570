"""Running every command and code block of the README and the docs pages as printed, in a
copy of the checkout (issues 19 and 33). How commands are found and run: tests/pages.py.

The pages are run in four groups of one to two minutes (tests/test_docs_commands_*.py), each in
its own sandbox and in the order listed, so that the suite's two workers share them; a page
that uses another page's files is in the same group, after it. A command printed in two groups
runs in the first only (`ran_before`). Commands that would train for minutes get tiny sizes
appended (`TINY`); the pages say so. `bash run.sh test` is this suite itself and is not run
again here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pages import Command, extract

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("train.py", "evaluate.py", "run.sh", "pyproject.toml", "README.md", "mkdocs.yml", "conf", "benchmarks",
          "docs", "interventions", "hydra_plugins")  # fmt: skip

# Each group in the order its pages are read: getting started before the task pages.
GROUPS = {
    "guides": ["README.md", "docs/index.md", "docs/getting-started.md", "docs/concepts.md", "docs/train.md",
               "docs/evaluate.md", "docs/generate.md", "docs/export.md", "docs/python-api.md", "docs/architectures.md",
               "docs/troubleshooting.md", "docs/verified.md", "docs/development.md"],
    "sweeps": ["docs/sweeps.md", "docs/clusters.md"],
    "circuits": ["docs/circuits.md"],
    "analyses": ["docs/steering.md", "docs/results.md", "docs/interpret.md", "docs/obsprop.md", "docs/benchmarks.md",
                 "docs/method.md", "docs/architecture.md"],
}  # fmt: skip
PAGES = [page for group in GROUPS.values() for page in group]

TRAIN = ["task.n_train=16", "task.n_val=8", "task.n_test=16", "trainer.max_epochs=1"]
# A sweep preset's axes, each replaced by one value on the command line (as a user narrows one).
ONE_POINT = ["intervention=activscalar", "objective.lambda_f=0", "objective.lambda_m=0", "objective.margin=0",
             "++fused.lambda_f=[0]", "++fused.lambda_m=[0]", "++fused.margin=[0]"]  # fmt: skip
TINY = {  # command prefix -> what is appended
    "python train.py": TRAIN,
    "bash run.sh train": TRAIN,
    "python evaluate.py intervention=": ["n=16"],
    "python evaluate.py generalization=": ["n=16"],
    "python evaluate.py generate=": ["max_new_tokens=4"],
    "python -m interventions toyworld train": ["--steps", "2", "--no-report"],
    "python -m interventions heads": ["--epochs", "1", "--n-train", "16", "--n-test", "16"],
    "python -m interventions geometry": ["--epochs", "1", "--n-train", "16", "--n-test", "16", "--n-seeds", "2"],
    "python -m interventions illusion": ["--epochs", "1", "--n-train", "16", "--n-test", "16"],
    "python -m interventions obsprop analyze": ["--n", "16"],
    "python benchmarks/obsprop_init.py": ["--tasks", "ccc", "--epochs", "1", "--n-train", "16", "--seeds", "0"],
    # one thread: the benchmarks' default of two would spin against the suite's other worker
    "python benchmarks/run.py": ["--quick", "--threads", "1"],
    "python benchmarks/sweeper.py": ["--quick"],
    "python -m interventions circuits score": ["--quick"],  # and one benchmark, where none is named
    "python -m interventions circuits front": ["--quick", "--lambda-f", "0", "--lambda-m", "0,0.1", "--granularities", "head"],
}  # fmt: skip
SELF = ("bash run.sh test",)  # this suite
ENV_PREFIX = re.compile(r"^(?:[A-Z_]+=\S*\s+)+")  # OMP_NUM_THREADS=1 python ...


def tiny(text: str) -> str:
    """`text` with the tiny sizes of its kind appended (none for fast commands)."""
    bare = ENV_PREFIX.sub("", text)
    extra = next((list(v) for k, v in TINY.items() if bare.startswith(k)), [])
    argv = shlex.split(bare)
    if "-m" in argv and any(a.startswith("experiment=") for a in argv):
        extra += ONE_POINT
    if "hydra/sweeper=pareto" in argv:
        extra += ["hydra.sweeper.n_trials=2"]  # an adaptive sweep: two trials, not the default 32
    if bare.startswith("python -m interventions circuits score"):  # one benchmark and two methods, where none are named
        # (activation patching, a forward per location, took 40 of the 69 s on planted_ioi;
        # tests/test_circuits.py scores it on count_x)
        extra += [*(["--benchmarks", "count_x"] if "--benchmarks" not in argv else []),
                  *(["--methods", "activscalar,random"] if "--methods" not in argv else [])]
    if bare.startswith("python benchmarks/run.py") and "summary" in argv:
        extra = []  # it reads the committed results, times nothing
    return " ".join([text, *map(shlex.quote, extra)])


NEEDS = ("needs network", "needs a GPU", "needs a git checkout", "needs a SLURM cluster")


def expected_failure(command: Command) -> bool:
    return any(need in command.comment for need in NEEDS)


def commands_of(pages: list[str], ran: set | None = None) -> list[Command]:
    """Every command of `pages`, in order, each once (pages repeat some: `bash run.sh train`),
    leaving out those in `ran` ((kind, text) pairs another group runs)."""
    seen, out = set(ran or ()), []
    for page in pages:
        for command in extract((ROOT / page).read_text()):
            command.page = page
            if command.kind == "console" or (command.kind, command.text) not in seen:
                seen.add((command.kind, command.text))
                out.append(command)
    return out


def make_sandbox(root: Path) -> Path:
    """A copy of the checkout's user-facing files in `root`, the environment's `python` first on PATH."""
    # The sandbox shares the checkout's .venv, where run.sh reinstalls the package when the
    # venv's stamp is stale, which would point the checkout's editable install at the sandbox.
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "run.sh").read_bytes()).hexdigest()
    stamp = ROOT / ".venv" / ".installed"
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.fail("the .venv predates pyproject.toml or run.sh: run `bash run.sh setup` first (the pages' "
                    "commands would reinstall the package from their sandbox)")  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "outputs", "site"))
        else:
            shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(ROOT / ".venv")
    (root / "bin").mkdir()  # a link would not do: Python finds its venv next to the path it is called by
    (root / "bin" / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (root / "bin" / "python").chmod(0o755)
    return root


class Runner:
    """tests/pages.py's runner in `sandbox`: one interpreter for the group's commands."""

    def __init__(self, sandbox: Path):
        env = dict(os.environ, PATH=f"{sandbox / 'bin'}:{os.environ['PATH']}", WANDB_MODE="disabled",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "pages.py")], cwd=sandbox, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def __call__(self, command: Command) -> dict:
        text = tiny(command.text) if command.kind == "shell" else command.text  # a transcript runs as shown
        self.proc.stdin.write(json.dumps({"text": text, "kind": command.kind}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def check(command: Command, done: dict) -> str | None:
    """Why `command`'s result `done` is not what its page promises, or None."""
    out, err = done["out"], done["err"]
    detail = (f"{command.page} line {command.line}: {command.text}\nexit {done['code']} after {done['seconds']:.1f} s\n"
              f"stdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}")  # fmt: skip
    if "Traceback (most recent call last)" in err:
        return detail
    if command.kind == "console":  # a transcript: the shown lines are what the command prints on stderr
        shown = [line for line in err.splitlines() if line.strip()][-len(command.expected) :]
        return None if done["code"] != 0 and shown == command.expected else detail
    if expected_failure(command):  # needs network / a GPU / git / SLURM: the documented one-line error
        return None if done["code"] != 0 and re.search(r"(^|: )error: ", err, re.M) else detail
    return None if done["code"] == 0 else detail


def ran_before(group: str) -> set[tuple[str, str]]:
    """(kind, text) of the commands the groups listed before `group` run: a command printed on
    pages of two groups runs once, in the first (a page that needs its files fails visibly)."""
    earlier = list(GROUPS)[: list(GROUPS).index(group)]
    return {(c.kind, c.text) for c in commands_of([p for g in earlier for p in GROUPS[g]]) if c.kind != "console"}


def run_group(group: str, tmp_path_factory) -> None:
    """Every command of the group's pages, in order; every failure is reported."""
    sandbox = make_sandbox(tmp_path_factory.mktemp(f"clone-{group}"))
    runner = Runner(sandbox)
    failures, seconds = [], []
    try:
        for command in commands_of(GROUPS[group], ran=ran_before(group)):
            if command.text.startswith(SELF):
                continue
            done = runner(command)
            seconds.append((round(done["seconds"], 1), f"{command.page}:{command.line}"))
            if problem := check(command, done):
                failures.append(problem)
    finally:
        runner.close()
        # where the group's time goes (for keeping the suite short), beside the sandbox
        (sandbox.parent / f"seconds-{group}.json").write_text(json.dumps(sorted(seconds, reverse=True), indent=0))
    assert not failures, f"{len(failures)} commands failed:\n\n" + "\n\n".join(failures)
