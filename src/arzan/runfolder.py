"""The run folder: the contract between train, eval and report, and the thing a user paid for.

Nothing in an existing run folder is ever deleted: `--overwrite` moves the old folder aside
(`<name>.replaced-<time>`) instead, because a checkpoint someone paid for is worth its disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from arzan.errors import ArzanError


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def ledger(self) -> Path:
        return self.root / "cost.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint; a half-written one (no trainer_state.json) is skipped."""
        if not self.checkpoints.is_dir():
            return None
        done = [p for p in self.checkpoints.glob("checkpoint-*")
                if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def recipe_model(run: Path | None) -> dict:
    """The `model:` section of a run folder's recipe.yaml: the base as it was trained on (name,
    revision, 4-bit, dtype, trust_remote_code), for eval, merge and inference to load it alike. An
    adapter without its run folder, or an unreadable recipe, says nothing."""
    return recipe_section(run, "model")


def recipe_section(run: Path | None, section: str) -> dict:
    """One section of a run folder's recipe.yaml as written, {} where there is none to read."""
    import yaml

    if run is None:
        return {}
    try:
        found = (yaml.safe_load((Path(run) / "recipe.yaml").read_text(encoding="utf-8")) or {}).get(section) or {}
    except (OSError, ValueError, yaml.YAMLError, AttributeError):  # ValueError: not UTF-8 text
        return {}
    return found if isinstance(found, dict) else {}


def unique_folders(paths: list) -> list:
    """The same run named twice (`runs/a runs/a/`, two spellings, or a folder and its eval.json) is
    one run, not two rows drawn over each other; the first spelling is kept."""
    seen, out = set(), []
    for p in paths:
        path = Path(p).expanduser()
        key = (path.parent if path.name == "eval.json" and path.is_file() else path).resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def is_run_folder(path: Path) -> bool:
    return (path / "recipe.yaml").is_file() and (path / "cost.json").is_file()


def ledger_doc(path: Path) -> dict:
    """The folder's cost.json as a plain dict, {} when absent or unreadable: for messages about a
    folder, which must not fail on a ledger that read_ledger would refuse."""
    import json

    try:
        led = json.loads((path / "cost.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return led if isinstance(led, dict) else {}


def _status_of(path: Path) -> tuple[str | None, str | None]:
    led = ledger_doc(path)
    return led.get("status"), led.get("status_reason")


def _what_is_there(path: Path) -> str:
    """' (its last run failed: ...)' and the like, so the user knows which of the two to choose."""
    status, reason = _status_of(path)
    return f" (its run is {status}{': ' + reason if reason else ''})" if status else ""


def aside_name(path: Path, why: str = "replaced") -> Path:
    """`<name>.<why>-<time>`, with a counter when two fall in the same second."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.{why}-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    return aside


def retire_earlier_merge(folder: RunFolder, merged_from: str | None) -> Path | None:
    """Move `merged/` aside once the adapter it was merged from is replaced (a resume trained on),
    so that the folder never offers a merged model that is not its adapter; `merged_from` is the
    adapter's digest taken before the save. Kept, never deleted: it was paid for.

    The training's own `output.save_merged` then makes a new one; `arzan merge` does otherwise."""
    from arzan.fileio import sha256

    if not folder.merged.exists() or sha256(folder.adapter / "adapter_model.safetensors") == merged_from:
        return None
    aside = aside_name(folder.merged)
    folder.merged.rename(aside)
    return aside


def adapter_digest_if_merged(folder: RunFolder) -> str | None:
    """The adapter's digest where a `merged/` was made from it, else None (no GB hashed for nothing)."""
    from arzan.fileio import sha256

    return sha256(folder.adapter / "adapter_model.safetensors") if folder.merged.exists() else None


def check_run_folder(path: Path, mode: str) -> bool:
    """Refuse what `open_run_folder` would refuse, without touching anything; True if occupied.

    Called before the data check, so a refusal comes in a second, not after the data is read.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArzanError(f"{path}: is a file, not a run folder; give --out a folder path")
    occupied = path.exists() and any(path.iterdir())
    if mode == "resume" and not is_run_folder(path):
        raise ArzanError(f"{path}: not a run folder to resume (needs recipe.yaml and cost.json)")
    if mode == "overwrite" and occupied:
        _check_can_move_aside(path)
    if mode not in ("resume", "overwrite") and occupied:
        if not is_run_folder(path):  # someone's own files: --resume cannot work there, and is not offered
            raise ArzanError(f"{path}: a folder that is not empty and not an arzan run; give --out a new folder "
                             "(or --overwrite, which moves this one aside, never deletes it)")
        status = _status_of(path)[0]
        if status == "finished":  # nothing to resume: only a new folder or --overwrite helps
            raise ArzanError(f"{path}: run folder already exists (its run is finished); give --out a new folder, "
                             "or start again with --overwrite (the old folder is kept aside, never deleted)")
        if status == "failed" and not any((path / "checkpoints").glob("checkpoint-*")):
            # no step was saved: a resume would pay its setup again to fail the same way
            raise ArzanError(f"{path}: run folder already exists{_what_is_there(path)}; it saved no checkpoint, so "
                             "fix what failed and start again with --overwrite (the old folder is kept aside)")
        raise ArzanError(f"{path}: run folder already exists{_what_is_there(path)}; continue it with --resume, "
                         "or start again with --overwrite (the old folder is kept aside, never deleted)")
    return occupied


def check_writable(folder: Path, why: str) -> None:
    """A folder this command will write into (or the nearest folder that exists above it) takes a
    file: a read-only copy or a Drive folder shared read-only fails here, in one line, before a model
    is loaded or a second is billed, instead of as a traceback halfway through. A disk that fills up
    later is the CLI's one-line OSError, with the run resumable from what was saved."""
    import tempfile

    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".arzan-probe-"):
            pass
    except OSError as exc:
        raise ArzanError(f"{probe}: cannot write here ({exc.strerror or type(exc).__name__}); {why}") from None


EVAL_LOCK = ".arzan-eval.json"
HEARTBEAT_S = 10.0  # how often a live eval or merge touches its mark (a killed one's bill is short by less)
STALE_AFTER_S = 120.0  # a mark untouched this long belongs to a process that is gone


@contextmanager
def evaluating(path: Path, doing: str = "arzan eval is scoring", device: str | None = None,
               phase: str = "eval") -> Iterator[None]:
    """Marks the run folder while `arzan eval` scores it (or `arzan merge` merges it) and will append
    its session to cost.json: a training started meanwhile (a resume, an --overwrite) would write its
    ledger from memory over that session, so those refuse while the mark is there (see
    `eval_in_progress`).

    The mark also carries when the work began, on which device and for which phase, and a thread
    touches it every HEARTBEAT_S: a process killed outright (SIGKILL, the OOM killer, a Colab runtime
    deleted) writes no bill, so the next command on the folder bills its time from the mark, up to its
    last touch (evaluation.session.bill_if_killed), and a mark nobody touches is seen as stale even
    from another machine, where the pid cannot be probed."""
    import json
    import os
    import socket
    import threading

    from arzan.fileio import write_text_atomic

    lock = Path(path) / EVAL_LOCK
    kind = None if device is None else "cuda" if str(device).startswith("cuda") else "cpu"  # as sessions say it
    write_text_atomic(lock, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "doing": doing,
                                        "started_at": datetime.now(timezone.utc).isoformat(),
                                        "device": kind, "phase": phase, "heartbeat_s": HEARTBEAT_S}))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(lock)
            except OSError:  # deleted by hand, or the disk went away: the work goes on
                pass

    threading.Thread(target=beat, name="arzan-eval-heartbeat", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        lock.unlink(missing_ok=True)


def stale_mark(path: Path) -> dict | None:
    """The mark of an eval or merge that is gone without removing it, with `last_alive` (the file's
    mtime, POSIX seconds) and `text` (what was read); None when there is none or its process may
    still be working. On this host the process table decides (a stopped process, Ctrl-Z, beats no
    heartbeat but is not gone); from another host, where a pid cannot be probed, a heartbeat silent
    for STALE_AFTER_S does."""
    import json
    import socket
    import time

    from arzan.cost.ledger import process_gone

    lock = Path(path) / EVAL_LOCK
    try:
        text, mtime = lock.read_text(encoding="utf-8"), lock.stat().st_mtime
        mark = json.loads(text)
    except (OSError, ValueError):
        return None
    if not isinstance(mark, dict):
        return {"last_alive": mtime, "text": text}
    if mark.get("host") == socket.gethostname():
        gone = process_gone(mark.get("host"), mark.get("pid")) or _pid_reused(mark.get("pid"), mark.get("started_at"))
    else:
        gone = isinstance(mark.get("heartbeat_s"), (int, float)) and time.time() - mtime > STALE_AFTER_S
    return {**mark, "last_alive": mtime, "text": text} if gone else None


def _pid_reused(pid: object, started_at: object) -> bool:
    """The pid alive now started after the mark was written: another process got the killed one's
    number (Linux's /proc; elsewhere, or on any doubt, False: the mark is taken as live)."""
    import os

    try:
        began = datetime.fromisoformat(str(started_at)).timestamp()
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") > began + 2.0
    except (OSError, ValueError, TypeError, IndexError, StopIteration):
        return False


def eval_in_progress(path: Path) -> str | None:
    """Why a training must not start in `path` now: an `arzan eval` still billing into it."""
    import json

    lock = Path(path) / EVAL_LOCK
    try:
        mark = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(mark, dict) or stale_mark(path) is not None:
        return None  # the eval was killed: its mark is stale
    command, _, doing = str(mark.get("doing") or "arzan eval is scoring").partition(" is ")
    return (f"{path}: an {command} (pid {mark.get('pid')} on {mark.get('host')}) is {doing} this run and will "
            f"add its bill to cost.json; wait for it to end (if it is gone, delete {lock})")


def _check_can_move_aside(path: Path) -> None:
    """--overwrite renames the folder: not the one the user stands in, and not one a live training
    still writes into (it would go on writing by path into the new folder, and its bill be lost)."""
    from arzan.cost.ledger import live_writer_age, read_ledger

    where, here = path.resolve(), Path.cwd().resolve()
    if where == here or where in here.parents:
        raise ArzanError(f"{path}: --overwrite would move aside the folder you are working in; "
                         "give --out a folder inside it, e.g. --out runs/NAME")
    # the folder itself, or a run inside it (`--out runs` over runs/live): both would be split in two
    for ledger in [path / "cost.json", *path.glob("*/cost.json"), *path.glob("*/*/cost.json")]:
        run = ledger.parent
        if not is_run_folder(run):
            continue
        try:
            age = live_writer_age(read_ledger(ledger))
        except ArzanError:  # an unreadable ledger has no live writer to protect
            age = None
        into = "this folder" if run == path else f"{run}, inside it"
        if age is not None:
            raise ArzanError(f"{path}: another arzan process is training into {into} (ledger written "
                             f"{age:.0f} s ago); stop it first (Ctrl-C saves a checkpoint), then --overwrite")
        if (busy := eval_in_progress(run)) is not None:
            raise ArzanError(busy)


def open_run_folder(path: Path, mode: str) -> tuple[RunFolder, str | None]:
    """Create, resume or replace a run folder. Returns the folder and a note for the user."""
    path = Path(path)
    occupied = check_run_folder(path, mode)
    if mode == "resume":
        return RunFolder(path), None
    note = None
    try:
        if occupied:  # mode is overwrite
            aside = aside_name(path)
            path.rename(aside)
            note = f"the previous run folder was moved to {aside}"
        path.mkdir(parents=True, exist_ok=True)
        # claimed by creating its recipe.yaml exclusively: two `arzan train` started together both passed
        # check_run_folder, trained into one folder and left one bill (the other's money lost)
        with open(RunFolder(path).recipe, "x", encoding="utf-8"):
            pass
    except FileExistsError:
        raise ArzanError(f"{path}: another arzan train started in this folder a moment ago; give --out a new "
                         "folder") from None
    except OSError as exc:  # a read-only or missing parent, /proc, a folder another program holds
        raise ArzanError(f"{path}: cannot {'move aside' if occupied and note is None else 'create'} the run "
                         f"folder: {exc.strerror or exc}") from None
    return RunFolder(path), note
