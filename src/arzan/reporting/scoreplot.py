"""Score against cost, with the base model, KazLLM and published scores beside our own.

Published scores have no tenge figure, so they cannot sit on the cost axis; drawn as lines across
it their labels pile up. They get their own narrow panel instead, sharing the score axis: one
column per published model, the task's marker in grey, so "our ₸600 run vs gpt-4o" reads at a
glance without pretending to know what gpt-4o cost. A model arzan scored but did not train (the
base, KazLLM) has no bill either: it gets a column there too, filled in its own colour, because
it was measured here on the same items, where a published score is hollow.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from arzan.reporting.figures import TASK_MARKERS, Plot, thousands
from arzan.reporting.refs import Reference
from arzan.reporting.runs import Run
from arzan.reporting.scores import points  # accuracies and chrF share one 0–100 axis

GREY = "#6b7280"


def _short(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def score_vs_cost(runs: list[Run], refs: list[Reference], usd_kzt: float | None,
                  models: list[Run] | None = None) -> Plot:
    caption = ("Eval score against the run's total cost: up and to the left is better. Accuracies in %, "
               "chrF and BLEU on their own 0–100 scale.")
    scored = [r for r in runs if r.scores]
    if not scored:
        return Plot("score_vs_kzt", caption, None,
                    "No eval scores yet: run `arzan eval RUN_DIR` to add eval.json, then rebuild the report.")
    models = [m for m in models or [] if m.scores]
    if models:
        caption += " Filled columns on the right: models scored here on the same tasks but not trained here (no bill)."
    tasks = list(dict.fromkeys(t for r in scored + models for t in r.scores))
    marker = {t: TASK_MARKERS[i % len(TASK_MARKERS)] for i, t in enumerate(tasks)}
    by_lower = {t.lower(): t for t in tasks}
    refs = [r for r in refs if r.task.lower() in by_lower]
    costed = [r for r in refs if r.kzt is not None or (r.usd is not None and usd_kzt)]
    published = list(dict.fromkeys(r.model for r in refs if r not in costed))
    panel = [m.label for m in models] + published  # a model both scored here and published: two columns

    fig = Figure(figsize=(6.4, 4.3 if len(tasks) > 2 else 3.9), layout="constrained")
    if panel:
        grid = fig.add_gridspec(1, 2, width_ratios=[4, max(1.0, 0.55 * len(panel))])
        ax = fig.add_subplot(grid[0])
        side = fig.add_subplot(grid[1], sharey=ax)
    else:
        ax, side = fig.add_subplot(), None
    if any(sc.stale for r in scored for sc in r.scores.values()):
        caption += " Scores of an earlier adapter (a resume trained on after them) are left out; the table shows them."
    for run in scored:
        for task, sc in run.scores.items():
            if sc.stale:
                continue
            ax.scatter([run.get("money.kzt", 0.0)], [points(sc.value, sc.metric)], s=64, marker=marker[task],
                       color=run.color, edgecolors="white", linewidths=0.8, zorder=3)
    for ref in costed:
        cost = ref.kzt if ref.kzt is not None else ref.usd * usd_kzt
        ax.scatter([cost], [points(ref.score, ref.metric)], marker=marker[by_lower[ref.task.lower()]], s=64,
                   facecolors="white", edgecolors=GREY, zorder=2)
        ax.annotate(_short(ref.model), (cost, points(ref.score, ref.metric)), textcoords="offset points", xytext=(6, 3),
                    fontsize=8, color=GREY)
    if side is not None:
        for column, model in enumerate(models):
            for task, sc in model.scores.items():
                side.scatter([column], [points(sc.value, sc.metric)], s=56, marker=marker[task],
                             color=model.color, edgecolors="white", linewidths=0.8, zorder=3)
        for ref in refs:
            if ref not in costed:
                side.scatter([len(models) + published.index(ref.model)], [points(ref.score, ref.metric)], s=48, facecolors="white",
                             edgecolors=GREY, marker=marker[by_lower[ref.task.lower()]], zorder=2)
        side.set_xticks(range(len(panel)), [_short(m) for m in panel], rotation=35, ha="right", fontsize=8)
        side.set_xlim(-0.6, len(panel) - 0.4)
        side.tick_params(axis="y", labelleft=False, length=0)
        side.spines["left"].set_visible(False)
        side.set_title("no bill" if models else "published", loc="left", fontsize=9, fontweight="normal", color=GREY)
        side.grid(axis="x", visible=False)
    # runs in the left column, tasks in the right: the legend fills column by column
    left = [Line2D([], [], color=r.color, linewidth=6, label=r.label) for r in scored]
    left += [Line2D([], [], color=m.color, linewidth=6, label=f"{m.label} (scored, not trained here)") for m in models]
    right = [Line2D([], [], linestyle="none", marker=marker[t], color=GREY, label=t) for t in tasks]
    if refs:
        right.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", color=GREY,
                            label="hollow: published, not measured here"))
    rows = max(len(left), len(right))
    blank = [Line2D([], [], linestyle="none", label=" ")]
    fig.legend(handles=left + blank * (rows - len(left)) + right + blank * (rows - len(right)),
               loc="outside lower center", ncol=2, fontsize=8.5)
    ax.set_title("Score vs cost")
    ax.set_xlabel("total cost, ₸ (tenge)")
    ax.set_ylabel("score, 0–100")  # accuracy in %, chrF as is: the caption says so
    ax.margins(x=0.15, y=0.12)
    ax.set_xlim(left=0)
    thousands(ax.xaxis)
    return Plot("score_vs_kzt", caption, fig)
