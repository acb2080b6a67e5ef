"""One error type for everything a user can fix.

The CLI prints an ArzanError as one line and exits 2; anything else is a bug and keeps its
traceback. Messages name the file, field or row at fault and what would be accepted.
"""


class ArzanError(Exception):
    """A user-fixable problem: bad recipe, missing file, unknown GPU, refused overwrite."""
