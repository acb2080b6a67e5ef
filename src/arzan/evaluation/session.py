"""A standalone `arzan eval` (or merge, or push) as a session of the run's ledger: its time and
money, finished or cut.

Why this exists: scoring is paid time too (on a rented GPU an lm-eval suite can cost as much as a
short fine-tune; a merge or a 16 GB upload takes minutes), so it joins the bill whether it ends
with a result or with a Ctrl-C, and the model card, which shows the bill, is rewritten from the
ledger it lands in.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from arzan.errors import Failed, described, first_line, out_of_memory

LEDGER_FILE = "cost.json"


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during `arzan eval`, raised after its time is in the ledger. Still a KeyboardInterrupt,
    so whatever stops on Ctrl-C stops on it (exit 130); its message is the one line to show."""


@contextmanager
def signals_held() -> Iterator[list[int]]:
    """A Ctrl-C waits while eval.json, cost.json and the card are written: each write is atomic, but
    scores without their bill, or a bill without its card, would disagree. Yields the signals that
    came. Only where Ctrl-C has Python's default handler (not in a training, whose own handler
    decides, nor where SIGINT is ignored) and only in the main thread, where signals are caught."""
    got: list[int] = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield got
        return
    held = [signal.SIGINT] + ([signal.SIGTERM] if signal.getsignal(signal.SIGTERM) is _sigterm_raises else [])
    previous = {signum: signal.signal(signum, lambda signum, frame: got.append(signum)) for signum in held}
    try:
        yield got
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _sigterm_raises(signum: int, frame: Any) -> None:
    """sigterm_as_ctrl_c's handler; signals_held holds a SIGTERM only when it is this one."""
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """A spot preemption or a Colab stop (SIGTERM) during a standalone eval or merge is billed like a Ctrl-C:
    by default it would kill the process before the paid time reaches the ledger. Only where
    SIGTERM still has its default action and only in the main thread, where signals are caught."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _sigterm_raises)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def put_in_ledger(path: Path, summary: dict | None, seconds: float, device: str,
                  started_at: datetime | None = None, status: str = "finished", phase: str = "eval",
                  finished_at: datetime | None = None,
                  who: tuple[str | None, int | None] | None = None) -> dict[str, Any]:
    """summary.eval in cost.json (unless None: a cut eval scored nothing), and the evaluation's time
    and money as a session of its own, from `started_at` to now, with `status` ("interrupted" for a
    Ctrl-C). Returns the ledger as written.

    Billed at the run's last price when it ran on the same kind of device (the rented GPU, right
    after training). On another (a CPU: the user's own machine) its time is the session's
    `unbilled_s`, outside the phases (billed time): no money, GPU-hours or max_hours. Through the
    ledger's own reader and atomic writer, so a kill mid-write leaves the previous ledger whole.
    `phase` "save" bills an `arzan merge` the same way. `who` (host, pid): the process whose time it
    is, when another bills it (bill_if_killed), so a resume tells its session from its own.
    """
    from arzan.cost.ledger import Phases, Session, apply_totals, money_for, read_ledger, utcnow, write_ledger

    ledger = read_ledger(path)
    if summary is not None:
        ledger.summary.eval = summary
    now, step = min(finished_at or utcnow(), utcnow()), ledger.progress.step
    kind = "cuda" if device.startswith("cuda") else "cpu"
    s = Session(index=len(ledger.sessions), started_at=min(started_at or now, now), finished_at=now,
                status=status, steps=[step, step], host=who[0] if who else socket.gethostname(),
                pid=who[1] if who else os.getpid(), device=kind)
    if kind == ledger.hardware.device:
        s.phases, s.billed_seconds = Phases(**{phase: seconds}), seconds
        s.money.usd, s.money.kzt = money_for(seconds, ledger.price, ledger.exchange)
        s.price, s.energy_method = ledger.price, "none"  # billed, its energy not read: the total says partial
    else:
        s.unbilled_s = seconds
    ledger.sessions.append(s)
    ledger = apply_totals(ledger)
    _raise_suggested_cap(ledger)
    write_ledger(path, ledger)
    return ledger.model_dump(mode="json")


def _raise_suggested_cap(ledger: Any) -> None:
    """A run stopped by its cap names the `--budget` that would finish it: spent so far plus what is
    left. An eval or merge since has spent more, so the cap named before would stop the resume again
    after one more paid setup. Priced again by the same rule (cost.budget.suggest_cap) from the
    measured steps; a stop before any step was measured priced them by an estimate this cannot redo."""
    from arzan.cost.budget import mean_step_seconds, suggest_cap

    command, kind = ledger.resume_command or "", (ledger.budget.stop_reason or "").split(" ", 1)[0]
    step_s = mean_step_seconds(ledger)
    if ledger.status != "stopped_budget" or " --budget " not in command or not step_s or \
            kind not in ("max_kzt", "max_usd", "max_hours"):
        return
    head = command.partition(" --budget ")[0]
    ledger.resume_command = f"{head} --budget {suggest_cap(kind, ledger, step_s, ledger.price, ledger.exchange)}"


def bill(run_dir: Path, summary: dict | None, seconds: float, device: str, started_at: datetime,
         status: str = "finished", phase: str = "eval", finished_at: datetime | None = None,
         who: tuple[str | None, int | None] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """The eval-only session in `run_dir`'s ledger, then the model card rewritten from that ledger
    (the card's "Training cost" table must not show an older total than cost.json). Returns the
    ledger (None where the folder has none: a Hub id's evals/ folder) and a note when the card could
    not be refreshed: a recipe.yaml an older arzan wrote, or one edited by hand, must not turn
    scores and a bill already saved into a failed command."""
    from arzan.modelcard import refresh_card

    path = run_dir / LEDGER_FILE
    if not path.is_file():
        return None, None
    ledger = put_in_ledger(path, summary, seconds, device, started_at, status, phase, finished_at, who)
    try:
        refresh_card(run_dir, ledger)
    except Exception as exc:  # noqa: BLE001 - the bill is in; a Ctrl-C mid-import can leave the card's imports broken
        return ledger, f"the model card {run_dir / 'adapter' / 'README.md'} still shows the old bill: {first_line(exc)}"
    return ledger, None


def bill_if_killed(run_dir: Path) -> str | None:
    """The time of an `arzan eval` or `arzan merge` killed outright (SIGKILL, the OOM killer, a Colab
    runtime deleted: nothing ran to bill it), billed from the mark it left (runfolder.evaluating)
    up to the mark's last heartbeat, as an interrupted session, by the next command on the folder.
    Under-counts by at most one heartbeat. Returns the note to show, or None.

    The mark is claimed by renaming it, so two commands starting together bill it once; the file
    claimed must be the one judged stale (another command may have billed that one and a new eval
    marked the folder since), else it goes back. A process killed after its own bill was written
    but before it removed its mark is not billed again."""
    from arzan.cost.ledger import read_ledger
    from arzan.reporting.table import kzt
    from arzan.runfolder import EVAL_LOCK, stale_mark

    mark, lock = stale_mark(run_dir), Path(run_dir) / EVAL_LOCK
    if mark is None or not (Path(run_dir) / LEDGER_FILE).is_file():
        return None
    claim = lock.with_name(f"{EVAL_LOCK}.billing-{os.getpid()}")
    try:
        os.rename(lock, claim)
    except OSError:  # another command claimed it first
        return None

    def give_back() -> None:
        try:
            if not lock.exists():
                os.rename(claim, lock)
        except OSError:
            pass

    try:
        if claim.read_text(encoding="utf-8") != mark["text"] or claim.stat().st_mtime != mark["last_alive"]:
            give_back()  # not the mark judged stale: a live one written or touched since
            return None
        try:
            started = datetime.fromisoformat(mark["started_at"])
        except (KeyError, TypeError, ValueError):  # an older arzan's mark says nothing to bill from
            started = None
        if started is None or mark.get("device") not in ("cpu", "cuda"):
            claim.unlink(missing_ok=True)
            return None
        if any(x.pid == mark.get("pid") and x.host == mark.get("host") and x.finished_at is not None
               and x.finished_at >= started.replace(microsecond=0)  # the ledger keeps whole seconds
               for x in read_ledger(Path(run_dir) / LEDGER_FILE).sessions):
            claim.unlink(missing_ok=True)  # it billed itself, then died before removing its mark
            return None
        last = datetime.fromtimestamp(mark["last_alive"], tz=started.tzinfo)
        seconds = max(0.0, (last - started).total_seconds())
        ledger, note = bill(run_dir, None, seconds, mark["device"], started, status="interrupted",
                            phase="save" if mark.get("phase") == "save" else "eval", finished_at=last,
                            who=(mark.get("host"), mark.get("pid")))
    except BaseException:  # a bill cut short: the mark stays for the next command to bill
        give_back()
        raise
    claim.unlink(missing_ok=True)
    s = ledger["sessions"][-1]
    cost = "unbilled: another kind of machine" if s.get("unbilled_s") else f"{kzt(s['money']['kzt'])} ₸"
    command = str(mark.get("doing") or "arzan eval").partition(" is ")[0]
    where = f"session {s['index']} of {Path(run_dir) / LEDGER_FILE}, status interrupted"
    lived = (f"its {seconds:.0f} s up to its last sign of life ({cost}) are now {where}" if seconds >= 1 else
             f"it died before its first heartbeat, so its time is unknown: recorded as 0 s in {where}")
    return (f"note: an earlier {command} (pid {mark.get('pid')} on {mark.get('host')}) was killed before it could "
            f"bill itself: {lived}" + (f"; {note}" if note else ""))


def say_killed_billed(run_dir: Path) -> None:
    """bill_if_killed, its note on stderr: it concerns an earlier command, not this one's result."""
    import sys

    if (note := bill_if_killed(run_dir)) is not None:
        print(note, file=sys.stderr, flush=True)


@contextmanager
def billed_session(run_dir: Path, device: str, phase: str = "save",
                   then: Callable[[], None] | None = None) -> Iterator[None]:
    """The work inside, timed as one session of `run_dir`'s ledger: finished, failed or Ctrl-C'd, the
    minutes it ran are paid for all the same. `then` runs with the bill, under the same held signals
    (a merged model's card, which shows the bill)."""
    from arzan.cost.ledger import utcnow

    started, began = time.monotonic(), utcnow()
    try:
        yield
    except BaseException as exc:
        with signals_held():
            bill(run_dir, None, time.monotonic() - started, device, began, phase=phase,
                 status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    with signals_held():
        bill(run_dir, None, time.monotonic() - started, device, began, phase=phase)
        if then is not None:
            then()


def interrupted(run_dir: Path, seconds: float, device: str, started_at: datetime,
                billed: bool) -> EvalInterrupted:
    """Records a Ctrl-C'd evaluation (when `billed`: a run folder with a ledger, `arzan eval` owning
    it) and says in one line what it left: no scores (lm-eval scores every task at the end), and
    where its paid time went."""
    from arzan.reporting.table import kzt

    had = (run_dir / "eval.json").is_file()
    kept = ("nothing scored was kept (eval.json keeps its earlier scores)" if had
            else "nothing scored was kept (no eval.json written)")
    head = f"evaluation interrupted after {seconds:.1f} s: {kept}"
    if not billed:
        return EvalInterrupted(head)
    with signals_held():  # a second Ctrl-C waits for the ledger and the card
        ledger, note = bill(run_dir, None, seconds, device, started_at, status="interrupted")
    s = ledger["sessions"][-1]
    return EvalInterrupted(f"{head}; its {seconds:.1f} s ({kzt(s['money']['kzt'])} ₸) are in "
                           f"{run_dir / LEDGER_FILE} as session {s['index']}, status interrupted"
                           + (f"; {note}" if note else ""))


def failed(run_dir: Path, exc: Exception, seconds: float, device: str, started_at: datetime,
           billed: bool) -> Failed:
    """An evaluation that broke after it began paying (a CUDA OOM, an lm-eval error): its minutes go
    into the ledger as a failed session, as a merge's do, and the user gets one line, not lm-eval's
    traceback. Out of memory names the knob that helps."""
    from arzan.cost.ledger import utcnow
    from arzan.fileio import append_traceback
    from arzan.reporting.table import kzt

    why = described(exc)
    hint = ("; try a smaller --batch-size (auto on a GPU picks the largest that fits the first batches)"
            if out_of_memory(exc) else "")
    saved = append_traceback(run_dir, exc, f"{utcnow().isoformat()} arzan eval") if run_dir.is_dir() else None
    head = f"the evaluation failed after {seconds:.1f} s ({why}){hint}" + (f"; {saved}" if saved else "")
    if not billed:
        return Failed(head)
    with signals_held():
        ledger, note = bill(run_dir, None, seconds, device, started_at, status="failed")
    s = ledger["sessions"][-1]
    return Failed(f"{head}; its time ({kzt(s['money']['kzt'])} ₸) is in {run_dir / LEDGER_FILE} as session "
                  f"{s['index']}, status failed" + (f"; {note}" if note else ""))
