"""The methods installed packages register (`interventions.methods` entry points), read
from the packages' metadata once for each state of the Python path.

Reading them parses every installed distribution's metadata, about 0.2 s in an
environment with the required stack, and a command line looks them up twice (its checks,
then its run). The answer is kept until `sys.path` or one of its folders changes:
installing or removing a package adds or removes an entry in its folder, which changes the
folder's modification time, so a package installed while a notebook's kernel runs is still
found. Torch-free.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

GROUP = "interventions.methods"
_read: dict[str, tuple] = {}  # GROUP -> (the path's state when read, {name: entry point})


def _path_state() -> tuple:
    """Each folder of sys.path (absolute: "" is the working directory) with its modification time."""
    state = []
    for entry in sys.path:
        folder = os.path.abspath(entry or ".")
        try:
            state.append((folder, os.stat(folder).st_mtime_ns))
        except OSError:  # not there (yet): a folder created later changes the state
            state.append((folder, None))
    return tuple(state)


def method_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed packages' methods by name (metadata only: nothing is imported)."""
    state = _path_state()
    seen = _read.get(GROUP)
    if seen is None or seen[0] != state:
        seen = _read[GROUP] = (state, {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)})
    return dict(seen[1])
