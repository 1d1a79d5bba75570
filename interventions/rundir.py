"""A run's folder: when it is finished, claiming a fresh one, moving a finished one aside.

A run folder is *finished* when it holds `metrics.json`, which is written last and
atomically; it is *failed* when it holds `error.txt` (the one-line reason, then the
traceback). Nothing here ever deletes a result: a finished run that must make room is
moved into `<run>/superseded/<time>/`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import traceback
from pathlib import Path

from interventions.errors import ConfigError, InterventionsError
from interventions.io import atomic_write_text

METRICS_FILE = "metrics.json"
ERROR_FILE = "error.txt"
SUPERSEDED = "superseded"
EXPORT_FILES = ("intervention.json", "intervention.safetensors")


def timestamp() -> str:
    """Now, to the second, as recorded in the files of runs and sweeps."""
    return _dt.datetime.now().isoformat(timespec="seconds")


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / METRICS_FILE).is_file()


def export_problem(run_dir: str | Path) -> str | None:
    """Why the export of a finished run cannot be read back (its intervention.json is not
    JSON, its intervention.safetensors is missing, cut short, damaged or holds NaN), or None:
    readable, or a folder without an export. Reads with numpy, not torch (the sweep summary
    runs it on every run, and the driver of a SLURM sweep never loads torch)."""
    meta, tensors = (Path(run_dir) / name for name in EXPORT_FILES)
    if not meta.exists():
        return None
    try:
        json.loads(meta.read_text())
    except (OSError, ValueError) as error:
        return f"{meta.name} cannot be read ({type(error).__name__})"
    if not tensors.exists():
        return f"{tensors.name} is missing"
    import numpy as np  # here: the one-line errors' path imports this module
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(tensors), framework="numpy") as f:
            bad = [key for key in f.keys() if not bool(np.isfinite(f.get_tensor(key)).all())]
    except (SafetensorError, OSError, ValueError) as error:
        return f"{tensors.name} is damaged or cut short ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
    if bad:
        return f"{tensors.name} holds NaN or infinite values (in {', '.join(bad)})"
    return None


def claim_dir(path: str) -> str:
    """`path`, or `path-1`, `path-2`, ... : the first that did not exist, created here.

    Creating the folder is the claim (mkdir fails if another process made it first), so
    two runs started in the same second never share a folder. Registered as the OmegaConf
    resolver `unique_dir` (conf/train.yaml's default hydra.run.dir).
    """
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 0
    while True:
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


LATEST = Path("outputs") / "latest"


def link_latest(run_dir: str | Path, link: Path = LATEST) -> Path | None:
    """Point `outputs/latest` (relative to the working directory) at the run that just
    finished, atomically, when that run lies under `outputs/` (a run sent elsewhere leaves
    the working directory untouched); a `latest` that is not a link (a user's folder) is
    left alone. Returns the link, or None when none was made."""
    link = Path(link)
    if not Path(run_dir).resolve().is_relative_to(link.parent.resolve()):
        return None
    if link.exists() and not link.is_symlink():
        return None
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(Path(run_dir).absolute(), tmp)
    os.replace(tmp, link)
    return link


def supersede(run_dir: str | Path, keep: tuple[str, ...] = ()) -> Path:
    """Move everything in `run_dir` (but `superseded/` and the names in `keep`) into
    `run_dir/superseded/<time>/`; returns that folder."""
    run_dir = Path(run_dir)
    dest = run_dir / SUPERSEDED / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    dest.mkdir(parents=True)
    for item in run_dir.iterdir():
        if item.name == SUPERSEDED or item.name in keep:
            continue
        shutil.move(str(item), str(dest / item.name))
    return dest


def check_writable(path: str | Path, key: str) -> None:
    """Raise ConfigError (one line naming `key`) unless files can be created at `path` (a
    folder, existing or not). Probes by creating a file, so it also catches read-only file
    systems, where permission bits alone say nothing (and root passes them all)."""
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}={path}: {probe} is a file, not a folder; choose another folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        raise ConfigError(
            f"{key}={path}: cannot write in {probe} ({error.strerror or error}); choose a writable folder, "
            f"e.g. {key}=/tmp/runs/my-run"
        ) from None


def error_line(error: BaseException) -> str:
    """The first line of an error, with its type unless it is a user error."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, InterventionsError):
        return first or type(error).__name__
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def record_error(run_dir: str | Path, label: str, error: BaseException) -> str:
    """Write `run_dir/error.txt` (the one line, then the traceback); returns the line."""
    line = error_line(error)
    atomic_write_text(Path(run_dir) / ERROR_FILE, f"{label} failed: {line}\n\n" + "".join(traceback.format_exception(error)))
    return line
