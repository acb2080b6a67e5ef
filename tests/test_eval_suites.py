"""`--tasks kazakh` names tasks that exist, and arzan's YAMLs load in the installed lm-eval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from arzan.errors import ArzanError
from arzan.evaluation import suites
from tests.conftest import SHARED_DATA

pytest.importorskip("lm_eval")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED = SHARED_DATA
needs_shared = pytest.mark.skipif(not (SHARED / "kkCOPA.jsonl").is_file(),
                                  reason=f"shared Kazakh eval data not at {SHARED}")


def test_every_suite_task_exists_in_the_installed_lm_eval():
    """Indexes lm-eval's ~14k built-in tasks (about 10 s): the suite must not name ghosts."""
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(suites.tasks_dir()))
    names = set(tm.all_tasks)
    for suite, tasks in suites.SUITES.items():
        missing = [t for t in tasks if t not in names]
        assert not missing, f"suite {suite!r} names tasks lm-eval does not have: {missing}"


def test_arzan_yamls_index_without_the_builtin_registry():
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(suites.tasks_dir()), include_defaults=False)
    ours = set(suites.index_yamls(suites.tasks_dir()))
    assert ours == set(tm.all_tasks)
    assert {"arzan_kkcopa", "arzan_belebele_kk", "arzan_unt_kk", "arzan_kazllm_kk"} <= ours


def test_every_arzan_yaml_says_where_its_format_came_from():
    for name, (path, cfg) in suites.index_yamls(suites.tasks_dir()).items():
        text = path.read_text(encoding="utf-8")
        assert text.startswith("#"), f"{path.name}: begins with no comment"
        if "group" not in cfg and "include: _arzan_unt" not in text and "include: _arzan_kazllm" not in text:
            assert "http" in text or "UNVERIFIED" in text, f"{path.name}: no format source"


@needs_shared
def test_kazakh_suite_with_local_data_swaps_in_the_local_twin():
    plan = suites.resolve("kazakh", data_dir=SHARED)
    assert "belebele_kaz_Cyrl" not in plan.tasks and "arzan_belebele_kk" in plan.tasks
    assert plan.substituted == {"belebele_kaz_Cyrl": "arzan_belebele_kk"}
    assert plan.data_source["arzan_kkcopa"].startswith("local:")
    assert plan.data_source["arzan_kazllm_arc_kk"] == "hub:issai/KazLLM_Benchmark_Dataset"
    assert plan.needs_lm_eval_registry  # include_base_44_kazakh etc. are lm-eval's own
    again = suites.resolve("kazakh,belebele_kaz_Cyrl", data_dir=SHARED)  # named twice: scored once, locally
    assert again.tasks == plan.tasks


def test_kazakh_suite_without_data_uses_the_hub(monkeypatch):
    monkeypatch.delenv("ARZAN_KK_EVAL_DIR", raising=False)
    plan = suites.resolve(["kazakh"])
    assert plan.tasks[0] == "belebele_kaz_Cyrl" and not plan.substituted
    assert plan.data_source["arzan_kkcopa"] == "hub:issai/LLM_Eval_Using_Kazakh"


