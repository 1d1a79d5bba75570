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
    A user error inside a run is printed as one line (exit 2). In a multirun a failing run
    is recorded and the sweep goes on; the process exits with status 1 at the end if any
    run of the sweep failed (after the sweep summary is written).
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
    from interventions import sweep

    summary = sweep.LAST_SUMMARY  # set when a multirun's summary was written in this process
    if summary is not None and _is_multirun_argv() and summary["counts"]["failed"]:
        counts = summary["counts"]
        print(f"error: {counts['failed']} of {counts['runs']} runs failed (the others are complete); "
              f"see {summary['sweep_dir']}/pareto.json and each failed run's error.txt", file=sys.stderr)  # fmt: skip
        sys.exit(1)


def _is_multirun_argv() -> bool:
    return "-m" in sys.argv or "--multirun" in sys.argv


def report_errors(fn):
    """Wrap a Hydra task function: an InterventionsError becomes one line and exit 2.

    In a multirun, every job goes through `interventions.sweep.run_job` instead: a run that
    already finished with the same config is skipped, and any exception of one run is
    recorded (one line on stderr, the traceback in its error.txt) without stopping the sweep.
    """
    import functools

    @functools.wraps(fn)
    def wrapper(cfg):
        from interventions import sweep

        if sweep.is_multirun():
            return sweep.run_job(fn, cfg)
        try:
            return fn(cfg)
        except InterventionsError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
