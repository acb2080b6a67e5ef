"""Local evaluation data is checked before lm-eval sees it: bad rows fail with file and row named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from arzan.errors import ArzanError
from arzan.evaluation.taskdata import convert, load, read_rows, validate_file

SHARED = Path(os.environ.get("ARZAN_KK_EVAL_DIR")
              or Path(__file__).resolve().parents[2] / "shared" / "data" / "kazakh-eval")
needs_shared = pytest.mark.skipif(not (SHARED / "kkCOPA.jsonl").is_file(),
                                  reason=f"shared Kazakh eval data not at {SHARED}")


def write_jsonl(path: Path, rows: list, bom: bool = False) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


GOOD = {"question": "Қазақстанның астанасы?", "choices": ["Астана", "Алматы"], "answer": 0}


def test_good_file_with_bom_validates(tmp_path):
    f = write_jsonl(tmp_path / "quiz.jsonl", [GOOD, {**GOOD, "answer": 1}], bom=True)
    assert validate_file(f, "mc") == 2
    assert read_rows(f)[0][1]["question"] == GOOD["question"]  # the BOM is not part of the key


def test_missing_column_names_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "quiz.jsonl", [GOOD, {"question": "q", "answer": 0}])
    with pytest.raises(ArzanError) as e:
        validate_file(f, "mc")
    assert str(f) in str(e.value) and "line 2" in str(e.value) and "'choices'" in str(e.value)


def test_out_of_range_answer_names_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "quiz.jsonl", [GOOD, GOOD, {**GOOD, "answer": 2}])
    with pytest.raises(ArzanError, match=r"quiz\.jsonl: line 3: .*out of range for 2 choices"):
        validate_file(f, "mc")
    f = write_jsonl(tmp_path / "quiz.jsonl", [GOOD, {**GOOD, "choices": [], "answer": 0}])
    with pytest.raises(ArzanError, match=r"quiz\.jsonl: line 2: needs at least 2 non-empty choices, found 0"):
        validate_file(f, "mc")


def test_answer_must_be_an_integer_index(tmp_path):
    f = write_jsonl(tmp_path / "quiz.jsonl", [{**GOOD, "answer": "A"}])
    with pytest.raises(ArzanError, match="line 1: 'answer' must be a 0-based integer"):
        validate_file(f, "mc")


def test_a_quiz_row_with_two_equal_options_is_refused(tmp_path):
    """Scored by likelihood, equal options tie: the row could never tell right from wrong."""
    f = write_jsonl(tmp_path / "quiz.jsonl", [GOOD, {**GOOD, "choices": ["Астана", "Алматы", " Астана"], "answer": 0}])
    with pytest.raises(ArzanError, match=r"quiz\.jsonl: line 2: choices 0 and 2 are the same text 'Астана'"):
        validate_file(f, "mc")


def test_unreadable_files(tmp_path):
    with pytest.raises(ArzanError, match="file not found"):
        validate_file(tmp_path / "nope.jsonl")
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"question": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ArzanError, match="latin1.jsonl: cannot read as UTF-8"):
        validate_file(latin)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(GOOD) + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(ArzanError, match=r"broken\.jsonl: line 3: not valid JSON"):
        validate_file(broken)
    parquet = tmp_path / "x.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(ArzanError, match="unsupported file type"):
        validate_file(parquet)


def test_letter_answers_including_cyrillic_lookalikes():
    rows = [(1, {"question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "E": "", "correct_answer": "С"})]
    doc = convert("unt", rows, "mem")[0]
    assert doc["label"] == 2 and doc["choices"] == ["a", "b", "c", "d"] and doc["letters"] == list("ABCD")
    with pytest.raises(ArzanError, match="mem: line 1: answer 'E' names option 'E', which is empty or missing"):
        convert("unt", [(1, {**rows[0][1], "correct_answer": "E"})], "mem")
    with pytest.raises(ArzanError, match="mem: line 1: answer 'Z' is not one of the letters A, B, C, D, E, F, G, H"):
        convert("unt", [(1, {**rows[0][1], "correct_answer": "Z"})], "mem")
    full = {**rows[0][1], "E": "e"}
    for key, label in {"В": 1, "Б": 1, "в": 1, "Д": 3, "Е": 4, "а": 0}.items():  # look-alikes and sound-alikes
        assert convert("unt", [(1, {**full, "correct_answer": key})], "mem")[0]["label"] == label, key
    with pytest.raises(ArzanError, match="answer 'Г' is not one of the letters"):  # alphabet order is not guessed
        convert("unt", [(1, {**full, "correct_answer": "Г"})], "mem")


def test_an_empty_option_in_the_middle_does_not_shift_the_answer():
    """Option C empty, key D: the right answer is the text under D, shown as the third choice."""
    row = {"Question": "q", "Option A": "a", "Option B": "b", "Option C": "", "Option D": "d", "Option E": "e",
           "Answer Key": "D"}
    doc = convert("kazmmlu", [(1, row)], "mem")[0]
    assert doc["choices"] == ["a", "b", "d", "e"] and doc["choices"][doc["label"]] == "d"
    hella = {"ctx": "c", "option1": "a", "option2": "", "option3": "b", "option4": "в", "answer": "4"}
    doc = convert("kazllm_hellaswag", [(1, hella)], "mem")[0]
    assert doc["choices"][doc["label"]] == "в"
    with pytest.raises(ArzanError, match="answer 'C' names option 'Option C', which is empty"):
        convert("kazmmlu", [(1, {**row, "Answer Key": "C"})], "mem")


def test_kazllm_csv_schemas(tmp_path):
    f = tmp_path / "hellaswag_kk.csv"
    f.write_text("ctx,option1,option2,option3,option4,answer\nбасы,а,ә,б,в,3\nбасы,а,ә,б,в,7\n",
                 encoding="utf-8-sig")
    with pytest.raises(ArzanError, match=r"hellaswag_kk\.csv: row 3: answer '7' is out of range"):
        validate_file(f, "kazllm_hellaswag")
    g = tmp_path / "gsm8k_kk_v2.csv"
    g.write_text('question,hints,answer\n"2+2?",,"1,024"\n', encoding="utf-8")
    assert convert("kazllm_gsm8k", read_rows(g), str(g))[0]["target"] == "1024"


@needs_shared
def test_shared_files_validate_and_load_through_the_task_loader():
    assert validate_file(SHARED / "kkCOPA.jsonl", "kkcopa") == 500  # starts with a BOM
    assert validate_file(SHARED / "Belebele.jsonl", "belebele") == 900
    ds = load("kkcopa", local_file="kkCOPA.jsonl", arzan_data_dir=str(SHARED))["test"]
    first = ds[0]
    assert first["connector"] == "себебі" and first["label"] == 0 and len(first["choices"]) == 2


def test_loader_without_data_or_hub_explains(tmp_path):
    with pytest.raises(ArzanError, match="'x.jsonl' not found"):
        load("mc", local_file="x.jsonl", arzan_data_dir=str(tmp_path))


def test_csv_records_may_span_lines_and_a_broken_csv_names_the_row(tmp_path):
    f = tmp_path / "hellaswag_kk.csv"
    f.write_text('ctx,option1,option2,option3,option4,answer\n"Бірінші жол\nекінші жол",а,ә,б,в,3\nбасы,а,ә,б,в,9\n',
                 encoding="utf-8")
    rows = read_rows(f)
    assert rows[0][1]["ctx"] == "Бірінші жол\nекінші жол"  # the newline inside the quotes is kept
    with pytest.raises(ArzanError, match=r"hellaswag_kk\.csv: row 4: answer '9' is out of range"):
        validate_file(f, "kazllm_hellaswag")  # numbered by the line the bad record starts on
    bad = tmp_path / "bad.csv"
    bad.write_text('ctx,option1,option2,option3,option4,answer\n"басы,а,ә,б,в,3\n' + "x" * 200_000, encoding="utf-8")
    with pytest.raises(ArzanError, match=r"bad\.csv: row 2: not valid CSV"):
        read_rows(bad)


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    f = tmp_path / "quiz.jsonl"
    row = {**GOOD, "question": "бірінші\u2028екінші\x0cүшінші"}
    f.write_text(json.dumps(row, ensure_ascii=False) + "\r\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    assert validate_file(f) == 2


def test_a_column_with_numbers_in_some_rows_and_text_in_others_still_loads(tmp_path):
    f = tmp_path / "quiz.jsonl"
    f.write_text(json.dumps({**GOOD, "topic": 4}) + "\n" + json.dumps({**GOOD, "topic": "қала"}) + "\n",
                 encoding="utf-8")
    assert validate_file(f) == 2
    ds = load("mc", local_file=str(f))["test"]
    assert ds["topic"] == ["4", "қала"]


def test_a_hub_dataset_that_cannot_be_reached_is_one_line_naming_it_and_the_way_out():
    with pytest.raises(ArzanError) as e:
        load("mc", local_file="nowhere.jsonl", hub_path="kz-transformers/not-reachable-offline")
    msg = str(e.value)
    assert "cannot load hub:kz-transformers/not-reachable-offline" in msg and "--data-dir" in msg and "\n" not in msg


def test_a_hub_subset_filter_that_matches_nothing_is_refused_not_scored_on_zero_items(monkeypatch):
    """KazMMLU's Kazakh subjects are picked by name ('... in kaz)'): renamed ones must not load as an
    empty test split that lm-eval would only fail on after the model loaded."""
    import datasets

    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda path: ["Biology (in eng)", "Law (in eng)"])
    with pytest.raises(ArzanError, match=r"kazmmlu.yaml: no subset of hub:org/kazmmlu has 'in kaz\)' in its name "
                                         r"\(it has Biology \(in eng\), Law \(in eng\)\)"):
        load("mc", local_file="nowhere.jsonl", hub_path="org/kazmmlu", hub_configs_matching="in kaz)",
             config_source="kazmmlu.yaml")


def test_an_answer_key_that_is_not_a_whole_number_is_refused_not_rounded():
    row = {"flores_passage": "p", "question": "q", "mc_answer1": "a", "mc_answer2": "b", "mc_answer3": "c",
           "mc_answer4": "d"}
    with pytest.raises(ArzanError, match=r"belebele: line 2: answer '2.5' is not a whole number"):
        convert("belebele", [(1, {**row, "correct_answer_num": "2"}), (2, {**row, "correct_answer_num": "2.5"})],
                "belebele")
    assert convert("belebele", [(1, {**row, "correct_answer_num": "2.0"})], "belebele")[0]["label"] == 1

