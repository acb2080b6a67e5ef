"""Write the Colab notebooks from their one template, notebooks/source/kazakh_llama31.py.

Why generated: two hand-kept notebooks drift from each other and from the recipes they run. Here
the template (jupytext percent format) is shared, each variant only names its recipe, and the
recipe text and its "Expected" figures are copied in from the YAML file at generation time;
tests/test_notebooks.py regenerates them in memory and fails when a committed notebook is stale.

    python notebooks/make_notebooks.py          # rewrite notebooks/*.ipynb
    python notebooks/make_notebooks.py --check  # exit 1 if any is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEMPLATE = HERE / "source" / "kazakh_llama31.py"

VARIANTS = {
    "kazakh_llama31_colab": {
        "recipe": "kazakh-llama31-8b-colab-a100",
        "title": "Kazakh Llama-3.1-8B on a Colab Pro A100 — the ~5000 ₸ fine-tune, reproducible",
        "gpu": "A100",
        "sample_in_4bit": False,
    },
    "kazakh_llama31_t4_free": {
        "recipe": "kazakh-llama31-8b-t4-free",
        "title": "Kazakh Llama-3.1-8B on a free Colab T4 — QLoRA, 0 ₸",
        "gpu": "T4",
        "sample_in_4bit": True,
    },
}


def expected_figures(recipe_text: str) -> str:
    """The recipe header's 'Expected:' paragraph, so the notebook quotes the recipe, not a copy of it."""
    lines, keep = [], False
    for line in recipe_text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        field = line.startswith("# ") and not line.startswith("#  ") and body.split(" ")[0].endswith(":")
        if body.startswith("Expected:"):
            keep, body = True, body[len("Expected:"):].strip()
        elif keep and (field or not body):
            break  # the next "Field:" of the header, or its end
        if keep:
            lines.append(body)
    if not lines:
        raise ValueError("the recipe header has no 'Expected:' paragraph")
    return " ".join(lines)


def build(name: str):
    """One notebook as an nbformat node: template cells with the variant's values filled in."""
    import jupytext
    import nbformat

    variant = VARIANTS[name]
    recipe_text = (REPO / "recipes" / f"{variant['recipe']}.yaml").read_text(encoding="utf-8")
    if "'''" in recipe_text or recipe_text.endswith("\\"):
        raise ValueError("the recipe text cannot be embedded in a r'''...''' literal")
    values = {"@@TITLE@@": variant["title"], "@@RECIPE@@": variant["recipe"], "@@GPU@@": variant["gpu"],
              "@@SAMPLE_IN_4BIT@@": repr(variant["sample_in_4bit"]),
              "@@EXPECTED@@": expected_figures(recipe_text), "@@RECIPE_TEXT@@": recipe_text}
    nb = jupytext.reads(TEMPLATE.read_text(encoding="utf-8"), fmt="py:percent")
    for i, cell in enumerate(nb.cells):
        for key, value in values.items():
            cell.source = cell.source.replace(key, value)
        if "@@" in cell.source:
            raise ValueError(f"cell {i}: unfilled placeholder in {TEMPLATE.name}")
        cell.id = f"{name}-{i}"  # stable ids: regeneration is byte-identical
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata = {
        "accelerator": "GPU",
        "colab": {"gpuType": variant["gpu"], "provenance": []},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.nbformat, nb.nbformat_minor = 4, 5
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    import nbformat

    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name in VARIANTS:
        path = HERE / f"{name}.ipynb"
        text = render(name)
        if "--check" in argv:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python notebooks/make_notebooks.py")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
