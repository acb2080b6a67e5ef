"""The self-contained HTML report.

One file a student can mail, attach to a grant report or open on a plane: CSS inlined, plots as
inline SVG with their text drawn as paths (no font needed), and a Content-Security-Policy that
forbids the page any network request at all. URLs appear only as text.
"""

from __future__ import annotations

import re
from html import escape
from importlib import resources
from string import Template

from arzan.reporting import prov, sections, table
from arzan.reporting.figures import Plot, svg_markup
from arzan.reporting.runs import Run


def _text(text: str) -> str:
    """Escaped text whose `backticked` bits become <code>, as in the Markdown report."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _parts(parts: list[prov.Part]) -> str:
    out = []
    for kind, text in parts:
        if kind == "code":
            out.append(f"<code>{escape(text)}</code>")
        elif kind == "tag":
            out.append(f' <span class="tag {escape(text)}">{escape(text)}</span>')
        elif kind == "br":
            out.append("<br>")
        else:
            out.append(_text(text))
    return "".join(out)


def _run_name(run: Run) -> str:
    return (f'<span class="swatch" style="background:{run.color}"></span>{escape(run.label)}'
            f'<span class="badge {escape(run.status)}">{escape(run.status.replace("_", " "))}</span>')


def _headline(runs: list[Run]) -> str:
    kzt = sum(float(r.get("money.kzt", 0.0)) for r in runs)
    usd = sum(float(r.get("money.usd", 0.0)) for r in runs)
    hours = sum(float(r.get("gpu_hours", 0.0)) for r in runs)
    tokens = sum(int(r.get("tokens.trained", 0)) for r in runs)
    stats = [(f"{table.kzt(kzt)} ₸", f"{table.usd(usd)} $ in all"), (table.fixed(hours, 2), "GPU-hours"),
             (f"{tokens:,}", "tokens trained"), (str(len(runs)), "runs" if len(runs) != 1 else "run")]
    return '<div class="headline">' + "".join(
        f'<div class="stat"><b>{escape(a)}</b><span>{escape(b)}</span></div>' for a, b in stats) + "</div>"


def _callouts(runs: list[Run]) -> str:
    out = []
    for run in runs:
        st = prov.state(run)
        if st is None:
            continue
        body = f"<p><strong>{escape(run.label)}</strong>: {escape(st['title'])}"
        body += f" — {escape(st['why'])}</p>" if st["why"] else "</p>"
        if st["command"]:
            body += f'<p>Resume it (nothing is counted twice):<code class="cmd">{escape(st["command"])}</code></p>'
        out.append(f'<div class="callout {escape(st["kind"])}" data-run="{escape(run.label)}">{body}</div>')
    for run in runs:
        check = sections.generation(run)
        if check is not None and check.flag:
            out.append(f'<div class="callout nostop" data-run="{escape(run.label)}"><p><strong>'
                       f'{escape(run.label)}</strong>: <strong>{sections.NEVER_STOPS}</strong> — '
                       f"{escape(check.flag)} (generation check below).</p></div>")
    return "".join(out)


def _table(runs: list[Run], cols: list[table.Column], table_id: str, fit: bool = False) -> str:
    money = {"kzt", "usd", "kzt_per_1m"}

    def classes(col: table.Column, extra: str = "") -> str:
        names = [("num" if col.numeric else col.key), "money" if col.key in money else "", extra]
        return " ".join(n for n in names if n)

    def header(col: table.Column) -> str:
        small = f"<small>{escape(col.hint)}</small>" if col.key.startswith("score:") and col.hint else ""
        return (f'<th class="{classes(col)}"{_title(col.hint)} data-col="{escape(col.key)}">'
                f"{escape(col.header).replace(chr(10), '<br>')}{small}</th>")

    body = []
    for run in runs:
        cells = []
        for col in cols:
            cell = col.cell(run)
            text = _run_name(run) if col.key == "run" else escape(cell.text)
            value = "" if cell.value is None else f' data-value="{escape(str(cell.value))}"'
            cells.append(f'<td class="{classes(col, "est" if cell.estimated else "")}" data-col="{escape(col.key)}"'
                         f'{value}{_title(cell.hint)}>{text}</td>')
        body.append(f'<tr data-run="{escape(run.label)}">' + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap{" fit" if fit else ""}"><table class="summary" id="{table_id}"><thead><tr>'
            f'{"".join(header(c) for c in cols)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _summary(runs: list[Run], models: list[Run]) -> str:
    note = "— not available."
    if table.any_estimated(runs):
        note = "≈ estimated (see provenance for how); " + note
    out = [_table(runs, table.COLUMNS, "summary"),
           f'<p class="note">{escape(note)} Money is billed time × price × GPU count; hover a figure for '
           "its basis.</p>"]
    if table.score_tasks(runs + models):
        out += ["<h2>Scores</h2>", _table(runs + models, table.score_columns(runs + models), "scores", fit=True),
                f'<p class="note">{escape(sections.scores_note(runs, models))}</p>']
    return "".join(out)


def _title(hint: str | None) -> str:
    return f' title="{escape(hint)}"' if hint else ""


def _plots(plots: list[Plot]) -> str:
    out = []
    for index, plot in enumerate(plots):
        if plot.figure is None:
            out.append(f'<figure class="empty" data-plot="{plot.key}"><p>{_text(plot.empty or "")}</p>'
                       f"<figcaption>{_text(plot.caption)}</figcaption></figure>")
        else:
            out.append(f"<figure>{svg_markup(plot, index)}<figcaption>{_text(plot.caption)}</figcaption></figure>")
    return '<div class="plots">' + "".join(out) + "</div>"


def _references(rows: list[sections.ReferenceRow]) -> str:
    """Every published point on the score plot, traced to its URL and how it was scored."""
    if not rows:
        return ""
    heads = ("Model", "Scores on the plot", "Metric", "Source", "Read from", "Scoring method", "Basis")
    body = []
    for row in rows:
        source = f"<code>{escape(row.source)}</code>" if row.source else "not recorded"
        cells = [escape(row.model), escape(row.scores), escape(row.metric or table.DASH), source,
                 escape(row.table or table.DASH), escape(row.method or "not recorded"),
                 f'<span class="tag published">{escape(sections.PUBLISHED)}</span>']
        body.append(f'<tr data-ref="{escape(row.model)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f"<h2>Published scores <small>{escape(sections.PUBLISHED)}</small></h2>"
            '<div class="table-wrap"><table class="summary refs" id="references"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>" + "".join(body)
            + "</tbody></table></div><p class=\"note\">Copied from each source, which used its own prompts, "
            "splits and scoring: context for the plot, never a measurement of ours. URLs are text to copy.</p>")


def _generation(runs: list[Run]) -> str:
    """The ledger's generation check: does the fine-tune answer, and does it stop?"""
    cards = []
    for run in runs:
        check = sections.generation(run)
        if check is None:
            continue
        state = "unknown" if check.ok is None else ("ok" if check.ok else "bad")
        rows = "".join(
            f'<tr{" class=never" if a.stopped is False else ""}><td>{escape(a.prompt)}</td>'
            f"<td>{escape(a.text) or '<em>(empty)</em>'}</td>"
            f'<td class="stop">{escape(sections.stopped_text(a))}</td></tr>' for a in check.answers)
        table_html = ('<div class="table-wrap"><table class="summary gen"><thead><tr><th>Prompt</th>'
                      "<th>Answer after training</th><th>Stopped at EOS</th></tr></thead>"
                      f"<tbody>{rows}</tbody></table></div>") if check.answers else ""
        cards.append(f'<div class="gencheck" data-run="{escape(run.label)}"><h3>{_run_name(run)}</h3>'
                     f'<p class="gen-summary {state}">{escape(check.summary)}</p>{table_html}</div>')
    if not cards:
        return ""
    return ("<h2>Generation check</h2>" + "".join(cards)
            + f'<p class="note">Greedy answers to a few Kazakh prompts after training, cut at '
            f"{sections.ANSWER_CHARS} characters; the before-training answers are in each run's cost.json "
            "(summary.generation_check).</p>")


