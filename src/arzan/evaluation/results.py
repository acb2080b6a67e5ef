"""lm-eval's results dict → eval.json rows, one headline per task, merged with earlier evals.

Why reshape at all: lm-eval keys metrics as "acc,none" and spreads n, version and few-shot count
over four side tables; a run folder is read by people and by the report, so each row carries all
of it (task, metric, value, stderr, n, version, few-shot count, where the data came from).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from arzan.fileio import write_text_atomic


def extract_rows(results: dict, data_source: dict[str, str]) -> list[dict]:
    """One row per task or group and metric."""
    rows = []
    n_samples = results.get("n-samples", {})
    groups = results.get("group_subtasks", {})
    for name, res in {**results.get("results", {}), **results.get("groups", {})}.items():
        primary = _primary_metric(results.get("configs", {}).get(name, {}))
        members = [name] if name in n_samples else _all_subtasks(name, groups)
        n = sum(n_samples.get(t, {}).get("effective", 0) for t in members) or None
        total = sum(n_samples.get(t, {}).get("original", 0) for t in members) or None
        for key, value in res.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = res.get(f"{metric}_stderr,{filt}")
            version = results.get("versions", {}).get(name)
            rows.append({
                "task": name, "kind": "group" if name not in n_samples and members else "task",
                "metric": metric, "filter": filt, "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                "n": n, "n_total": total, "version": None if version is None else str(version),
                "num_fewshot": results.get("n-shot", {}).get(name),
                "data_source": data_source.get(name),
                "primary": metric == primary if primary else metric in ("acc", "exact_match"),
            })
    return rows


def _primary_metric(cfg: dict) -> str | None:
    ml = cfg.get("metric_list") or []
    return ml[0].get("metric") if ml and isinstance(ml[0], dict) else None


def _all_subtasks(name: str, groups: dict) -> list[str]:
    out = []
    for sub in groups.get(name, []):
        out += _all_subtasks(sub, groups) if groups.get(sub) else [sub]
    return out


def headline(rows: list[dict], requested: list[str]) -> dict[str, dict]:
    """One score per requested task: {task: {"metric": m, m: value, m_stderr, n, version, ...}},
    the shape the ledger's summary.eval and the report read."""
    out = {}
    for name in requested:
        cand = [r for r in rows if r["task"] == name]
        row = next((r for r in cand if r["primary"]), cand[0] if cand else None)
        if row is not None:
            m = row["metric"]
            out[name] = {"metric": m, m: row["value"], f"{m}_stderr": row["stderr"], "n": row["n"],
                         "version": row["version"], "num_fewshot": row["num_fewshot"]}
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """A killed eval leaves the previous eval.json whole."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def merge_with_previous(old: dict | None, new: dict) -> dict:
    """A later `arzan eval` of the same model adds to the earlier scores: it replaces only the tasks
    it ran again (a per-task rerun or a quick `--limit 10` check must not erase a full suite).
    Another model (a retrained adapter, a different base) starts afresh."""
    before = (old or {}).get("model") if isinstance((old or {}).get("model"), dict) else {}
    sha = new["model"].get("adapter_sha256")
    # an adapter is the same model by its weights (the base's recorded name changed once: the recipe's
    # name replaced the adapter config's); a plain model by its name and how many bits it loaded in
    same = old is not None and (before.get("adapter_sha256") == sha if sha else
                                not before.get("adapter_sha256") and before.get("base") == new["model"].get("base")
                                and bool(before.get("load_in_4bit")) == bool(new["model"].get("load_in_4bit")))
    entry = {k: new.get(k) for k in ("created_at", "tasks_run", "limit", "seconds")}
    if not same:
        return {**new, "history": [entry]}
    ran = {r["task"] for r in new["rows"]}
    rows = [r for r in old.get("rows", []) if r["task"] not in ran] + new["rows"]
    tasks = {**{t: h for t, h in (old.get("tasks") or {}).items() if t not in new["tasks"]}, **new["tasks"]}
    history = old.get("history") or [{k: old.get(k) for k in entry}]
    return {**new, "rows": rows, "tasks": tasks,
            "tasks_run": list(dict.fromkeys([*(old.get("tasks_run") or []), *new["tasks_run"]])),
            "data_source": {**(old.get("data_source") or {}), **new["data_source"]},
            "substituted": {**(old.get("substituted") or {}), **new["substituted"]},
            "history": [*history, entry]}


def earlier_adapter(doc: Any, folder: Path) -> bool:
    """eval.json scored an adapter the folder no longer holds: a resume trained on and saved a new
    one. Its scores are kept (they were paid for) but must not stand for the run as it is now."""
    from arzan.fileio import sha256

    model = doc.get("model") if isinstance(doc, dict) else None
    scored = model.get("adapter_sha256") if isinstance(model, dict) else None
    weights = Path(folder) / "adapter" / "adapter_model.safetensors"
    if not scored or not weights.is_file():
        return False
    try:  # weights written before the eval began are the ones it scored: no need to hash a GB on Drive
        if weights.stat().st_mtime < datetime.fromisoformat(str(doc.get("created_at"))).timestamp() - 60:
            return False
    except (TypeError, ValueError, OSError):
        pass
    return sha256(weights) != scored


def relimited_note(before: dict | None, doc: dict) -> str | None:
    """A task scored again on another number of items replaces the earlier scores: fine-tunes set
    against those (same items) are no longer comparable to this model, which should be said now."""
    old = (before or {}).get("tasks") if len(doc.get("history") or []) > 1 else None  # the same model, merged
    if not isinstance(old, dict):
        return None
    # this eval's tasks (the last history entry): doc's tasks_run also lists the ones kept from before
    ran = (doc.get("history") or [{}])[-1].get("tasks_run") or []
    new = doc.get("tasks") or {}

    def items(limit: Any) -> str:
        return f"--limit {limit}" if limit else "the full set"

    def way(chat: Any) -> str:
        return "with the chat template" if chat else "without it"

    notes = []
    changed = [t for t in ran if isinstance(old.get(t), dict) and old[t].get("limit") != doc.get("limit")]
    if changed:
        was = {old[t].get("limit") for t in changed}
        notes.append(f"{', '.join(changed)}: the earlier scores on {', '.join(items(w) for w in was)} are replaced "
                     f"by these on {items(doc.get('limit'))}; a fine-tune scored on the earlier items is no longer "
                     "set against them")
    rescored = [t for t in ran if isinstance(old.get(t), dict) and isinstance(new.get(t), dict)
                and bool(old[t].get("chat_template")) != bool(new[t].get("chat_template"))]
    if rescored:
        chat = bool(new[rescored[0]].get("chat_template"))
        notes.append(f"{', '.join(rescored)}: scored {way(chat)} now, replacing the scores {way(not chat)}; a base "
                     f"is set against these only if it was scored {way(chat)} too")
    return "; ".join(notes) or None


def set_aside_unreadable(path: Path, previous: dict | None) -> Path | None:
    """An eval.json that cannot be read (cut short, edited by hand; `previous`, read_previous's
    answer, is None) holds scores someone paid for: the new one does not replace it silently but
    next to `eval.json.unreadable-<time>`."""
    from arzan.runfolder import aside_name

    if previous is not None or not path.is_file():
        return None
    aside = aside_name(path, "unreadable")
    path.rename(aside)
    return aside


def read_previous(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none yet, or unreadable: the new results stand alone
    return doc if isinstance(doc, dict) else None

