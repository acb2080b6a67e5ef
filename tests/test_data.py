"""Each data format reaches the trainer as input_ids + assistant_masks, with bad rows named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arzan.data import count_tokens, load_data, prepare_data
from arzan.errors import ArzanError
from arzan.recipe import DataSection

QA = [("Бес пен үштің қосындысы қанша?", "Сегіз"), ("Цифрмен жаз: қырық екі", "42")]


def section(tmp_path: Path, rows, fmt: str, suffix: str = ".jsonl", **kw) -> DataSection:
    path = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".csv":
        keys = list(rows[0])
        path.write_text(",".join(keys) + "\n" + "".join(",".join(r[k] for k in keys) + "\n" for r in rows),
                        encoding="utf-8")
    elif suffix == ".parquet":
        from datasets import Dataset

        Dataset.from_list(rows).to_parquet(str(path))
    return DataSection(sources=[{"path": str(path), "format": fmt, **kw}])


def decode_trained(tok, row) -> str:
    return tok.decode([i for i, m in zip(row["input_ids"], row["assistant_masks"]) if m])


def test_alpaca_trains_on_the_answer_and_the_stop_token_only(tmp_path, tiny_tokenizer):
    rows = [{"instruction": q, "input": "", "output": a} for q, a in QA]
    data = prepare_data(section(tmp_path, rows, "alpaca"), tiny_tokenizer, 256, tmp_path)
    assert len(data.train) == 2
    trained = decode_trained(tiny_tokenizer, data.train[0])
    answer = dict(QA)[next(q for q, _ in QA if q in tiny_tokenizer.decode(data.train[0]["input_ids"]))]
    assert trained.strip() == answer + "<|eot_id|>"
    full = tiny_tokenizer.decode(data.train[0]["input_ids"])
    assert full.startswith("<|begin_of_text|><|start_header_id|>user")


def test_messages_multi_turn_masks_every_assistant_turn(tmp_path, tiny_tokenizer):
    msgs = [{"role": "user", "content": "Сәлем"}, {"role": "assistant", "content": "Сәлеметсіз бе"},
            {"role": "user", "content": "Екі қосу екі?"}, {"role": "assistant", "content": "Төрт"}]
    data = prepare_data(section(tmp_path, [{"messages": msgs}], "messages"), tiny_tokenizer, 256, tmp_path)
    trained = decode_trained(tiny_tokenizer, data.train[0])
    assert "Сәлеметсіз бе" in trained and "Төрт" in trained
    assert "Сәлем<" not in trained and "Екі қосу" not in trained


def test_assistant_only_loss_off_trains_everything(tmp_path, tiny_tokenizer):
    rows = [{"instruction": q, "output": a} for q, a in QA]
    data = prepare_data(section(tmp_path, rows, "alpaca").model_copy(update={"assistant_only_loss": False}),
                        tiny_tokenizer, 256, tmp_path)
    assert all(all(m) for m in data.train["assistant_masks"])


def test_prompt_completion_masks_the_prompt(tmp_path, tiny_tokenizer):
    rows = [{"prompt": "Сұрақ: бес пен бес", "completion": " он"}]
    data = prepare_data(section(tmp_path, rows, "prompt_completion"), tiny_tokenizer, 256, tmp_path)
    row = data.train[0]
    assert row["assistant_masks"][0] == 0
    assert decode_trained(tiny_tokenizer, row).replace(" ", "").startswith("он")
    assert row["input_ids"][-1] == tiny_tokenizer.eos_token_id


def test_text_format_trains_on_all_tokens(tmp_path, tiny_tokenizer):
    data = prepare_data(section(tmp_path, [{"text": "Қазақстан — үлкен ел."}], "text"), tiny_tokenizer, 256, tmp_path)
    seen, trained = count_tokens(data.train)
    assert seen == trained > 3


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet(tmp_path, tiny_tokenizer, suffix):
    rows = [{"instruction": q, "output": a} for q, a in QA]
    data = prepare_data(section(tmp_path, rows, "alpaca", suffix=suffix), tiny_tokenizer, 256, tmp_path)
    assert len(data.train) == 2


@pytest.mark.parametrize("layout", ["array", "one-key-object"])
def test_json_file_with_a_byte_order_mark(tmp_path, tiny_tokenizer, layout):
    """A .json file (one array, or the {"train": [...]} layout), saved by an editor that adds a BOM."""
    rows = [{"instruction": q, "output": a} for q, a in QA]
    path = tmp_path / "d.json"
    path.write_bytes("\ufeff".encode() + json.dumps(rows if layout == "array" else {"train": rows},
                                                     ensure_ascii=False).encode())
    sec = DataSection(sources=[{"path": str(path), "format": "alpaca"}])
    data = prepare_data(sec, tiny_tokenizer, 256, tmp_path)
    assert [decode_trained(tiny_tokenizer, r).split("<")[0] for r in data.train] == [a for _, a in QA]


def test_a_json_object_that_is_not_rows_is_named(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"train": [], "meta": {"v": 1}}), encoding="utf-8")
    with pytest.raises(ArzanError, match=r"d.json.*a .json data file holds a list of rows"):
        prepare_data(DataSection(sources=[{"path": str(path), "format": "alpaca"}]), tiny_tokenizer, 256, tmp_path)


def test_a_separate_eval_source_is_the_eval_split(tmp_path, tiny_tokenizer):
    train_file, eval_file = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_file.write_text("".join(json.dumps({"instruction": f"{i} санын жаз", "output": str(i)}) + "\n"
                                  for i in range(12)))
    eval_file.write_text("".join(json.dumps({"prompt": f"{i} + 1 = ", "completion": str(i + 1)}) + "\n"
                                 for i in range(5)))
    sec = DataSection(sources=[{"path": str(train_file), "format": "alpaca"}],
                      eval_sources=[{"path": str(eval_file), "format": "prompt_completion"}])
    data = prepare_data(sec, tiny_tokenizer, 256, tmp_path)
    assert (len(data.train), len(data.eval)) == (12, 5)  # nothing split off the training rows
    trained = [decode_trained(tiny_tokenizer, r) for r in data.eval]
    assert [t[:1] for t in trained] == ["1", "2", "3", "4", "5"]  # the completion is what is scored


def test_byte_order_mark_and_column_mapping(tmp_path, tiny_tokenizer):
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + "".join(
        json.dumps({"q": q, "a": a}, ensure_ascii=False) + "\n" for q, a in QA).encode())
    sec = DataSection(sources=[{"path": str(path), "format": "alpaca", "columns": {"instruction": "q", "output": "a"}}])
    assert len(prepare_data(sec, tiny_tokenizer, 256, tmp_path).train) == 2


def test_mixing_sources_with_sampling_and_eval_fraction(tmp_path, tiny_tokenizer):
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"instruction": f"{i} санын жаз", "output": str(i)}) + "\n" for i in range(40)))
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps({"text": f"мәтін {i}"}) + "\n" for i in range(30)))
    sec = DataSection(sources=[{"path": str(a), "format": "alpaca", "sample": 0.5},
                               {"path": str(b), "format": "text", "sample": 10}], eval_fraction=0.2)
    data = prepare_data(sec, tiny_tokenizer, 256, tmp_path)
    assert len(data.train) + len(data.eval) == 30
    assert len(data.eval) == 6
    assert [s.rows_used for s in data.sources] == [20, 10]
    assert all(s.fingerprint.startswith("sha256:") for s in data.sources)


def test_a_sample_of_more_rows_than_the_source_has_is_refused_and_one_means_all(tmp_path, tiny_tokenizer):
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"instruction": f"{i} санын жаз", "output": str(i)}) + "\n" for i in range(12)))
    with pytest.raises(ArzanError, match=r"^data\.sources\[0\]\.sample: 13 rows asked of .*a\.jsonl, "
                                         r"which has 12; ask for at most 12"):
        prepare_data(DataSection(sources=[{"path": str(a), "format": "alpaca", "sample": 13}]),
                     tiny_tokenizer, 256, tmp_path)
    resumed = load_data(DataSection(sources=[{"path": str(a), "format": "alpaca", "sample": 13}], eval_fraction=0),
                        tmp_path, resumed=True)  # a run an arzan before this check started: all rows, as then
    assert len(resumed.train) == 12
    for whole in (12, 1):  # every row asked for by number, and the fraction 1
        data = prepare_data(DataSection(sources=[{"path": str(a), "format": "alpaca", "sample": whole}],
                                        eval_fraction=0), tiny_tokenizer, 256, tmp_path)
        assert [s.rows_used for s in data.sources] == [12]


def test_all_labels_masked_is_an_error(tmp_path, tiny_tokenizer):
    rows = [{"instruction": "ұзақ сұрақ " * 50, "output": "жауап"}]
    with pytest.raises(ArzanError, match="every label is masked"):
        prepare_data(section(tmp_path, rows, "alpaca"), tiny_tokenizer, 16, tmp_path)


@pytest.mark.parametrize("rows,fmt,expected", [
    ([{"question": "a", "answer": "b"}], "alpaca", "missing column 'instruction', 'output'"),
    ([{"instruction": "a", "output": ""}], "alpaca", "row 1: 'output' must be non-empty text"),
    ([{"messages": [{"role": "user", "content": "a"}]}], "messages", "row 1: no assistant message"),
    ([{"messages": [{"role": "bot", "content": "a"}]}], "messages", "row 1: each message needs role"),
    ([{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "u"}]}], "messages",
     "row 1: the conversation starts with an assistant message"),
], ids=["wrong-columns", "empty-output", "no-assistant", "bad-role", "assistant-first"])
def test_bad_rows_are_named(tmp_path, tiny_tokenizer, rows, fmt, expected):
    with pytest.raises(ArzanError, match=expected.replace("(", r"\(")):
        prepare_data(section(tmp_path, rows, fmt), tiny_tokenizer, 256, tmp_path)


def test_empty_and_broken_files(tmp_path, tiny_tokenizer):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ArzanError, match="empty.jsonl: the dataset is empty"):
        prepare_data(DataSection(sources=[{"path": str(tmp_path / "empty.jsonl"), "format": "text"}]),
                     tiny_tokenizer, 64, tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(ArzanError, match="broken.jsonl: row 2: not valid JSON"):
        prepare_data(DataSection(sources=[{"path": str(tmp_path / "broken.jsonl"), "format": "text"}]),
                     tiny_tokenizer, 64, tmp_path)


def test_prefix_masking_matches_generation_markers(tmp_path, tiny_tokenizer):
    """The fallback used for templates without {% generation %} (Llama-3.1's) masks the same tokens."""
    from arzan.data import _assistant_mask_by_prefix

    msgs = [{"role": "user", "content": "Жеті қосу бір?"}, {"role": "assistant", "content": "Сегіз"},
            {"role": "user", "content": "Ал екі қосу бір?"}, {"role": "assistant", "content": "Үш"}]
    marked = tiny_tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
    ids, mask = _assistant_mask_by_prefix(tiny_tokenizer, msgs)
    assert ids == list(marked["input_ids"])
    assert mask == list(marked["assistant_masks"])


def test_every_rows_fields_count_not_just_the_first_rows(tmp_path, tiny_tokenizer):
    """Row 1 has no `input`/`system`; row 2 has both: row 2 keeps them (Dataset.from_list dropped them)."""
    from arzan.data import load_data

    rows = [{"instruction": "Цифрмен жаз", "output": "42"},
            {"instruction": "Қосындысын тап", "input": "Жеті мен бес", "output": "12", "system": "Сен мұғалімсің."}]
    raw = load_data(section(tmp_path, rows, "alpaca"), tmp_path)
    first, second = (json.loads(m) for m in raw.train["messages"])
    assert first == [{"role": "user", "content": "Цифрмен жаз"}, {"role": "assistant", "content": "42"}]
    assert second == [{"role": "system", "content": "Сен мұғалімсің."},
                      {"role": "user", "content": "Қосындысын тап\n\nЖеті мен бес"},
                      {"role": "assistant", "content": "12"}]


def test_a_column_only_later_rows_have_is_found_for_the_columns_check(tmp_path):
    """Not 'missing column a' (the first row's keys alone): the row without an answer is named."""
    from arzan.data import load_data

    rows = [{"q": "a"}, {"q": "b", "a": "c"}]
    with pytest.raises(ArzanError) as err:
        load_data(section(tmp_path, rows, "alpaca", columns={"instruction": "q", "output": "a"}), tmp_path)
    assert "d.jsonl: row 1: 'output' must be non-empty text (got None)" in str(err.value)


def test_numbers_in_text_fields_become_text(tmp_path, tiny_tokenizer):
    rows = [{"instruction": "Жеті мен бестің қосындысы қанша?", "output": "он екі"},
            {"instruction": "Цифрмен жаз: қырық екі", "output": 42},
            {"instruction": "Жартысы қанша?", "input": 5, "output": 2.5}]
    data = prepare_data(section(tmp_path, rows, "alpaca"), tiny_tokenizer, 256, tmp_path)
    trained = [decode_trained(tiny_tokenizer, r).replace("<|eot_id|>", "").strip() for r in data.train]
    assert trained == ["он екі", "42", "2.5"]
    assert "Жартысы қанша?\n\n5" in tiny_tokenizer.decode(data.train[2]["input_ids"])


def test_numbers_in_prompt_completion_and_message_content(tmp_path, tiny_tokenizer):
    from arzan.data import load_data

    pc = load_data(section(tmp_path, [{"prompt": "6 x 7 =", "completion": 42}, {"prompt": 1, "completion": "бір"}],
                           "prompt_completion"), tmp_path)
    assert pc.train["completion"] == ["42", "бір"] and pc.train["prompt"] == ["6 x 7 =", "1"]
    msgs = [{"role": "user", "content": "6 x 7?"}, {"role": "assistant", "content": 42}]
    raw = load_data(section(tmp_path, [{"messages": msgs}], "messages"), tmp_path)
    assert json.loads(raw.train["messages"][0])[1] == {"role": "assistant", "content": "42"}


@pytest.mark.parametrize("bad,kind", [({"value": 42}, "a mapping"), ([4, 2], "a list"), (True, "true/false")])
def test_structure_where_text_is_expected_names_file_row_and_column(tmp_path, bad, kind):
    from arzan.data import load_data

    rows = [{"question": "Бір қосу бір?", "answer": "екі"}, {"question": "Екі қосу екі?", "answer": bad}]
    sec = section(tmp_path, rows, "alpaca", columns={"instruction": "question", "output": "answer"})
    with pytest.raises(ArzanError) as err:
        load_data(sec, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'd.jsonl'}: row 2: column 'answer' must be text, got {kind}")
    assert "\n" not in message


def test_unused_columns_of_any_type_do_not_matter(tmp_path):
    from arzan.data import load_data

    rows = [{"text": "бір", "meta": {"id": 1}}, {"text": "екі", "meta": "жоқ", "score": 0.5}]
    assert load_data(section(tmp_path, rows, "text"), tmp_path).train["text"] == ["бір", "екі"]


def test_a_file_the_parquet_reader_rejects_is_a_one_line_error(tmp_path, tiny_tokenizer):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ArzanError, match="bad.parquet: not a readable parquet file"):
        prepare_data(DataSection(sources=[{"path": str(tmp_path / "bad.parquet"), "format": "text"}]),
                     tiny_tokenizer, 64, tmp_path)


