"""The report's plots: loss against tenge, throughput, score against cost, cost by phase.

Each run keeps one colour in every plot and in the tables; a plot with no data comes back empty
with the reason, which the page shows in its place instead of blank axes.
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib import rc_context

from arzan.reporting.figures import (
    END_MARKERS,
    PHASE_COLORS,
    STYLE,
    Plot,
    new_figure,
    thousands,
)
from arzan.reporting.refs import Reference
from arzan.reporting.runs import PHASES, Run
from arzan.reporting.scoreplot import score_vs_cost


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _series(run: Run, x: str, y: str) -> tuple[list[float], list[float]]:
    points = [(r[x], r[y]) for r in run.metrics if _number(r.get(x)) and _number(r.get(y))]
    return [p[0] for p in points], [p[1] for p in points]


def _diverged_at(run: Run) -> int | None:
    """The first logged step whose loss is NaN or infinite: a diverged run, which no line can show."""
    return next((r.get("step") for r in run.metrics if isinstance(r.get("loss"), float)
                 and not math.isfinite(r["loss"])), None)


def _line(ax, run: Run, xs: list[float], ys: list[float]) -> None:
    ax.plot(xs, ys, color=run.color, label=run.label)
    ax.plot(xs[-1:], ys[-1:], linestyle="none", marker=END_MARKERS.get(run.status, "o"),
            markersize=7, color=run.color, markeredgecolor="white")


def _end_marker_note(runs: list[Run]) -> str:
    kinds = {run.status for run in runs}
    parts = [text for status, text in (("finished", "● finished"), ("running", "▶ still running"))
             if status in kinds]
    if kinds & {"stopped_budget", "interrupted", "failed"}:
        parts.append("✕ stopped")
    return "; ".join(parts)


def _spans_decades(runs: list[Run], ratio: float = 20.0) -> bool:
    """True when the dearest run's spend is more than `ratio` times the cheapest (paid) run's."""
    ends = [max(xs) for r in runs if (xs := [v for v in _series(r, "spent_kzt", "loss")[0] if v > 0])]
    return len(ends) > 1 and max(ends) > ratio * min(ends)


def loss_vs_cost(runs: list[Run]) -> Plot:
    paid = any(max(_series(r, "spent_kzt", "loss")[0], default=0) > 0 for r in runs)
    x = "spent_kzt" if paid else "step"
    plot = Plot("loss_vs_kzt", "Training loss against money spent: the cheaper a curve gets low, the better. "
                + _end_marker_note(runs) + ".")
    if not paid:
        plot.caption += " Every run here was free (price 0 ₸), so the loss is drawn against the step."
    fig, ax = new_figure()
    drawn = evals = False
    for run in runs:
        xs, ys = _series(run, x, "loss")
        if xs:
            _line(ax, run, xs, ys)
            drawn = True
        ex, ey = _series(run, x, "eval_loss")
        if ex:
            ax.plot(ex, ey, linestyle="none", marker="o", markerfacecolor="white", color=run.color)
            evals = True
    diverged = [f"{run.label} from step {step}" for run in runs if (step := _diverged_at(run)) is not None]
    if diverged:
        plot.caption += f" Loss NaN or infinite (diverged): {'; '.join(diverged)}."
    if not drawn:
        return Plot(plot.key, plot.caption, None,
                    f"No finite loss to draw: {'; '.join(diverged)}." if diverged else
                    "No loss logged yet (metrics.jsonl has no `loss` rows).")
    if evals:
        plot.caption += " Hollow circles: eval loss."
    ax.set_title("Training loss vs tenge spent" if paid else "Training loss vs step (free runs)")
    ax.set_xlabel("spent, ₸ (tenge)" if paid else "optimizer step")
    ax.set_ylabel("training loss")
    if paid and _spans_decades(runs):
        ax.set_xscale("log")  # a 50 ₸ run next to a 5000 ₸ one would be a vertical line at 0
        ax.set_xlabel("spent, ₸ (tenge, log scale)")
        plot.caption += " The runs' costs differ by more than 20×, so the money axis is logarithmic."
    else:
        thousands(ax.xaxis)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    plot.figure = fig
    return plot


def interval_rates(run: Run) -> tuple[list[float], list[float]]:
    """Tokens seen per billed second between consecutive logged rows, at each row's elapsed time.

    The ledger's `tokens_per_s` is the run's average so far, which smooths a 20 s stall into a slow
    droop; the rate per interval (eval and checkpoint saves included, as they are billed) shows it.
    """
    # training rows only: an eval row or the closing row repeats tokens_seen and would read as 0 tok/s;
    # the eval's time still falls inside the next training interval, as billed
    rows = [r for r in run.metrics if _number(r.get("loss")) and _number(r.get("elapsed_s"))
            and _number(r.get("tokens_seen"))]
    out_x, out_y = [], []
    for r0, r1 in zip(rows, rows[1:]):
        (x0, t0), (x1, t1) = (r0["elapsed_s"], r0["tokens_seen"]), (r1["elapsed_s"], r1["tokens_seen"])
        if r0.get("session") != r1.get("session"):  # a resume's first interval holds its setup, not training
            continue
        if x1 > x0 and t1 >= t0:
            out_x.append(x1)
            out_y.append((t1 - t0) / (x1 - x0))
    return out_x, out_y


def throughput(runs: list[Run]) -> Plot:
    longest = max((max(_series(r, "elapsed_s", "tokens_per_s")[0], default=0) for r in runs), default=0)
    unit, scale = ("hours", 3600) if longest > 3 * 3600 else ("minutes", 60) if longest > 180 else ("seconds", 1)
    fig, ax = new_figure()
    drawn = False
    for run in runs:
        xs, ys = interval_rates(run)
        if xs:
            _line(ax, run, [v / scale for v in xs], ys)
            drawn = True
        ax_, ay = _series(run, "elapsed_s", "tokens_per_s")
        if ax_:
            ax.plot([v / scale for v in ax_], ay, color=run.color, linestyle="--", linewidth=1, alpha=0.6)
            drawn = True
    caption = ("Training throughput: solid, tokens seen per billed second between logged steps (eval and "
               "checkpoint saves included), so a dip mid-run is an evaluation, a checkpoint or a throttled GPU (the "
               "interval across a resume, which holds the new session's setup, is left out); "
               "dashed, the run's average so far (the ledger's tokens/s).")
    if not drawn:
        return Plot("throughput", caption, None, "No throughput logged yet (no `tokens_per_s` rows).")
    ax.set_title("Throughput over time")
    ax.set_xlabel(f"elapsed, {unit}")
    ax.set_ylabel("tokens / s")
    thousands(ax.yaxis)
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return Plot("throughput", caption, fig)


def _split(phases: dict, billed: Any, money: Any) -> dict[str, float]:
    """One bill shared by its phases in proportion to their seconds, the rest of billed time being
    the provider's start-up overhead."""
    seconds = {p: float(phases.get(p) or 0.0) for p in PHASES}
    billed = float(billed or 0.0) or sum(seconds.values())
    seconds["overhead"] = max(billed - sum(seconds.values()), 0.0)  # charged once per session, not once a run
    if money is None:
        return {p: s / 60 for p, s in seconds.items()}
    return {p: (float(money) * s / billed if billed else 0.0) for p, s in seconds.items()}


