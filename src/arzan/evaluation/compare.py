"""Score tables across runs, with published numbers beside them, clearly marked as such.

Why reference rows are in the same table: the claim arzan exists to test ("a 5000 ₸ LoRA is
comparable to KazLLM") is a comparison, and a reader should see the measured row, the published
row and the price on one screen. Why they are marked on every row: a published number was made
with someone else's prompt, split and scoring, so it is context, never a measurement of ours.
"""

from __future__ import annotations

import json
import math
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import ArzanError, first_line
from arzan.evaluation.results import earlier_adapter
from arzan.evaluation.targets import base_scores_beside, eval_command, evals_folder
from arzan.runfolder import unique_folders
from arzan.reporting.runs import check_ledger, training_kzt
from arzan.reporting.scores import points, scale
from arzan.reporting.table import kzt as kzt_text

PUBLISHED = "published, not measured here"
NO_EVAL = "no eval"
STALE = "an earlier adapter's score: run arzan eval again"


def default_references_path() -> Path:
    return Path(str(resources.files("arzan") / "resources" / "reference_scores.yaml"))


def load_references(path: str | Path | None = None) -> list[dict]:
    """Entries of reference_scores.yaml: {model, source, table, protocol, metric, scores}."""
    path = Path(path) if path else default_references_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ArzanError(f"{path}: unreadable reference scores ({first_line(e)})") from None
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
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or not UTF-8 text
        raise ArzanError(f"{path}: not valid JSON ({first_line(e)})") from None


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
        for key in (head["metric"], f"{head['metric']}_stderr", "n"):
            value = head.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ArzanError(f"{path}: task '{task}': {key} is {value!r}, not a number")
    rows = doc.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "task" in r and "metric" in r for r in rows):
        raise ArzanError(f"{path}: 'rows' should be a list of {{task, metric, value, ...}} objects")


def _measured(source: str | Path, detail: bool) -> list[dict]:
    p = Path(source)
    if not p.exists():  # a typo, not a run that still needs `arzan eval`
        raise ArzanError(f"{p}: no such run folder or eval.json")
    if p.is_file() and p.name == "cost.json":  # a ledger has no scores: read as one, it showed only the published rows
        raise ArzanError(f"{p}: is a run's ledger; give the run folder it is in ({p.parent})")
    eval_file = p / "eval.json" if p.is_dir() else p
    if p.is_dir() and not eval_file.is_file() and (p / "cost.json").is_file():
        return [_cost_only(p)]
    doc = _read_json(eval_file)
    _check_eval_shape(doc, eval_file)
    ledger_file = eval_file.parent / "cost.json"
    ledger = _read_json(ledger_file) if ledger_file.is_file() else {}
    if ledger_file.is_file():  # `null` or `[]` too: named, not an AttributeError
        check_ledger(ledger, ledger_file)
    kzt = (ledger.get("money") or {}).get("kzt")
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    # a run by its folder (`--out runs/smoke-short`, not the recipe's name every variant shares); a
    # plain model by what it is (meta-llama/Llama-3.1-8B-Instruct), not by its evals/ folder
    label = (not ledger and model.get("kind") == "model" and model.get("base")) or \
        (eval_file.parent.name if p.is_dir() or p.name == "eval.json" else p.stem)
    # what the scores are of: a plain model (a base someone may have fine-tuned) or an adapter on a base
    scored = {"of_model": model.get("base")} if model.get("kind") == "model" else {"base": model.get("base")}
    stale = earlier_adapter(doc, eval_file.parent)  # a resume trained on after these were scored
    kzt_train = training_kzt(ledger) if ledger else None
    if detail:  # one row per task: gsm8k's strict-match and flexible-extract are both its primary metric,
        # and the one shown, like the one set against the base, must be the one the headline takes (the first)
        picked = list({r["task"]: r for r in reversed(doc.get("rows", [])) if r.get("primary")}.values())[::-1]
    else:
        picked = [{"task": t, "metric": h["metric"], "value": h.get(h["metric"]),
                   "stderr": h.get(f"{h['metric']}_stderr"), "n": h.get("n"), "limit": h.get("limit"),
                   "base_4bit": h.get("base_4bit"), "chat_template": h.get("chat_template"),
                   "requested": h.get("requested"), "data_dir": h.get("data_dir")}
                  for t, h in (doc.get("tasks") or {}).items()]
    rows = []
    for r in picked:
        value = r.get("value")
        rows.append({"model": str(label), "basis": "measured", "task": r["task"], "metric": r["metric"],
                     "value": value, "stderr": r.get("stderr"), "n": r.get("n"),
                     "limit": r.get("limit", doc.get("limit")), "kzt": kzt,
                     "kzt_train": kzt_train, **scored,
                     "requested": r.get("requested", doc.get("tasks_requested")), "data_dir": r.get("data_dir"),
                     # evals before 4-bit scoring existed all loaded the base in 16/32-bit
                     "base_4bit": bool(r.get("base_4bit", model.get("load_in_4bit"))),
                     "chat_template": bool(r.get("chat_template", model.get("chat_template"))),  # older: never
                     **({"stale": True} if stale else {}),
                     "source": str(eval_file)})
    return rows