def test_a_csv_cell_longer_than_the_csv_module_default_is_data(tmp_path, tiny_tokenizer):
    (tmp_path / "long.csv").write_text('text\n"' + "сөз " * 40_000 + '"\n', encoding="utf-8")  # 160 000 chars
    data = prepare_data(DataSection(sources=[{"path": str(tmp_path / "long.csv"), "format": "text"}]),
                        tiny_tokenizer, 64, tmp_path)
    assert len(data.train) == 1 and len(data.train[0]["input_ids"]) == 64


def test_an_eval_fraction_that_leaves_nothing_to_train_on_is_refused(tmp_path, tiny_tokenizer):
    rows = [{"text": f"мәтін {i}"} for i in range(3)]
    with pytest.raises(ArzanError, match="data.eval_fraction: 0.9 of 3 rows leaves nothing to train on"):
        sec = section(tmp_path, rows, "text").model_copy(update={"eval_fraction": 0.9})
        prepare_data(sec, tiny_tokenizer, 64, tmp_path)


def test_a_hub_dataset_out_of_reach_says_what_to_do(tmp_path):
    """Offline (as here, HF_HUB_OFFLINE=1), a hub source fails in one line that names it and the way out."""
    from arzan.data import load_data

    data = DataSection(sources=[{"hub": "someone/not-cached-kazakh-set", "format": "alpaca"}])
    with pytest.raises(ArzanError) as err:
        load_data(data, tmp_path)
    msg = str(err.value)
    assert msg.startswith("someone/not-cached-kazakh-set") and "cannot load dataset from the hub" in msg
    assert "save it as a .jsonl file" in msg and "\n" not in msg


