"""The Colab notebooks: generated from one template and up to date, and runnable end to end on a
CPU with the smoke recipe swapped in through the parameters cell (Colab-only cells do nothing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

from tests.conftest import REPO, SHARED_DATA

NOTEBOOKS = REPO / "notebooks"


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
NAMES = sorted(GEN.VARIANTS)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_what_the_generator_writes(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.is_file(), f"missing {path.name}: run python notebooks/make_notebooks.py"
    assert path.read_text("utf-8") == GEN.render(name), "stale: run python notebooks/make_notebooks.py"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_embeds_its_recipe_and_guards_colab_cells(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    recipe = (REPO / "recipes" / f"{GEN.VARIANTS[name]['recipe']}.yaml").read_text("utf-8")
    sources = [c.source for c in nb.cells]
    assert any(recipe in s for s in sources), "the embedded recipe must be the recipe file, byte for byte"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "RECIPE =" in params[0].source
    colab = [c for c in nb.cells if "colab-only" in c.metadata.get("tags", [])]
    assert colab and all("if IN_COLAB:" in c.source for c in colab)
    assert any('"google.colab" in sys.modules' in c.source for c in colab)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"


def _with_parameters(nb, **params):
    """Papermill's convention: a cell after the `parameters` cell overrides its values."""
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    nb.cells.insert(at + 1, cell)
    return nb


def _run(name: str, workdir: Path, out: Path, steps: int = 3, **params):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    smoke = [f"train.max_steps={steps}", "train.save_steps=1", "train.logging_steps=1",
             "train.per_device_train_batch_size=4", "data.sources.0.sample=48", "data.eval_fraction=0"]
    _with_parameters(nb, RECIPE=str(REPO / "recipes" / "smoke.yaml"), OVERRIDES=smoke, OUT=str(out),
                     MAX_NEW_TOKENS=8, **params)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return "\n".join(o.get("text", "") + json.dumps(o.get("data", {}), ensure_ascii=False)
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_cpu_with_the_smoke_recipe(name, tmp_path):
    out = tmp_path / "drive" / "smoke"
    # the first notebook also scores base and fine-tune on the same items, as SCORE_TASKS asks
    score = {"SCORE_TASKS": "arzan_kkcopa", "SCORE_LIMIT": 6, "SCORE_DATA_DIR": str(SHARED_DATA)} \
        if name == NAMES[0] and (SHARED_DATA / "kkCOPA.jsonl").is_file() else {}
    text = _run(name, tmp_path, out, **score)
    assert "not in Colab: skipping pip install" in text and "mode: new" in text
    ledger = json.loads((out / "cost.json").read_text("utf-8"))
    assert ledger["status"] == "finished" and ledger["progress"]["step"] == 3
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert "₸" in text and "Cost per 1M trained tokens" in text  # the bill, from the ledger
    assert "answers stopped at EOS" in text  # the Kazakh sample generation ran
    assert not (tmp_path / "recipes").exists(), "a given RECIPE file is used as is, not overwritten"
    if score:
        base = out.parent / "evals" / "arzan_tiny-llama-kk" / "eval.json"
        assert json.loads(base.read_text("utf-8"))["tasks"]["arzan_kkcopa"]["n"] == 6
        assert json.loads((out / "eval.json").read_text("utf-8"))["tasks"]["arzan_kkcopa"]["n"] == 6
        assert "vs base" in text and "arzan_kkcopa" in text  # the table sets the fine-tune against its base
        ledger = json.loads((out / "cost.json").read_text("utf-8"))  # the scoring is a session of the run
        assert len(ledger["sessions"]) == 2 and ledger["sessions"][-1]["phases"]["eval"] > 0
    if name == NAMES[0]:  # Run all again (a reopened Colab): a finished run is shown, not retrained
        again = _run(name, tmp_path, out, **score)
        assert "mode: done" in again and "already finished" in again
        # nor scored again: the same tasks and items with the same adapter are not paid for twice
        assert json.loads((out / "cost.json").read_text("utf-8"))["sessions"] == ledger["sessions"]


@pytest.mark.slow
def test_a_run_the_budget_stopped_continues_with_a_raised_budget_parameter(tmp_path):
    """Colab has no command line: BUDGET in the parameters cell is how a stopped run gets its raised cap."""
    out = tmp_path / "drive" / "smoke"
    first = _run(NAMES[0], tmp_path, out, steps=400, BUDGET="0.0005h", ALLOW_OVER_BUDGET=True)  # < 2 s billed
    ledger = json.loads((out / "cost.json").read_text("utf-8"))
    assert ledger["status"] == "stopped_budget" and 0 < ledger["progress"]["step"] < 400
    assert "to continue: set BUDGET = " in first
    again = _run(NAMES[0], tmp_path, out, steps=400, BUDGET="1h")
    ledger = json.loads((out / "cost.json").read_text("utf-8"))
    assert "mode: resume" in again and "OVERRIDES apply to a new run" in again
    assert ledger["status"] == "finished" and ledger["progress"]["step"] == 400 and len(ledger["sessions"]) == 2
    assert ledger["budget"]["max_hours"] == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_pins_are_the_tested_version_set(name):
    """The Colab install cell and pyproject.toml cannot drift apart: every `==` pin of the core and
    the `gpu` and `eval` extras is in the cell, and the cell pins nothing else."""
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    extras = project["optional-dependencies"]
    wanted = {d.replace(" ", "") for d in project["dependencies"] + extras["gpu"] + extras["eval"] if "==" in d}
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if "PINS = [" in c.source)
    pins = set(re.findall(r'"([A-Za-z0-9_.-]+==[^"]+)"', cell[cell.index("PINS = ["):]))
    assert pins == wanted