def _cost_only(run: Path) -> dict:
    """A run folder that was never evaluated still has a bill worth setting beside the others: one
    row with its cost, `task` None, and "no eval" where its scores would be."""
    ledger_file = run / "cost.json"
    ledger = _read_json(ledger_file)
    check_ledger(ledger, ledger_file)
    kzt = (ledger.get("money") or {}).get("kzt")
    return {"model": run.name, "basis": "measured", "task": None, "metric": None,
            "value": None, "stderr": None, "n": None, "limit": None, "kzt": kzt,
            "source": str(ledger_file), "no_eval": True}


def compare(sources: list[str | Path], references: bool | str | Path = True,
            detail: bool = False, base: str | Path | None = None) -> list[dict]:
    """One row per (model, task): run folders or eval.json files, then published rows.

    `kzt` is the run's whole bill from its ledger. A fine-tune's row is set against its base model's
    score on the same task and items when that base was evaluated too (named among `sources`, matched
    by the base name the adapter records, or given as `base`): `gain` and `gain_stderr` in points, and
    `kzt_per_point_gained`, the bill per point above the base, only where the gain is beyond noise
    (see `against_base`). A run folder without eval.json gets one row with its bill and `task` None
    (shown as "no eval"), so runs can be compared on cost alone. With `detail`, group members (each
    UNT subject, ...) get rows too. Published rows are kept only for tasks some measured row has; when
    nothing was scored, only if no run was given either.
    """
    folders = unique_folders([base, *sources] if base is not None else sources)
    rows = [r for s in folders for r in _measured(s, detail)]
    _tell_apart(rows)
    base_rows = [r for r in rows if r["source"] == rows[0]["source"]] if base is not None else None
    if base_rows is not None and not any(r["task"] for r in base_rows):
        raise ArzanError(f"{base}: --base needs an evaluated model (an eval.json), and this has no scores")
    if base_rows is not None and base_rows[0].get("base"):
        raise ArzanError(f"{base}: a fine-tune of {base_rows[0]['base']}, not a base model; --base takes the folder "
                         "`arzan eval` wrote for a plain model (evals/NAME)")
    against_base(rows, base_rows)
    if references:
        tasks = {r["task"] for r in rows if r["task"] is not None}
        wanted = tasks or not rows  # cost-only runs: no scores to set published ones beside
        for ref in load_references(None if references is True else references) if wanted else []:
            for task, value in (ref.get("scores") or {}).items():
                if value is None or (tasks and task not in tasks):
                    continue
                rows.append({"model": ref["model"], "basis": PUBLISHED, "task": task,
                             "metric": ref.get("metric", "acc"), "value": float(value), "stderr": None,
                             "n": None, "limit": None, "kzt": None,
                             "source": ref["source"], "table": ref.get("table"),
                             "protocol": ref.get("protocol")})
    return rows


