"""The commands and code blocks of the README and of every docs page, extracted, and a runner
that executes them.

`tests/docs_harness.py` runs every one of them verbatim in a sandbox copy of the checkout (the
README's `bash run.sh test` aside: that is the suite itself). What counts as a command:

- each line of a ```bash block (comments stripped, `\\` continuations joined);
- each `$ `-line of a ```console block, whose following lines are its expected output
  (compared with the command's stderr, line by line);
- each ```python block, as one script;
- each inline `python ...` / `bash ...` span in the prose.

Tiny sizes: the test appends overrides (`TINY`) to commands that would train for minutes;
the docs say so. A command whose comment says `needs network`, `needs a GPU` or `needs a git
checkout` must fail here with the documented one-line error, not a traceback.

Running the Hydra entry points in fresh interpreters costs about 5 s of imports each, so the
runner (`python tests/pages.py`, fed JSON commands on stdin) executes `python X.py ...` and
`python -m module ...` in one interpreter, each with its own sys.argv (and the environment
of any `VAR=value` words before it, such as `OMP_NUM_THREADS=1`, whose torch threads are
set as a fresh process would start with them), as `runpy` would run them from a shell, and
each ```python block there too, as a script; anything else (bash, pipes) runs in a real shell.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Command:
    """One thing a page tells a user to run."""

    text: str  # as printed on the page (one line; continuations joined)
    kind: str  # "shell" (a bash line or inline span), "console" (with expected output), "python" (a script)
    line: int  # line number on its page, for messages
    expected: list[str] = field(default_factory=list)  # console: the output lines shown after it
    comment: str = ""  # the page's comment on it (e.g. "needs network")
    page: str = ""  # the page it is on, relative to the checkout (README.md, docs/train.md)


FENCE = re.compile(r"^```(\w*)\s*$")


def _strip_comment(line: str) -> tuple[str, str]:
    """(command, comment) of a shell line: the comment starts at a `#` outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def _shell_lines(lines: list[str], start: int) -> list[Command]:
    out, pending, first = [], "", start
    for offset, raw in enumerate(lines):
        text, comment = _strip_comment(raw)
        if not pending:
            first = start + offset
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text = (pending + text).strip()
        pending = ""
        if text:
            out.append(Command(text, "shell", first, comment=comment))
    return out


def _console(lines: list[str], start: int) -> list[Command]:
    out: list[Command] = []
    for offset, raw in enumerate(lines):
        if raw.startswith("$ "):
            text, comment = _strip_comment(raw[2:])
            out.append(Command(text, "console", start + offset, comment=comment))
        elif out and raw.strip():
            out[-1].expected.append(raw.rstrip())
    return out


INLINE = re.compile(r"`((?:python|bash) [^`]+)`")


def extract(markdown: str) -> list[Command]:
    """Every command and script of a Markdown text, in order."""
    commands: list[Command] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            prose = [lines[i]]
            while i + 1 < len(lines) and lines[i + 1].strip() and not FENCE.match(lines[i + 1]):
                i += 1
                prose.append(lines[i])
            start = i - len(prose) + 2
            text = " ".join(p.strip() for p in prose)
            commands += [Command(" ".join(m.group(1).split()), "shell", start) for m in INLINE.finditer(text)]
            i += 1
            continue
        language, body = match.group(1), []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        start = i - len(body) + 1
        if language in ("bash", "sh"):
            commands += _shell_lines(body, start)
        elif language == "console":
            commands += _console(body, start)
        elif language == "python":
            commands.append(Command("\n".join(body), "python", start))
        i += 1
    return commands


# -- the runner ------------------------------------------------------------------------------


def _in_process(argv: list[str]) -> tuple[int, str, str]:
    """Run `python X.py args` or `python -m module args` in this interpreter: (status, out, err)."""
    from hydra.core.global_hydra import GlobalHydra

    out, err = io.StringIO(), io.StringIO()
    code = 0
    saved_argv = sys.argv
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else int(os.environ.get("OMP_NUM_THREADS", "0")) or None
    if torch is not None and os.environ.get("OMP_NUM_THREADS", "").isdigit():  # what a fresh process would start with
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if argv[1] == "-m":
                    sys.argv = [argv[2], *argv[3:]]
                    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = argv[1:]
                    runpy.run_path(argv[1], run_name="__main__")
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
            except BaseException:  # noqa: BLE001 — a traceback is a failure to report
                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
        # a fresh process starts with the default threads; a command that set its own (the
        # benchmarks' --threads 2) would otherwise leave them to every later command, whose
        # OpenMP threads then spin against the other test worker's
        if threads is not None and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        root = logging.getLogger()  # as a fresh process would start: no handlers from this run
        for handler in list(root.handlers):
            handler.close()
            root.removeHandler(handler)
    return code, out.getvalue(), err.getvalue()


SHELL_SYNTAX = re.compile(r"[|&;<>()$`]|\bfor\b|\bdo\b")
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")  # a quoted word's parentheses are its text, not the shell's


ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")  # VAR=value before a command: its environment


def plain_python(text: str) -> tuple[dict[str, str], list[str]] | None:
    """({VAR: value} of the words before it, argv) of a plain `python ...` line, which runs in
    this interpreter; None for a line a shell must run (another program, a pipe, a redirection,
    a subshell, a loop). Quoted text is a word's own: `'x="uniform(0,1)"'` is no subshell."""
    argv = shlex.split(text)
    assigned = {}
    while argv and ASSIGNMENT.match(argv[0]):
        name, value = argv.pop(0).split("=", 1)
        assigned[name] = value
    if argv and argv[0] == "python" and not SHELL_SYNTAX.search(QUOTED.sub("", text)):
        return assigned, argv
    return None


def run(text: str, python: str) -> tuple[int, str, str]:
    """Run one command line: in this interpreter when it is a plain `python ...` (after any
    `VAR=value` words, set in the environment for it, as a shell would), else in bash."""
    if (plain := plain_python(text)) is not None:
        assigned, argv = plain
        with environment({**os.environ, **assigned}, os.getcwd()):
            return _in_process([python, *argv[1:]])
    done = subprocess.run(["bash", "-c", text], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


@contextlib.contextmanager
def environment(env: dict[str, str], cwd: str):
    """os.environ replaced by `env` and the working directory set to `cwd` for the block."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def main() -> None:
    """Read {"text": ..., "kind": ...} lines on stdin; answer one JSON line each on stdout.
    Kind "argv" ({"argv": [...], "env": {...}, "cwd": ...}: tests/conftest.py's `run_cli`)
    runs `python <argv>` here with that environment and working directory."""
    python = sys.executable
    sys.path.insert(0, os.getcwd())  # the copy's package, not the installed checkout's
    # replies on a private copy of stdout; the descriptors 1 and 2 that child processes
    # (e.g. a launcher's workers) inherit go to /dev/null, so nothing else reaches the channel
    real_stdout = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        if request["kind"] == "argv":
            with environment(request["env"], request["cwd"]):
                code, out, err = _in_process([python, *request["argv"]])
        elif request["kind"] == "python":  # a script: in this interpreter too, as `python script.py` would run it
            with tempfile.TemporaryDirectory() as folder:
                script = Path(folder) / "block.py"
                script.write_text(request["text"])
                code, out, err = _in_process([python, str(script)])
        else:
            code, out, err = run(request["text"], python)
        seconds = time.perf_counter() - start  # reported with a failure; never asserted
        real_stdout.write(json.dumps({"code": code, "out": out, "err": err, "seconds": seconds}) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    main()
