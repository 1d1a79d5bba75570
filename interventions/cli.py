"""Shared start-up of the Hydra entry points: preflight checks and one-line errors."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from interventions.errors import InterventionsError


def quiet_libraries() -> None:
    """Keep the console to progress bars, the summary and real warnings."""
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed", "transformer_lens"):  # fmt: skip
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # inside Lightning, not ours


def run(main, config_name: str) -> None:
    """Validate the command line, then run the Hydra `main`; user errors print one line.

    Errors found before Hydra starts (unknown keys, bad values) exit with status 2.
    A user error inside a run is printed as one line; in a multirun it is re-raised so
    that Hydra's job handling records it.
    """
    from interventions.config import export_alias, preflight

    quiet_libraries()
    try:
        preflight(sys.argv[1:], config_name)
    except InterventionsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if config_name == "evaluate":
        sys.argv[1:] = export_alias(sys.argv[1:])
    main()


def report_errors(fn):
    """Wrap a Hydra task function: an InterventionsError becomes one line and exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(cfg):
        try:
            return fn(cfg)
        except InterventionsError as error:
            print(f"error: {error}", file=sys.stderr)
            if "-m" in sys.argv or "--multirun" in sys.argv:
                raise
            sys.exit(2)

    return wrapper
