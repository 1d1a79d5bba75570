"""A model named by its Hugging Face hub id: is it in the local cache, can the hub be reached?

Without network, transformers retries every request five times with back-off and prints each
retry twice: about 25 s and 20 lines before `python train.py model=gpt2` failed (issue 28).
Asked first, in a fraction of a second and without torch: a model that is neither cached nor
reachable is one line at once; a cached model with the hub out of reach loads offline
(HF_HUB_OFFLINE), without the retries.
"""

from __future__ import annotations

import os
from pathlib import Path

from interventions.reach import unreachable

HUB = "https://huggingface.co"
TRUE = ("1", "ON", "YES", "TRUE")


def is_hub_name(name: str) -> bool:
    """Whether `name` means a hub id: not a path (absolute, relative or ~), not a folder here."""
    return not str(name).startswith(("/", "./", "../", "~")) and not Path(str(name)).expanduser().exists()


def cache_dir() -> Path:
    """The hub cache huggingface_hub uses: HF_HUB_CACHE, HF_HOME/hub, or ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def is_cached(name: str) -> bool:
    """Whether a snapshot of model `name` with its config.json is in the local hub cache."""
    snapshots = cache_dir() / f"models--{name.replace('/', '--')}" / "snapshots"
    return any(snapshots.glob("*/config.json"))


def offline() -> bool:
    return any(os.environ.get(key, "").upper() in TRUE for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_problem(name: str) -> str | None:
    """Why hub model `name` cannot be loaded here, or None. A cached model with the hub out of
    reach is fine: HF_HUB_OFFLINE is set for this process (read when huggingface_hub is
    imported: call this before)."""
    if is_cached(name):
        if not offline() and unreachable(os.environ.get("HF_ENDPOINT") or HUB):
            os.environ["HF_HUB_OFFLINE"] = "1"
        return None
    if offline():
        return f"{name!r} is not in the local Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE is set"
    reason = unreachable(os.environ.get("HF_ENDPOINT") or HUB)
    if reason:
        return f"{name!r} is not in the local Hugging Face cache ({cache_dir()}) and the hub is out of reach ({reason})"
    return None


def download_hint(name: str) -> str:
    return (f"download it where there is network with `huggingface-cli download {name} --local-dir DIR` and pass "
            "model.name=DIR")  # fmt: skip
