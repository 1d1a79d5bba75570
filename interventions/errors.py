"""User-facing errors: each carries one line that says what is wrong and how to fix it.

Entry points catch `InterventionsError`, print its message as one line and exit with its
`exit_code` (2: a mistake found before any work; 1: a run that failed), without a
traceback; library users get an ordinary exception.
"""

import signal


class InterventionsError(Exception):
    """A user mistake, reported as one actionable line."""

    exit_code = 2


class ConfigError(InterventionsError, ValueError):
    """An unknown or invalid configuration key or value."""


class ModelError(InterventionsError):
    """A model that cannot be loaded, or that does not match an export."""


class TaskError(InterventionsError, ValueError):
    """A dataset that cannot be used: bad answers, lengths, files."""


class CancellingObservableError(TaskError):
    """A task whose answer pairs cancel out on average: its mean observable is about zero."""


class ContextError(TaskError):
    """A prompt that, with the tokens to generate or to feed back, is longer than the
    model's context of `n_ctx` tokens (`got` tokens)."""

    def __init__(self, message: str, n_ctx: int, got: int):
        super().__init__(message)
        self.n_ctx, self.got = n_ctx, got


class EmptySplitError(TaskError):
    """A split of a task that holds no data points (optional for `val`)."""


class ExportError(InterventionsError):
    """An exported intervention that cannot be read or applied."""


class LengthError(ExportError):
    """A position-tied intervention applied to prompts of another token length."""

    def __init__(self, message: str, trained: int, got: int):
        super().__init__(message)
        self.trained, self.got = trained, got


class NonFiniteError(InterventionsError):
    """A run whose loss, parameters, activations or metrics turned non-finite: it failed
    (never written as finished). `step` is the training step (1-based) where it was
    caught, None outside training."""

    exit_code = 1

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run (or sweep) stops, and nothing is written as
    finished. A BaseException, like KeyboardInterrupt, so that no `except Exception`
    in a library swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal
