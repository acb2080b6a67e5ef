"""Read a run folder as it stands, for a report.

Reads the ledger as plain JSON rather than through the pydantic model on purpose: a report must
also open a ledger that is mid-run, from an older arzan, or from a run that died early, and show
what is there instead of refusing it. Only what cannot be read at all (no cost.json, a cost.json
that is not JSON) is an error, and that error names the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import ArzanError, first_line
from arzan.reporting.scores import Score, parse_scores

STOPPED = {"stopped_budget", "interrupted", "failed"}
PHASES = ("setup", "data", "train", "eval", "save")


@dataclass
class Run:
    path: Path
    ledger: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, Score] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    eval_meta: dict[str, Any] = field(default_factory=dict)  # eval.json's top level, minus rows
    warnings: list[str] = field(default_factory=list)
    label: str = ""
    color: str = "#444444"
    kind: str = "run"  # or "model": a base or KazLLM scored by `arzan eval`, with no training bill

    def get(self, dotted: str, default: Any = None) -> Any:
        """Ledger lookup that tolerates missing sections, because old or partial ledgers exist."""
        node: Any = self.ledger
        for key in dotted.split("."):
            if not isinstance(node, dict) or node.get(key) is None:
                return default
            node = node[key]
        return node

    @property
    def status(self) -> str:
        """As the ledger says, except a "running" one whose process is gone on this machine (kill -9,
        the OOM killer: no final write), which is interrupted, as `arzan train --resume` knows at once."""
        if self.kind == "model":
            return "evaluated only: not trained here, no bill"
        status = str(self.get("status", "unknown"))
        return "interrupted" if status == "running" and self.killed_pid is not None else status

    @cached_property
    def killed_pid(self) -> int | None:
        """The pid of a "running" ledger's last session when it ran on this machine and is gone."""
        from arzan.cost.ledger import killed_pid

        return killed_pid(self.ledger)

    @property
    def base(self) -> str | None:
        """The model a run fine-tuned (the recipe's model.name, as its eval.json records it), or the
        model an eval-only folder scored: what pairs a fine-tune with its base's scores."""
        if self.kind == "model":
            model = self.eval_meta.get("model")
            return model.get("base") if isinstance(model, dict) else None
        return self.get("model.base")

    @property
    def gpu(self) -> str:
        """What ran; a CPU run priced as a GPU (a dry run of the bill) says both."""
        if self.get("hardware.device") == "cpu" or not self.get("hardware.gpu_count"):
            priced = self.get("price.gpu")
            return f"CPU (priced as {priced} × {self.gpu_count or 1})" if priced else "CPU"
        name = self.get("hardware.gpu_name") or self.get("price.gpu") or "GPU"
        return f"{name} × {self.gpu_count}"

    @property
    def gpu_count(self) -> int:
        return int(self.get("hardware.gpu_count") or self.get("price.gpu_count") or 0)

    @property
    def wall_s(self) -> float:
        """Time the machine was busy: the phases, so a gap between preemption and resume (not
        billed) is not counted; the clock span only when no phase has been timed yet."""
        phases = self.get("phases", {})
        total = sum(float(v or 0) for v in phases.values()) if isinstance(phases, dict) else 0.0
        if total > 0:
            return total
        start, end = parse_time(self.get("started_at")), parse_time(self.get("finished_at") or self.get("updated_at"))
        return max((end - start).total_seconds(), 0.0) if start and end else 0.0

    @property
    def kzt_per_1m(self) -> float | None:
        value = self.get("money.kzt_per_1m_tokens")
        trained = self.get("tokens.trained", 0)
        if value is None and trained:
            value = float(self.get("money.kzt", 0.0)) / trained * 1e6
        return value

    @property
    def resume_command(self) -> str:
        return self.get("resume_command") or f"arzan train --resume {self.path}"


