"""Text from a run (names, reasons, prompts, a model's answers) made safe inside Markdown.

Markdown passes raw HTML through: a run called `<img src=...>` would make every renderer fetch
it, and an answer holding `<think>` would vanish. Shared by the Markdown report and the model card.
"""

from __future__ import annotations


def md_text(text: str) -> str:
    """Prose or a heading: HTML's three special characters as entities."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_cell(text: str) -> str:
    """A table cell: also no column break and no line break."""
    return md_text(text).replace("|", "\\|").replace("\n", " ")