# A gain is priced only beyond 1.96 standard errors (about 95% two-sided): a fine-tune that scores
# at chance, or within noise of its base, bought no points, and its bill per point is not finite.
NOISE_Z = 1.96


def _bits(r: dict) -> str:
    return "4-bit" if r["base_4bit"] else "16-bit"


def _stderr_points(r: dict) -> float | None:
    if r.get("stderr") is None or r.get("value") is None:
        return None
    return r["stderr"] * scale(r["value"], r.get("metric"))


def against_base(rows: list[dict], base_rows: list[dict] | None) -> None:
    """Adds `gain`, `gain_stderr`, `base_model` and `kzt_per_point_gained` to each fine-tune's row
    (`base`: the base it was trained on) whose base is among the rows (`of_model`), or against
    `base_rows` when given; `arzan report` uses it too, so both show one number.

    Why gain over the base and not bill ÷ score: a run that learnt nothing still scores 25 on a
    4-choice test and would get a finite, flattering ₸ per point. What the money bought is the
    difference to the model it started from, measured on the same items (same task, metric and n;
    lm-eval's --limit takes the first n). The two scores' standard errors are combined as if
    independent; two models' answers to the same items go together, so that overstates the noise,
    and a gain called beyond noise here errs on the side of not claiming it."""
    if base_rows is not None:  # named by the user: every other row is set against it
        given = {(b["task"], b["metric"]): b for b in base_rows}
        ids = {id(b) for b in base_rows}

        def base_of(r: dict) -> dict | None:
            return None if id(r) in ids else given.get((r["task"], r["metric"]))
    else:  # found: an adapter's recorded base among the plain models compared
        found: dict[tuple, list[dict]] = {}
        for b in rows:
            if b.get("of_model"):
                found.setdefault((b["of_model"], b["task"], b["metric"]), []).append(b)

        def base_of(r: dict) -> dict | None:
            """The base scored like `r` (same items, same bits) when one is, whatever the order given:
            a 16-bit and a 4-bit eval of one base are both common; else the first, to say why not."""
            same = found.get((r["base"], r["task"], r["metric"])) if r.get("base") else None
            if not same:
                return None
            return next((b for b in same if b.get("n") == r.get("n") and b["base_4bit"] == r["base_4bit"]
                         and bool(b.get("chat_template")) == bool(r.get("chat_template"))), same[0])
    for r in rows:
        if r.get("stale"):  # an earlier adapter's score says nothing of what the run's money bought
            continue
        b = base_of(r) if r["task"] is not None and r.get("value") is not None else None
        if b is None or b.get("value") is None:
            continue
        if b.get("n") != r.get("n"):
            r["base_mismatch"], r["base_limit"] = f"base scored on n={b.get('n')}", b.get("limit")
            continue
        if b["base_4bit"] != r["base_4bit"]:  # a 4-bit base scores differently from its 16-bit self
            r["base_mismatch"] = f"base scored in {_bits(b)}, this in {_bits(r)}"
            continue
        if bool(b.get("chat_template")) != bool(r.get("chat_template")):  # other prompts: another test
            r["base_mismatch"] = f"base scored {_chat(b)}, this {_chat(r)}"
            continue
        gain = points(r["value"], r.get("metric")) - points(b["value"], b.get("metric"))
        se_r, se_b = _stderr_points(r), _stderr_points(b)
        se = math.hypot(se_r, se_b) if se_r is not None and se_b is not None else None
        beyond = se is not None and gain > NOISE_Z * se
        r.update(base_model=b["model"], gain=gain, gain_stderr=se,
                 kzt_per_point_gained=r["kzt_train"] / gain if beyond and r.get("kzt_train") is not None else None)


