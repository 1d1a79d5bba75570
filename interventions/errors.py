"""User-facing errors: each carries one line that says what is wrong and how to fix it.

Entry points catch `InterventionsError`, print its message as one line and exit with
status 2, without a traceback; library users get an ordinary exception.
"""


class InterventionsError(Exception):
    """A user mistake, reported as one actionable line."""


class ConfigError(InterventionsError, ValueError):
    """An unknown or invalid configuration key or value."""


class ModelError(InterventionsError):
    """A model that cannot be loaded, or that does not match an export."""


class TaskError(InterventionsError, ValueError):
    """A dataset that cannot be used: bad answers, lengths, files."""


class ExportError(InterventionsError):
    """An exported intervention that cannot be read or applied."""
