"""Score tables across runs, with published numbers beside them, clearly marked as such.

Why reference rows are in the same table: the claim arzan exists to test ("a 5000 ₸ LoRA is
comparable to KazLLM") is a comparison, and a reader should see the measured row, the published
row and the price on one screen. Why they are marked on every row: a published number was made
with someone else's prompt, split and scoring, so it is context, never a measurement of ours.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import ArzanError
from arzan.runfolder import unique_folders
from arzan.reporting.scores import points
from arzan.reporting.table import kzt as kzt_text

PUBLISHED = "published, not measured here"
NO_EVAL = "no eval"


def default_references_path() -> Path:
    return Path(str(resources.files("arzan") / "resources" / "reference_scores.yaml"))


def load_references(path: str | Path | None = None) -> list[dict]:
    """Entries of reference_scores.yaml: {model, source, table, protocol, metric, scores}."""
    path = Path(path) if path else default_references_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ArzanError(f"{path}: unreadable reference scores ({e})") from None
    refs = data.get("references") if isinstance(data, dict) else None
    if not isinstance(refs, list):
        raise ArzanError(f"{path}: expected a `references:` list")
    for i, ref in enumerate(refs, start=1):
        if not isinstance(ref, dict) or not ref.get("model") or not ref.get("source"):
            raise ArzanError(f"{path}: reference {i}: needs at least `model` and `source` (a URL)")
    return refs


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArzanError(f"{path}: not found (run `arzan eval` on the run first)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ArzanError(f"{path}: not valid JSON ({e})") from None


def _check_eval_shape(doc: Any, path: Path) -> None:
    """eval.json as `arzan eval` writes it; a hand-edited or foreign file is named, not a KeyError."""
    if not isinstance(doc, dict):
        raise ArzanError(f"{path}: not an arzan eval.json (expected a JSON object, got {type(doc).__name__})")
    tasks = doc.get("tasks") or {}
    if not isinstance(tasks, dict):
        raise ArzanError(f"{path}: 'tasks' should map task names to scores, got {type(tasks).__name__}")
    for task, head in tasks.items():
        if not isinstance(head, dict) or not isinstance(head.get("metric"), str):
            raise ArzanError(f"{path}: task '{task}' has no 'metric' naming its score "
                             "(write it with `arzan eval`, or give {\"metric\": \"acc\", \"acc\": 0.5, ...})")
        value = head.get(head["metric"])
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ArzanError(f"{path}: task '{task}': {head['metric']} is {value!r}, not a number")
    rows = doc.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "task" in r and "metric" in r for r in rows):
        raise ArzanError(f"{path}: 'rows' should be a list of {{task, metric, value, ...}} objects")


def _measured(source: str | Path, detail: bool) -> list[dict]:
    p = Path(source)
    if not p.exists():  # a typo, not a run that still needs `arzan eval`
        raise ArzanError(f"{p}: no such run folder or eval.json")
    eval_file = p / "eval.json" if p.is_dir() else p
    if p.is_dir() and not eval_file.is_file() and (p / "cost.json").is_file():
        return [_cost_only(p)]
    doc = _read_json(eval_file)
    _check_eval_shape(doc, eval_file)
    ledger_file = eval_file.parent / "cost.json"
    ledger = _read_json(ledger_file) if ledger_file.is_file() else {}
    label = ledger.get("run_id") or (eval_file.parent.name if p.is_dir() or p.name == "eval.json"
                                     else p.stem)
    kzt = (ledger.get("money") or {}).get("kzt")
    if detail:
        picked = [r for r in doc.get("rows", []) if r.get("primary")]
    else:
        picked = [{"task": t, "metric": h["metric"], "value": h.get(h["metric"]),
                   "stderr": h.get(f"{h['metric']}_stderr"), "n": h.get("n"), "limit": h.get("limit")}
                  for t, h in (doc.get("tasks") or {}).items()]
    rows = []
    for r in picked:
        value = r.get("value")
        rows.append({"model": str(label), "basis": "measured", "task": r["task"], "metric": r["metric"],
                     "value": value, "stderr": r.get("stderr"), "n": r.get("n"),
                     "limit": r.get("limit", doc.get("limit")), "kzt": kzt,
                     "kzt_per_point": kzt / points(value) if kzt and value else None,
                     "source": str(eval_file)})
    return rows


def _cost_only(run: Path) -> dict:
    """A run folder that was never evaluated still has a bill worth setting beside the others: one
    row with its cost, `task` None, and "no eval" where its scores would be."""
    ledger_file = run / "cost.json"
    ledger = _read_json(ledger_file)
    if not isinstance(ledger, dict):
        raise ArzanError(f"{ledger_file}: not an arzan ledger (expected a JSON object, got {type(ledger).__name__})")
    kzt = (ledger.get("money") or {}).get("kzt")
    if kzt is not None and (isinstance(kzt, bool) or not isinstance(kzt, (int, float))):
        raise ArzanError(f"{ledger_file}: money.kzt is {kzt!r}, not a number")
    return {"model": str(ledger.get("run_id") or run.name), "basis": "measured", "task": None, "metric": None,
            "value": None, "stderr": None, "n": None, "limit": None, "kzt": kzt, "kzt_per_point": None,
            "source": str(ledger_file), "no_eval": True}


def compare(sources: list[str | Path], references: bool | str | Path = True,
            detail: bool = False) -> list[dict]:
    """One row per (model, task): run folders or eval.json files, then published rows.

    `kzt` is the run's whole bill from its ledger and `kzt_per_point` is that bill divided by the
    score in percentage points, the "₸ per point" the cost claims are argued in. A run folder
    without eval.json gets one row with its bill and `task` None (shown as "no eval"), so runs
    can be compared on cost alone. With `detail`, group members (each UNT subject, ...) get rows
    too. Published rows are kept only for tasks some measured row has; when nothing was scored,
    only if no run was given either.
    """
    rows = [r for s in unique_folders(sources) for r in _measured(s, detail)]
    _tell_apart(rows)
    if references:
        tasks = {r["task"] for r in rows if r["task"] is not None}
        wanted = tasks or not rows  # cost-only runs: no scores to set published ones beside
        for ref in load_references(None if references is True else references) if wanted else []:
            for task, value in (ref.get("scores") or {}).items():
                if value is None or (tasks and task not in tasks):
                    continue
                rows.append({"model": ref["model"], "basis": PUBLISHED, "task": task,
                             "metric": ref.get("metric", "acc"), "value": float(value), "stderr": None,
                             "n": None, "limit": None, "kzt": None, "kzt_per_point": None,
                             "source": ref["source"], "table": ref.get("table"),
                             "protocol": ref.get("protocol")})
    return rows


def _tell_apart(rows: list[dict]) -> None:
    """Two runs of one recipe share a run id; the table is keyed by name, so one would show the
    other's scores. Such rows are named by their folder instead, as the report does."""
    files: dict[str, set[str]] = {}
    for r in rows:
        files.setdefault(r["model"], set()).add(r["source"])
    for r in rows:
        if len(files[r["model"]]) > 1:
            r["model"] = str(Path(r["source"]).parent)


