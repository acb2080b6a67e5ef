"""Atomic writes: the ledger, eval.json and the adapter are rewritten on machines that get killed."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Temp file beside `path`, fsync, os.replace: a write cut off half-way leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem allows opening a directory
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def replace_dir(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`write(folder)` into a folder beside `path`, then swap it in: a kill during the write (a
    preemption while an 8B adapter is saved) leaves the previous `path` whole, not half of each.
    The swap is two renames; only between them is `path` briefly absent, its old copy beside it."""
    path = Path(path)
    partial, old = path.with_name(f".{path.name}.partial"), path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():  # killed between the two renames: the old copy is the whole one
        os.replace(old, path)
    for leftover in (partial, old):  # a kill during an earlier save
        shutil.rmtree(leftover, ignore_errors=True)
    write(partial)
    if path.exists():
        os.replace(path, old)
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def sha256(path: str | os.PathLike) -> str | None:
    """The file's digest, or None where there is no file: pins local weights, for which a Hub
    revision means nothing."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


ERROR_LOG = "error.log"


def append_traceback(folder: str | os.PathLike, exc: BaseException, header: str) -> str:
    """Appends `exc`'s traceback to the folder's error.log (an earlier failure's is never overwritten)
    and says where it went: the terminal gets one line, whoever debugs it gets the whole story."""
    import traceback

    log = Path(folder) / ERROR_LOG
    try:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"--- {header}\n" + "".join(traceback.format_exception(exc)))
    except OSError as err:
        return f"the traceback could not be saved ({err.strerror or type(err).__name__})"
    return f"the traceback is in {log}"

