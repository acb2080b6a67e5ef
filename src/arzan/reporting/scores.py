"""Eval scores in the shapes they arrive in, reduced to one number per task.

arzan's eval.json is `{"tasks": {task: {"metric": "acc", "acc": 0.61, "n": 500, ...}}}`, but older
files, the ledger's summary.eval and raw lm-eval output differ; a report should show any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Which metric stands for a task when an entry carries several and names none.
PREFERRED_METRICS = ("score", "acc_norm", "acc", "exact_match", "f1", "chrf", "bleu")


@dataclass
class Score:
    value: float
    metric: str | None = None
    n: int | None = None
    version: str | None = None
    stderr: float | None = None
    base_4bit: bool = False  # scored on a 4-bit base (arzan eval of a QLoRA run, or --load-in-4bit)
    chat_template: bool = False  # questions in the model's chat template (arzan eval --chat-template)
    stale: bool = False  # scored an adapter the run folder no longer holds (a resume trained on)


# lm-eval's metrics already on a 0–100 scale, by exact name (truthfulqa_gen's bleu_acc is a
# fraction); every other one it reports (acc, acc_norm, exact_match, f1, mcc, ...) is a fraction.
PERCENT_METRICS = frozenset({"bleu", "chrf", "ter", "bleu_max", "bleu_diff", "rouge1_max", "rouge1_diff",
                             "rouge2_max", "rouge2_diff", "rougel_max", "rougel_diff"})


def points(value: float, metric: str | None = None) -> float:
    """A score on 0–100: accuracies (0–1) as percentage points; chrF, BLEU and TER are on 0–100
    already, so a chrF of 0.8 (a broken fine-tune) stays 0.8, never 80. Without a metric name, a value
    up to 1 is taken for a fraction. The one rule for the report's tables and plot and for `arzan
    compare`, so they show one number."""
    return value * scale(value, metric)


def scale(value: float, metric: str | None = None) -> float:
    """What turns `value` (and its standard error) into points: 100 for a fraction, else 1."""
    if (metric or "").split(",")[0].strip().lower() in PERCENT_METRICS:
        return 1.0
    return 100.0 if abs(value) <= 1 else 1.0


def parse_scores(data: Any) -> dict[str, Score]:
    """Accepts {task: number}, {task: {metric: value, n, version}}, the same under "tasks", and
    lm-eval's {"results": {task: {"acc,none": ...}}}, so eval output of any of those shapes shows."""
    if not isinstance(data, dict):
        return {}
    for key in ("tasks", "results", "scores"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    out: dict[str, Score] = {}
    for task, entry in data.items():
        if isinstance(entry, bool):
            continue
        if isinstance(entry, (int, float)):
            out[str(task)] = Score(float(entry))
        elif isinstance(entry, dict) and (score := _entry_score(entry)) is not None:
            out[str(task)] = score
    return out


def _entry_score(entry: dict[str, Any]) -> Score | None:
    numeric = {str(k).split(",")[0]: v for k, v in entry.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in str(k)}
    named = entry.get("metric")
    order = ([named] if isinstance(named, str) else []) + list(PREFERRED_METRICS)
    metric = next((m for m in order if m in numeric), None)
    if metric is None:
        return None
    n = entry.get("n", entry.get("n_samples"))
    version = entry.get("version", entry.get("task_version"))
    label = named if isinstance(named, str) else (None if metric == "score" else metric)
    stderr = next((v for k, v in entry.items() if str(k).split(",")[0] == f"{metric}_stderr"
                   and isinstance(v, (int, float)) and not isinstance(v, bool)), None)
    return Score(float(numeric[metric]), label, n if isinstance(n, int) else None,
                 None if version is None else str(version), stderr, entry.get("base_4bit") is True,
                 chat_template=entry.get("chat_template") is True)