def _chat(r: dict) -> str:
    return "with the chat template" if r.get("chat_template") else "without the chat template"


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
    """A score on 0–100 with its ± and item count, then its gain over the base and the ₸ per point
    gained; "no eval" for a run never evaluated (so an empty cell is not read as a score of nothing),
    "–" for a task it was not run on."""
    if r is None or r.get("value") is None:
        return NO_EVAL if no_eval else "–"
    s = f"{points(r['value'], r.get('metric')):.1f}"
    if (se := _stderr_points(r)) is not None:
        s += f" ±{se:.1f}"
    s += f" (n={r['n']})" if r.get("n") else ""
    return s + gain_text(r)


def gain_text(r: dict) -> str:
    if r.get("stale"):
        return f" · {STALE}"
    if r.get("base_mismatch"):
        return f" · {r['base_mismatch']}, not compared"
    if r.get("gain") is None:
        return ""
    s = f" · {r['gain']:+.1f}".replace("-", "−") + (f" ±{r['gain_stderr']:.1f}" if r.get("gain_stderr") is not None
                                                      else "") + " vs base"
    if r.get("kzt_per_point_gained") is not None:
        return s + f" · {kzt_text(r['kzt_per_point_gained'])} ₸/pt gained"
    if r.get("gain_stderr") is None:
        return s + " (no ±: noise unknown)"
    if abs(r["gain"]) <= NOISE_Z * r["gain_stderr"]:
        return s + " (within noise)"
    return s + (" (a loss beyond noise)" if r["gain"] < 0 else "")


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


def _legend(rows: list[dict]) -> list[str]:
    """What the cells' words mean, said once under the table and only when such a cell is there."""
    lines = []
    if any(r["basis"] == PUBLISHED for r in rows):
        lines.append(f"'{PUBLISHED}': copied from the source in reference_scores.yaml, made with its own "
                     "prompts and splits.")
    gained = [r for r in rows if r.get("gain") is not None]
    if gained:
        bases = ", ".join(dict.fromkeys(r["base_model"] for r in gained))
        lines.append(f"vs base: points above the base model ({bases}) on the same items, ± both standard errors "
                     f"combined. ₸/pt gained: the run's training bill (its scoring and later merges left out) per "
                     f"point above the base, given only where the gain is over {NOISE_Z} × its ± (about 95% sure "
                     "it is not noise).")
    if any(r.get("stale") for r in rows):
        lines.append("An earlier adapter's score: eval.json scored an adapter this run folder no longer holds "
                     "(a resume trained on and saved a new one); kept, but not the run's score now.")
    return lines + base_fixes(rows)


