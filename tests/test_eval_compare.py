"""Score tables: measured runs with their bill, published rows marked and sourced."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from arzan.errors import ArzanError
from arzan.evaluation import compare, load_references, scores_markdown, scores_table
from arzan.evaluation.compare import PUBLISHED
from arzan.evaluation.results import headline
from arzan.evaluation.suites import index_yamls, tasks_dir


def fake_run(root: Path, name: str, acc: float, kzt: float | None) -> Path:
    run = root / name
    run.mkdir()
    rows = [{"task": "arzan_mmlu_translated_kk", "metric": "acc", "value": acc, "stderr": 0.01, "n": 100,
             "version": "1.0", "num_fewshot": 0, "primary": True},
            {"task": "arzan_unt_kk_biology", "metric": "acc", "value": 0.3, "stderr": 0.05, "n": 50,
             "version": "1.0", "num_fewshot": 0, "primary": True}]
    doc = {"rows": rows, "tasks": headline(rows, ["arzan_mmlu_translated_kk"]), "limit": 100}
    (run / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
    if kzt is not None:
        (run / "cost.json").write_text(json.dumps({"run_id": name, "money": {"kzt": kzt}}), encoding="utf-8")
    return run


def test_compare_rows_money_and_references(tmp_path):
    a = fake_run(tmp_path, "lora-a", 0.40, 5000.0)
    b = fake_run(tmp_path, "lora-b", 0.35, None)
    rows = compare([a, b / "eval.json"])
    mine = [r for r in rows if r["basis"] == "measured"]
    assert [(r["model"], r["task"], r["value"]) for r in mine] == [
        ("lora-a", "arzan_mmlu_translated_kk", 0.40), ("lora-b", "arzan_mmlu_translated_kk", 0.35)]
    assert math.isclose(mine[0]["kzt_per_point"], 5000 / 40) and mine[1]["kzt_per_point"] is None
    published = [r for r in rows if r["basis"] == PUBLISHED]
    assert published and {r["task"] for r in published} == {"arzan_mmlu_translated_kk"}
    assert all(r["source"].startswith("https://") for r in published)

    detail = compare([a], detail=True)
    assert "arzan_unt_kk_biology" in {r["task"] for r in detail if r["basis"] == PUBLISHED}

    md = scores_markdown(rows)
    assert "| lora-a | measured | 5,000 ₸ | 40.0 ±1.0 (n=100) · 125.00 ₸/pt |" in md  # 5000 ₸ / 40 points
    assert "Published rows (not measured here):" in md and "horde-common" in md

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(scores_table(rows))
    out = console.file.getvalue()
    assert "lora-a" in out and PUBLISHED in out
    assert "horde-common" in out  # the table printed by default cites its sources too


def test_compare_missing_eval_is_a_clear_error(tmp_path):
    with pytest.raises(ArzanError, match="run `arzan eval` on the run first"):
        compare([tmp_path])


@pytest.mark.parametrize("doc, message", [
    ([1, 2], "expected a JSON object, got list"),
    ({"tasks": {"x": {"acc": 0.5}}}, "task 'x' has no 'metric' naming its score"),
    ({"tasks": {"x": {"metric": "acc", "acc": "half"}}}, "task 'x': acc is 'half', not a number"),
    ({"tasks": [], "rows": [{"value": 1}]}, "'rows' should be a list of"),
])
def test_compare_names_a_foreign_eval_json_instead_of_crashing(tmp_path, doc, message):
    f = tmp_path / "eval.json"
    f.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ArzanError, match=message) as err:
        compare([f])
    assert str(f) in str(err.value) and "\n" not in str(err.value)


def test_reference_file_is_sourced_and_keyed_by_real_tasks():
    known = set(index_yamls(tasks_dir()))
    refs = load_references()
    assert any(r["model"] == "issai/LLama-3.1-KazLLM-1.0-8B" for r in refs)
    for ref in refs:
        assert ref["source"].startswith("https://") and ref.get("table"), ref["model"]
        for task, value in (ref.get("scores") or {}).items():
            assert task in known, f"{ref['model']}: unknown task {task}"
            assert 0.0 <= value <= 1.0, f"{ref['model']}/{task}: {value} is not a fraction"


def test_bad_reference_file(tmp_path):
    f = tmp_path / "refs.yaml"
    f.write_text("references:\n  - model: x\n", encoding="utf-8")
    with pytest.raises(ArzanError, match="reference 1: needs at least `model` and `source`"):
        load_references(f)


def test_two_runs_of_one_recipe_keep_their_own_scores(tmp_path):
    """Both ledgers say run_id 'smoke': named by folder, each row shows its own score."""
    a, b = fake_run(tmp_path, "a", 0.40, 100.0), fake_run(tmp_path, "b", 0.25, 200.0)
    for run in (a, b):
        led = json.loads((run / "cost.json").read_text())
        (run / "cost.json").write_text(json.dumps({**led, "run_id": "smoke"}))
    mine = [r for r in compare([a, b], references=False) if r["task"] == "arzan_mmlu_translated_kk"]
    assert {(r["model"], r["value"], r["kzt"]) for r in mine} == {(str(a), 0.40, 100.0), (str(b), 0.25, 200.0)}
    md = scores_markdown(mine)
    assert "40.0" in md and "25.0" in md


def test_chrf_is_not_multiplied_by_100(tmp_path):
    run = tmp_path / "mt"
    run.mkdir()
    rows = [{"task": "flores", "metric": "chrf", "value": 31.25, "stderr": None, "n": 10, "version": "1",
             "num_fewshot": 0, "primary": True}]
    (run / "eval.json").write_text(json.dumps({"rows": rows, "tasks": headline(rows, ["flores"])}))
    (run / "cost.json").write_text(json.dumps({"run_id": "mt", "money": {"kzt": 625.0}}))
    row = compare([run], references=False)[0]
    assert row["kzt_per_point"] == pytest.approx(625.0 / 31.25)
    assert "31.2" in scores_markdown([row]) and "3125" not in scores_markdown([row])


def cost_only_run(root: Path, name: str, kzt: float, run_id: str | None = None) -> Path:
    run = root / name
    run.mkdir()
    (run / "cost.json").write_text(json.dumps({"run_id": run_id or name, "money": {"kzt": kzt}}), encoding="utf-8")
    return run


def test_runs_without_eval_json_are_compared_on_cost(tmp_path):
    """`arzan compare run1 run5b run2`, run2 never evaluated: a row with its bill and "no eval"
    where its scores would be, instead of refusing the whole comparison."""
    a = fake_run(tmp_path, "lora-a", 0.40, 5000.0)
    b = cost_only_run(tmp_path, "lora-b", 1234.5)
    rows = compare([a, b])
    mine = [r for r in rows if r["model"] == "lora-b"]
    assert [(r["task"], r["value"], r["kzt"]) for r in mine] == [(None, None, 1234.5)]
    md = scores_markdown(rows)
    assert "| lora-b | measured | 1,234 ₸ | no eval |" in md
    assert "| lora-a | measured | 5,000 ₸ | 40.0 ±1.0 (n=100) · 125.00 ₸/pt |" in md
    assert not any(r["basis"] == PUBLISHED and r["task"] is None for r in rows)

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(scores_table(rows))
    assert "no eval" in console.file.getvalue() and "1,234 ₸" in console.file.getvalue()


def test_runs_compared_on_cost_alone(tmp_path):
    """Only unevaluated runs: their bills side by side, one `scores` column saying so, and no
    published rows (no score of theirs to set them beside)."""
    rows = compare([cost_only_run(tmp_path, "a", 12.5), cost_only_run(tmp_path, "b", 0.0031)])
    assert {r["basis"] for r in rows} == {"measured"}
    md = scores_markdown(rows)
    assert "| model | basis | cost | scores |" in md
    assert "| a | measured | 12.50 ₸ | no eval |" in md and "| b | measured | 0.0031 ₸ | no eval |" in md


def test_the_same_run_named_twice_is_one_row(tmp_path):
    a = fake_run(tmp_path, "lora-a", 0.40, 5000.0)
    rows = compare([a, f"{a}/", a / "eval.json", tmp_path / "." / "lora-a"], references=False)
    assert [(r["model"], r["task"]) for r in rows] == [("lora-a", "arzan_mmlu_translated_kk")]


def test_small_amounts_keep_significant_digits(tmp_path):
    """13.25 ₸ for 50 points is 0.27 ₸/pt, not `0 ₸/pt`; a CPU eval's 0.0031 ₸ is not `0 ₸`."""
    a = fake_run(tmp_path, "cheap", 0.50, 13.25)
    b = fake_run(tmp_path, "cheaper", 0.40, 0.0032)
    md = scores_markdown(compare([a, b], references=False))
    assert "| cheap | measured | 13.25 ₸ | 50.0 ±1.0 (n=100) · 0.27 ₸/pt |" in md
    assert "| cheaper | measured | 0.0032 ₸ | 40.0 ±1.0 (n=100) · 0.000080 ₸/pt |" in md