def parse_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def load_run(path: Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise ArzanError(f"{path}: no such run folder")
    ledger_file = path / "cost.json"
    if not ledger_file.is_file():
        raise ArzanError(f"{path}: not an arzan run folder (no cost.json) nor an `arzan eval` folder (no eval.json); "
                         "give a folder `arzan train` or `arzan eval` wrote")
    try:
        ledger = json.loads(ledger_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArzanError(f"{ledger_file}: corrupt ledger, not valid JSON ({exc})") from None
    check_ledger(ledger, ledger_file)
    run = Run(path=path, ledger=ledger)
    run.metrics = _read_metrics(path / "metrics.jsonl", run.warnings)
    run.recipe = _read_recipe(path / "recipe.yaml", run.warnings)
    run.scores = _read_scores(path / "eval.json", run)
    if (short := _metrics_short(run)) is not None:
        run.warnings.append(short)
    return run


def _metrics_short(run: Run) -> str | None:
    """A run that is not running logged up to its last step; a metrics.jsonl that ends well before
    it (a copy cut short, a file restored from an older backup) draws a curve that stops early under
    a finished marker, which must be said."""
    step = run.get("progress.step")
    if run.status == "running" or not isinstance(step, int) or step <= 0:
        return None
    logged = sorted({int(r["step"]) for r in run.metrics if isinstance(r.get("step"), (int, float))
                     and not isinstance(r.get("step"), bool) and math.isfinite(r["step"])
                     and isinstance(r.get("loss"), (int, float))})
    every = ((run.recipe or {}).get("train") or {}).get("logging_steps")
    gaps = [b - a for a, b in zip(logged, logged[1:])]
    every = every if isinstance(every, int) and every > 0 else (max(set(gaps), key=gaps.count) if gaps else 1)
    last = logged[-1] if logged else 0
    if step - last <= every:
        return None
    file = run.path / "metrics.jsonl"
    return (f"{file}: the loss is logged up to step {last:,}, but the ledger says the run reached step {step:,}: "
            "the curves stop early (a copy cut short, or an older file?)" if logged else
            f"{file}: no loss logged, though the ledger says the run reached step {step:,} (the file is missing "
            "or empty: a copy cut short?)")


def load_model_eval(path: Path) -> Run:
    """A folder `arzan eval MODEL` wrote (evals/<model>/eval.json, no cost.json): the base model, or
    KazLLM, scored on the same tasks, so the report sets the fine-tunes beside them. It joins the
    score table and plot only; with no bill it has no place in the cost tables."""
    path = Path(path)
    folder = path.parent if path.name == "eval.json" else path
    if not (folder / "eval.json").is_file():
        raise ArzanError(f"{folder}: not an arzan run folder (no cost.json) nor an `arzan eval` folder (no eval.json); "
                         "give a folder `arzan train` or `arzan eval` wrote")
    model = Run(path=folder, ledger={}, kind="model")
    model.scores = _read_scores(folder / "eval.json", model)
    if not model.scores:
        raise ArzanError(f"{folder / 'eval.json'}: no scores in it; run `arzan eval` again")
    return model


def training_kzt(ledger: dict[str, Any]) -> float | None:
    """The bill of the sessions that trained: what making the fine-tune cost, without the evals
    that measured it or a merge after it (those sessions only add eval or save time). The ₸ per
    point gained divides this, so a later eval does not raise the price of points already bought.

    A training session's own eval phase (the generation check, the recipe's lm-eval after the last
    step) is measuring too and is left out at that session's price, so a run scored inside its
    training and one scored by a later `arzan eval` buy their points at the same price. Evaluation
    inside the training loop (eval_loss) is train time and stays in. A merge inside the session
    shares the save phase with the adapter's own save and stays in. A ledger without sessions has
    only its total."""
    sessions = ledger.get("sessions") if isinstance(ledger, dict) else None
    total = (ledger.get("money") or {}).get("kzt") if isinstance(ledger, dict) else None
    if not isinstance(sessions, list) or not sessions:
        return total
    spent = 0.0
    for x in sessions:
        if not isinstance(x, dict):  # a hand-edited ledger: check_ledger does not look inside sessions
            continue
        phases = x.get("phases") if isinstance(x.get("phases"), dict) else {}
        if not (any(phases.get(p) for p in ("setup", "data", "train")) or (x.get("tokens") or {}).get("trained")):
            continue
        kzt, billed = float((x.get("money") or {}).get("kzt") or 0.0), x.get("billed_seconds")
        eval_s = phases.get("eval") or 0.0
        if isinstance(billed, (int, float)) and billed > 0 and isinstance(eval_s, (int, float)):
            kzt *= max(0.0, billed - eval_s) / billed  # the session's one price: money is seconds x rate
        spent += kzt
    return spent


def check_ledger(ledger: Any, file: Path) -> None:
    """cost.json as arzan writes it, before a report or `arzan compare` shows any of it: another
    tool's cost.json would otherwise become a row of invented facts (a CPU, 0:00:00, 0 ₸)."""
    if not isinstance(ledger, dict):
        raise ArzanError(f"{file}: corrupt ledger, expected a JSON object, got {type(ledger).__name__}")
    version = ledger.get("schema_version")
    if version not in (1, None):
        raise ArzanError(f"{file}: ledger schema_version {version!r}; this arzan reads version 1")
    if version is None and not ledger.get("run_id"):
        raise ArzanError(f"{file}: not an arzan ledger (no schema_version, no run_id)")
    for section in ("money", "price", "exchange", "tokens", "energy", "budget", "progress", "phases", "model",
                    "hardware", "summary"):
        if ledger.get(section) is not None and not isinstance(ledger[section], dict):
            raise ArzanError(f"{file}: corrupt ledger, {section} is {type(ledger[section]).__name__}, not an object")
    _check_numbers(ledger, file)


NUMBERS = ("money.kzt", "money.usd", "money.kzt_per_1m_tokens", "gpu_hours", "billed_seconds", "tokens.seen",
           "tokens.trained", "tokens.per_second", "energy.kwh", "energy.co2_kg", "progress.step", "progress.max_steps")


def _check_numbers(ledger: dict[str, Any], file: Path) -> None:
    """A figure the report adds up or draws must be a number; a missing one is fine (a partial
    ledger), a hand-edited "lots" is named here instead of failing inside a plot."""
    for dotted in (*NUMBERS, *(f"phases.{p}" for p in PHASES)):
        node: Any = ledger
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and (isinstance(node, bool) or not isinstance(node, (int, float))):
            raise ArzanError(f"{file}: corrupt ledger, {dotted} is {node!r}, not a number")


def _read_metrics(file: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """A live run may be writing the last line right now, so an unreadable last line is normal;
    a bad line elsewhere is reported in the page rather than failing the whole report."""
    if not file.is_file():
        return []
    lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number != len(lines):
                warnings.append(f"{file}: line {number} is not JSON, skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
    return _latest_rows(rows)


def _latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A resume after a hard kill trains again the steps after its checkpoint and logs them again;
    the curve shows what the model became, so the later rows replace the ones the kill lost (whose
    money the ledger keeps, in that session's lost_steps). A row names its session; a file older
    than that is read by its steps alone (a step that goes back starts the retrained ones)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    kept: list[dict[str, Any]] = []
    for row in rows:
        step, session = row.get("step"), row.get("session")
        last = kept[-1] if kept else {}
        if number(step) and number(session) and number(last.get("session")) and session > last["session"]:
            kept = [r for r in kept if not (number(r.get("step")) and r["step"] >= step
                                            and number(r.get("session")) and r["session"] < session)]
        elif number(step) and number(last.get("step")) and step < last["step"]:
            kept = [r for r in kept if not (number(r.get("step")) and r["step"] >= step)]
        kept.append(row)
    return kept


def _read_recipe(file: Path, warnings: list[str]) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        warnings.append(f"{file}: unreadable YAML ({first_line(exc)}), data sources not shown")
        return None
    return data if isinstance(data, dict) else None


def _read_scores(file: Path, run: Run) -> dict[str, Score]:
    """eval.json wins over the ledger's summary.eval, which may be a shorter copy of it."""
    scores = parse_scores(run.get("summary.eval"))
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArzanError(f"{file}: corrupt eval results, not valid JSON ({exc})") from None
        scores.update(parse_scores(data))
        if isinstance(data, dict):
            run.eval_meta = {k: v for k, v in data.items() if k not in ("rows", "tasks", "summary")}
            heads = data.get("tasks") if isinstance(data.get("tasks"), dict) else {}
            # each task's own limit and date: a later `arzan eval` of some tasks leaves the others as they were
            run.eval_meta["tasks"] = {t: {k: h[k] for k in ("limit", "evaluated_at") if k in h}
                                      for t, h in heads.items() if isinstance(h, dict)}
    from arzan.evaluation.results import earlier_adapter

    if scores and run.kind == "run" and earlier_adapter(run.eval_meta, run.path):  # summary.eval names no adapter
        for sc in scores.values():
            sc.stale = True
        run.warnings.append(f"{file}: scores of an earlier adapter (a resume trained on and saved a new one); "
                            f"kept, but not this run's score now: arzan eval {run.path}")
    return scores


def label_runs(runs: list[Run]) -> None:
    """A run by its folder's name: every variant of a recipe (`--out runs/smoke-short`) has the
    recipe's name as its run id. Two folders of one name (runs/a/smoke, runs/b/smoke) by their path.
    A scored model is named by what it is (meta-llama/Llama-3.1-8B-Instruct), not by its folder."""
    names = [str((r.kind == "model" and r.base) or r.path.name) for r in runs]
    for run, name in zip(runs, names):
        run.label = name if names.count(name) == 1 else str(run.path)
