"""The ledger (``cost.json``): the one document every money figure in arzan comes from.

Schema: docs/architecture.md. Totals are always recomputed as sums over ``sessions``, so a run
resumed after a preemption appends a session and can never count an earlier one twice. The file
is replaced atomically because it is rewritten every few seconds on machines that get killed.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from arzan.cost.prices import Exchange, Price
from arzan.errors import ArzanError
from arzan.fileio import write_text_atomic

Status = Literal["running", "finished", "stopped_budget", "interrupted", "failed"]
PHASES = ("setup", "data", "train", "eval", "save")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class ModelInfo(BaseModel):
    base: str | None = None
    method: Literal["lora", "qlora"] | None = None
    backend: Literal["hf", "unsloth"] | None = None
    backend_version: str | None = None
    dtype: str | None = None  # what the base was loaded in (QLoRA: its compute dtype; float32 on a CPU)
    trainable_params: int = 0
    total_params: int = 0


class Hardware(BaseModel):
    device: Literal["cpu", "cuda"] = "cpu"
    gpu_name: str | None = None
    gpu_count: int = 0
    driver: str | None = None
    cuda: str | None = None
    cpu: str | None = None
    host: str | None = None


class Software(BaseModel):
    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    peft: str | None = None
    trl: str | None = None
    datasets: str | None = None
    unsloth: str | None = None
    arzan: str | None = None
    git_commit: str | None = None


class Phases(BaseModel):
    setup: float = 0.0
    data: float = 0.0
    train: float = 0.0
    eval: float = 0.0
    save: float = 0.0

    def total(self) -> float:
        return sum(getattr(self, p) for p in PHASES)


class Tokens(BaseModel):
    seen: int = 0
    trained: int = 0
    per_second: float = 0.0


class Energy(BaseModel):
    kwh: float | None = None
    co2_kg: float | None = None
    grid_kg_co2_per_kwh: float = 0.0
    # of the total: its weakest session's ("partial": some billed sessions had no reading, e.g. a
    # later `arzan eval`, so kwh is theirs left out); method "mixed" when sessions differ
    basis: Literal["measured", "estimated", "partial", "unavailable"] = "unavailable"
    method: Literal["nvml", "rapl", "tdp", "none", "mixed"] = "none"


class Money(BaseModel):
    usd: float = 0.0
    kzt: float = 0.0
    usd_per_1m_tokens: float | None = None
    kzt_per_1m_tokens: float | None = None
    basis: Literal["measured", "estimated"] = "measured"


class Budget(BaseModel):
    max_kzt: float | None = None
    max_usd: float | None = None
    max_hours: float | None = None
    spent_kzt: float = 0.0
    projected_kzt: float | None = None
    projected_basis: Literal["measured", "estimated"] = "estimated"
    stop_reason: str | None = None


class Progress(BaseModel):
    step: int = 0
    max_steps: int = 0
    epoch: float = 0.0


class SessionTokens(BaseModel):
    seen: int = 0
    trained: int = 0


class SessionMoney(BaseModel):
    usd: float = Field(0.0, ge=0)  # a hand-edited negative would quietly lower the total (read_ledger refuses it)
    kzt: float = Field(0.0, ge=0)


class Session(BaseModel):
    index: int
    started_at: datetime
    finished_at: datetime | None = None
    status: Status = "running"
    phases: Phases = Field(default_factory=Phases)
    billed_seconds: float = 0.0
    tokens: SessionTokens = Field(default_factory=SessionTokens)
    money: SessionMoney = Field(default_factory=SessionMoney)
    kwh: float | None = None  # this session's energy, so the total can be a sum too
    energy_method: Literal["nvml", "rapl", "tdp", "none"] | None = None  # how kwh was had (None: older ledgers)
    steps: list[int] = Field(default_factory=lambda: [0, 0])
    # steps this session trained that no checkpoint kept (a hard kill, a crash): paid for, so still
    # in its money, trained again after the resume, so no longer in its tokens
    lost_steps: list[int] | None = None
    price: Price | None = None  # what this session was billed at: a resume may run on another machine
    # the command line's price flags (--price, --gpu, --provider) this session ran under; a later
    # --resume that gives none keeps them, as it keeps a raised cap
    terms: dict[str, Any] | None = None
    host: str | None = None  # with pid: a resume on the same host can tell a killed session from a live one
    pid: int | None = None
    device: Literal["cpu", "cuda"] | None = None  # where it ran: a resume or an eval may run elsewhere
    gpu_name: str | None = None
    # billed seconds a hard kill kept out of cost.json, taken back from metrics.jsonl on the resume
    recovered_s: float | None = None
    # seconds on a machine nobody rented (an `arzan eval` on the user's laptop): outside the phases,
    # which are billed time, so they count in no money, GPU-hours, max_hours or cost-by-phase plot
    unbilled_s: float | None = None


class Summary(BaseModel):
    final_loss: float | None = None
    eval: dict | None = None
    generation_check: dict | str | None = None
    data: list[dict] | None = None  # per source: name, format, rows, fingerprint, license
    # per split ("train", "eval"): rows tokenized, dropped and cut short by max_length
    data_truncation: dict[str, dict] | None = None


class Ledger(BaseModel):
    schema_version: Literal[1] = 1
    run_id: str
    status: Status = "running"
    status_reason: str | None = None
    resume_command: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    model: ModelInfo = Field(default_factory=ModelInfo)
    hardware: Hardware = Field(default_factory=Hardware)
    software: Software = Field(default_factory=Software)
    price: Price = Field(default_factory=Price)
    exchange: Exchange
    phases: Phases = Field(default_factory=Phases)
    billed_seconds: float = 0.0
    gpu_hours: float = 0.0
    tokens: Tokens = Field(default_factory=Tokens)
    energy: Energy = Field(default_factory=Energy)
    money: Money = Field(default_factory=Money)
    budget: Budget = Field(default_factory=Budget)
    progress: Progress = Field(default_factory=Progress)
    sessions: list[Session] = Field(default_factory=list)
    summary: Summary = Field(default_factory=Summary)

    @model_validator(mode="after")
    def _steps_have_sessions(self) -> Ledger:
        """Every total is a sum over sessions: a run past step 0 with none (a hand edit) would resume
        with its earlier money and tokens silently gone."""
        if self.progress.step > 0 and not self.sessions:
            raise ValueError(f"step {self.progress.step} reached, but no session paid for it")
        return self


# --- money arithmetic: pure functions, so the estimate, the meter and the report agree ---

def money_for(billed_seconds: float, price: Price, exchange: Exchange) -> tuple[float, float]:
    usd = billed_seconds / 3600.0 * price.usd_per_gpu_hour * price.gpu_count
    return usd, usd * exchange.usd_kzt


def per_million(amount: float, tokens: int) -> float | None:
    return amount / tokens * 1e6 if tokens > 0 else None


def co2_kg(kwh: float | None, grid_kg_co2_per_kwh: float) -> float | None:
    return None if kwh is None else kwh * grid_kg_co2_per_kwh


def session_gpu_hours(session: Session, ledger: Ledger) -> float:
    """GPU-hours only where a GPU ran or was priced (a CPU run at the user's rate used none), at the
    session's own GPU count: sessions of one run may have rented different machines."""
    price = session.price or ledger.price
    device = session.device or ledger.hardware.device  # older ledgers: the run's device only
    on_gpu = device == "cuda" or price.gpu is not None
    return session.billed_seconds / 3600.0 * price.gpu_count if on_gpu else 0.0


def apply_totals(ledger: Ledger) -> Ledger:
    """Recompute every total from ``sessions``; the only place totals are written."""
    s = ledger.sessions
    ledger.phases = Phases(**{p: sum(getattr(x.phases, p) for x in s) for p in PHASES})
    ledger.billed_seconds = sum(x.billed_seconds for x in s)
    ledger.gpu_hours = sum(session_gpu_hours(x, ledger) for x in s)
    seen, trained = sum(x.tokens.seen for x in s), sum(x.tokens.trained for x in s)
    ledger.tokens = Tokens(seen=seen, trained=trained,
                           per_second=seen / ledger.phases.train if ledger.phases.train > 0 else 0.0)
    kwhs = [x.kwh for x in s if x.kwh is not None]
    ledger.energy.kwh = sum(kwhs) if kwhs else None
    _energy_label(ledger)
    ledger.energy.co2_kg = co2_kg(ledger.energy.kwh, ledger.energy.grid_kg_co2_per_kwh)
    usd, kzt = sum(x.money.usd for x in s), sum(x.money.kzt for x in s)
    # per trained token: the sessions that trained; a later `arzan eval` or `arzan merge` is no training cost
    trains = [x for x in s if x.phases.setup or x.phases.data or x.phases.train or x.tokens.trained]
    ledger.money = Money(usd=usd, kzt=kzt, usd_per_1m_tokens=per_million(sum(x.money.usd for x in trains), trained),
                         kzt_per_1m_tokens=per_million(sum(x.money.kzt for x in trains), trained),
                         basis="measured")
    ledger.budget.spent_kzt = kzt
    return ledger


ENERGY_BASIS = {"nvml": "measured", "rapl": "measured", "tdp": "estimated", "none": "unavailable"}


def _energy_label(ledger: Ledger) -> None:
    """The total's basis and method from every billed session's, not the last one's: a TDP-estimated
    first session resumed where NVML reads must not make the sum "measured"."""
    methods = {x.energy_method for x in ledger.sessions if x.energy_method is not None and x.billed_seconds > 0}
    if not methods:
        return  # an older ledger, or nothing billed yet: the label the meter set stands
    bases = {ENERGY_BASIS[m] for m in methods}
    ledger.energy.method = methods.pop() if len(methods) == 1 else "mixed"
    if len(bases) == 1:
        ledger.energy.basis = bases.pop()
    elif ledger.energy.kwh is None:
        ledger.energy.basis = "unavailable"
    else:
        ledger.energy.basis = "partial" if "unavailable" in bases else "estimated"


def recover_killed_session(ledger: Ledger, last_row: dict[str, Any] | None) -> Ledger:
    """After a hard kill: the billed time past the last ledger write, from the last metrics row.

    The meter writes cost.json every 10 s but a metrics row at every logging step, each with the
    run's billed seconds so far (`elapsed_s`) and its step. When that row is ahead of the ledger of a
    session that never closed, the difference was paid for: it goes into that session's train phase
    and money, at its own price, and is listed as its `recovered_s`.
    """
    # the killed training's session: an `arzan eval` or `arzan merge` may have added one after it
    at = next((i for i in range(len(ledger.sessions) - 1, -1, -1) if ledger.sessions[i].status == "running"), None)
    if at is None or not last_row:
        return ledger
    last = ledger.sessions[at]
    before = sum(x.phases.total() for x in ledger.sessions[:at + 1])  # what the row's elapsed_s counts
    elapsed, step = last_row.get("elapsed_s"), last_row.get("step")
    if not isinstance(elapsed, (int, float)) or not isinstance(step, int) or elapsed <= before:
        return ledger
    extra = float(elapsed) - before
    last.phases.train += extra
    last.billed_seconds += extra
    last.money.usd, last.money.kzt = money_for(last.billed_seconds, last.price or ledger.price, ledger.exchange)
    last.recovered_s = (last.recovered_s or 0.0) + extra
    last.steps[1] = max(last.steps[1], step)
    ledger.progress.step = max(ledger.progress.step, step)
    return apply_totals(ledger)


def rewind_to_checkpoint(ledger: Ledger, at_checkpoint: Ledger | None, step: int) -> Ledger:
    """Before a resume: drop the tokens of steps that the checkpoint we resume from does not hold.

    After a hard kill (a Colab VM reclaimed, the OOM killer; no SIGTERM to checkpoint on) or a
    crash, cost.json is ahead of the last checkpoint. Those steps were paid for and stay in the
    money; they will be trained again, so their tokens would be counted twice. `at_checkpoint` is
    the ledger copy saved inside that checkpoint (None: no checkpoint, the run starts over).
    """
    if ledger.progress.step <= step:
        return ledger
    kept = {s.index: s for s in at_checkpoint.sessions} if at_checkpoint is not None else {}
    for s in ledger.sessions:
        if s.steps[1] <= step:
            continue
        k = kept.get(s.index)
        if k is not None and k.steps[1] >= s.steps[1]:
            continue  # an earlier session the checkpoint already holds whole (its lost_steps included)
        if k is not None and k.steps[0] <= step:
            s.tokens, lost_from = k.tokens.model_copy(), max(k.steps[1], step)
        else:
            s.tokens, lost_from = SessionTokens(), s.steps[0]
        s.lost_steps = [lost_from, s.steps[1]]
    ledger.progress.step = step
    return apply_totals(ledger)


# --- files ---

def write_ledger(path: str | os.PathLike, ledger: Ledger) -> None:
    """Write to a temp file beside ``path``, fsync, then os.replace: a crash leaves the old file."""
    write_text_atomic(path, ledger.model_dump_json(indent=2) + "\n")


def read_ledger(path: str | os.PathLike) -> Ledger:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArzanError(f"no cost ledger at {path}") from None
    except UnicodeDecodeError:
        raise ArzanError(f"{path}: corrupt cost ledger (not UTF-8 text); restore it from a checkpoint's "
                         "arzan_ledger.json") from None
    try:
        return Ledger.model_validate_json(text)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise ArzanError(f"{path}: corrupt cost ledger ({where}: {err['msg']}); "
                         "restore it from a checkpoint's arzan_ledger.json") from None


# --- what ran where: recorded once per run so a bill can be reproduced ---

LIVE_LEDGER_S = 90  # a "running" ledger written this recently belongs to a live process (it flushes every 10 s)


def live_writer_age(ledger: Ledger) -> float | None:
    """Seconds since a training that is still running wrote this ledger; None when none is.

    Its meter rewrites cost.json from memory every 10 s, so a second writer (a resume, an `arzan
    eval` billing its session) would be erased by the next flush: both refuse while this is not None.
    A session killed on this host is known gone at once; on another host, after LIVE_LEDGER_S.
    """
    if ledger.status != "running" or ledger.updated_at is None or not ledger.sessions:
        return None  # a meter adds its session before its first write: no session, no writer
    age = (utcnow() - ledger.updated_at).total_seconds()
    return age if age < LIVE_LEDGER_S and not _session_gone(ledger) else None


def _session_gone(ledger: Ledger) -> bool:
    """The last session ran on this host and its process no longer exists: killed, not training."""
    last = ledger.sessions[-1] if ledger.sessions else None
    return last is not None and process_gone(last.host, last.pid)


def killed_pid(doc: dict) -> int | None:
    """A ledger as read from cost.json (a dict, checked by no model): the pid of its last session when
    it still says running but that process is gone on this host (kill -9, the OOM killer)."""
    sessions = doc.get("sessions") if isinstance(doc.get("sessions"), list) else []
    last = sessions[-1] if sessions and isinstance(sessions[-1], dict) else {}
    pid = last.get("pid")
    return pid if doc.get("status") == "running" and process_gone(last.get("host"), pid) else None


def process_gone(host: str | None, pid: int | None) -> bool:
    """True only when `pid` ran on this host and no longer exists; another host cannot be probed."""
    if os.name == "nt" or pid is None or host != socket.gethostname() or pid == os.getpid():
        return False  # on Windows os.kill(pid, 0) would terminate the process, not probe it
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:  # 0 and below name process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError, TypeError):  # someone else's process; a pid no kernel gives
        return False
    return False


def detect_hardware() -> Hardware:
    hw = Hardware(cpu=f"{platform.machine()}, {os.cpu_count()} cores", host=socket.gethostname())
    try:
        import torch

        if torch.cuda.is_available():
            hw.device, hw.gpu_count = "cuda", 1  # the one arzan trains on (cuda:0), however many are visible
            hw.gpu_name, hw.cuda = torch.cuda.get_device_name(0), torch.version.cuda
            try:
                import pynvml

                pynvml.nvmlInit()
                hw.driver = str(pynvml.nvmlSystemGetDriverVersion())
            except Exception:
                pass
    except ImportError:
        pass
    return hw


def package_version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def git_commit(cwd: str | os.PathLike | None = None, short: bool = False) -> str | None:
    args = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def detect_software() -> Software:
    from arzan import __version__

    return Software(python=platform.python_version(), arzan=__version__, git_commit=git_commit(),
                    **{p: package_version(p) for p in ("torch", "transformers", "peft", "trl", "datasets", "unsloth")})


def new_ledger(run_id: str, price: Price, exchange: Exchange, model: ModelInfo | None = None) -> Ledger:
    return Ledger(run_id=run_id, price=price, exchange=exchange, model=model or ModelInfo(),
                  hardware=detect_hardware(), software=detect_software())

