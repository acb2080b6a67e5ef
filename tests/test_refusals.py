"""What a command cannot do is refused in one line before anything is loaded or billed: a folder
it cannot write into, an optimizer this machine lacks, flags a resume would ignore.

Tests run as root here, where a read-only mode bit stops nobody: the refusal is the operating
system's where it can be produced for real (a file where a folder should be), and a PermissionError
from the probe where it cannot (a read-only Drive folder, a full disk).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arzan.cli import app
from arzan.errors import ArzanError
from arzan.runfolder import check_writable
from tests.conftest import REPO

runner = CliRunner()


def _refuse_writes_in(monkeypatch, folder: Path) -> None:
    """The probe in `folder` fails as on a read-only mount; everything else is untouched."""
    real = tempfile.NamedTemporaryFile

    def probe(*args, **kwargs):
        if Path(kwargs.get("dir") or ".").resolve() == folder.resolve():
            raise PermissionError(1, "Operation not permitted", str(folder))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", probe)


def test_check_writable_names_the_folder_and_the_way_out(tmp_path):
    check_writable(tmp_path / "not" / "yet" / "made", "x")  # the nearest folder that exists takes a file
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ArzanError, match=r"notes\.txt: cannot write here \(.*\); choose another --out"):
        check_writable(a_file / "m", "choose another --out")
    assert a_file.read_text() == "mine"


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A real run of the smoke recipe stopped by its step limit before the plan's end (resumable)."""
    out = tmp_path_factory.mktemp("runs") / "smoke"
    done = runner.invoke(app, ["train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(out),
                               "--set", "train.max_steps=4", "--set", "train.save_steps=2",
                               "--set", "train.logging_steps=2", "--set", "data.sources.0.sample=64",
                               "--set", "eval.prompts=[]"])
    assert done.exit_code == 0, done.output
    return out


def test_resume_into_a_read_only_run_folder_is_one_line_and_bills_nothing(stopped_run, monkeypatch):
    before = (stopped_run / "cost.json").read_text("utf-8")
    _refuse_writes_in(monkeypatch, stopped_run)
    result = runner.invoke(app, ["train", "--resume", str(stopped_run)])
    assert result.exit_code == 2 and "Traceback" not in result.output and result.exception is not None
    assert "cannot write here (Operation not permitted); a resume writes its checkpoints" in result.output
    assert (stopped_run / "cost.json").read_text("utf-8") == before  # no session was added or billed


