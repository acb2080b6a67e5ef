"""Report sections that are not figures from the bill: where the published scores on the score
plot come from, whether the fine-tune stops talking (the ledger's generation check), and what the
score table's words mean.

Both are built here as plain data so the HTML and the Markdown report say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arzan.reporting import table
from arzan.reporting.refs import Reference, by_source
from arzan.reporting.runs import Run

PUBLISHED = "published, not measured here"
ANSWER_CHARS = 120  # after-training answers are cut here: the section is a check, not a transcript
NEVER_STOPS = "never stops"


@dataclass
class ReferenceRow:
    model: str
    scores: str  # "task 0.350, task 0.290" for the tasks the plot draws
    metric: str | None
    source: str | None
    table: str | None
    method: str | None


def reference_rows(refs: list[Reference]) -> list[ReferenceRow]:
    """One row per published model and source, only for references the score plot draws."""
    rows = []
    for first, items in by_source(refs):
        rows.append(ReferenceRow(first.model, ", ".join(f"{r.task} {table.score(r.score, metric=r.metric)}" for r in items),
                                 first.metric, first.source, first.table, first.method))
    return rows


@dataclass
class Answer:
    prompt: str
    text: str  # truncated to ANSWER_CHARS
    stopped: bool | None  # None: the ledger did not say
    n_tokens: int | None


@dataclass
class GenerationCheck:
    summary: str
    ok: bool | None
    answers: list[Answer]

    @property
    def never_stopped(self) -> int:
        return sum(a.stopped is False for a in self.answers)

    @property
    def flag(self) -> str | None:
        """The line a reader must not miss (shown after a "never stops" label): answers that ran to
        the token limit."""
        if not self.never_stopped:
            return None
        return (f"{self.never_stopped} of {len(self.answers)} answers after training ran to the token "
                "limit without the stop token")


def _cut(text: Any, limit: int = ANSWER_CHARS) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def generation(run: Run) -> GenerationCheck | None:
    """The ledger's summary.generation_check (the answers after training), if the run made one."""
    return generation_from(run.get("summary.generation_check"))


def generation_from(raw: Any) -> GenerationCheck | None:
    """Reads what `arzan.evaluation.generation_check` returns (as the ledger stores it); also used by
    the model card, so the card and the report show the same answers and the same flag."""
    if isinstance(raw, str):  # an older ledger may hold only the summary line
        return GenerationCheck(raw, None, [])
    if not isinstance(raw, dict):
        return None
    answers = []
    for item in raw.get("prompts") or []:
        if isinstance(item, dict):
            stopped = item.get("stopped_at_eos")
            answers.append(Answer(_cut(item.get("prompt"), 80), _cut(item.get("text")),
                                  stopped if isinstance(stopped, bool) else None,
                                  item.get("n_tokens") if isinstance(item.get("n_tokens"), int) else None))
    ok = raw.get("ok") if isinstance(raw.get("ok"), bool) else None
    if ok is None and answers and all(a.stopped is not None for a in answers):
        ok = all(a.stopped for a in answers)
    summary = str(raw.get("summary") or f"{sum(bool(a.stopped) for a in answers)}/{len(answers)} answers "
                  "stopped at EOS")
    return GenerationCheck(summary, ok, answers)


def stopped_text(answer: Answer) -> str:
    if answer.stopped is None:
        return table.DASH
    if answer.stopped:
        return "yes"
    return f"no — {NEVER_STOPS}" + (f" ({answer.n_tokens} tokens)" if answer.n_tokens else "")


def scores_note(runs: list[Run], models: list[Run]) -> str:
    """Where the score table's figures come from, and what its gain words mean when a base is there."""
    from arzan.evaluation.compare import NOISE_Z

    text = "From each run's eval.json (or the ledger's summary.eval); the metric is under each task name."
    if models:
        text += (" Scored here but not trained here (no bill): "
                 + "; ".join(f"{m.label} ({m.path / 'eval.json'})" for m in models) + ".")
    if any(r.get("gain") is not None for r in table.score_gains(runs + models).values()):
        text += (" vs base: points above the base model on the same items, ± both standard errors combined;"
                 f" ₸/pt gained: the run's training bill (its scoring and later merges left out) per point above its"
                 " base, given only where the gain is over"
                 f" {NOISE_Z} × its ± (about 95% sure it is not noise).")
    chat = [r.label for r in runs + models if any(sc.chat_template for sc in r.scores.values())]
    if chat:
        text += (" Scored with the model's chat template (arzan eval --chat-template): " + ", ".join(chat)
                 + "; a score is set against its base's only when both were scored the same way.")
    return " ".join([text, *_base_fixes(runs + models)])


def _base_fixes(runs: list[Run]) -> list[str]:
    """What `arzan compare` says to run when a fine-tune has no base scored its way, so the report
    names the command too; scores kept only in a ledger (no eval.json) have nothing to say it from."""
    from arzan.errors import ArzanError
    from arzan.evaluation.compare import base_fixes, compare

    files = [str(r.path / "eval.json") for r in runs if (r.path / "eval.json").is_file()]
    try:
        return base_fixes(compare(files, references=False)) if files else []
    except ArzanError:  # a file compare refuses still shows what the report could read of it
        return []
