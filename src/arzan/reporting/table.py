"""The summary table, defined once so the HTML and the Markdown report show the same figures.

Every money/energy figure is the ledger's own number, only formatted: the report never
recomputes a cost the ledger already states (the one exception, ₸ per 1M tokens on a ledger that
lacks it, is derived from the ledger's own ₸ and token count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from arzan import numbers
from arzan.reporting.runs import Run, training_kzt
from arzan.reporting.scores import points

DASH = "—"
APPROX = "≈"


@dataclass(frozen=True)
class Cell:
    text: str
    value: Any = None  # the unformatted figure, kept in the HTML as data-value
    numeric: bool = False
    estimated: bool = False
    hint: str | None = None


@dataclass(frozen=True)
class Column:
    """`header` may hold a newline: where a narrow numeric column breaks its name."""

    key: str
    header: str
    cell: Callable[[Run], Cell]
    numeric: bool = True
    hint: str | None = None


def fixed(v: float | None, digits: int) -> str:
    """Thousands separators and `digits` decimals; a figure too small for that (a CPU demo's
    0.0008 kWh) keeps two significant digits instead of showing a false 0.000."""
    return DASH if v is None else numbers.fixed(v, digits)


def kzt(v: float | None) -> str:
    return DASH if v is None else numbers.kzt(v)


def usd(v: float | None) -> str:
    return DASH if v is None else numbers.usd(v)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def score(v: float | None, n: int | None = None, metric: str | None = None) -> str:
    """On 0–100, as the score plot and `arzan compare` show it (an accuracy of 0.6125 is 61.3), with
    the number of items where known: 40.0 on 5 items is not 40.0 on 900."""
    if v is None:
        return DASH
    return f"{points(v, metric):,.1f}" + (f" (n={n:,})" if n else "")


def _num(value: Any, text: Callable[[Any], str], estimated: bool = False, hint: str | None = None) -> Cell:
    if value is None:
        return Cell(DASH, None, True, False, hint)
    shown = text(value)
    return Cell(f"{APPROX}{shown}" if estimated else shown, value, True, estimated, hint)


def _money(run: Run, key: str, text: Callable[[Any], str]) -> Cell:
    return _num(run.get(key), text, run.get("money.basis") == "estimated")


def _energy(run: Run, key: str) -> Cell:
    basis = run.get("energy.basis")
    if basis == "unavailable":
        return Cell(DASH, None, True, False, "energy not measurable on this machine")
    method = run.get("energy.method")
    return _num(run.get(key), lambda v: fixed(v, 3), basis in ("estimated", "partial"),
                f"{basis}, {method}" if basis else None)


def _method(run: Run) -> Cell:
    method = str(run.get("model.method") or DASH)
    return Cell({"lora": "LoRA", "qlora": "QLoRA"}.get(method, method), method)


def _backend(run: Run) -> Cell:
    name = run.get("model.backend")
    return Cell(str(name or DASH), name, hint=run.get("model.backend_version"))


COLUMNS = [
    Column("run", "Run", lambda r: Cell(r.label, r.label, hint=r.status), numeric=False),
    Column("model", "Model", lambda r: Cell(str(r.get("model.base") or DASH), r.get("model.base")), numeric=False),
    Column("method", "Method", _method, numeric=False),
    Column("backend", "Backend", _backend, numeric=False),
    Column("gpu", "GPU\n× count", lambda r: Cell(r.gpu, r.gpu), numeric=False),
    Column("wall", "Wall\ntime", lambda r: _num(r.wall_s, duration), hint="h:mm:ss, sum of timed phases"),
    Column("gpu_hours", "GPU\nhours", lambda r: _num(r.get("gpu_hours"), lambda v: fixed(v, 3))),
    Column("kzt", "₸", lambda r: _money(r, "money.kzt", kzt), hint="tenge, total billed"),
    Column("usd", "$", lambda r: _money(r, "money.usd", usd), hint="US dollars, total billed"),
    Column("kwh", "kWh", lambda r: _energy(r, "energy.kwh")),
    Column("co2", "CO₂\nkg", lambda r: _energy(r, "energy.co2_kg")),
    Column("tokens", "Tokens\ntrained", lambda r: _num(r.get("tokens.trained"), lambda v: f"{int(v):,}")),
    Column("kzt_per_1m", "₸ per\n1M tok", lambda r: _num(r.kzt_per_1m, kzt, r.get("money.basis") == "estimated"),
           hint="tenge per million trained tokens: the training sessions' bill only (the ₸ column also holds "
                "evals and merges billed after training)"),
]


def score_tasks(runs: list[Run]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        seen.update(dict.fromkeys(run.scores))
    return list(seen)


def score_columns(runs: list[Run]) -> list[Column]:
    """Scores get their own table: tasks differ between runs and would push the cost columns off
    the screen. The run's ₸ is repeated there so score and price are read side by side, and a
    fine-tune whose base was scored too (an `arzan eval` folder among `runs`) shows its gain and
    the ₸ per point gained, by `arzan compare`'s rule."""
    from arzan.evaluation.compare import gain_text

    gains = score_gains(runs)
    out = [c for c in COLUMNS if c.key in ("run", "kzt")]
    for task in score_tasks(runs):
        metrics = {run.scores[task].metric for run in runs if task in run.scores} - {None}
        out.append(Column(f"score:{task}", task,
                          lambda r, t=task: _num(r.scores[t].value if t in r.scores else None,
                                                 lambda v, t=t, r=r: score(v, r.scores[t].n, r.scores[t].metric)
                                                 + gain_text(gains.get((r.label, t), {}))),
                          hint=(", ".join(sorted(metrics)) + ", 0–100") if metrics else "0–100"))
    return out


def score_gains(runs: list[Run]) -> dict[tuple[str, str], dict]:
    """(label, task) -> the row `evaluation.compare.against_base` filled in: gain over the base,
    its ±, ₸ per point gained, or why the base's score was not subtracted."""
    from arzan.evaluation.compare import against_base

    rows = [{"model": r.label, "task": task, "metric": sc.metric, "value": sc.value, "stderr": sc.stderr,
             "n": sc.n, "base_4bit": sc.base_4bit, "chat_template": sc.chat_template, "kzt": r.get("money.kzt"),
             "kzt_train": training_kzt(r.ledger) if r.kind == "run" else None,
             ("of_model" if r.kind == "model" else "base"): r.base, **({"stale": True} if sc.stale else {})}
            for r in runs for task, sc in r.scores.items()]
    against_base(rows, None)
    return {(r["model"], r["task"]): r for r in rows}


def any_estimated(runs: list[Run]) -> bool:
    return any(col.cell(run).estimated for run in runs for col in COLUMNS)
