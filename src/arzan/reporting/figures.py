"""How the plots look and how they leave matplotlib: one palette, one rc style, SVG for the page
and PNG for Markdown; `Figure` objects built directly (no pyplot), so building a report inside a
notebook or a training process leaves the caller's matplotlib state alone.

Each run keeps its palette colour in every plot and in the tables, so a reader matches a line to a
row by colour alone.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

if TYPE_CHECKING:
    from arzan.reporting.runs import Run

# Okabe-Ito (colour-blind safe) minus its yellow, which vanishes on white; then tab10's extras.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#444444",
           "#8c564b", "#bcbd22", "#17becf"]
PHASE_COLORS = {"setup": "#cbd5e1", "data": "#94a3b8", "train": "#1e3a5f", "eval": "#4f7cac",
                "save": "#64748b", "overhead": "#f1f5f9"}
END_MARKERS = {"finished": "o", "running": ">", "stopped_budget": "X", "interrupted": "X", "failed": "X"}
TASK_MARKERS = ["o", "s", "D", "^", "v", "P", "h", "*"]
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold",
    "axes.titlelocation": "left", "axes.titlepad": 10, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "#e5e7eb", "grid.linewidth": 0.8, "axes.axisbelow": True,
    "axes.edgecolor": "#9ca3af", "axes.labelcolor": "#374151", "xtick.color": "#4b5563",
    "ytick.color": "#4b5563", "legend.frameon": False, "legend.fontsize": 9,
    "svg.fonttype": "path", "svg.hashsalt": "arzan-report", "lines.linewidth": 1.8,
    "text.parse_math": False,  # "$5 cap, $10 cap" in a run name is text, not a formula to choke on
}


@dataclass
class Plot:
    key: str
    caption: str
    figure: Figure | None = None
    empty: str | None = None  # why there is no figure


def new_figure(height: float = 3.5, width: float = 6.4) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def thousands(axis) -> None:
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 100 else f"{v:g}"))


def assign_colors(runs: list[Run]) -> None:
    for index, run in enumerate(runs):
        run.color = PALETTE[index % len(PALETTE)]


_SVG_NOISE = [re.compile(p, re.S) for p in (r"<\?xml.*?\?>", r"<!DOCTYPE.*?>", r"<metadata>.*?</metadata>",
                                             r"<!--.*?-->", r"<style[^>]*>.*?</style>", r'\s+xmlns(:\w+)?="[^"]*"')]


def svg_markup(plot: Plot, index: int) -> str:
    """Inline SVG, stripped of the namespace/metadata URLs matplotlib writes (nothing fetches
    them, but "no URL anywhere" is easier to check than "no URL that is fetched"), with ids
    prefixed so four plots in one document do not share ids."""
    buffer = io.StringIO()
    with rc_context(STYLE):
        plot.figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    for pattern in _SVG_NOISE:
        svg = pattern.sub("", svg)
    prefix = f"p{index}-"
    svg = re.sub(r'\bid="', f'id="{prefix}', svg)
    svg = svg.replace('href="#', f'href="#{prefix}').replace("url(#", f"url(#{prefix}")
    svg = re.sub(r'<svg\s+width="[^"]*"\s+height="[^"]*"',
                 f'<svg class="plot" role="img" aria-label="{escape(plot.caption)}" data-plot="{plot.key}"',
                 svg, count=1)
    return svg.strip()


def save_pngs(plots: list[Plot], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for plot in plots:
        if plot.figure is not None:
            path = folder / f"{plot.key}.png"
            with rc_context(STYLE):
                plot.figure.savefig(path, format="png", dpi=144, facecolor="white", metadata={"Software": None})
            written[plot.key] = path
    return written