def _provenance(runs: list[Run]) -> str:
    cards = []
    for run in runs:
        trs = "".join(f"<tr><th>{escape(label)}</th><td>{_parts(parts)}</td></tr>" for label, parts in prov.rows(run))
        cards.append(f'<div class="card"><h3>{_run_name(run)}</h3><table>{trs}</table>'
                     f'<p class="note">Run folder <code>{escape(str(run.path))}</code></p></div>')
    return '<div class="prov">' + "".join(cards) + "</div>"


def render(runs: list[Run], plots: list[Plot], warnings: list[str], title: str, generated: str,
           version: str, references: list[sections.ReferenceRow] | None = None,
           models: list[Run] | None = None) -> str:
    body = [f"<header><h1>{escape(title)}</h1><p class=\"meta\">{escape(generated)}</p>{_headline(runs)}</header>",
            _callouts(runs), "<h2>Summary</h2>", _summary(runs, models or []), "<h2>Plots</h2>", _plots(plots),
            _references(references or []), _generation(runs), "<h2>Provenance</h2>", _provenance(runs)]
    if warnings:
        body.append("<h2>Notes</h2><ul class=\"warnings\">" + "".join(f"<li>{escape(w)}</li>" for w in warnings)
                    + "</ul>")
    body.append("<footer>Every cost figure comes from the runs' cost.json ledgers; published scores from the "
                "sources listed with them. This page is self-contained and "
                "makes no network request; source URLs are shown as text to copy.</footer>")
    folder = resources.files("arzan") / "resources" / "report"
    page = Template((folder / "page.html").read_text(encoding="utf-8"))
    return page.substitute(title=escape(title), css=(folder / "report.css").read_text(encoding="utf-8"),
                           body="\n".join(body), version=escape(version))