LONG = "сөз " * 200  # far past max_length 64 in the tiny tokenizer's tokens


def test_max_length_drops_and_cuts_are_counted_not_silent(tmp_path, tiny_tokenizer):
    """A row whose prompt fills the window keeps no answer token and is dropped; a row whose answer
    runs past it loses its end (the end-of-turn is never learnt). Both are counted, not silent."""
    from dataclasses import asdict

    from arzan.data import Truncation

    rows = [{"instruction": q, "output": a} for q, a in QA] + [
        {"instruction": LONG, "output": "Иә"}, {"instruction": LONG + "?", "output": "Жоқ"},
        {"instruction": "Айт", "output": LONG}]
    data = prepare_data(section(tmp_path, rows, "alpaca"), tiny_tokenizer, 64, tmp_path)
    assert len(data.train) == 3  # the two normal rows and the cut one
    src = str(tmp_path / "d.jsonl")
    assert data.truncation["train"] == Truncation(rows=5, dropped=2, cut=1, max_length=64,
                                                  dropped_rows=[[src, 3], [src, 4]], cut_rows=[[src, 5]])
    assert set(data.train.column_names) == {"input_ids", "assistant_masks"}  # the row origins stay out
    [note] = data.truncation_notes()
    assert note.startswith(f"train data: 2 of 5 rows dropped (no answer token within max_length 64; {src} rows 3, 4), "
                           f"1 cut short (the answer runs past max_length 64: its end is never learnt; {src} row 5)")
    assert Truncation.notes(json.loads(json.dumps({"train": asdict(data.truncation["train"])}))) == [note]
    full = prepare_data(section(tmp_path, rows, "alpaca"), tiny_tokenizer, 4096, tmp_path)
    assert full.truncation_notes() == [] and len(full.train) == 5
    assert Truncation.notes({"train": {"rows": "lots", "dropped": 1, "cut": 0, "max_length": 64}}) == []  # hand-edited
    assert Truncation.notes({"train": {"rows": 9, "dropped": 1, "cut": 0, "max_length": 64,
                                       "dropped_rows": "row 3"}}) == []


