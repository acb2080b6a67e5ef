"""One error type for everything a user can fix.

The CLI prints an ArzanError as one line and exits 2; anything else is a bug and keeps its
traceback. Messages name the file, field or row at fault and what would be accepted.

One exception to "anything else": a library's failure once paid work has begun (a CUDA out of
memory mid-training or mid-eval) is not input to fix in the recipe line by line, nor a bug to read a
traceback for. It becomes a `Failed` (exit 1): one line saying what was kept and billed, with the
traceback saved in the run folder's error.log for whoever debugs it.
"""


class ArzanError(Exception):
    """A user-fixable problem: bad recipe, missing file, unknown GPU, refused overwrite."""

    exit_code = 2


class Failed(ArzanError):
    """Paid work that broke part-way: its time is in the ledger, its message says what is kept."""

    exit_code = 1


def out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or the RuntimeError other code paths raise with the same words."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return "outofmemory" in text or "out of memory" in text


def first_line(exc: BaseException) -> str:
    """A library's error for a one-line message: its first line, or its type when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def described(exc: BaseException) -> str:
    """A library's error with its kind, in one line ('OutOfMemoryError: CUDA out of memory ...')."""
    return f"{type(exc).__name__}: {first_line(exc)}"


def yaml_problem(exc: BaseException) -> str:
    """PyYAML's complaint in one line, with where it is ('line 3, column 8: mapping values are not
    allowed here'): its own message spans three lines and a caret."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(exc, "problem", None) or first_line(exc))

