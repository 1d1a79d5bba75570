"""Writing files so that a reader never sees half of one, and every JSON is strict JSON.

Every file the project writes goes through here: a temporary file in the same folder,
then an atomic rename, so a run killed mid-write leaves the previous file or none.

JSON is strict (RFC 8259): NaN and ±Infinity are not JSON, and strict readers (Node's
`JSON.parse`, `jq`, Go) reject Python's bare `NaN`. A missing or non-finite number is
written as `null`. Values JSON does not know (paths, tuples, numpy and torch scalars) are
written as their plain equivalents.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from pathlib import Path


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; match ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def strict(value):
    """`value` with every non-finite number replaced by None, containers made plain dicts
    and lists and numpy / torch scalars and arrays plain numbers, so that
    `json.dumps(..., allow_nan=False)` accepts it."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if callable(getattr(value, "tolist", None)):  # numpy arrays, torch tensors
        return strict(value.tolist())
    return str(value)  # paths and anything else: their text


def dumps(data, indent: int | None = 2) -> str:
    """Strict JSON text of `data` (see `strict`)."""
    return json.dumps(strict(data), indent=indent, allow_nan=False)


def write_json(path: str | Path, data) -> None:
    """Write `data` as strict JSON (non-finite numbers as null), atomically."""
    atomic_write_text(path, dumps(data) + "\n")


def read_json(path: str | Path):
    """The parsed JSON of `path`, or None if it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (PNG by the path's suffix) and close it."""
    import matplotlib.pyplot as plt  # here, not on top: io is on the path of one-line errors, before heavy imports

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
