"""The Markdown report, for a model card, a README or a blog post.

Markdown has no safe way to inline a picture (hubs and GitHub drop data: URIs), so the plots are
written as PNG files in a folder beside the .md and linked by relative path: copy the .md together
with that folder.
"""

from __future__ import annotations

from pathlib import Path

from arzan.md_escape import md_cell, md_text
from arzan.reporting import prov, sections, table
from arzan.reporting.figures import Plot, save_pngs
from arzan.reporting.runs import Run




def _parts(parts: list[prov.Part]) -> str:
    out = []
    for kind, text in parts:
        if kind == "code":
            out.append(f"`{text}`")
        elif kind == "tag":
            out.append(f" *({md_text(text)})*")
        else:
            out.append(md_text(text))
    return "".join(out)


def summary_table(runs: list[Run], cols: list[table.Column]) -> list[str]:
    lines = ["| " + " | ".join(md_cell(c.header) for c in cols) + " |",
             "|" + "|".join("---:" if c.numeric else "---" for c in cols) + "|"]
    for run in runs:
        cells = [md_cell(f"{run.label} ({run.status})" if c.key == "run" else c.cell(run).text) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def references(rows: list[sections.ReferenceRow]) -> list[str]:
    if not rows:
        return []
    lines = ["## Published scores", "",
             f"*{sections.PUBLISHED}*: copied from each source, which used its own prompts, splits and "
             "scoring; context for the score plot, never a measurement of ours.", "",
             "| model | scores on the plot | metric | source | read from | scoring method | basis |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row.model, row.scores, row.metric or table.DASH, f"`{row.source}`" if row.source else "not recorded",
                 row.table or table.DASH, row.method or "not recorded", sections.PUBLISHED]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    return lines + [""]


def generation(runs: list[Run]) -> list[str]:
    lines: list[str] = []
    for run in runs:
        check = sections.generation(run)
        if check is None:
            continue
        lines += [f"### {md_text(run.label)}", ""]
        if check.flag:
            lines += [f"⚠ **{sections.NEVER_STOPS}** — {md_text(check.flag)}.", ""]
        lines += [check.summary, ""]
        if check.answers:
            lines += ["| prompt | answer after training | stopped at EOS |", "|---|---|---|"]
            lines += [f"| {md_cell(a.prompt)} | {md_cell(a.text) or '*(empty)*'} | {md_cell(sections.stopped_text(a))} |"
                      for a in check.answers]
            lines.append("")
    return ["## Generation check", ""] + lines if lines else []


def render(runs: list[Run], plots: list[Plot], warnings: list[str], title: str, generated: str,
           out_md: Path, refs: list[sections.ReferenceRow] | None = None, models: list[Run] | None = None) -> str:
    images = save_pngs(plots, out_md.parent / f"{out_md.stem}_files")
    lines = [f"# {md_text(title)}", "", f"*{generated}*", ""]
    for run in runs:
        st = prov.state(run)
        if st:
            lines.append(f"> **{md_text(run.label)}**: {md_text(st['title'])}"
                         + (f" — {md_text(st['why'])}" if st["why"] else ""))
            if st["command"]:
                lines += [">", f"> Resume: `{st['command']}`"]
            lines.append("")
        check = sections.generation(run)
        if check is not None and check.flag:
            lines += [f"> **{md_text(run.label)}**: ⚠ **{sections.NEVER_STOPS}** — {md_text(check.flag)}.", ""]
    lines += ["## Summary", ""] + summary_table(runs, table.COLUMNS) + [""]
    note = "— not available."
    if table.any_estimated(runs):
        note = "≈ estimated; " + note
    lines += [f"{note} Money is what the ledger billed: time × price × GPU count, ₸ at the recorded rate.", ""]
    scored = runs + (models or [])
    if table.score_tasks(scored):
        cols = table.score_columns(scored)
        lines += ["## Scores", ""] + summary_table(scored, cols) + [""]
        metrics = [f"{c.header}: {c.hint}" for c in cols if c.key.startswith("score:") and c.hint]
        lines += [f"Metrics: {'; '.join(metrics)}." if metrics else "", ""]
        lines += [md_text(sections.scores_note(runs, models or [])), ""]
    lines += ["## Plots", ""]
    for plot in plots:
        if plot.key in images:
            rel = images[plot.key].relative_to(out_md.parent).as_posix()
            # <...>: a destination with spaces or brackets ("my report (v2)_files/...") stays one link
            lines += [f"![{md_text(plot.caption)}](<{rel}>)", "", f"*{md_text(plot.caption)}*", ""]
        else:
            lines += [f"*{plot.empty}*", ""]
    lines += references(refs or []) + generation(runs)
    lines += ["## Provenance", ""]
    for run in runs:
        lines += [f"### {md_text(run.label)}", ""] + [f"- **{label}**: {_parts(parts)}"
                                                     for label, parts in prov.rows(run)]
        lines.append("")
    if warnings:
        lines += ["## Notes", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)
