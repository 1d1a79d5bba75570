"""The command lines: `main` is what train.py and evaluate.py run; `python -m interventions`
is `cli.commands`.

`main` imports nothing heavy itself: SIGINT and SIGTERM become one line and exit status 130
or 143 from its first moment, while Hydra (0.2 s) and then torch (seconds) load, not only
once a run has started (`cli.entry.run` reports a stopped run or sweep itself).
"""

from __future__ import annotations

import importlib
import sys

from interventions.errors import RunInterrupted
from interventions.interrupts import interruption, signals_raise


def main(entry: str) -> None:
    """Run entry point `entry` ("train" or "evaluate": `cli.entry.run`), with a signal that
    arrives before any run started reported as one line and its exit status."""
    with signals_raise():
        try:
            importlib.import_module("interventions.cli.entry").run(entry)  # Hydra, then torch: after the handlers
        except (RunInterrupted, Exception) as error:  # not SystemExit: `run` has said what stopped
            interrupted = interruption(error)  # also a signal whose exception an import error replaced
            if interrupted is None:
                raise
            print(f"error: interrupted by {interrupted} before any run started; nothing was written",
                  file=sys.stderr, flush=True)  # fmt: skip
            sys.exit(interrupted.exit_code)
