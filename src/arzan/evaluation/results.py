"""lm-eval's results dict → eval.json rows, one headline per task, and the ledger copy.

Why reshape at all: lm-eval keys metrics as "acc,none" and spreads n, version and few-shot count
over four side tables; a run folder is read by people and by the report, so each row carries all
of it (task, metric, value, stderr, n, version, few-shot count, where the data came from).
"""

from __future__ import annotations

import json
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


def put_in_ledger(path: Path, summary: dict) -> None:
    """summary.eval in cost.json, through the ledger's own reader and atomic writer."""
    from arzan.cost.ledger import read_ledger, write_ledger

    ledger = read_ledger(path)
    ledger.summary.eval = summary
    write_ledger(path, ledger)
