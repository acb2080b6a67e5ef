"""Experiment reports: the bill next to the model, in a form people read instead of JSON.

`build_report` turns one or more run folders into a self-contained HTML page and a Markdown
twin. It only reads: a run that is still training can be reported on at any time, and the
figures are exactly the ledger's (cost.json), so a report never disagrees with the model card.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from arzan import __version__
from arzan.errors import ArzanError
from arzan.reporting import md, page, sections, table
from arzan.reporting.figures import assign_colors
from arzan.reporting.plots import all_plots
from arzan.reporting.refs import default_path, load_references, shown
from arzan.reporting.runs import Run, label_runs, load_model_eval, load_run
from arzan.runfolder import unique_folders

__all__ = ["build_report", "load_runs"]


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Load every folder first, so a typo in the third path fails before anything is written. A
    folder `arzan eval MODEL` wrote (eval.json, no bill) loads as a scored model (`kind` "model")."""
    if not run_dirs:
        raise ArzanError("arzan report: give at least one run folder (e.g. runs/smoke)")
    items = [_load(Path(d)) for d in unique_folders(run_dirs)]
    if not any(r.kind == "run" for r in items):
        raise ArzanError("arzan report: give at least one run folder (e.g. runs/smoke); the others are "
                         "evaluated models, set beside a run's scores")
    label_runs(items)
    assign_colors(items)
    return items


def _load(path: Path) -> Run:
    if path.is_file() and path.name != "eval.json":
        raise ArzanError(f"{path}: is a file; give the run folder it is in ({path.parent})")
    folder = path.parent if path.name == "eval.json" else path
    if folder.is_dir() and not (folder / "cost.json").is_file() and (folder / "eval.json").is_file():
        return load_model_eval(folder)
    return load_run(folder)


def build_report(run_dirs: list[Path], out_html: Path, out_md: Path | None = None, *,
                 title: str | None = None, references: Path | None = None,
                 markdown: bool = True) -> Path:
    """Write the HTML report (and, unless markdown=False, out_md, default: out_html with .md,
    plus its PNG plots in `<stem>_files/`) and return the HTML path.

    `run_dirs` may name folders `arzan eval` wrote for a plain model (the base, KazLLM): they join
    the score table and plot, and each fine-tune's score shows its gain over its base.
    `references` overrides resources/reference_scores.yaml, mainly for tests and for people who
    keep their own list of published scores.
    """
    items = load_runs(run_dirs)
    runs = [r for r in items if r.kind == "run"]
    models = [r for r in items if r.kind == "model"]
    out_html = Path(out_html)
    out_md = (Path(out_md) if out_md is not None else out_html.with_suffix(".md")) if markdown else None
    _refuse_unsafe_outputs(out_html, out_md, [r.path for r in items])
    warnings = [w for run in items for w in run.warnings]
    refs = load_references(references if references is not None else default_path(), warnings)
    rates = [r.get("exchange.usd_kzt") for r in runs if r.get("exchange.usd_kzt")]
    if len(set(rates)) > 1:  # each run's tenge are at its own rate: side by side they are not one currency
        warnings.append("the runs' tenge are at different exchange rates (" + ", ".join(
            f"{r.label}: 1 $ = {r.get('exchange.usd_kzt'):,.2f} ₸" for r in runs if r.get("exchange.usd_kzt"))
            + "); compare their $ columns, which no rate changes")
    plots = all_plots(runs, refs, rates[0] if rates else None, models)
    ref_rows = sections.reference_rows(shown(refs, table.score_tasks(runs + models)))  # what the score plot drew
    title = title or ("arzan report: " + ", ".join(r.label for r in runs[:4])
                      + (f" and {len(runs) - 4} more" if len(runs) > 4 else ""))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    generated = f"Generated {now} by arzan {__version__} from {len(runs)} run folder{'s' if len(runs) != 1 else ''}"
    if models:
        generated += f" and {len(models)} evaluated model{'s' if len(models) != 1 else ''}"
    try:
        out_html.parent.mkdir(parents=True, exist_ok=True)
        out_html.write_text(page.render(runs, plots, warnings, title, generated, __version__, ref_rows, models),
                            encoding="utf-8")
        if out_md is not None:
            out_md.parent.mkdir(parents=True, exist_ok=True)
            out_md.write_text(md.render(runs, plots, warnings, title, generated, out_md, ref_rows, models),
                              encoding="utf-8")
    except OSError as exc:
        raise ArzanError(f"{exc.filename or out_html}: cannot write the report ({exc.strerror})") from None
    return out_html


RUN_FILES = {"cost.json", "eval.json", "recipe.yaml", "metrics.jsonl"}


def _is_arzan_report(path: Path) -> bool:
    """An earlier report (rewriting it is the point of running `arzan report` again): the HTML names
    arzan as its generator in its head, the Markdown in its "Generated ... by arzan" line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
        return '<meta name="generator" content="arzan ' in head or " by arzan " in head
    except OSError:
        return False


def _refuse_unsafe_outputs(out_html: Path, out_md: Path | None, run_dirs: list[Path]) -> None:
    """A report is written over whatever `--out` names: never over a run's own ledger, scores or
    recipe (a typo like `--out runs/a/cost.json` would destroy the bill), and never with the HTML
    and the Markdown on one path, where one would silently replace the other."""
    if out_html.suffix.lower() not in (".html", ".htm"):
        raise ArzanError(f"--out {out_html}: give an .html file (the Markdown goes beside it as .md)")
    runs = {p.resolve() for p in run_dirs}
    for out in (out_html, out_md):
        if out is None:
            continue
        where = out.resolve()
        if where.parent in runs and where.name in RUN_FILES:
            raise ArzanError(f"--out {out}: would overwrite the run's own {where.name}; write the report elsewhere")
        if where.is_dir():
            raise ArzanError(f"--out {out}: is a folder; give a file name such as {out / 'report.html'}")
        if where.is_file() and not _is_arzan_report(where):  # `--out README.html` would replace README.md
            raise ArzanError(f"--out {out_html}: {out} exists and is not an arzan report; give --out another name "
                             "(the Markdown goes beside the HTML, with .md)")
    if out_md is not None and out_md.resolve() == out_html.resolve():
        raise ArzanError(f"--out {out_html}: the HTML and the Markdown would be the same file")
    if out_md is not None:  # the Markdown's figures: an earlier report's folder, or none yet
        files = out_md.parent / f"{out_md.stem}_files"
        if files.exists() and not (out_md.is_file() and _is_arzan_report(out_md)):
            raise ArzanError(f"--out {out_html}: {files} exists and is not an earlier arzan report's figures; "
                             "give --out another name")