def phase_split(run: Run, in_money: bool) -> dict[str, float]:
    """Minutes, or ₸, by phase. In ₸ each session's bill is shared by its own phases, since a resume
    on another GPU or at another --price pays another rate (the ledger's total spread over all the
    phases would move money between them); the bar adds up to exactly the ₸ the ledger states."""
    if not in_money:
        return _split(run.get("phases", {}) or {}, run.get("billed_seconds", 0.0), None)
    sessions = run.ledger.get("sessions")
    total = float(run.get("money.kzt", 0.0))
    if isinstance(sessions, list) and sessions and all(isinstance(x, dict) for x in sessions):
        parts = [_split(x.get("phases") or {}, x.get("billed_seconds"), (x.get("money") or {}).get("kzt") or 0.0)
                 for x in sessions]
        summed = {p: sum(part[p] for part in parts) for p in parts[0]}
        if math.isclose(sum(summed.values()), total, rel_tol=1e-6, abs_tol=1e-9):
            return summed
    return _split(run.get("phases", {}) or {}, run.get("billed_seconds", 0.0), total)  # sessions that do not add up


def cost_by_phase(runs: list[Run]) -> Plot:
    in_money = any(float(r.get("money.kzt", 0.0)) > 0 for r in runs)
    caption = ("Where the money went: setup and data loading are paid GPU time too." if in_money else
                "Where the time went (every run here was free, so minutes instead of tenge).")
    fig, ax = new_figure(1.3 + 0.45 * len(runs))
    labels = [r.label for r in runs][::-1]
    left = [0.0] * len(runs)
    for phase, colour in PHASE_COLORS.items():
        values = [phase_split(r, in_money)[phase] for r in runs][::-1]
        if not any(values):
            continue
        ax.barh(labels, values, left=left, color=colour, label=phase, height=0.6,
                edgecolor="#94a3b8" if phase == "overhead" else "white", linewidth=0.6)
        left = [a + b for a, b in zip(left, values)]
    if not any(left):
        return Plot("cost_by_phase", caption, None, "No phase has been timed yet.")
    for tick, run in zip(ax.get_yticklabels(), runs[::-1]):
        tick.set_color(run.color)
        tick.set_fontweight("bold")
    ax.grid(axis="y", visible=False)
    ax.set_title("Cost by phase" if in_money else "Time by phase")
    ax.set_xlabel("₸ (tenge)" if in_money else "minutes")
    thousands(ax.xaxis)
    fig.legend(loc="outside lower center", ncol=6)
    return Plot("cost_by_phase", caption, fig)


def all_plots(runs: list[Run], refs: list[Reference], usd_kzt: float | None,
              models: list[Run] | None = None) -> list[Plot]:
    with rc_context(STYLE):
        return [loss_vs_cost(runs), throughput(runs), score_vs_cost(runs, refs, usd_kzt, models or []),
                cost_by_phase(runs)]

