"""Published scores to put next to ours on the score-against-cost plot.

The file (resources/reference_scores.yaml) is curated by hand and may be missing or in a shape
this module has not seen; a report is still worth having without it, so every problem here
becomes a note in the page, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import first_line


@dataclass
class Reference:
    model: str
    task: str
    score: float
    kzt: float | None = None
    usd: float | None = None
    source: str | None = None
    table: str | None = None  # which table or file of the source the number was read from
    method: str | None = None  # how the source scored it (reference_scores.yaml's `protocol`)
    metric: str | None = None


def default_path() -> Path | None:
    try:
        path = Path(str(resources.files("arzan") / "resources" / "reference_scores.yaml"))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


def load_references(path: Path | None, warnings: list[str]) -> list[Reference]:
    """Reads a list of {model, task, score, cost_kzt?, cost_usd?, source?}, found at the top or
    under `references:`; or {model: {task: score}} (also under `models:`)."""
    if path is None or not Path(path).is_file():
        return []
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        warnings.append(f"{path}: unreadable YAML ({first_line(exc)}); references left out")
        return []
    if isinstance(data, dict):
        for key in ("references", "scores", "models"):
            if key in data:
                data = data[key]
                break
    out: list[Reference] = []
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                out.extend(_from_entry(item))
    elif isinstance(data, dict):
        for model, tasks in data.items():
            if isinstance(tasks, dict):
                out.extend(_from_entry({"model": model, **tasks}))
    if data and not out:
        warnings.append(f"{path}: no reference scores recognised; references left out")
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, dict):  # {value: 0.5, stderr: ...} or {score: ...}
        value = value.get("score", value.get("value"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _from_entry(item: dict[str, Any]) -> list[Reference]:
    model = str(item.get("model") or item.get("name") or "reference")
    kzt, usd = _number(item.get("cost_kzt", item.get("kzt"))), _number(item.get("cost_usd", item.get("usd")))
    source = item.get("source") or item.get("url")
    source = None if source is None else str(source)
    text = {key: None if item.get(key) is None else " ".join(str(item[key]).split())
            for key in ("table", "protocol", "method", "metric")}
    extra = {"table": text["table"], "method": text["protocol"] or text["method"], "metric": text["metric"]}
    if "task" in item and _number(item.get("score")) is not None:
        return [Reference(model, str(item["task"]), _number(item["score"]), kzt, usd, source, **extra)]
    tasks = item.get("scores") if isinstance(item.get("scores"), dict) else item
    skip = {"model", "name", "source", "url", "cost_kzt", "cost_usd", "kzt", "usd", "note", "as_of",
            "table", "protocol", "method", "metric"}
    return [Reference(model, str(task), score, kzt, usd, source, **extra)
            for task, raw in tasks.items()
            if task not in skip and (score := _number(raw)) is not None]


def shown(refs: list[Reference], tasks: list[str]) -> list[Reference]:
    """The references the score plot draws: those on a task some reported run was scored on."""
    wanted = {t.lower() for t in tasks}
    return [r for r in refs if r.task.lower() in wanted]


def by_source(refs: list[Reference]) -> list[tuple[Reference, list[Reference]]]:
    """(first entry, its scores) per published model and source: one row each in the report's
    references table, so every drawn point can be traced to a URL and a scoring method."""
    groups: dict[tuple[str, str | None], list[Reference]] = {}
    for ref in refs:
        groups.setdefault((ref.model, ref.source), []).append(ref)
    return [(items[0], items) for items in groups.values()]
