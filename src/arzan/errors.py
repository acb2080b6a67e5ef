"""One error type for everything a user can fix.

The CLI prints an ArzanError as one line and exits 2; anything else is a bug and keeps its
traceback. Messages name the file, field or row at fault and what would be accepted.
"""


class ArzanError(Exception):
    """A user-fixable problem: bad recipe, missing file, unknown GPU, refused overwrite."""


def first_line(exc: BaseException) -> str:
    """A library's error for a one-line message: its first line, or its type when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