def test_eval_of_a_read_only_run_folder_is_one_line(stopped_run, monkeypatch):
    before = (stopped_run / "cost.json").read_text("utf-8")
    _refuse_writes_in(monkeypatch, stopped_run)
    result = runner.invoke(app, ["eval", str(stopped_run), "--tasks", "arzan_kkcopa", "--limit", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot write here" in result.output and "copy the folder somewhere writable" in result.output
    assert not (stopped_run / ".arzan-eval.json").exists()
    assert (stopped_run / "cost.json").read_text("utf-8") == before


def test_merge_into_an_unwritable_place_fails_before_loading(stopped_run, tmp_path, monkeypatch):
    import arzan.export as export

    def never(*args, **kwargs):  # the check must come before the minutes of loading and merging
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(export, "load_for_inference", never)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = runner.invoke(app, ["merge", str(stopped_run), "--out", str(a_file / "merged")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "a-file: cannot write here" in result.output


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_a_bitsandbytes_optimizer_without_bitsandbytes_is_refused_before_a_run_folder(tmp_path):
    """The T4 and L4 recipes' adamw_8bit used to fail inside the trainer, after a billed setup."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(out),
                                 "--set", "train.optim=adamw_8bit"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert f"error: {REPO / 'recipes' / 'smoke.yaml'}: train.optim: adamw_8bit is a bitsandbytes optimizer" in said
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or __import__("torch").cuda.is_available(),
                    reason="the CPU's refusal")
def test_what_this_machine_cannot_run_names_the_recipe_file(tmp_path):
    recipe = REPO / "recipes" / "kazakh-llama31-8b-colab-a100.yaml"
    result = runner.invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run")])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and f"error: {recipe}: model.backend: 'unsloth' needs a CUDA GPU" in said
    assert not (tmp_path / "run").exists()


def test_resume_refuses_flags_it_would_ignore(stopped_run, tmp_path):
    before = (stopped_run / "cost.json").read_text("utf-8")
    elsewhere = runner.invoke(app, ["train", "--resume", str(stopped_run), "--out", str(tmp_path / "zz")])
    assert elsewhere.exit_code == 2 and "a run continues in its own folder" in " ".join(elsewhere.output.split())
    over = runner.invoke(app, ["train", "--resume", str(stopped_run), "--allow-over-budget"])
    assert over.exit_code == 2 and "raise the cap with --budget" in " ".join(over.output.split())
    assert (stopped_run / "cost.json").read_text("utf-8") == before and not (tmp_path / "zz").exists()


def test_a_run_that_failed_before_any_checkpoint_says_why_and_is_not_offered_resume(tmp_path):
    out = tmp_path / "run"
    args = ["train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(out), "--set", "train.max_length=2"]
    failed = runner.invoke(app, args)
    assert failed.exit_code == 2 and "every label is masked" in failed.output
    ledger = json.loads((out / "cost.json").read_text("utf-8"))
    assert ledger["status"] == "failed" and "every label is masked" in ledger["status_reason"]
    again = runner.invoke(app, args)
    said = " ".join(again.output.split())
    assert again.exit_code == 2 and "it saved no checkpoint" in said and "--overwrite" in said
    assert "continue it with --resume" not in said


def test_scoring_an_unfinished_run_says_whose_scores_they_are(tmp_path):
    from arzan.cli import _unfinished_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: x\n")
    (run / "cost.json").write_text(json.dumps({"status": "interrupted", "progress": {"step": 507, "max_steps": 1000}}))
    note = _unfinished_run(run)
    assert note.startswith("this run is interrupted at step 507/1000: these are the scores of its adapter so far")
    assert note.endswith(f"(arzan train --resume {run})")
    capped = {"status": "stopped_budget", "progress": {"step": 507, "max_steps": 1000},
              "resume_command": f"arzan train --resume {run} --budget 38KZT"}
    (run / "cost.json").write_text(json.dumps(capped))
    assert _unfinished_run(run).endswith(f"(arzan train --resume {run} --budget 38KZT)")  # the raised cap it needs
    (run / "cost.json").write_text(json.dumps({"status": "finished", "progress": {"step": 1000, "max_steps": 1000}}))
    assert _unfinished_run(run) is None and _unfinished_run(tmp_path / "evals") is None


def test_a_task_the_training_would_score_is_checked_before_it_trains(tmp_path, monkeypatch):
    """eval.tasks is scored after the last step: a misspelt name or a bad task file used to fail
    there, after the whole paid training. Both are refused before a run folder exists."""
    quiz = tmp_path / "quiz"
    quiz.mkdir()
    (quiz / "q.jsonl").write_text('{"question": "?", "choices": ["a", "b", "c"], "answer": 3}\n', encoding="utf-8")
    (quiz / "q.yaml").write_text("task: my_q\ndataset_kwargs:\n  schema: mc\n  local_file: q.jsonl\n", encoding="utf-8")
    (quiz / "ok.jsonl").write_text('{"question": "?", "choices": ["a", "b", "c"], "answer": 2}\n', encoding="utf-8")
    task = ("dataset_kwargs:\n  schema: mc\n  local_file: ok.jsonl\ntest_split: test\noutput_type: multiple_choice\n"
            "doc_to_text: '{{questoin}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n")
    (quiz / "t.yaml").write_text("task: my_t\ncustom_dataset: !function arzan.evaluation.taskdata.load\n" + task,
                                 encoding="utf-8")
    (quiz / "c.yaml").write_text("task: my_c\n" + task, encoding="utf-8")  # no loader for its local file
    (quiz / "h.yaml").write_text("task: my_h\ndataset_path: arzan-test-no-such-org/no-such-set\ntest_split: test\n"
                                 "output_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{c}}'\n"
                                 "doc_to_target: 0\n", encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for tasks, said in (("[no_such_task]", "eval.tasks: unknown task(s) no_such_task"),
                        (f"[{quiz / 'q.yaml'}]", "eval.tasks: " + str(quiz / "q.jsonl") + ": line 1: answer 3 is out "
                                                 "of range for 3 choices"),
                        # a template typo is the file's fault: named, not blamed on the network
                        (f"[{quiz / 't.yaml'}]", f"eval.tasks: {quiz / 't.yaml'}: a template of task my_t (doc_to_text, "
                                                 "doc_to_choice or doc_to_target) cannot be rendered: UndefinedError: "
                                                 "'questoin' is undefined"),
                        (f"[{quiz / 'c.yaml'}]", f"eval.tasks: {quiz / 'c.yaml'}: lm-eval cannot build task my_c from "
                                                 "its local file (TypeError: "),
                        # offline, a task on the Hub's data can only come from the cache: tried before, not after
                        (f"[{quiz / 'h.yaml'}]", "eval.tasks: cannot load the data of my_h (my_h: "),
                        # arzan's own task without its file: the recipe's field is named, not a flag train lacks
                        ("[arzan_kkcopa]", "put kkCOPA.jsonl in the folder given by eval.data_dir")):
        out = tmp_path / "run"
        result = runner.invoke(app, ["train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(out),
                                     "--set", f"eval.tasks={tasks}"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert said in " ".join(result.output.split()), result.output
        assert not out.exists()


def test_two_trainings_started_together_into_one_folder_cannot_both_run(tmp_path, monkeypatch):
    """Both pass the folder check when they start within the same second; the one that creates the
    run's recipe.yaml second is refused, so no two runs train into one folder and one bill."""
    import arzan.runfolder as runfolder

    monkeypatch.setattr(runfolder, "check_run_folder", lambda path, mode: False)  # both saw it free
    first, _ = runfolder.open_run_folder(tmp_path / "run", "new")
    assert first.recipe.is_file()
    with pytest.raises(ArzanError, match="another arzan train started in this folder a moment ago"):
        runfolder.open_run_folder(tmp_path / "run", "new")


def test_files_that_are_not_utf8_are_one_line_errors_naming_them(stopped_run, tmp_path):
    """A ledger written over by something else, a task YAML Windows Notepad saved as UTF-16."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    (run / "cost.json").write_bytes(b"\xff\xfe garbage")
    for command in (["train", "--resume", str(run)], ["merge", str(run)], ["compare", str(run)]):
        result = runner.invoke(app, command)
        said = "".join(result.output.split())  # rich may break the long path over lines
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert f"{run / 'cost.json'}:".replace(" ", "") in said and ("UTF-8" in said or "utf-8" in said), said
    task = tmp_path / "q.yaml"
    task.write_bytes("task: q\n".encode("utf-16"))
    result = runner.invoke(app, ["eval", "arzan/tiny-llama-kk", "--tasks", str(task)])
    assert result.exit_code == 2 and "not UTF-8 text" in result.output and "Traceback" not in result.output


def test_a_ctrl_c_before_a_resume_began_says_the_run_is_still_resumable(stopped_run, tmp_path):
    """Interrupted during the checks and imports of a resume: no session of this process is in the
    ledger, so nothing new was billed and the run can be resumed as before (not 'nothing to resume')."""
    import shutil

    from arzan.cli import _interrupted_message

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    ledger = json.loads((run / "cost.json").read_text("utf-8"))
    ledger["sessions"][-1]["pid"] = 1  # trained by another process (here the fixture ran in this one)
    (run / "cost.json").write_text(json.dumps(ledger), "utf-8")
    said = _interrupted_message(run, resume=True)
    assert said == ("interrupted before the resume started: nothing new was billed and the run is as it was; "
                    f"continue with: arzan train --resume {run}")


def test_a_failed_write_mid_run_names_the_right_fix():
    import errno

    from arzan.cli import _fix_for

    assert _fix_for(OSError(errno.ENOSPC, "No space left on device")) == "free space"
    assert _fix_for(OSError(errno.EPERM, "Operation not permitted")) == "make that folder writable"
    assert _fix_for(OSError(errno.EIO, "Input/output error")) == "fix that"


def test_a_folder_given_as_the_recipe_is_told_apart_from_a_run_folder(stopped_run, tmp_path):
    plain = runner.invoke(app, ["train", str(tmp_path)])
    assert plain.exit_code == 2 and "is a folder, not a recipe YAML" in " ".join(plain.output.split())
    run = runner.invoke(app, ["train", str(stopped_run)])
    assert run.exit_code == 2 and "is a run folder; to continue it use: arzan train --resume" in " ".join(run.output.split())
