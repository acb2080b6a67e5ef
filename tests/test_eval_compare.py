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


def fake_run(root: Path, name: str, acc: float, kzt: float | None, model: dict | None = None,
             stderr: float | None = 0.01, n: int = 100, metric: str = "acc") -> Path:
    """An eval.json as `arzan eval` writes it; `model` is its {"kind", "base"} (a run on a base, or
    a plain model), left out as older files leave it out."""
    run = root / name
    run.mkdir()
    rows = [{"task": "arzan_mmlu_translated_kk", "metric": metric, "value": acc, "stderr": stderr, "n": n,
             "version": "1.0", "num_fewshot": 0, "primary": True},
            {"task": "arzan_unt_kk_biology", "metric": "acc", "value": 0.3, "stderr": 0.05, "n": 50,
             "version": "1.0", "num_fewshot": 0, "primary": True}]
    tasks = {t: {**h, "limit": n} for t, h in headline(rows, ["arzan_mmlu_translated_kk"]).items()}
    doc = {"rows": rows, "tasks": tasks, "limit": n, **({"model": model} if model else {})}
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
    assert not any("gain" in r or "kzt_per_point_gained" in r for r in mine)  # no base scored: no claim
    published = [r for r in rows if r["basis"] == PUBLISHED]
    assert published and {r["task"] for r in published} == {"arzan_mmlu_translated_kk"}
    assert all(r["source"].startswith("https://") for r in published)

    detail = compare([a], detail=True)
    assert "arzan_unt_kk_biology" in {r["task"] for r in detail if r["basis"] == PUBLISHED}

    md = scores_markdown(rows)
    assert "| lora-a | measured | 5,000 ₸ | 40.0 ±1.0 (n=100) |" in md
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
    """Both ledgers say run_id 'smoke': named by their folders, each row shows its own score."""
    a, b = fake_run(tmp_path, "a", 0.40, 100.0), fake_run(tmp_path, "b", 0.25, 200.0)
    for run in (a, b):
        led = json.loads((run / "cost.json").read_text())
        (run / "cost.json").write_text(json.dumps({**led, "run_id": "smoke"}))
    mine = [r for r in compare([a, b], references=False) if r["task"] == "arzan_mmlu_translated_kk"]
    assert {(r["model"], r["value"], r["kzt"]) for r in mine} == {("a", 0.40, 100.0), ("b", 0.25, 200.0)}
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
    assert "| lora-a | measured | 5,000 ₸ | 40.0 ±1.0 (n=100) |" in md
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
    """13.25 ₸ for 50 points gained is 0.27 ₸/pt, not `0 ₸/pt`; a CPU eval's 0.0032 ₸ is not `0 ₸`."""
    base = fake_run(tmp_path, "base", 0.25, None, model={"kind": "model", "base": "org/base"})
    a = fake_run(tmp_path, "cheap", 0.75, 13.25, model={"kind": "run", "base": "org/base"})
    b = fake_run(tmp_path, "cheaper", 0.65, 0.0032, model={"kind": "run", "base": "org/base"})
    md = scores_markdown(compare([base, a, b], references=False))
    assert "| cheap | measured | 13.25 ₸ | 75.0 ±1.0 (n=100) · +50.0 ±1.4 vs base · 0.27 ₸/pt gained |" in md
    assert "| cheaper | measured | 0.0032 ₸ | 65.0 ±1.0 (n=100) · +40.0 ±1.4 vs base · 0.000080 ₸/pt gained |" in md


RUN_ON = {"kind": "run", "base": "meta-llama/Llama-3.1-8B-Instruct"}
THE_BASE = {"kind": "model", "base": "meta-llama/Llama-3.1-8B-Instruct"}