def test_user_yaml_is_indexed_and_its_data_checked(tmp_path):
    (tmp_path / "quiz.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n', encoding="utf-8")
    (tmp_path / "notes.yaml").write_text("just: notes\n", encoding="utf-8")  # not a task: ignored
    task = tmp_path / "my_quiz.yaml"
    task.write_text("task: my_quiz\ndataset_kwargs:\n  schema: mc\n  local_file: quiz.jsonl\n", encoding="utf-8")
    with pytest.raises(ArzanError, match=r"quiz\.jsonl: line 1: needs at least 2 non-empty choices"):
        suites.resolve([str(task)])
    with pytest.raises(ArzanError, match="task YAML not found"):
        suites.resolve([str(tmp_path / "other.yaml")])
    with pytest.raises(ArzanError, match="no tasks given"):
        suites.resolve("")



@pytest.mark.parametrize("entry, said", [
    ("metric: acc_typo\n    aggregation: mean", "metric 'acc_typo' is not one lm-eval knows (did you mean"),
    ("metric: acc\n    aggregation: avg", "aggregation 'avg' is not one lm-eval knows (lm-eval's: "),
])
def test_a_metric_lm_eval_does_not_know_is_refused_before_anything_is_scored(tmp_path, entry, said):
    """lm-eval itself only logs an unknown metric name, scores the whole set and reports nothing:
    a paid eval with an empty table and exit 0. The file and its metric_list entry are named."""
    (tmp_path / "quiz.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n', encoding="utf-8")
    task = tmp_path / "my_quiz.yaml"
    head = ("task: my_quiz\noutput_type: multiple_choice\ndataset_kwargs:\n  schema: mc\n  local_file: quiz.jsonl\n"
            "metric_list:\n  - ")
    task.write_text(head + entry + "\n", encoding="utf-8")
    with pytest.raises(ArzanError) as exc:
        suites.resolve([str(task)])
    assert str(exc.value).startswith(f"{task}: metric_list entry 1: {said}") and "\n" not in str(exc.value)
    task.write_text(head + "metric: acc\n    aggregation: mean\n", encoding="utf-8")
    assert suites.resolve([str(task)]).tasks == ["my_quiz"]  # lm-eval's own names pass


def test_metric_checks_follow_includes_and_pass_what_lm_eval_resolves_itself(tmp_path):
    """The check sees the config lm-eval builds: a typo in an included template is refused; a
    `!function` callable, and a generate_until metric lm-eval may fetch from `evaluate`, pass."""
    (tmp_path / "quiz.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n', encoding="utf-8")
    data = "dataset_kwargs:\n  schema: mc\n  local_file: quiz.jsonl\n"
    (tmp_path / "_base.yaml").write_text("output_type: multiple_choice\nmetric_list:\n  - metric: acc\n"
                                         "    aggregation: maen\n", encoding="utf-8")
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("include: _base.yaml\ntask: leaf_quiz\n" + data, encoding="utf-8")
    with pytest.raises(ArzanError, match=rf"^{leaf}: metric_list entry 1: aggregation 'maen' is not one lm-eval "
                                         r"knows \(did you mean mean"):
        suites.resolve([str(leaf)])
    own = tmp_path / "own.yaml"
    own.write_text("task: own_quiz\noutput_type: multiple_choice\nmetric_list:\n  - metric: acc\n"
                   "    aggregation: !function utils.my_mean\n" + data, encoding="utf-8")
    gen = tmp_path / "gen.yaml"
    gen.write_text("task: gen_quiz\noutput_type: generate_until\nmetric_list:\n  - metric: rouge\n" + data,
                   encoding="utf-8")
    assert suites.resolve([str(own), str(gen)]).tasks == ["own_quiz", "gen_quiz"]
    odd = tmp_path / "odd.yaml"  # a schema typo is the YAML's field, not the data file's fault
    odd.write_text("task: odd_quiz\ndataset_kwargs:\n  schema: mcq\n  local_file: quiz.jsonl\n", encoding="utf-8")
    with pytest.raises(ArzanError, match=rf"^{odd}: dataset_kwargs.schema: unknown schema 'mcq'; known: "):
        suites.resolve([str(odd)])
    lost = tmp_path / "lost.yaml"  # its base file is not there: named, not "unknown task"
    lost.write_text("include: _gone.yaml\ntask: lost_quiz\n" + data, encoding="utf-8")
    with pytest.raises(ArzanError, match=rf"^{lost}: include: _gone.yaml not found \(looked in {tmp_path}\)$"):
        suites.resolve([str(lost)])


SAMPLE_ROWS = {  # one made-up row per schema, in each source's own column layout
    "belebele": {"flores_passage": "Мәтін.", "question": "Сұрақ?", "mc_answer1": "а", "mc_answer2": "ә",
                 "mc_answer3": "б", "mc_answer4": "в", "correct_answer_num": "2"},
    "kkcopa": {"p_contents_kz": "Ер адам құлады.", "a1_contents_kz": "Ол тайып кетті.",
               "a2_contents_kz": "Ол күлді.", "asks-for_kz": "себебі", "correct_answers": "1"},
    "kazmmlu": {"Question": "Сұрақ?", "Option A": "а", "Option B": "ә", "Option C": "б", "Option D": "в",
                "Option E": "", "Answer Key": "B"},
    "option_letter": {"Question": "Сұрақ?", "Option A": "а", "Option B": "ә", "Option C": "б",
                      "Option D": "в", "Correct Answer": "D"},
    "unt": {"question": "Сұрақ?", "A": "а", "B": "ә", "C": "б", "D": "в", "E": "г", "correct_answer": "Б"},
    "kazllm_mcq": {"question": "Сұрақ?", "A": "а", "B": "ә", "C": "б", "D": "в", "answer": "C"},
    "kazllm_hellaswag": {"ctx": "Ол есікті ашып", "option1": "кірді", "option2": "ұшты", "option3": "жүзді",
                         "option4": "ұйықтады", "answer": "1"},
    "kazllm_winogrande": {"sentence": "Ол _ алды.", "option1": "кітапты", "option2": "үйді", "answer": "2"},
    "kazllm_gsm8k": {"question": "2 алма мен 3 алма қанша?", "hints": "", "answer": "5"},
}


def _write_sample(path: Path, row: dict, copies: int = 3) -> None:
    if path.suffix == ".csv":
        import csv

        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows([row] * copies)
    else:
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for _ in range(copies)),
                        encoding="utf-8")


def test_every_arzan_task_builds_from_local_files(tmp_path):
    """Every shipped YAML renders its prompt, choices and target on its own dataset's layout."""
    from lm_eval.tasks import TaskManager

    known = suites.index_yamls(suites.tasks_dir())
    for name, (_, cfg) in known.items():
        kw = cfg.get("dataset_kwargs") or {}
        if kw.get("local_file"):
            _write_sample(tmp_path / kw["local_file"], SAMPLE_ROWS[kw["schema"]])
    plan = suites.resolve(list(known), data_dir=tmp_path)
    assert all(src.startswith("local:") for src in plan.data_source.values())
    tm = TaskManager(include_path=str(suites.tasks_dir()), include_defaults=False,
                     metadata={"arzan_data_dir": str(tmp_path)})
    loaded = tm.load([n for n in known if "group" not in known[n][1]])["tasks"]
    assert len(loaded) == sum("group" not in c for _, c in known.values())
    for name, task in loaded.items():
        doc = task.test_docs()[0]
        text, target = task.doc_to_text(doc), task.doc_to_target(doc)
        assert isinstance(text, str) and text.strip(), name
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = task.doc_to_choice(doc)
            assert 2 <= len(choices) and 0 <= target < len(choices), name
        else:
            assert target == "5", name


def test_two_task_files_of_one_name_in_a_folder_are_refused(tmp_path):
    """lm-eval keeps the first of two YAMLs with one task name in the folder it reads: the other's
    questions would be scored under the file the user named, with no sign of it."""
    from arzan.evaluation import suites
    from arzan.errors import ArzanError

    task = "task: my_kk_quiz\ndataset_path: json\ndataset_kwargs:\n  data_files: {f}\ntest_split: train\n" \
           "output_type: multiple_choice\ndoc_to_text: '{{{{question}}}}'\ndoc_to_choice: '{{{{choices}}}}'\n" \
           "doc_to_target: answer\n"
    (tmp_path / "a.jsonl").write_text('{"question": "?", "choices": ["a", "b"], "answer": 0}\n')
    (tmp_path / "mine.yaml").write_text(task.format(f="a.jsonl"))
    (tmp_path / "theirs.yaml").write_text(task.format(f="a.jsonl"))
    with pytest.raises(ArzanError, match=r"mine\.yaml: task 'my_kk_quiz' is also the task of .*theirs\.yaml"):
        suites.resolve([str(tmp_path / "mine.yaml")])


def test_a_malformed_task_yaml_is_one_line_with_where(tmp_path):
    bad = tmp_path / "broken_task.yaml"
    bad.write_text("task: my_quiz\ndoc_to_text: Сұрақ: {{question}}\n", encoding="utf-8")
    with pytest.raises(ArzanError) as e:
        suites.resolve([str(bad)])
    assert "\n" not in str(e.value)
    assert str(e.value).endswith("broken_task.yaml: unreadable task YAML (line 2, column 19: mapping values are not "
                                 "allowed here)")
