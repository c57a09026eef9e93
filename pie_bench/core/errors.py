"""Errors the harness reports as one line naming the thing at fault and the fix."""


class HarnessError(Exception):
    """A user-facing error: the CLI prints its message alone, on one line, and exits 2."""


class DataError(HarnessError):
    """A dataset, annotation or image problem."""


class ConfigError(HarnessError):
    """An unknown editor/metric/category, or a bad --editor-arg."""


class ResultsError(HarnessError):
    """A results folder that cannot be written or resumed."""
