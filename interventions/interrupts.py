"""SIGINT and SIGTERM as an exception, and the moments when they must wait.

An entry point turns both signals into `RunInterrupted` (`signals_raise`), so a killed run
or sweep unwinds through its `finally` blocks, is recorded as interrupted and exits with
128 + the signal's number, the shell's convention. (Lightning would otherwise turn SIGTERM
into a clean exit with status 0, and Ctrl+C into `sys.exit(1)` without a word about what
finished.) While the files of a finished run are written (`deferred`), both signals wait,
so a run is either finished or has no export at all.

Python runs a signal's handler wherever the main thread is, and where that is a destructor
or a weak reference's callback (the garbage collector's work), it prints the exception
("Exception ignored in ...") and goes on: a SIGTERM was lost that way and its sweep ran to
the end with status 0. So a signal is also recorded, and `raise_if_signalled` raises it
again where a run or a sweep may stop: each training step, each sweep job's start, the
block's end.

Its exception may also be replaced on the way up: by an error in a `finally` block that
the signal cut short (a sweep was killed while OmegaConf built a job's config, whose
cleanup then failed with AttributeError), or by Hydra, which prints any exception of a
run and exits with status 1. `interruption` finds the signal behind such an exception, so
that a stopped run still reports as stopped and exits with 128 + the signal's number.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

from interventions.errors import RunInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals `_raise` was called for within `signals_raise`'s block


def _raise(signum, frame) -> None:
    _received.append(signum)
    raise RunInterrupted(signum)


def raise_if_signalled() -> None:
    """RunInterrupted if a signal arrived within `signals_raise`'s block (its exception may
    have been lost, module docstring); nothing otherwise. Costs a list's truth test."""
    if _received:
        raise RunInterrupted(_received[0])


def interruption(error: BaseException) -> RunInterrupted | None:
    """The signal behind `error`, an exception leaving a `signals_raise` block: `error`
    itself if it is RunInterrupted; a new RunInterrupted (caused by `error`) if a signal
    arrived in the block and another exception replaced its own (module docstring); None
    if no signal arrived."""
    if isinstance(error, RunInterrupted):
        return error
    if not _received:
        return None
    interrupted = RunInterrupted(_received[0])
    interrupted.__cause__ = error
    return interrupted


@contextmanager
def signal_first(**where):
    """Within the block, an exception leaving it while a signal is on record (its own, or
    one that replaced it: `interruption`) leaves as that RunInterrupted, with the attributes
    `where` set where it has none (`sweep_dir`: what the entry point summarises). A sweeper
    uses it so that Hydra, which prints any Exception with its traceback and exits 1, sees
    the RunInterrupted instead."""
    try:
        yield
    except BaseException as error:
        interrupted = interruption(error)
        if interrupted is None:
            raise
        for name, value in where.items():
            if getattr(interrupted, name, None) is None:
                setattr(interrupted, name, value)
        raise interrupted


@contextmanager
def signals_raise():
    """Within the block, SIGINT and SIGTERM raise RunInterrupted (main thread only), also at
    the block's end for a signal whose exception was lost or replaced by another."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    nested = handled()  # within an outer block (`cli.main`, then `cli.entry.run`): its record is kept
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    if not nested:
        _received.clear()
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
        raise_if_signalled()
    except Exception as error:  # not SystemExit: an exit status chosen on purpose stays
        raise interruption(error) or error
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if not nested:
            _received.clear()


def handled() -> bool:
    """Whether SIGINT is already turned into RunInterrupted (by an entry point)."""
    return signal.getsignal(signal.SIGINT) is _raise


@contextmanager
def deferred():
    """Within the block, SIGINT and SIGTERM wait; the first that arrived is handled, as it
    would have been, when the block ends. (Python runs signal handlers in the main thread
    whichever thread the signal reached, so holding them here works with threads running;
    blocking them with a thread's signal mask would not.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            _deliver(pending[0], previous[pending[0]])


def _deliver(signum: int, handler) -> None:
    """Act on a held signal as `handler` (a signal module handler value) would have."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action (the handler is restored)
