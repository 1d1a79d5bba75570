"""The Hydra entry points' start-up and run: preflight checks, one-line errors, signals.

Exit status: 0 done; 1 a run failed (or, in a sweep, at least one run failed: the others
are complete); 2 a mistake found before any work (one line on stderr); 128 + N killed by
signal N (130 for Ctrl+C, 143 for SIGTERM), with what finished said on stderr.
"""

from __future__ import annotations

import functools
import importlib
import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from interventions.cli.preflight import entry_config, preflight
from interventions.console import configure_cli
from interventions.errors import InterventionsError, RunInterrupted
from interventions.interrupts import interruption, raise_if_signalled, signals_raise
from interventions.rundir import claim_dir, record_error, supersede
from interventions.cli.configs import store
from interventions.sweeps.jobs import is_multirun, run_dirs, run_job

# The default run folders (conf/train.yaml, conf/evaluate.yaml) are claimed when Hydra
# resolves them, so that two runs started in the same second get two folders.
OmegaConf.register_new_resolver("unique_dir", claim_dir, use_cache=True, replace=True)
log = logging.getLogger(__name__)


def say_error(text: str) -> None:
    """One line on stderr, and in the run's log once Hydra has set logging up."""
    if logging.getLogger().handlers:
        log.error(text)
    else:
        print(text, file=sys.stderr, flush=True)


def fail(error: InterventionsError) -> None:
    """A user error as one line (`say_error`), then exit with its status."""
    say_error(f"error: {error}")
    sys.exit(error.exit_code)


# What each entry point runs on its composed config. Imported only after the checks: it loads
# torch and the models (about 5 s), and a mistake on the command line is answered in 0.2 s.
TASKS = {"train": "train_run", "evaluate": "evaluate_run"}


def run(entry: str) -> None:
    """The entry point `entry` ("train" or "evaluate"): check the command line, then run its
    task (interventions.runs) on the composed config under Hydra (module doc: exit status).

    Errors found before Hydra starts (unknown keys, bad values, an output folder that is
    not writable or holds a finished run) exit with status 2 before any work. In a
    multirun a failing run is recorded and the sweep goes on; the sweep summary sets the
    exit status (`sweeps.summary.SweepSummary`).
    """
    configure_cli()
    with signals_raise():  # also set by `cli.main`; here for callers of `run` itself
        try:
            plan = preflight(sys.argv[1:], entry)
        except InterventionsError as error:
            fail(error)
        for note in plan.notes:
            print(note, file=sys.stderr, flush=True)
        for folder in plan.supersede:  # overwrite=true: before Hydra writes its files into it
            print(f"overwrite=true: moved the finished run in {folder} to {supersede(folder)}", flush=True)
        conf_dir, name = entry_config(sys.argv[1:], entry)
        store(sys.argv[1:])
        task = getattr(importlib.import_module("interventions.runs"), TASKS[entry])
        hydra_main = hydra.main(config_path=str(conf_dir), config_name=name, version_base="1.3")(report_errors(task))
        try:
            hydra_main()
            raise_if_signalled()  # a signal whose exception was lost: the sweep stopped where it could
        except BaseException as error:  # Hydra exits with status 1 for an error that replaced a signal's
            interrupted = interruption(error)
            if interrupted is None:
                raise
            report_interrupt(interrupted)
            sys.exit(interrupted.exit_code)


def _is_multirun_argv() -> bool:
    return "-m" in sys.argv or "--multirun" in sys.argv


def _hydra_sweep_dir() -> Path | None:
    return Path(str(HydraConfig.get().sweep.dir)) if HydraConfig.initialized() else None


def report_interrupt(interrupted: RunInterrupted) -> None:
    """Say what a signal stopped and what finished (a sweep: its summary is written too)."""
    for s in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl+C must not cut this short
        signal.signal(s, signal.SIG_IGN)
    if not _is_multirun_argv():
        where = getattr(interrupted, "run_dir", None)
        say_error(f"error: interrupted by {interrupted} before the run finished; nothing was written as finished "
                  f"(no metrics.json, no export){f' in {where}' if where else ''}")  # fmt: skip
        return
    from interventions.sweeps.summary import summarize_sweep  # here: it loads torch, which a typo must not wait for

    sweep_dir = getattr(interrupted, "sweep_dir", None) or _hydra_sweep_dir()
    if sweep_dir is None or not Path(sweep_dir).is_dir() or not run_dirs(Path(sweep_dir)):
        say_error(f"error: the sweep was interrupted by {interrupted} before any run started")
        return
    try:
        summary = summarize_sweep(sweep_dir, verbose=False)
    except Exception as error:  # the runs' own files are complete either way
        say_error(f"error: the sweep was interrupted by {interrupted}; its summary failed too ({error}); "
                  f"rebuild it with `python evaluate.py sweep={sweep_dir}`")  # fmt: skip
        return
    finished = [r["run"] for r in summary["runs"] if r["status"] == "finished"]
    say_error(f"error: the sweep was interrupted by {interrupted}: {len(finished)} of {summary['counts']['runs']} "
              f"started runs finished ({', '.join(finished) or 'none'}), written to {Path(sweep_dir) / 'pareto.json'}; "
              f"relaunch the same command with hydra.sweep.dir={sweep_dir} to run the rest (finished runs are skipped)")  # fmt: skip


def report_errors(fn):
    """Wrap a Hydra task function: an InterventionsError becomes one line and its exit status.

    A failing single run leaves `error.txt` (the line, then the traceback) in its folder,
    which is never marked finished. In a multirun, every job goes through
    `interventions.sweeps.jobs.run_job` instead: a run that already finished with the same config
    is skipped, and any exception of one run is recorded without stopping the sweep.
    """
    @functools.wraps(fn)
    def wrapper(cfg):
        if is_multirun():
            return run_job(fn, cfg)
        run_dir = Path(cfg.run_dir) if "run_dir" in cfg else None
        try:
            return fn(cfg)
        except BaseException as error:
            interrupted = interruption(error)  # also a signal whose exception another replaced
            if interrupted is not None:
                interrupted.run_dir = run_dir
                raise interrupted
            if not isinstance(error, Exception):
                raise
            if run_dir is not None and run_dir.is_dir():
                record_error(run_dir, "the run", error)
            if isinstance(error, InterventionsError):
                fail(error)
            raise  # a bug, not a user error: keep the traceback

    return wrapper
