"""The methods installed packages register (`interventions.methods` entry points), read
from the packages' metadata once for each state of the Python path.

Reading them parses every installed distribution's metadata, about 0.2 s in an
environment with the required stack, and a command line looks them up twice (its checks,
then its run). The answer is kept until `sys.path` or one of its folders changes:
installing or removing a package adds or removes an entry in its folder, which changes the
folder's modification time, so a package installed while a notebook's kernel runs is still
found. A folder changed within the last `SETTLED_S` seconds is not trusted yet (a file
system's timestamps may tick only once a second or two, so a change just after this read
could leave the time as it was): until its folders have settled, the answer is read again
on every call. Torch-free.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time

GROUP = "interventions.methods"
SETTLED_S = 2.0  # coarser than any file system's timestamp tick
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
    if seen is not None and seen[0] == state:
        return dict(seen[1])
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}
    newest = max((mtime for _, mtime in state if mtime is not None), default=0)
    if time.time_ns() - newest > SETTLED_S * 1e9:
        _read[GROUP] = (state, found)
    else:  # a folder still changing (module docstring): no answer kept
        _read.pop(GROUP, None)
    return dict(found)