def test_truncation_names_the_first_rows_of_each_source_and_how_many_more(tmp_path, tiny_tokenizer):
    """Two mixed sources, more cut rows than are named: each source's rows are listed under its name,
    in row order (not the shuffle's), and the rest are counted."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"instruction": "Айт", "output": LONG if i % 2 else "Иә"}, ensure_ascii=False)
                         + "\n" for i in range(12)), "utf-8")
    b.write_text(json.dumps({"instruction": "Айт", "output": LONG}, ensure_ascii=False) + "\n"
                 + json.dumps({"instruction": "Сана", "output": "Жоқ"}, ensure_ascii=False) + "\n", "utf-8")
    data = prepare_data(DataSection(sources=[{"path": "a.jsonl", "format": "alpaca"},
                                             {"path": "b.jsonl", "format": "alpaca"}]),
                        tiny_tokenizer, 64, tmp_path)
    t = data.truncation["train"]
    assert (t.rows, t.cut, t.dropped) == (14, 7, 0)
    assert t.cut_rows == [["a.jsonl", 2], ["a.jsonl", 4], ["a.jsonl", 6], ["a.jsonl", 8], ["a.jsonl", 10]]
    assert "its end is never learnt; a.jsonl rows 2, 4, 6, 8, 10 and 2 more)" in t.note("train data")


def test_truncation_is_in_the_estimate_the_ledger_and_the_card(tmp_path, write_recipe):
    from typer.testing import CliRunner

    from arzan.cli import app
    from tests.conftest import base_recipe

    rows = [{"instruction": q, "output": a} for q, a in QA * 8] + [{"instruction": LONG, "output": "Иә"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    recipe = base_recipe(train={"max_steps": 2, "max_length": 64, "per_device_train_batch_size": 4,
                                "logging_steps": 1, "save_steps": 2})
    recipe["data"] = {"sources": [{"path": str(tmp_path / "d.jsonl"), "format": "alpaca"}]}
    path = write_recipe(recipe)
    said = f"train data: 1 of 17 rows dropped (no answer token within max_length 64; {tmp_path / 'd.jsonl'} row 17)"
    estimate = CliRunner().invoke(app, ["estimate", str(path)])
    assert estimate.exit_code == 0 and said in " ".join(estimate.output.split()), estimate.output
    out = tmp_path / "run"
    trained = CliRunner().invoke(app, ["train", str(path), "--out", str(out)])
    assert trained.exit_code == 0 and said in " ".join(trained.output.split()), trained.output
    ledger = json.loads((out / "cost.json").read_text("utf-8"))
    assert ledger["summary"]["data_truncation"]["train"] == {
        "rows": 17, "dropped": 1, "cut": 0, "max_length": 64, "empty": 0,
        "dropped_rows": [[str(tmp_path / "d.jsonl"), 17]], "cut_rows": [], "empty_rows": []}
    assert said in (out / "adapter" / "README.md").read_text("utf-8")


def test_row_numbers_in_a_jsonl_with_blank_lines_are_the_lines_an_editor_shows(tmp_path):
    """5 good rows, 3 blank lines, a bad row on line 9: the error says row 9, as a JSON error would."""
    good = json.dumps({"instruction": "Сәлем", "output": "Сәлем!"}, ensure_ascii=False)
    bad = json.dumps({"instruction": "Сәлем", "output": {"text": "x"}}, ensure_ascii=False)
    (tmp_path / "d.jsonl").write_text("\n".join([good] * 5 + ["", "", "", bad]) + "\n", encoding="utf-8")
    sec = DataSection(sources=[{"path": str(tmp_path / "d.jsonl"), "format": "alpaca"}])
    with pytest.raises(ArzanError, match=r"d\.jsonl: row 9: column 'output' must be text"):
        prepare_data(sec, None, 64, tmp_path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_file_saved_in_another_encoding_names_the_first_line_that_is_not_utf8(tmp_path, suffix):
    """Windows Notepad or Excel may save Kazakh text as Windows-1251: the line where it breaks is named."""
    good = json.dumps({"instruction": "Сәлем", "output": "Сәлем!"}, ensure_ascii=False) if suffix == ".jsonl" \
        else "instruction,output\nСәлем,Сәлем!"
    bad = '{"instruction": "Привет", "output": "x"}' if suffix == ".jsonl" else "Привет,x"
    (tmp_path / f"d{suffix}").write_bytes(good.encode("utf-8") + b"\n" + bad.encode("cp1251") + b"\n")
    sec = DataSection(sources=[{"path": str(tmp_path / f"d{suffix}"), "format": "alpaca"}])
    line = 2 if suffix == ".jsonl" else 3
    with pytest.raises(ArzanError, match=rf"d{suffix}: line {line}: not UTF-8 text \(saved as Windows-1251"):
        prepare_data(sec, None, 64, tmp_path)


def test_a_utf16_file_is_named_as_such(tmp_path):
    """Windows 'Unicode' and PowerShell's > save UTF-16 with a BOM: not a Windows-1251 file on line 1."""
    (tmp_path / "d.jsonl").write_bytes('{"instruction": "Сәлем", "output": "x"}\n'.encode("utf-16"))
    sec = DataSection(sources=[{"path": str(tmp_path / "d.jsonl"), "format": "alpaca"}])
    with pytest.raises(ArzanError, match=r"d\.jsonl: saved as UTF-16 .*save it as UTF-8"):
        prepare_data(sec, None, 64, tmp_path)
