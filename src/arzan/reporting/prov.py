"""Provenance and run-state text: where each figure came from, and what to do with a stopped run.

Rows are small lists of (kind, text) parts, kind one of "text", "code", "tag", so the HTML and the
Markdown report say the same thing in their own markup. URLs are "code" parts, never links: the
page must not fetch or ping anything when opened, and a copyable URL is all a reader needs.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

from arzan.modelcard import session_prices
from arzan.reporting.runs import STOPPED, Run, parse_time
from arzan.reporting.table import kzt, usd

Part = tuple[str, str]
# one entry per value the ledger allows for energy.method (cost/ledger.py: nvml | rapl | tdp | none)
ENERGY_METHODS = {"nvml": "GPU power read through NVML",
                  "rapl": "CPU energy read from the RAPL package counters (Linux powercap); memory and "
                          "the rest of the machine not counted",
                  "tdp": "GPU TDP × time (an upper bound)",
                  "none": "not measurable on this machine",
                  "mixed": "measured differently in different sessions (sessions[].energy_method in cost.json)",
                  None: "not recorded"}
Row = tuple[str, list[Part]]


def when(text: Any) -> str:
    """ISO timestamps as people write them; the ledger keeps the exact string."""
    moment = parse_time(text)
    if moment is None:
        return str(text or "?")
    if moment.utcoffset() is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _count(n: Any) -> str:
    if not isinstance(n, (int, float)) or not n:
        return "?"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _dated(source: Any, as_of: Any) -> list[Part]:
    parts: list[Part] = [("text", "source "), ("code", str(source))] if source else [("text", "source not recorded")]
    return parts + ([("text", f", as of {as_of}")] if as_of else [])


def _sources(run: Run) -> list[Part]:
    items: list[list[Part]] = []
    used = run.get("summary.data")
    if isinstance(used, list):  # what the trainer actually read, with content fingerprints
        for src in (s for s in used if isinstance(s, dict)):
            detail = [f"{src['rows_used']:,} rows" if isinstance(src.get("rows_used"), int) else "",
                      str(src.get("format") or ""), f"license {src['license']}" if src.get("license") else ""]
            items.append([("code", str(src.get("name", "?"))), ("text", f" {', '.join(d for d in detail if d)}")]
                         + ([("text", ", fingerprint "), ("code", str(src["fingerprint"]))]
                            if src.get("fingerprint") else []))
    data = (run.recipe or {}).get("data") or {}
    for src in [] if items else data.get("sources") or []:
        if isinstance(src, dict):
            where = f"hub:{src['hub']}" if src.get("hub") else str(src.get("path"))
            where += f"@{src['revision']}" if src.get("revision") else ""
            detail = f" {src.get('split', 'train')} split, {src.get('format', '?')} format"
            detail += f", sample {src['sample']:g}" if isinstance(src.get("sample"), (int, float)) else ""
            items.append([("code", where), ("text", detail)])
    if cut := run.get("summary.data_truncation"):  # rows max_length dropped or cut short
        from arzan.data import Truncation

        items += [[("text", line)] for line in Truncation.notes(cut)]
    ledger_data = run.get("data")
    if isinstance(ledger_data, dict):
        items += [[("text", f"{key}: "), ("code", str(value))] for key, value in ledger_data.items()]
    elif isinstance(ledger_data, list):
        items += [[("code", str(item))] for item in ledger_data]
    parts: list[Part] = []
    for index, item in enumerate(items):
        parts += ([("br", "; ")] if index else []) + item
    return parts or [("text", "not recorded (no data section in recipe.yaml or the ledger)")]


def _eval(run: Run) -> list[Part]:
    meta = run.eval_meta
    if not run.scores:
        reason = str(run.get("status_reason") or "")
        if "evaluation after" in reason:  # eval.tasks ran after training and failed or was cut: say which
            return [("text", "not evaluated: the evaluation after training did not finish (see the note on this run "
                             f"above); `arzan eval {run.path}` writes eval.json")]
        return [("text", f"not evaluated yet (`arzan eval {run.path}` writes eval.json)")]
    if not meta:
        return [("text", "scores from the ledger's summary.eval (no eval.json in the folder)")]
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    text = f"lm-eval {versions.get('lm_eval', '?')}, {len(run.scores)} task{'s' if len(run.scores) != 1 else ''}"
    tasks = meta.get("tasks") if isinstance(meta.get("tasks"), dict) else {}
    dates = sorted(str(h["evaluated_at"]) for h in tasks.values() if isinstance(h, dict) and h.get("evaluated_at"))
    if len(set(dates)) > 1:
        text += f", run {when(dates[0])} to {when(dates[-1])}"
    elif dates or meta.get("created_at"):
        text += f", run {when(dates[0] if dates else meta['created_at'])}"
    limits = [h.get("limit", meta.get("limit")) for h in tasks.values() if isinstance(h, dict)] or [meta.get("limit")]
    if any(limits):
        some = "" if all(limits) else f" on {sum(1 for x in limits if x)} of {len(limits)} tasks"
        shown = sorted({x for x in limits if isinstance(x, int)})
        per = f"{shown[0]}" if len(shown) == 1 else f"{shown[0]} to {shown[-1]}"
        text += f"; limit {per} examples per task{some}, a sample: not comparable to full-set scores"
    return [("text", text)]


def rows(run: Run) -> list[Row]:
    g = run.get
    software = [f"{k} {v}" for k, v in (g("software") or {}).items() if v and k != "git_commit"]
    trainable, total = g("model.trainable_params"), g("model.total_params")
    share = f" ({trainable / total:.2%})" if isinstance(trainable, (int, float)) and total else ""
    hardware = [run.gpu, g("hardware.driver") and f"driver {g('hardware.driver')}",
                g("hardware.cuda") and f"CUDA {g('hardware.cuda')}", g("hardware.cpu"), g("hardware.host")]
    rate = float(g("price.usd_per_gpu_hour", 0.0))
    price = (f"${rate:,.2f}" if round(rate, 2) == rate else f"${rate:,.4f}".rstrip("0"))
    if rate and isinstance(g("exchange.usd_kzt"), (int, float)):  # a rate given in ₸ (kzt_per_gpu_hour) shows as given
        price = f"{kzt(rate * g('exchange.usd_kzt'))} ₸ = {price}"
    on_gpu = g("price.gpu") or g("hardware.device") == "cuda" or g("hardware.gpu_count")
    price = (f"{price} per {'GPU-hour' if on_gpu else 'hour (a CPU at the user rate)'} × {g('price.gpu_count', 1)}"
             f" ({', '.join(str(x) for x in (g('price.provider'), g('price.gpu'), g('price.pricing')) if x)})")
    if g("price.overhead_s"):
        price += f", plus {g('price.overhead_s') / 60:,.1f} min billed overhead"
    energy = g("energy.basis", "unavailable")
    budget_caps = [f"{kzt(g('budget.max_kzt'))} ₸" if g("budget.max_kzt") else "",
                   f"{usd(g('budget.max_usd'))} $" if g("budget.max_usd") else "",
                   f"{g('budget.max_hours'):g} h" if g("budget.max_hours") else ""]
    caps = "cap " + " / ".join(c for c in budget_caps if c) if any(budget_caps) else "no cap"
    sessions = g("sessions") or []
    # a finished run's projection is history; for a live or stopped one it is the point
    projected = g("budget.projected_kzt") if run.status != "finished" else None
    return [
        ("Model", [("code", str(g("model.base", "?"))),
                   ("text", f" · {_count(trainable)} of {_count(total)} params trained{share}")]),
        ("Hardware", [("text", " · ".join(str(h) for h in hardware if h))]),
        ("Software", [("text", " · ".join(software) or "not recorded")]),
        ("Git commit", [("code", str(g("software.git_commit")))] if g("software.git_commit")
         else [("text", "none (not run from a git checkout)")]),
        ("Data", _sources(run)),
        ("Price", [("text", mixed)] if (mixed := session_prices(run.ledger)) else
         [("text", price + "; ")] + _dated(g("price.source"), g("price.as_of"))),
        ("Exchange rate", [("text", f"1 $ = {g('exchange.usd_kzt', 0):,.2f} ₸; ")]
         + _dated(g("exchange.source"), g("exchange.as_of"))),
        ("Eval", _eval(run)),
        ("Money", [("text", "billed time × price per GPU-hour × GPU count"),
                   ("tag", str(g("money.basis", "measured")))]),
        ("Energy", [("text", ENERGY_METHODS.get(g("energy.method"), str(g("energy.method")))
                     + (f"; grid {g('energy.grid_kg_co2_per_kwh', 0):g} kg CO₂/kWh" if energy != "unavailable"
                        else "")), ("tag", str(energy))]),
        ("Budget", [("text", f"{caps}; spent {kzt(g('budget.spent_kzt', 0))} ₸"
                             + (f"; projected at end {kzt(projected)} ₸" if projected is not None else ""))]
         + ([("tag", str(g("budget.projected_basis", "estimated")))] if projected is not None else [])),
        ("Timeline", [("text", f"started {when(g('started_at'))}; "
                               + (f"{'finished' if run.status == 'finished' else 'stopped (' + run.status + ')'} "
                                  f"{when(g('finished_at'))}" if g("finished_at")
                                  else f"last update {when(g('updated_at'))}")
                               + f"; {len(sessions)} session{'s' if len(sessions) != 1 else ''}")]),
    ]


STALE_S = 600  # a live run writes its ledger at least every 10 s; ten silent minutes mean it is gone


def _silent_for(run: Run) -> str | None:
    """How long a "running" ledger has gone unwritten, when that is long enough to mean a dead process."""
    from datetime import datetime, timezone

    try:
        updated = datetime.fromisoformat(str(run.get("updated_at")))
    except ValueError:
        return None
    age = (datetime.now(timezone.utc) - updated).total_seconds()
    if age < STALE_S:
        return None
    return f"{age / 3600:.1f} h" if age >= 3600 else f"{age / 60:.0f} min"


def _redone_since(run: Run) -> str:
    """The evals and merges that finished after the last training session: the reason the ledger
    kept may be done by now (an `arzan eval` or `arzan merge` adds a session, not a new reason)."""
    sessions = [x for x in run.get("sessions") or [] if isinstance(x, dict)]
    trained = [i for i, x in enumerate(sessions) if (x.get("phases") or {}).get("setup") or
               (x.get("phases") or {}).get("train")]
    later = sessions[trained[-1] + 1:] if trained else []
    done = [f"{'arzan merge' if (x.get('phases') or {}).get('save') else 'arzan eval'} (session {x.get('index')})"
            for x in later if x.get("status") == "finished"]
    return f". Since then, finished: {', '.join(done)}" if done else ""


def _no_checkpoint(run: Run) -> bool:
    from arzan.runfolder import RunFolder

    return RunFolder(run.path).last_checkpoint() is None


def state(run: Run) -> dict[str, str] | None:
    """What a reader must know before trusting a run's figures: why it stopped and how to go on,
    or that it is still running and the numbers will grow."""
    if (pid := run.killed_pid) is not None:
        return {"kind": "interrupted", "title": f"Not running: its process (pid {pid}) is gone, killed without a "
                "signal (the OOM killer, kill -9); the figures are as of its last ledger write, "
                f"{when(run.get('updated_at'))}", "why": "the ledger still says running; resume it (the steps after "
                "its last checkpoint are paid for and trained again, counted once)", "command": run.resume_command}
    if run.status == "running" and (silent := _silent_for(run)) is not None:
        return {"kind": "interrupted", "title": f"Not updated for {silent}: its process probably died without a "
                f"signal (a killed VM, the OOM killer)", "why": "the ledger still says running; if nothing is "
                "training into this folder, resume it", "command": run.resume_command}
    if run.status == "running":
        step, max_steps = run.get("progress.step", 0), run.get("progress.max_steps", 0)
        projected = run.get("budget.projected_kzt")
        text = (f"Still running: step {step:,} of {max_steps:,}" if max_steps else f"Still running: step {step:,}")
        text += f", figures as of {when(run.get('updated_at'))}."
        if projected is not None:
            text += f" Projected at the end: {kzt(projected)} ₸ ({run.get('budget.projected_basis', 'estimated')})."
        return {"kind": "running", "title": text, "why": "", "command": ""}
    if run.status == "finished" and run.get("status_reason"):  # trained; an eval or merge after it failed or was cut
        return {"kind": "finished", "title": "Finished training; the work after it did not all run",
                "why": str(run.get("status_reason")) + _redone_since(run), "command": ""}
    if run.status not in STOPPED:
        return None
    title = {"stopped_budget": "Stopped by its budget", "interrupted": "Interrupted",
             "failed": "Failed"}[run.status]
    why = run.get("status_reason") or run.get("budget.stop_reason") or "no reason recorded"
    stop, reason = run.get("budget.stop_reason"), run.get("status_reason")
    if run.status == "stopped_budget" and stop and reason and stop != reason:
        why = f"{reason} ({stop})"
    command = run.resume_command
    if run.status == "failed" and not run.get("resume_command") and _no_checkpoint(run):
        command = ""  # a resume would pay its setup again to fail the same way, as the terminal said
        why = f"{why}; it saved no checkpoint, so fix what failed and start again with --overwrite (this folder " \
              "is kept aside)"
    return {"kind": run.status, "title": title, "why": str(why), "command": command}