def _pivot(rows: list[dict]) -> tuple[list[str], list[tuple[str, str, Any]], dict]:
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["task"] is not None))
    models = list(dict.fromkeys((r["model"], r["basis"], r["kzt"]) for r in rows))
    cells = {(r["model"], r["basis"], r["task"]): r for r in rows}
    return tasks, models, cells


def _cell(r: dict | None, no_eval: bool = False) -> str:
    """A score on 0–100 with its ± and item count, and the ₸ per point; "no eval" for a run never
    evaluated (so an empty cell is not read as a score of nothing), "–" for a task it was not run on."""
    if r is None or r.get("value") is None:
        return NO_EVAL if no_eval else "–"
    s = f"{points(r['value']):.1f}"
    if r.get("stderr") is not None:
        s += f" ±{points(r['stderr']) if abs(r['value']) <= 1 else r['stderr']:.1f}"
    s += f" (n={r['n']})" if r.get("n") else ""
    return s + (f" · {kzt_text(r['kzt_per_point'])} ₸/pt" if r.get("kzt_per_point") else "")


def _cells(model: str, basis: str, tasks: list[str], cells: dict) -> list[str]:
    """One row's score cells; with no task at all (only unevaluated runs), the one `scores` column."""
    no_eval = (model, basis, None) in cells
    return [_cell(cells.get((model, basis, t)), no_eval) for t in tasks or [None]]


def _published_sources(rows: list[dict]) -> list[str]:
    """One line per published row's source: a reference nobody can look up is not a reference."""
    sources = dict.fromkeys((r["model"], r["source"], r.get("table"), r.get("protocol"))
                            for r in rows if r["basis"] == PUBLISHED)
    return [f"{m}: {src}" + (f" — {table}" if table else "") + (f". Protocol: {proto}" if proto else "")
            for m, src, table, proto in sources]


def _money(kzt: float | None) -> str:
    """The report's tenge rule (reporting.table.kzt): 5,000 from 1,000 up, 13.25 below, and two
    significant digits where two decimals would show 0 (a CPU eval's 0.0031 ₸)."""
    return "–" if kzt is None else f"{kzt_text(kzt)} ₸"


def scores_table(rows: list[dict], title: str = "Kazakh scores (% correct)"):
    """A rich Table: one line per model or run, one column per task."""
    from rich.table import Table

    tasks, models, cells = _pivot(rows)
    caption = [f"'{PUBLISHED}': copied from the source in reference_scores.yaml, made with its own prompts "
               "and splits. ₸/pt: the run's whole bill per point of score.", *_published_sources(rows)]
    table = Table(title=title, caption="\n".join(caption), caption_justify="left")
    for col in ("model", "basis", "cost", *(tasks or ["scores"])):
        table.add_column(col, justify="right" if col not in ("model", "basis") else "left")
    for model, basis, kzt in models:
        table.add_row(model, basis, _money(kzt), *_cells(model, basis, tasks, cells))
    return table


def scores_markdown(rows: list[dict]) -> str:
    """The same table as Markdown, with the sources of published rows listed under it."""
    tasks, models, cells = _pivot(rows)
    heads = tasks or ["scores"]
    lines = ["| model | basis | cost | " + " | ".join(heads) + " |",
             "|---|---|---:|" + "---:|" * len(heads)]
    for model, basis, kzt in models:
        lines.append(f"| {model} | {basis} | {_money(kzt)} | " + " | ".join(_cells(model, basis, tasks, cells)) + " |")
    sources = _published_sources(rows)
    if sources:
        lines += ["", "Published rows (not measured here):", *(f"- {line}" for line in sources)]
    return "\n".join(lines) + "\n"