def base_fixes(rows: list[dict]) -> list[str]:
    """For each fine-tune not set against its base, the `arzan eval` that would make it comparable
    (`arzan compare` and `arzan report` both say them)."""
    lines = []
    unmatched = [r for r in rows if r.get("base") and r["task"] and r.get("gain") is None and not r.get("stale")]
    given = {Path(r["source"]).parent.resolve() for r in rows if r.get("source")}
    ready = {}  # the base already scored the fine-tune's way under evals/, just not given: no eval to pay for
    for r in unmatched:
        folder = evals_folder(r["base"], bool(r["base_4bit"]), bool(r.get("chat_template")))
        if r.get("base_limit") is None and folder.resolve() not in given and _scored_alike(folder, r):
            ready.setdefault(str(folder), []).append(r)
    for folder, those in ready.items():
        runs = " ".join(dict.fromkeys(shlex.quote(str(Path(r["source"]).parent)) for r in those if r.get("source")))
        lines.append(f"{folder} holds {those[0]['base']} scored as {those[0]['model']} was: "
                     f"`arzan compare {runs} {shlex.quote(folder)}` sets them side by side.")
    unmatched = [r for r in unmatched if not any(r in those for those in ready.values())]
    missing = [r for r in unmatched if not r.get("base_mismatch")]
    for command in dict.fromkeys(_eval_command(r["base"], r, four_bit=r["base_4bit"]) for r in missing):
        lines.append(f"No score of the base model on the same items to set the fine-tune against: `{command}`, "
                     "then give `arzan compare` its folder beside this run's (or as --base) to see what each "
                     "point gained cost.")
    for r in unmatched:
        if r.get("base_limit") is not None:  # other items: score the fine-tune on the base's, not the reverse
            lines.append(f"{r['model']} and its base were scored on other items ({r['task']}): "
                         f"`{_eval_command(str(Path(r['source']).parent), r, limit=r['base_limit'])}` scores the "
                         "fine-tune on the base's (re-scoring the base would break what is set against it now).")
        elif r.get("base_mismatch") and "chat template" in r["base_mismatch"]:
            lines.append(f"The base of {r['model']} was scored {_chat({'chat_template': not r['chat_template']})} "
                         f"({r['task']}): `{_eval_command(r['base'], r, four_bit=r['base_4bit'])}` scores it as "
                         "the fine-tune was.")
        elif r.get("base_mismatch") and "bit" in r["base_mismatch"]:
            lines.append(f"The base of {r['model']} was scored in other bits ({r['task']}): "
                         f"`{_eval_command(r['base'], r, four_bit=r['base_4bit'])}` scores it as the fine-tune was "
                         "(a 4-bit base goes to evals/NAME-4bit, beside the 16-bit one).")
    return lines


def _scored_alike(folder: Path, r: dict) -> bool:
    """`folder`'s eval.json scored row r's task as r was: same items (n), bits and chat template, as
    compare itself reads them (older files' defaults included)."""
    if not (folder / "eval.json").is_file():
        return False
    try:
        theirs = _measured(folder, detail=False)
    except ArzanError:  # unreadable: compare names it when given the folder
        return False
    return any(b["task"] == r["task"] and b.get("n") == r.get("n") and b["base_4bit"] == bool(r["base_4bit"])
               and b["chat_template"] == bool(r.get("chat_template")) for b in theirs)


def _eval_command(target: str, r: dict, limit: int | None = None, four_bit: bool = False) -> str:
    """The `arzan eval` that scores `target` as row `r` was scored: the same --tasks as asked then
    (a suite, task files), the same --limit and --data-dir."""
    return eval_command(target, r.get("requested") or r["task"], limit if limit is not None else r.get("limit"),
                        r.get("data_dir"), four_bit, bool(r.get("chat_template")))


def _money(kzt: float | None) -> str:
    """The report's tenge rule (reporting.table.kzt): 5,000 from 1,000 up, 13.25 below, and two
    significant digits where two decimals would show 0 (a CPU eval's 0.0031 ₸)."""
    return "–" if kzt is None else f"{kzt_text(kzt)} ₸"


def scores_table(rows: list[dict], title: str = "Kazakh scores (% correct)"):
    """A rich Table: one line per model or run, one column per task."""
    from rich.table import Table

    tasks, models, cells = _pivot(rows)
    caption = [*_legend(rows), *_published_sources(rows)]
    table = Table(title=title, caption="\n".join(caption) or None, caption_justify="left")
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
    legend = [line.replace(f"'{PUBLISHED}'", "Published rows") for line in _legend(rows)]
    lines += ["", *legend] if legend else []
    sources = _published_sources(rows)
    if sources:
        lines += ["", "Published rows (not measured here):", *(f"- {line}" for line in sources)]
    return "\n".join(lines) + "\n"


def gain_table(result: dict):
    """What `arzan eval RUN` and a training's own eval print: the new scores beside the base's from
    evals/, when it was scored there. A broken file there is not this eval's failure: the scores
    just written are shown alone, and `arzan compare` names the file."""
    try:
        return scores_table(compare(base_scores_beside(result), references=False))
    except ArzanError:
        return scores_table(compare([result["path"]], references=False))