def test_points_gained_over_the_base_are_what_is_priced(tmp_path):
    """A fine-tune is set against its base, found by the name its adapter records, on the same
    items: the bill per point gained, not the bill per raw point (which a run at chance would get)."""
    base = fake_run(tmp_path, "evals-base", 0.30, None, model=THE_BASE, stderr=0.02)
    run = fake_run(tmp_path, "lora", 0.40, 5000.0, model=RUN_ON, stderr=0.02)
    rows = compare([run, base], references=False)
    tuned = next(r for r in rows if r["model"] == "lora" and r["task"] == "arzan_mmlu_translated_kk")
    assert tuned["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"  # named by what it is, not its folder
    assert tuned["gain"] == pytest.approx(10.0)
    assert tuned["gain_stderr"] == pytest.approx(math.hypot(2.0, 2.0))
    assert tuned["kzt_per_point_gained"] == pytest.approx(5000 / 10.0)
    assert not any("gain" in r for r in rows if r["model"] == tuned["base_model"])  # not set against itself
    md = scores_markdown(rows)
    assert "| lora | measured | 5,000 ₸ | 40.0 ±2.0 (n=100) · +10.0 ±2.8 vs base · 500.00 ₸/pt gained |" in md
    assert "points above the base model (meta-llama/Llama-3.1-8B-Instruct) on the same items" in md


@pytest.mark.parametrize("tuned_acc, words", [
    (0.33, "+3.0 ±2.8 vs base (within noise)"),  # 3 points with ±2.8: could be luck, so no price
    (0.30, "+0.0 ±2.8 vs base (within noise)"),  # a run that learnt nothing
    (0.27, "−3.0 ±2.8 vs base (within noise)"),
    (0.22, "−8.0 ±2.8 vs base (a loss beyond noise)"),  # worse than where it started
])
def test_no_price_per_point_for_a_gain_within_noise(tmp_path, tuned_acc, words):
    base = fake_run(tmp_path, "base", 0.30, None, model=THE_BASE, stderr=0.02)
    run = fake_run(tmp_path, "lora", tuned_acc, 5000.0, model=RUN_ON, stderr=0.02)
    rows = compare([base, run], references=False)
    tuned = next(r for r in rows if r["model"] == "lora" and r["task"] == "arzan_mmlu_translated_kk")
    assert tuned["kzt_per_point_gained"] is None
    cell = f"| lora | measured | 5,000 ₸ | {points_text(tuned_acc)} ±2.0 (n=100) · {words} |"
    assert cell in scores_markdown(rows)


def points_text(acc: float) -> str:
    return f"{acc * 100:.1f}"


def test_a_base_scored_on_other_items_is_not_compared(tmp_path):
    """--limit 50 and --limit 100 score different items: their difference is not a gain."""
    base = fake_run(tmp_path, "base", 0.30, None, model=THE_BASE, n=50)
    run = fake_run(tmp_path, "lora", 0.60, 5000.0, model=RUN_ON)
    rows = compare([base, run], references=False)
    tuned = next(r for r in rows if r["model"] == "lora" and r["task"] == "arzan_mmlu_translated_kk")
    assert "gain" not in tuned and tuned["base_mismatch"] == "base scored on n=50"
    assert "60.0 ±1.0 (n=100) · base scored on n=50, not compared |" in scores_markdown(rows)


def test_base_of_another_model_is_not_used(tmp_path):
    other = fake_run(tmp_path, "other", 0.30, None, model={"kind": "model", "base": "org/other"})
    run = fake_run(tmp_path, "lora", 0.60, 5000.0, model=RUN_ON)
    rows = compare([other, run], references=False)
    assert not any("gain" in r for r in rows)
    md = scores_markdown(rows)  # says how to get the missing base score
    assert ("No score of the base model on the same items to set the fine-tune against: "
            "`arzan eval meta-llama/Llama-3.1-8B-Instruct --tasks arzan_mmlu_translated_kk --limit 100`") in md


def test_the_hint_repeats_how_the_fine_tune_was_scored(tmp_path):
    """The command printed for the base is the fine-tune's own: every task asked for (a suite, a
    task file), its --limit and --data-dir; for other items it re-scores the fine-tune instead."""
    run = fake_run(tmp_path, "lora", 0.60, 5000.0, model=RUN_ON)
    doc = json.loads((run / "eval.json").read_text())
    doc["tasks"]["arzan_mmlu_translated_kk"].update(requested="kazakh_local,/my quiz/q.yaml", data_dir="/data/kk eval")
    (run / "eval.json").write_text(json.dumps(doc))
    md = scores_markdown(compare([run], references=False))
    assert ("`arzan eval meta-llama/Llama-3.1-8B-Instruct --tasks 'kazakh_local,/my quiz/q.yaml' --limit 100 "
            "--data-dir '/data/kk eval'`") in md
    base = fake_run(tmp_path, "base", 0.30, None, model=THE_BASE, n=50)
    md = scores_markdown(compare([base, run], references=False))
    assert f"`arzan eval {run} --tasks 'kazakh_local,/my quiz/q.yaml' --limit 50 --data-dir '/data/kk eval'`" in md


def test_base_named_explicitly(tmp_path):
    """A base evaluated from a local folder records that folder's path, not the Hub name the adapter
    records: --base says which row is the base, and every other row is set against it."""
    base = fake_run(tmp_path, "local-base", 0.30, None, model={"kind": "model", "base": "/models/llama"})
    run = fake_run(tmp_path, "lora", 0.40, 5000.0, model=RUN_ON)
    kazllm = fake_run(tmp_path, "kazllm", 0.38, None, model={"kind": "model", "base": "issai/KazLLM"})
    rows = compare([run, kazllm], references=False, base=base)
    assert [r["model"] for r in rows if r["task"] == "arzan_mmlu_translated_kk"] == [
        "/models/llama", "lora", "issai/KazLLM"]
    by = {r["model"]: r for r in rows if r["task"] == "arzan_mmlu_translated_kk"}
    assert by["lora"]["gain"] == pytest.approx(10.0) and by["lora"]["kzt_per_point_gained"] == pytest.approx(500.0)
    assert by["issai/KazLLM"]["gain"] == pytest.approx(8.0)
    assert by["issai/KazLLM"]["kzt_per_point_gained"] is None  # arzan paid for no training of it
    assert "gain" not in by["/models/llama"]
    with pytest.raises(ArzanError, match="--base needs an evaluated model"):
        compare([run], base=cost_only_run(tmp_path, "unevaluated", 10.0))
    with pytest.raises(ArzanError, match="a fine-tune of meta-llama/Llama-3.1-8B-Instruct, not a base model"):
        compare([kazllm], base=run)


def test_cli_compare_with_base(tmp_path):
    from typer.testing import CliRunner

    from arzan.cli import app

    base = fake_run(tmp_path, "local-base", 0.30, None, model={"kind": "model", "base": "/models/llama"})
    run = fake_run(tmp_path, "lora", 0.40, 5000.0, model=RUN_ON)
    result = CliRunner().invoke(app, ["compare", str(run), "--base", str(base), "--markdown", "--no-references"])
    assert result.exit_code == 0, result.output
    assert "+10.0 ±1.4 vs base · 500.00 ₸/pt gained" in result.output
    result = CliRunner().invoke(app, ["compare", str(run), "--base", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "no such run folder" in result.output and "Traceback" not in result.output


def _with_4bit_headline(run: Path, four_bit: bool) -> Path:
    doc = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    doc["model"]["load_in_4bit"] = four_bit
    for head in doc["tasks"].values():
        head["base_4bit"] = four_bit
    (run / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
    return run


def test_a_4bit_fine_tune_is_set_only_against_a_4bit_base(tmp_path):
    """A QLoRA run scored on its NF4 base against the 16-bit base would count the quantisation
    loss as the fine-tune's: not compared, and the footnote says how to score the base alike."""
    base16 = _with_4bit_headline(fake_run(tmp_path, "base16", 0.30, None, model=THE_BASE), False)
    run = _with_4bit_headline(fake_run(tmp_path, "qlora", 0.40, 170.0, model=RUN_ON), True)
    rows = compare([base16, run], references=False)
    tuned = next(r for r in rows if r["model"] == "qlora" and r["task"] == "arzan_mmlu_translated_kk")
    assert "gain" not in tuned and tuned["base_mismatch"] == "base scored in 16-bit, this in 4-bit"
    md = scores_markdown(rows)
    assert "· base scored in 16-bit, this in 4-bit, not compared |" in md
    assert "--limit 100 --load-in-4bit`" in md

    base4 = _with_4bit_headline(fake_run(tmp_path, "base4", 0.28, None, model=THE_BASE), True)
    tuned = next(r for r in compare([base4, run], references=False)
                 if r["model"] == "qlora" and r["task"] == "arzan_mmlu_translated_kk")
    assert tuned["gain"] == pytest.approx(12.0) and tuned["kzt_per_point_gained"] == pytest.approx(170.0 / 12.0)


def test_scores_of_an_earlier_adapter_are_marked_not_priced(tmp_path):
    """A run scored at step 196, then resumed to step 1000: eval.json holds the old adapter's score.
    It is kept (it was paid for) but marked, and no gain is priced from it."""
    import hashlib

    base = fake_run(tmp_path, "base", 0.30, None, model=THE_BASE)
    run = fake_run(tmp_path, "lora", 0.40, 5000.0, model=RUN_ON)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights at step 196")
    doc = json.loads((run / "eval.json").read_text())
    doc["model"]["adapter_sha256"] = hashlib.sha256(b"weights at step 196").hexdigest()
    (run / "eval.json").write_text(json.dumps(doc))
    tuned = next(r for r in compare([base, run], references=False) if r["model"] == "lora")
    assert "stale" not in tuned and tuned["gain"] == pytest.approx(10.0)  # the adapter it scored is there

    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights at step 1000")  # the resume saved anew
    rows = compare([base, run], references=False)
    tuned = next(r for r in rows if r["model"] == "lora" and r["task"] == "arzan_mmlu_translated_kk")
    assert tuned["stale"] and "gain" not in tuned
    md = scores_markdown(rows)
    assert "| lora | measured | 5,000 ₸ | 40.0 ±1.0 (n=100) · an earlier adapter's score: run arzan eval again |" in md
    assert "No score of the base model" not in md


@pytest.mark.parametrize("ledger, message", [
    ({"cost": 5, "currency": "USD"}, "not an arzan ledger"),       # another tool's cost.json
    ({"schema_version": 2, "run_id": "x"}, "schema_version 2; this arzan reads version 1"),
])
def test_a_ledger_arzan_did_not_write_is_refused_by_compare_and_report(tmp_path, ledger, message):
    from arzan.report import build_report

    run = tmp_path / "b"
    run.mkdir()
    (run / "cost.json").write_text(json.dumps(ledger), encoding="utf-8")
    with pytest.raises(ArzanError, match=message):
        compare([run])
    with pytest.raises(ArzanError, match=message):
        build_report([run], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_the_base_scored_alike_is_chosen_whatever_the_order(tmp_path):
    """The notebook keeps a 16-bit and a 4-bit eval of one base side by side: a QLoRA run scored on
    its 4-bit base is set against the 4-bit one, a LoRA run against the 16-bit one, in any order."""
    (tmp_path / "16").mkdir()
    (tmp_path / "4").mkdir()
    b16 = _with_4bit_headline(fake_run(tmp_path / "16", "base", 0.30, None, model=THE_BASE), False)
    b4 = _with_4bit_headline(fake_run(tmp_path / "4", "base", 0.26, None, model=THE_BASE), True)
    qlora = _with_4bit_headline(fake_run(tmp_path, "qlora", 0.40, 170.0, model=RUN_ON), True)
    lora = _with_4bit_headline(fake_run(tmp_path, "lora", 0.40, 500.0, model=RUN_ON), False)
    for order in ([b16, b4, qlora, lora], [b4, b16, qlora, lora], [qlora, lora, b4, b16]):
        by = {r["model"]: r for r in compare(order, references=False) if r["task"] == "arzan_mmlu_translated_kk"}
        assert by["qlora"]["gain"] == pytest.approx(14.0) and by["lora"]["gain"] == pytest.approx(10.0)


def test_detail_rows_carry_their_own_bits(tmp_path):
    """eval.json merged from a 4-bit eval of one task and a 16-bit eval of another: each subtask row
    says how it was scored, so --detail pairs no row across precisions."""
    base = fake_run(tmp_path, "base", 0.30, None, model=THE_BASE)
    doc = json.loads((base / "eval.json").read_text())
    for row in doc["rows"]:
        row["base_4bit"] = row["task"] == "arzan_mmlu_translated_kk"  # this one scored in 4-bit
    doc["model"]["load_in_4bit"] = False  # the latest eval was 16-bit
    (base / "eval.json").write_text(json.dumps(doc))
    run = fake_run(tmp_path, "lora", 0.50, 500.0, model=RUN_ON)  # a 16-bit LoRA, scored in 16-bit
    by = {r["task"]: r for r in compare([base, run], references=False, detail=True) if r["model"] == "lora"}
    assert by["arzan_mmlu_translated_kk"]["base_mismatch"] == "base scored in 4-bit, this in 16-bit"
    assert by["arzan_unt_kk_biology"]["gain"] == pytest.approx(0.0)


@pytest.mark.parametrize("ledger_text, message", [
    ("null", "expected a JSON object"), ("[]", "expected a JSON object"),
    ('{"run_id": "x", "money": [1]}', "money is list, not an object"),
])
def test_a_malformed_ledger_beside_scores_is_named(tmp_path, ledger_text, message):
    run = fake_run(tmp_path, "a", 0.4, None)
    (run / "cost.json").write_text(ledger_text)
    with pytest.raises(ArzanError, match=message):
        compare([run])


def test_a_stderr_that_is_not_a_number_is_named(tmp_path):
    run = fake_run(tmp_path, "a", 0.4, None)
    doc = json.loads((run / "eval.json").read_text())
    doc["tasks"]["arzan_mmlu_translated_kk"]["acc_stderr"] = "N/A"
    (run / "eval.json").write_text(json.dumps(doc))
    with pytest.raises(ArzanError, match="acc_stderr is 'N/A', not a number"):
        compare([run])


def test_points_gained_are_priced_at_the_training_bill_not_later_evals(tmp_path):
    """A full-suite eval after the first one adds to the run's bill; the points the training bought
    do not get dearer for it. The cost column keeps the whole bill."""
    base = fake_run(tmp_path, "base", 0.30, None, model=THE_BASE, stderr=0.02)
    run = fake_run(tmp_path, "lora", 0.40, None, model=RUN_ON, stderr=0.02)
    trained = {"phases": {"setup": 10.0, "train": 90.0}, "tokens": {"trained": 1000}, "money": {"kzt": 4000.0}}
    scored = {"phases": {"eval": 30.0}, "tokens": {"trained": 0}, "money": {"kzt": 1000.0}}
    (run / "cost.json").write_text(json.dumps({"run_id": "lora", "money": {"kzt": 5000.0},
                                               "sessions": [trained, scored]}))
    tuned = next(r for r in compare([base, run], references=False) if r["model"] == "lora")
    assert tuned["kzt"] == 5000.0 and tuned["kzt_per_point_gained"] == pytest.approx(4000.0 / 10.0)


def test_points_are_priced_at_the_training_without_the_scoring_inside_its_session():
    """The recipe's own lm-eval runs in the training session's eval phase; a later `arzan eval` is a
    session of its own. Either way the scoring is left out, each session at its own price."""
    from arzan.reporting.runs import training_kzt

    def session(kzt, billed, **phases):
        return {"money": {"kzt": kzt}, "billed_seconds": billed, "phases": phases, "tokens": {"trained": 0}}

    scored_inside = {"money": {"kzt": 1000.0}, "sessions": [session(1000.0, 100.0, setup=10, train=80, eval=10)]}
    scored_later = {"money": {"kzt": 1400.0}, "sessions": [session(900.0, 90.0, setup=10, train=80),
                                                           session(500.0, 50.0, eval=50)]}
    assert training_kzt(scored_inside) == pytest.approx(900.0) == training_kzt(scored_later)
    resumed = {"money": {"kzt": 0}, "sessions": [session(500.0, 100.0, setup=10, train=90),  # 5 ₸/s
                                                 session(600.0, 40.0, setup=10, train=20, eval=10)]}  # 15 ₸/s
    assert training_kzt(resumed) == pytest.approx(500.0 + 450.0)
    assert training_kzt({**resumed, "sessions": [*resumed["sessions"], None, {"phases": None}]}) == \
        pytest.approx(950.0)  # a hand-edited ledger's odd entries are passed over, not a traceback


def test_a_chrf_below_one_is_a_chrf_below_one_not_eighty_points(tmp_path):
    """chrF is on 0–100 already: a broken fine-tune's 0.8 is 0.8, a loss of 11.2 against its base's
    12.0, never 80 (a fraction's scaling) and a gain of +68."""
    from arzan.reporting.scores import points

    base = fake_run(tmp_path, "base", 12.0, None, model=THE_BASE, stderr=0.5, metric="chrf")
    run = fake_run(tmp_path, "lora", 0.8, 5000.0, model=RUN_ON, stderr=0.3, metric="chrf")
    rows = compare([base, run], references=False)
    tuned = next(r for r in rows if r["model"] == "lora" and r["task"] == "arzan_mmlu_translated_kk")
    assert tuned["gain"] == pytest.approx(-11.2) and tuned["gain_stderr"] == pytest.approx(math.hypot(0.5, 0.3))
    assert tuned["kzt_per_point_gained"] is None
    assert "| lora | measured | 5,000 ₸ | 0.8 ±0.3 (n=100) · −11.2 ±0.6 vs base (a loss beyond noise) |" in \
        scores_markdown(rows)
    assert points(0.8, "chrf,none") == 0.8 and points(0.8, "acc") == points(0.8) == 80.0
    assert points(0.6, "bleu_acc") == 60.0 and points(0.6, "bleu_max") == 0.6  # truthfulqa_gen's pair



def test_detail_shows_and_compares_one_filter_of_a_task_scored_two_ways(tmp_path):
    """lm-eval's gsm8k reports exact_match under strict-match and flexible-extract, both primary:
    --detail shows the first, as the headline does, and sets it against the base's first."""
    def scored(name: str, strict: float, flexible: float, model: dict, kzt: float | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"task": "gsm8k_kk", "metric": "exact_match", "filter": f, "value": v, "stderr": 0.01, "n": 200,
                 "version": "1", "num_fewshot": 0, "primary": True}
                for f, v in (("strict-match", strict), ("flexible-extract", flexible))]
        doc = {"rows": rows, "tasks": headline(rows, ["gsm8k_kk"]), "limit": 200, "model": model}
        (folder / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
        if kzt is not None:
            (folder / "cost.json").write_text(json.dumps({"run_id": name, "money": {"kzt": kzt}}), encoding="utf-8")
        return folder

    base = scored("base", 0.20, 0.60, THE_BASE, None)
    run = scored("lora", 0.30, 0.50, RUN_ON, 1000.0)
    for detail in (False, True):
        rows = compare([base, run], references=False, detail=detail)
        tuned = [r for r in rows if r["model"] == "lora" and r["task"] == "gsm8k_kk"]
        assert len(tuned) == 1 and tuned[0]["value"] == 0.30 and tuned[0]["gain"] == pytest.approx(10.0)


def test_a_ledger_given_to_compare_is_named_not_read_as_scores(tmp_path):
    run = fake_run(tmp_path, "lora-a", 0.40, 5000.0)
    with pytest.raises(ArzanError, match=r"cost\.json: is a run's ledger; give the run folder it is in \(.*lora-a\)"):
        compare([run / "cost.json"])


def test_a_base_scored_without_the_chat_template_is_not_set_against_a_fine_tune_scored_with_it(tmp_path):
    """Other prompts are another test: the difference would be the template's, not what the money bought."""
    base = fake_run(tmp_path, "base", 0.40, None, model=THE_BASE)
    run = fake_run(tmp_path, "lora", 0.98, 5000.0, model=RUN_ON)
    doc = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    for head in doc["tasks"].values():
        head["chat_template"] = True
    (run / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
    rows = compare([base, run], references=False)
    tuned = next(r for r in rows if r["model"] == "lora" and r["task"] == "arzan_mmlu_translated_kk")
    assert "gain" not in tuned
    assert tuned["base_mismatch"] == "base scored without the chat template, this with the chat template"
    md = scores_markdown(rows)
    assert ("`arzan eval meta-llama/Llama-3.1-8B-Instruct --tasks arzan_mmlu_translated_kk --limit 100 "
            "--chat-template` scores it as the fine-tune was") in md


def test_a_base_folder_is_pointed_at_only_when_it_scored_the_same_items(tmp_path, monkeypatch):
    """evals/<base> on other items (another n) is no base to set a fine-tune against: the eval that
    would make one is named, not a compare that would show nothing more."""
    from arzan.evaluation.compare import base_fixes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evals").mkdir()
    run = fake_run(tmp_path, "run", 0.40, 100.0, model={"kind": "adapter", "base": "org/base"})
    fake_run(tmp_path / "evals", "org_base", 0.30, None, model={"kind": "model", "base": "org/base"}, n=5)
    said = " ".join(base_fixes(compare([run], references=False)))
    assert "holds org/base" not in said and "arzan eval org/base" in said
    (tmp_path / "evals" / "org_base" / "eval.json").unlink()
    (tmp_path / "evals" / "org_base").rmdir()
    fake_run(tmp_path / "evals", "org_base", 0.30, None, model={"kind": "model", "base": "org/base"})
    said = " ".join(base_fixes(compare([run], references=False)))
    assert "evals/org_base holds org/base scored as run was" in said and "arzan eval org/base" not in said
