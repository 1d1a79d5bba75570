"""Every command and code block of the README runs as printed, in a copy of the checkout
(issue 19). How commands are found and run: tests/readme.py.

Commands that would train for minutes get tiny sizes appended (`tiny`); the README says
so. `bash run.sh test` is this suite itself and is not run again here.
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

from readme import Command, extract

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COPIED = ("train.py", "evaluate.py", "run.sh", "pyproject.toml", "README.md", "conf", "benchmarks", "docs", "interventions",
          "hydra_plugins")

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
    "python benchmarks/run.py": ["--quick"],
    "python -m interventions circuits score": ["--quick", "--benchmarks", "count_x"],
    "python -m interventions circuits front": ["--quick", "--lambda-f", "0", "--lambda-m", "0,0.1"],
}  # fmt: skip
SELF = ("bash run.sh test",)  # this suite


def tiny(text: str) -> str:
    """`text` with the tiny sizes of its kind appended (none for fast commands)."""
    extra = next((list(v) for k, v in TINY.items() if text.startswith(k)), [])
    argv = shlex.split(text)
    if "-m" in argv and any(a.startswith("experiment=") for a in argv):
        extra += ONE_POINT
    if "hydra/sweeper=pareto" in argv:
        extra += ["hydra.sweeper.n_trials=2"]  # an adaptive sweep: two trials, not the default 32
    if text.startswith("python benchmarks/run.py") and "summary" in argv:
        extra = []  # it reads the committed results, times nothing
    return " ".join([text, *map(shlex.quote, extra)])


def expected_failure(command: Command) -> bool:
    return any(need in command.comment for need in ("needs network", "needs a GPU", "needs a git checkout"))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A copy of the checkout's user-facing files, the environment's `python` first on PATH."""
    # The sandbox shares the checkout's .venv, where run.sh reinstalls the package when the
    # venv's stamp is stale, which would point the checkout's editable install at the sandbox.
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "run.sh").read_bytes()).hexdigest()
    stamp = ROOT / ".venv" / ".installed"
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.fail("the .venv predates pyproject.toml or run.sh: run `bash run.sh setup` first (the README's "
                    "commands would reinstall the package from their sandbox)")  # fmt: skip
    root = tmp_path_factory.mktemp("clone")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "outputs"))
        else:
            shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(ROOT / ".venv")
    (root / "bin").mkdir()  # a link would not do: Python finds its venv next to the path it is called by
    (root / "bin" / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (root / "bin" / "python").chmod(0o755)
    return root


@pytest.fixture(scope="module")
def runner(sandbox):
    env = dict(os.environ, PATH=f"{sandbox / 'bin'}:{os.environ['PATH']}", WANDB_MODE="disabled",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "readme.py")], cwd=sandbox, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def run(command: Command) -> dict:
        text = tiny(command.text) if command.kind == "shell" else command.text  # a transcript runs as shown
        proc.stdin.write(json.dumps({"text": text, "kind": command.kind}) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    yield run
    proc.stdin.close()
    proc.wait(timeout=60)


def distinct(commands: list[Command]) -> list[Command]:
    """Each command once: the README repeats some in its prose (`bash run.sh train`)."""
    seen, out = set(), []
    for command in commands:
        if command.kind == "console" or (command.kind, command.text) not in seen:
            seen.add((command.kind, command.text))
            out.append(command)
    return out


COMMANDS = distinct(extract(README.read_text()))


def _id(command: Command) -> str:
    first = command.text.splitlines()[0] if command.kind != "python" else "python block"
    return f"L{command.line}: {first[:60]}"


def test_the_readme_has_commands_of_every_kind():
    kinds = {c.kind for c in COMMANDS}
    assert kinds == {"shell", "console", "python"}, kinds
    assert not [c.text for c in COMMANDS if c.kind != "python" and re.search(r"<[a-z][^>]*>|\bDIR\b", c.text)], (
        "placeholders cannot run as printed"
    )


def test_tiny_appends_sizes_and_narrows_sweep_presets():
    assert tiny("python train.py task=ioi") == "python train.py task=ioi " + " ".join(TRAIN)
    narrowed = shlex.split(tiny("python train.py -m experiment=paper_grid"))
    assert "objective.margin=0" in narrowed and "trainer.max_epochs=1" in narrowed
    assert tiny("python benchmarks/run.py summary") == "python benchmarks/run.py summary"
    assert tiny("python -m interventions toyworld report") == "python -m interventions toyworld report"


def check(command: Command, done: dict) -> str | None:
    """Why `command`'s result `done` is not what the README promises, or None."""
    out, err = done["out"], done["err"]
    detail = f"README line {command.line}: {command.text}\nexit {done['code']}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}"
    if "Traceback (most recent call last)" in err:
        return detail
    if command.kind == "console":  # a transcript: the shown lines are what the command prints on stderr
        shown = [line for line in err.splitlines() if line.strip()][-len(command.expected) :]
        return None if done["code"] != 0 and shown == command.expected else detail
    if expected_failure(command):  # needs network / a GPU / git: the documented one-line error, no traceback
        return None if done["code"] != 0 and re.search(r"(^|: )error: ", err, re.M) else detail
    return None if done["code"] == 0 else detail


@pytest.mark.slow
def test_every_readme_command_runs_as_printed(runner):
    """In the README's order (later commands use earlier ones' files); every failure is reported."""
    failures = [problem for command in COMMANDS if not command.text.startswith(SELF)
                if (problem := check(command, runner(command)))]  # fmt: skip
    assert not failures, f"{len(failures)} README commands failed:\n\n" + "\n\n".join(failures)


def test_readme_links_resolve_inside_the_repository():
    """Relative links of the README and docs/ point at files of the repository (a clone has
    nothing outside it)."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (page.parent / target).resolve()
            if not resolved.exists() or ROOT.resolve() not in resolved.parents:
                broken.append(f"{page.name}: {target}")
    assert broken == []


def _anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives a markdown page: lower case, punctuation dropped,
    spaces as hyphens, a repeated one numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+\s+(.*?)\s*$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_links_to_a_heading_name_one_that_exists():
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target, fragment in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            linked = (page.parent / target).resolve() if target else page
            if linked.suffix == ".md" and linked.exists() and fragment not in _anchors(linked):
                broken.append(f"{page.name}: {target}#{fragment}")
    assert broken == []

