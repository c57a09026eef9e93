"""Errors the harness reports as one line naming the thing at fault and the fix."""


class HarnessError(Exception):
    """A user-facing error: the CLI prints its message alone, on one line, and exits 2."""


class DataError(HarnessError):
    """A dataset, annotation or image problem."""


class ConfigError(HarnessError):
    """An unknown editor/metric/category, or a bad --editor-arg."""


class ResultsError(HarnessError):
    """A results folder that cannot be written or resumed."""


def shown(value) -> str:
    """Untrusted text (a sample id, a path from a data file) as an error message may show it: as is when
    printable, else escaped, so a newline or a terminal escape in a data file cannot break the one-line
    error or drive the terminal."""
    text = str(value)
    return text if text.isprintable() and text.strip() == text and text else ascii(text)
