"""The real lm-eval on the tiny model, offline: run folders, local Kazakh data, known answers.

Each test runs lm-evaluation-harness itself (no mocks) with a small --limit; together they take
well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from arzan.errors import ArzanError
from tests.conftest import SHARED_DATA

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from arzan.evaluation import run_eval  # noqa: E402
from arzan.tiny import TINY_MODEL_NAME, tiny_model_dir  # noqa: E402

SHARED = SHARED_DATA
needs_shared = pytest.mark.skipif(not (SHARED / "kkCOPA.jsonl").is_file(),
                                  reason=f"shared Kazakh eval data not at {SHARED}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A fake run folder: a random (non-identity) LoRA on the tiny model, recipe, ledger."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("runs") / "smoke"
    base = tiny_model_dir()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(run / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(run / "adapter")
    cfg_file = run / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = TINY_MODEL_NAME  # as a real run records it
    cfg_file.write_text(json.dumps(cfg))
    (run / "recipe.yaml").write_text(f"name: smoke\nmodel:\n  name: {TINY_MODEL_NAME}\n")
    try:
        from arzan.cost.ledger import new_ledger, write_ledger
        from arzan.cost.prices import Price, resolve_exchange

        write_ledger(run / "cost.json", new_ledger("smoke", Price(), resolve_exchange()))
    except ImportError:
        pass
    return run


@pytest.fixture(scope="module")
def merged_dir(run_dir, tmp_path_factory) -> Path:
    """The same adapter merged by `arzan merge`'s own code into the fp32 base: must score exactly
    like base + adapter (bf16, the GPU default, rounds the weights and is checked in test_export)."""
    from arzan.export import merge_adapter

    return merge_adapter(run_dir, tmp_path_factory.mktemp("merged") / "model", dtype="float32", device="cpu")


@needs_shared
def test_run_folder_on_local_kazakh_data(run_dir):
    doc = run_eval(run_dir, tasks="kazakh_local", limit=12, data_dir=SHARED)
    assert set(doc["tasks"]) == {"arzan_belebele_kk", "arzan_kkcopa"}
    for task in ("arzan_belebele_kk", "arzan_kkcopa"):
        head = doc["tasks"][task]
        assert head["metric"] == "acc" and 0.0 <= head["acc"] <= 1.0
        assert head["n"] == 12 and head["num_fewshot"] == 0 and head["version"] == "1.0"
        assert doc["data_source"][task].startswith(f"local:{SHARED}")
    row = next(r for r in doc["rows"] if r["task"] == "arzan_kkcopa" and r["metric"] == "acc")
    assert row["n_total"] == 500 and row["stderr"] > 0
    model = doc["model"]
    assert model["kind"] == "run" and model["base"] == TINY_MODEL_NAME and model["adapter_sha256"]
    # Belebele's passages outrun the tiny model's 512 tokens: lm-eval cuts them; counted, and said once
    assert model["max_length"] == 512 and model["cut_requests"] > 0
    assert f"{model['cut_requests']:,} scored choices had a context longer than the model's 512" in doc["note"]
    on_disk = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    assert on_disk["tasks"] == doc["tasks"]
    if (run_dir / "cost.json").is_file():
        ledger = json.loads((run_dir / "cost.json").read_text(encoding="utf-8"))
        assert ledger["summary"]["eval"]["tasks"]["arzan_kkcopa"]["acc"] == doc["tasks"]["arzan_kkcopa"]["acc"]


@needs_shared
def test_a_later_eval_adds_to_the_scores_and_each_eval_is_billed_as_its_own_session(run_dir, tmp_path):
    """A per-task rerun or a quick --limit check must not erase a full suite; its time and money
    join the ledger as an eval-only session, so ₸ per point counts what the scores cost."""
    import shutil

    from arzan.cost.ledger import read_ledger, write_ledger
    from arzan.cost.prices import Price

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "eval.json").unlink(missing_ok=True)
    led = read_ledger(run / "cost.json")
    led.price = Price(usd_per_gpu_hour=3.6)  # 1 $ per 1000 s, on this CPU
    before, spent, eval_s = len(led.sessions), led.money.usd, led.phases.eval  # another test may have evaluated
    write_ledger(run / "cost.json", led)
    full = run_eval(run, tasks="kazakh_local", limit=12, data_dir=SHARED)
    quick = run_eval(run, tasks="arzan_kkcopa", limit=4, data_dir=SHARED)
    assert set(quick["tasks"]) == {"arzan_belebele_kk", "arzan_kkcopa"}
    assert quick["tasks"]["arzan_belebele_kk"] == full["tasks"]["arzan_belebele_kk"]  # kept as it was
    assert (quick["tasks"]["arzan_kkcopa"]["n"], quick["tasks"]["arzan_kkcopa"]["limit"]) == (4, 4)
    assert [h["tasks_run"] for h in quick["history"]] == [["arzan_belebele_kk", "arzan_kkcopa"], ["arzan_kkcopa"]]
    assert {r["task"] for r in quick["rows"]} == {"arzan_belebele_kk", "arzan_kkcopa"}
    ledger = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    assert ledger["summary"]["eval"]["tasks"] == quick["tasks"]
    added = ledger["sessions"][before:]
    assert [s["phases"]["eval"] for s in added] == [full["seconds"], quick["seconds"]]
    assert ledger["phases"]["eval"] == pytest.approx(eval_s + full["seconds"] + quick["seconds"])
    assert ledger["money"]["usd"] == pytest.approx(spent + (full["seconds"] + quick["seconds"]) / 1000)


@needs_shared
def test_adapter_and_merged_model_score_the_same(run_dir, merged_dir, tmp_path):
    kw = dict(tasks="kazakh_local", limit=8, data_dir=SHARED, update_ledger=False)
    with_adapter = run_eval(run_dir, out_dir=tmp_path / "a", **kw)
    merged = run_eval(merged_dir, out_dir=tmp_path / "m", **kw)
    base = run_eval(TINY_MODEL_NAME, out_dir=tmp_path / "b", **kw)
    values = lambda d: {(r["task"], r["metric"]): round(r["value"], 6) for r in d["rows"]}  # noqa: E731
    assert values(with_adapter) == values(merged)
    # the adapter was really applied: LoRA weights counted, and the base is a different model
    assert with_adapter["model"]["num_parameters"] > merged["model"]["num_parameters"]
    assert merged["model"]["num_parameters"] == base["model"]["num_parameters"]


def _loglik(model, tok, context: str, continuation: str) -> float:
    """Our own log P(continuation | context), split the way a causal LM scores it."""
    whole = tok(context + continuation)["input_ids"]
    n_ctx = len(tok(context)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(n_ctx, len(whole))))


def test_accuracy_matches_an_independent_computation(tmp_path):
    """Answers are set from our own log-likelihoods: 7 of 10 to the model's pick, 3 not; lm-eval
    must report acc == 0.7 exactly, through a user's JSONL and a short task YAML."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    words = ["Астана", "Алматы", "Шымкент", "Ақтөбе", "Тараз", "Орал", "Қарағанды", "Атырау"]
    rows = []
    for i in range(10):
        question = f"Сұрақ {i}: Қазақстандағы қала қайсы?"
        choices = [words[(i + j) % len(words)] for j in range(4)]
        lls = [_loglik(model, tok, f"{question}\nЖауап:", " " + c) for c in choices]
        pick = max(range(4), key=lls.__getitem__)
        rows.append({"question": question, "choices": choices, "answer": pick if i < 7 else (pick + 1) % 4})
    data = tmp_path / "quiz.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    task = tmp_path / "kk_quiz.yaml"
    task.write_text("""\
task: kk_quiz
custom_dataset: !function arzan.evaluation.taskdata.load
dataset_kwargs:
  schema: mc
  local_file: quiz.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}\\nЖауап:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""", encoding="utf-8")
    doc = run_eval(path, tasks=[str(task)], out_dir=tmp_path / "out")
    assert doc["tasks"]["kk_quiz"]["acc"] == pytest.approx(0.7, abs=1e-12)
    assert doc["tasks"]["kk_quiz"]["n"] == 10


def test_bad_local_file_stops_before_the_model_loads(tmp_path, monkeypatch):
    import arzan.evaluation.runner as runner

    def boom(*a, **k):
        raise AssertionError("the model must not be loaded for a bad data file")

    monkeypatch.setattr(runner, "_evaluate", boom)
    (tmp_path / "quiz.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 5}\n',
                                         encoding="utf-8")
    (tmp_path / "t.yaml").write_text("task: t\ndataset_kwargs:\n  schema: mc\n  local_file: quiz.jsonl\n",
                                     encoding="utf-8")
    with pytest.raises(ArzanError, match=r"quiz\.jsonl: line 1: answer 5 is out of range"):
        run_eval(TINY_MODEL_NAME, tasks=[str(tmp_path / "t.yaml")], out_dir=tmp_path)


def test_adapter_without_base_falls_back_to_the_recipe(tmp_path):
    from arzan.evaluation.targets import resolve_target

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ArzanError, match="no base_model_name_or_path"):
        resolve_target(tmp_path)
    (tmp_path / "recipe.yaml").write_text(f"model:\n  name: {TINY_MODEL_NAME}\n")
    target = resolve_target(tmp_path)
    assert target.kind == "run" and target.base_name == TINY_MODEL_NAME and target.out_dir == tmp_path.resolve()


def test_the_recipe_names_the_base_before_the_adapter_config(tmp_path):
    """A tiny run's adapter_config holds this machine's cache folder; the recipe holds the name a base
    eval records, so `arzan compare` can pair the run with its base."""
    from arzan.evaluation.targets import resolve_target

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "/root/.cache/x"}')
    (tmp_path / "recipe.yaml").write_text(f"model:\n  name: {TINY_MODEL_NAME}\n")
    assert resolve_target(tmp_path).base_name == TINY_MODEL_NAME
    assert resolve_target(tmp_path / "adapter").base_name == TINY_MODEL_NAME  # the adapter inside its run
    (tmp_path / "recipe.yaml").unlink()
    assert resolve_target(tmp_path).base_name == "/root/.cache/x"


def test_targets_that_are_not_models(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArzanError, match="not a run folder"):
        run_eval(tmp_path / "empty", tasks="kazakh_local")
    with pytest.raises(ArzanError, match="no such run folder"):
        run_eval(str(tmp_path / "missing" / "run"), tasks="kazakh_local")
    failed = tmp_path / "failed"  # a run that stopped before it saved an adapter
    failed.mkdir()
    (failed / "recipe.yaml").write_text("name: x\n")
    (failed / "cost.json").write_text('{"status": "failed"}')
    with pytest.raises(ArzanError, match=r"this run has no adapter to score yet \(its status is failed\)"):
        run_eval(failed, tasks="kazakh_local")
    from arzan.evaluation import compare

    with pytest.raises(ArzanError, match="no such run folder or eval.json"):
        compare([tmp_path / "typo"])


def test_generative_gsm8k_task_runs_and_scores(tmp_path):
    """The generate_until path (filters, exact_match) on the tiny model: it cannot do sums."""
    (tmp_path / "gsm8k_kk_v2.csv").write_text(
        'question,hints,answer\n"2 алма мен 3 алма қанша?",,5\n"10 кем 4?",,6\n', encoding="utf-8")
    doc = run_eval(TINY_MODEL_NAME, tasks="arzan_kazllm_gsm8k_kk", data_dir=tmp_path,
                   out_dir=tmp_path / "out", limit=1)  # 256 greedy tokens: the slow part
    head = doc["tasks"]["arzan_kazllm_gsm8k_kk"]
    assert head["metric"] == "exact_match" and head["exact_match"] == 0.0 and head["n"] == 1
    assert doc["rows"][0]["filter"] == "last-number"


def _readme_quiz(where: Path) -> tuple[Path, str]:
    """The README's own multiple-choice example, byte for byte: its task YAML's path and its JSONL."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    section = readme.split("## Evaluate on your own multiple-choice set", 1)[1]
    jsonl = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    (where / "my_quiz.jsonl").write_text(jsonl, encoding="utf-8")
    (where / "my_quiz.yaml").write_text(re.search(r"```yaml\n(.*?)```", section, re.S).group(1), encoding="utf-8")
    return where / "my_quiz.yaml", jsonl


def test_the_chat_template_renders_the_questions_and_is_recorded_per_task(tmp_path, monkeypatch):
    """--chat-template: each question reaches the model inside its chat template (what an instruct
    fine-tune was trained on), the answer right after the assistant header; eval.json says how each
    task was scored, so compare never sets one way against the other."""
    from lm_eval.models.huggingface import HFLM

    task, _ = _readme_quiz(tmp_path)
    contexts = []
    scoring = HFLM.loglikelihood

    def seen(self, requests, *args, **kwargs):
        contexts.extend(r.args for r in requests)
        return scoring(self, requests, *args, **kwargs)

    monkeypatch.setattr(HFLM, "loglikelihood", seen)
    plain = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "plain")
    asked_plain, contexts[:] = list(contexts), []
    chat = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "chat", chat_template=True)
    assert not any("<|start_header_id|>" in ctx for ctx, _ in asked_plain)
    assert contexts and all(ctx.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
                            and ctx.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
                            and not choice.startswith(" ") for ctx, choice in contexts)
    assert plain["tasks"]["my_kk_quiz"]["chat_template"] is False and chat["tasks"]["my_kk_quiz"]["chat_template"] is True
    assert chat["model"]["chat_template"] is True and all(r["chat_template"] for r in chat["rows"])


def test_scoring_a_task_again_on_other_items_says_what_it_replaced(tmp_path):
    task, _ = _readme_quiz(tmp_path)
    first = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "base", limit=2)
    assert "note" not in first or "replaced" not in first["note"]
    again = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "base", limit=3)
    assert "my_kk_quiz: the earlier scores on --limit 2 are replaced by these on --limit 3" in again["note"]
    same = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "base", limit=3)
    assert "replaced" not in same.get("note", "")
    other = tmp_path / "other.yaml"  # another task on other items: my_kk_quiz's scores stay, so nothing was replaced
    other.write_text(task.read_text(encoding="utf-8").replace("task: my_kk_quiz", "task: other_quiz"), encoding="utf-8")
    beside = run_eval(TINY_MODEL_NAME, tasks=[str(other)], out_dir=tmp_path / "base", limit=2)
    assert "replaced" not in beside.get("note", "") and beside["tasks"]["my_kk_quiz"]["limit"] == 3
    chat = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "base", limit=3, chat_template=True)
    assert "my_kk_quiz: scored with the chat template now, replacing the scores without it" in chat["note"]
    full = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "base", chat_template=True)
    assert "the earlier scores on --limit 3 are replaced by these on the full set" in full["note"]


def test_a_damaged_adapter_is_refused_before_the_base_loads_and_nothing_is_billed(run_dir, tmp_path, monkeypatch):
    """A copy cut short used to fail only after the base was loaded, as a failed, billed session."""
    import shutil

    from lm_eval.models import huggingface

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    ledger = (run / "cost.json").read_text(encoding="utf-8")
    monkeypatch.setattr(huggingface, "HFLM", lambda *a, **k: pytest.fail("the base was loaded"))
    with pytest.raises(ArzanError) as exc:
        run_eval(run, tasks="kazakh_local", limit=2)
    assert str(exc.value).startswith(f"{run / 'adapter'}: the adapter cannot be read (SafetensorError: ")
    assert str(exc.value).endswith("a copy cut short? copy it again from where it was trained")
    assert (run / "cost.json").read_text(encoding="utf-8") == ledger  # no failed session: nothing ran
    for step in (500, 1000, "1500 copy 2"):  # the newest by number, not by name; a Finder copy is no checkpoint
        (run / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        shutil.copy(run_dir / "adapter" / "adapter_model.safetensors", run / "checkpoints" / f"checkpoint-{step}")
        (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")  # a complete one
    with pytest.raises(ArzanError, match=rf"the run's last checkpoint \({run / 'checkpoints' / 'checkpoint-1000'}\) "
                                         "holds another$"):
        run_eval(run, tasks="kazakh_local", limit=2)


def test_an_unreadable_eval_json_is_kept_aside_not_silently_replaced(tmp_path):
    task, _ = _readme_quiz(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json").write_text('{"tasks": {"kazakh_local": {"metric": "acc", "ac', encoding="utf-8")  # cut short
    doc = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=out)
    [aside] = out.glob("eval.json.unreadable-*")
    assert aside.read_text(encoding="utf-8").endswith('"ac') and f"it is kept as {aside.name}" in doc["note"]
    assert "my_kk_quiz" in json.loads((out / "eval.json").read_text(encoding="utf-8"))["tasks"]


def test_readme_example_of_an_own_multiple_choice_set_runs(tmp_path, monkeypatch, capfd):
    """The README's JSONL and task YAML, byte for byte, through the real lm-eval on the tiny model,
    from a folder outside any git repository (lm-eval's git probe printed `fatal: ...` there)."""
    task, jsonl = _readme_quiz(tmp_path)
    monkeypatch.chdir(tmp_path)
    doc = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "out")
    scores = doc["tasks"]["my_kk_quiz"]
    assert scores["n"] == len(jsonl.strip().splitlines()) == 3
    assert 0.0 <= scores["acc"] <= 1.0
    assert "not a git repository" not in capfd.readouterr().err


def _billed_run(run_dir: Path, where: Path, usd_per_gpu_hour: float = 3.6) -> Path:
    """A copy of the fake run folder with a whole recipe, a model card as training writes it, and a
    price of 1 $ per 1000 s on this CPU, so an eval's money is its seconds / 1000."""
    import shutil

    from arzan.cost.ledger import read_ledger, write_ledger
    from arzan.cost.prices import Price
    from arzan.modelcard import write_card
    from arzan.recipe import recipe_from_dict
    from tests.conftest import base_recipe

    run = where / "run"
    shutil.copytree(run_dir, run)
    (run / "eval.json").unlink(missing_ok=True)
    recipe = recipe_from_dict(base_recipe(name="smoke"))
    (run / "recipe.yaml").write_text(recipe.resolved_yaml(), encoding="utf-8")
    led = read_ledger(run / "cost.json")
    led.price = Price(usd_per_gpu_hour=usd_per_gpu_hour)
    write_ledger(run / "cost.json", led)
    write_card(run / "adapter" / "README.md", recipe, led.model_dump(mode="json"))
    return run


@needs_shared
def test_eval_refreshes_the_card_and_its_session_starts_when_the_eval_began(run_dir, tmp_path):
    """After `arzan eval RUN`, adapter/README.md shows the ledger with the eval session in it
    (rendered by the same code as after training), and that session spans the eval's time."""
    from datetime import datetime

    from arzan.cost.ledger import utcnow
    from arzan.modelcard import render_card
    from arzan.recipe import recipe_from_dict

    run = _billed_run(run_dir, tmp_path)
    before = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    began = utcnow()
    doc = run_eval(run, tasks="kazakh_local", limit=12, data_dir=SHARED)
    ledger = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    s = ledger["sessions"][-1]
    assert len(ledger["sessions"]) == len(before["sessions"]) + 1 and s["status"] == "finished"
    started, finished = (datetime.fromisoformat(s[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at"))
    assert began <= started <= finished  # to the second, as the ledger keeps time
    assert s["billed_seconds"] == doc["seconds"]
    assert (finished - started).total_seconds() >= doc["seconds"] - 1  # both kept to the whole second
    card = (run / "adapter" / "README.md").read_text(encoding="utf-8")
    assert f"| Sessions | {len(ledger['sessions'])} |" in card
    assert f"| Wall time (billed) | {ledger['billed_seconds']:,.1f} s |" in card
    import yaml

    recipe = recipe_from_dict(yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")))
    assert card == render_card(recipe, ledger)


@needs_shared
def test_ctrl_c_during_eval_bills_its_time_as_an_interrupted_session(run_dir, tmp_path, monkeypatch):
    """A real SIGINT, sent to this process while lm-eval scores: the time already spent (paid GPU
    time on a rented machine) joins the ledger as an interrupted eval-only session, nothing scored
    is kept, the previous ledger's sessions are intact, and the message says all that in one line."""
    import signal

    from lm_eval.models.huggingface import HFLM

    from arzan.evaluation.session import EvalInterrupted

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("Ctrl-C is handled by something else in this test process")
    run = _billed_run(run_dir, tmp_path)
    before = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    scoring = HFLM._loglikelihood_tokens

    def ctrl_c_while_scoring(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # delivered as KeyboardInterrupt at the next bytecode
        return scoring(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", ctrl_c_while_scoring)
    with pytest.raises(EvalInterrupted) as err:
        run_eval(run, tasks="kazakh_local", limit=12, data_dir=SHARED)
    assert isinstance(err.value, KeyboardInterrupt)  # still exits 130 wherever Ctrl-C does
    message = str(err.value)
    assert "\n" not in message and message.startswith("evaluation interrupted after ")
    assert "nothing scored was kept (no eval.json written)" in message and "status interrupted" in message
    assert not (run / "eval.json").exists()
    ledger = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    assert ledger["sessions"][:-1] == before["sessions"] and ledger["summary"]["eval"] == before["summary"]["eval"]
    s = ledger["sessions"][-1]
    assert s["status"] == "interrupted" and s["phases"]["eval"] == s["billed_seconds"] > 0
    assert s["money"]["usd"] == pytest.approx(s["billed_seconds"] / 1000)
    assert ledger["money"]["usd"] == pytest.approx(before["money"]["usd"] + s["billed_seconds"] / 1000)
    assert ledger["status"] == before["status"]  # the training's own state is not the eval's
    assert f"as session {s['index']}," in message
    card = (run / "adapter" / "README.md").read_text(encoding="utf-8")
    assert f"| Sessions | {len(ledger['sessions'])} |" in card


@needs_shared
def test_an_eval_that_breaks_while_scoring_is_billed_as_failed_and_said_in_one_line(run_dir, tmp_path, monkeypatch):
    """A CUDA OOM half-way through lm-eval: the minutes were paid for, so they join the ledger as a
    failed session (as a merge's do), and the user reads one line with the knob that helps."""
    import torch
    from lm_eval.models.huggingface import HFLM

    run = _billed_run(run_dir, tmp_path)
    before = json.loads((run / "cost.json").read_text(encoding="utf-8"))

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", oom)
    with pytest.raises(ArzanError) as err:
        run_eval(run, tasks="kazakh_local", limit=4, data_dir=SHARED)
    message = str(err.value)
    assert "\n" not in message and message.startswith("the evaluation failed after ")
    assert "(OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB); try a smaller --batch-size" in message
    ledger = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    s = ledger["sessions"][-1]
    assert ledger["sessions"][:-1] == before["sessions"] and s["status"] == "failed"
    assert s["phases"]["eval"] == s["billed_seconds"] > 0
    assert ledger["money"]["usd"] == pytest.approx(before["money"]["usd"] + s["billed_seconds"] / 1000)
    assert f"as session {s['index']}, status failed" in message and not (run / "eval.json").exists()
    assert f"the traceback is in {run / 'error.log'}" in message
    assert "OutOfMemoryError" in (run / "error.log").read_text(encoding="utf-8")


@needs_shared
def test_offline_names_only_the_tasks_that_cannot_load(tmp_path):
    """`--tasks kazakh --data-dir ...` offline: a task whose data is on the Hub cannot load, but
    arzan_kkcopa, whose file is in --data-dir, can; the error must not blame it."""
    (tmp_path / "hub_only.yaml").write_text("""\
task: arzan_test_hub_only
dataset_path: arzan-test-no-such-org/no-such-dataset
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: 0
metric_list:
  - metric: acc
""", encoding="utf-8")
    tasks = [str(tmp_path / "hub_only.yaml"), "arzan_kkcopa", "arzan_dastur_kk"]  # dastur: no local file here
    with pytest.raises(ArzanError) as err:
        run_eval(TINY_MODEL_NAME, tasks=tasks, data_dir=SHARED, out_dir=tmp_path / "out", limit=2)
    message = str(err.value)
    failed, _, loaded = message.partition("; these loaded")
    assert failed.startswith("cannot load the data of arzan_test_hub_only, arzan_dastur_kk (arzan_test_hub_only: ")
    assert "arzan_kkcopa" not in failed
    assert loaded.endswith("--tasks arzan_kkcopa") and "\n" not in message


def test_a_card_that_cannot_be_refreshed_is_a_note_not_a_lost_bill(tmp_path):
    """A recipe.yaml that no longer validates (hand-edited, or from an older arzan): the eval's
    session is still billed, the card stays as it was, and the note says why, in one line."""
    from arzan.cost.ledger import new_ledger, utcnow, write_ledger
    from arzan.cost.prices import Price, resolve_exchange
    from arzan.evaluation.session import bill

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "adapter" / "README.md").write_text("the card training wrote\n", encoding="utf-8")
    (tmp_path / "recipe.yaml").write_text("name: smoke\nmodel:\n  name: arzan/tiny-llama-kk\n", encoding="utf-8")
    write_ledger(tmp_path / "cost.json", new_ledger("smoke", Price(usd_per_gpu_hour=3.6), resolve_exchange()))
    ledger, note = bill(tmp_path, {"tasks": {}}, 2.0, "cpu", utcnow())
    assert ledger["sessions"][-1]["billed_seconds"] == 2.0 and ledger["money"]["usd"] == pytest.approx(0.002)
    assert json.loads((tmp_path / "cost.json").read_text(encoding="utf-8"))["money"] == ledger["money"]
    assert (tmp_path / "adapter" / "README.md").read_text(encoding="utf-8") == "the card training wrote\n"
    assert "still shows the old bill" in note and "recipe.yaml: data: required field is missing" in note
    assert "\n" not in note


def test_arzan_eval_prints_the_interrupted_line_and_exits_130(monkeypatch):
    """typer would turn the KeyboardInterrupt into a silent exit; the CLI prints what was kept and billed."""
    from typer.testing import CliRunner

    import arzan.evaluation as evaluation
    from arzan.cli import app
    from arzan.evaluation.session import EvalInterrupted

    def cut(*args, **kwargs):
        raise EvalInterrupted("evaluation interrupted after 3.0 s: nothing scored was kept; billed as session 2")

    monkeypatch.setattr(evaluation, "run_eval", cut)
    result = CliRunner().invoke(app, ["eval", "some/run", "--limit", "2"])
    assert result.exit_code == 130 and "billed as session 2" in result.output


@needs_shared
def test_a_preemption_sigterm_during_eval_is_billed_like_ctrl_c(run_dir, tmp_path, monkeypatch):
    """A spot instance's SIGTERM would kill `arzan eval` before its paid time reached the ledger."""
    import signal

    from lm_eval.models.huggingface import HFLM

    from arzan.evaluation.session import EvalInterrupted

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM is handled by something else in this test process")
    run = _billed_run(run_dir, tmp_path)
    before = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    scoring = HFLM._loglikelihood_tokens

    def preempted_while_scoring(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return scoring(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", preempted_while_scoring)
    with pytest.raises(EvalInterrupted):
        run_eval(run, tasks="kazakh_local", limit=12, data_dir=SHARED)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the default is back afterwards
    ledger = json.loads((run / "cost.json").read_text(encoding="utf-8"))
    assert len(ledger["sessions"]) == len(before["sessions"]) + 1
    assert ledger["sessions"][-1]["status"] == "interrupted" and ledger["sessions"][-1]["billed_seconds"] > 0


def test_a_sigterm_after_the_scores_are_written_is_one_line_that_says_they_were(run_dir, tmp_path, monkeypatch):
    """A preemption while the table prints (outside run_eval's own handling) was the default SIGTERM:
    exit 143 with no word; now 130 and one line naming the eval.json that was kept."""
    import signal

    from typer.testing import CliRunner

    import arzan.evaluation as evaluation
    from arzan.cli import app

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM is handled by something else in this test process")
    task, _ = _readme_quiz(tmp_path)
    run = _billed_run(run_dir, tmp_path)
    table = evaluation.gain_table

    def preempted_while_printing(result):
        os.kill(os.getpid(), signal.SIGTERM)
        return table(result)

    monkeypatch.setattr(evaluation, "gain_table", preempted_while_printing)
    out = CliRunner().invoke(app, ["eval", str(run), "--tasks", str(task)])
    assert out.exit_code == 130, out.output
    assert out.output.strip().splitlines()[-1] == f"interrupted after the scores were written to " \
                                                  f"{run / 'eval.json'} (and billed, for a run folder)"
    assert "Kazakh scores" not in out.output and "Traceback" not in out.output
    assert json.loads((run / "eval.json").read_text())["tasks"]["my_kk_quiz"]["n"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_sigterm_between_the_scores_and_their_bill_waits_for_the_bill(run_dir, tmp_path, monkeypatch):
    """eval.json, cost.json and the card are written all three or none: a SIGTERM there (arzan eval's
    own handler turns it into a Ctrl-C) is held like a Ctrl-C, so the scores are never kept unbilled."""
    import signal

    from typer.testing import CliRunner

    from arzan.cli import app
    from arzan.evaluation import runner

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM is handled by something else in this test process")
    task, _ = _readme_quiz(tmp_path)
    run = _billed_run(run_dir, tmp_path)
    before = json.loads((run / "cost.json").read_text())
    write = runner.write_json_atomic

    def preempted_after_the_scores(path, doc):
        write(path, doc)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runner, "write_json_atomic", preempted_after_the_scores)
    out = CliRunner().invoke(app, ["eval", str(run), "--tasks", str(task)])
    assert out.exit_code == 130, out.output
    assert out.output.strip().splitlines()[-1] == (f"interrupted after the evaluation was saved: {run / 'eval.json'} "
                                                   "and its bill are complete")
    after = json.loads((run / "cost.json").read_text())
    assert len(after["sessions"]) == len(before["sessions"]) + 1 and after["sessions"][-1]["status"] == "finished"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_eval_refuses_a_folder_a_live_training_is_writing(run_dir, tmp_path):
    """The training's meter rewrites cost.json from memory every 30 s: an eval billed into it
    meanwhile would be erased. Refused in one line before any model loads; the ledger untouched."""
    import subprocess
    import sys

    from arzan.cost.ledger import Session, live_writer_age, read_ledger, utcnow, write_ledger
    from arzan.errors import ArzanError

    run = _billed_run(run_dir, tmp_path)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ledger = read_ledger(run / "cost.json")
        ledger.status, ledger.updated_at = "running", utcnow()
        ledger.sessions.append(Session(index=len(ledger.sessions), started_at=utcnow(), host=socket.gethostname(),
                                       pid=trainer.pid))
        write_ledger(run / "cost.json", ledger)
        before = (run / "cost.json").read_bytes()
        with pytest.raises(ArzanError, match="a training is still running into this folder") as err:
            run_eval(run, tasks="kazakh_local", limit=2, data_dir=SHARED)
        assert "\n" not in str(err.value) and str(run) in str(err.value)
        assert (run / "cost.json").read_bytes() == before and not (run / "eval.json").exists()
        import shutil

        shutil.rmtree(run / "adapter")  # still training, nothing saved yet: not "resume it" advice
        with pytest.raises(ArzanError, match="this run is still training and has saved no adapter yet"):
            run_eval(run, tasks="kazakh_local", limit=2, data_dir=SHARED)
    finally:
        trainer.kill()
        trainer.wait()
    assert live_writer_age(read_ledger(run / "cost.json")) is None  # its process is gone: no writer


def test_an_eval_killed_outright_is_billed_by_the_next_command_up_to_its_last_heartbeat(run_dir, tmp_path, capfd):
    """SIGKILL (the OOM killer, a deleted Colab runtime) runs no handler: the eval's paid minutes never
    reached cost.json. Its mark's heartbeat says how long it lived; the next eval bills that first."""
    import signal
    import subprocess
    import sys
    import time
    from datetime import datetime

    from arzan.runfolder import EVAL_LOCK

    task, _ = _readme_quiz(tmp_path)
    run = _billed_run(run_dir, tmp_path)
    before = json.loads((run / "cost.json").read_text())
    slow = ("import time, arzan.runfolder as rf; rf.HEARTBEAT_S = 0.2\n"
            "from arzan.evaluation import run_eval\n"
            f"run_eval({str(run)!r}, tasks=[{str(task)!r}], "
            "guard=lambda fn: lambda *a, **k: (time.sleep(600), fn(*a, **k))[1])\n")
    scorer = subprocess.Popen([sys.executable, "-c", slow], cwd=tmp_path)
    try:
        deadline, started = time.time() + 120, None
        while time.time() < deadline and scorer.poll() is None:  # scoring, its mark beating for 1.5 s
            try:
                started = datetime.fromisoformat(json.loads((run / EVAL_LOCK).read_text())["started_at"])
                if (run / EVAL_LOCK).stat().st_mtime - started.timestamp() > 1.5:
                    break
            except (OSError, ValueError, KeyError):  # not written yet
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the eval never started scoring")
    finally:
        scorer.send_signal(signal.SIGKILL)
        scorer.wait()
    killed_at = time.time()
    assert json.loads((run / "cost.json").read_text()) == before  # nothing billed it: what this fixes
    doc = run_eval(run, tasks=[str(task)])
    said = capfd.readouterr().err
    after = json.loads((run / "cost.json").read_text())
    assert [s["status"] for s in after["sessions"][len(before["sessions"]):]] == ["interrupted", "finished"]
    lost = after["sessions"][len(before["sessions"])]
    assert 1.5 < lost["billed_seconds"] <= killed_at - started.timestamp()
    assert lost["phases"]["eval"] == lost["billed_seconds"] and lost["money"]["usd"] > 0
    assert lost["pid"] == scorer.pid  # the killed process's session, not the one that billed it
    assert f"note: an earlier arzan eval (pid {scorer.pid} on {socket.gethostname()}) was killed before it " \
           f"could bill itself: its {lost['billed_seconds']:.0f} s up to its last sign of life" in said
    assert f"are now session {lost['index']} of {run / 'cost.json'}, status interrupted" in said
    assert after["money"]["usd"] == pytest.approx(sum(s["money"]["usd"] for s in after["sessions"]))
    assert doc["tasks"] and not (run / EVAL_LOCK).exists() and not list(run.glob(EVAL_LOCK + ".*"))


def test_a_mark_from_another_machine_is_stale_only_once_its_heartbeat_stops(run_dir, tmp_path):
    """A Colab runtime deleted mid-eval leaves its mark on Drive; the next runtime is another host,
    where the pid cannot be probed. A mark still beating blocks; one silent past STALE_AFTER_S is
    billed (as the other machine's kind: a GPU eval checked from a CPU is billed at the run's price)."""
    import time
    from datetime import datetime, timedelta, timezone

    from arzan.evaluation.session import bill_if_killed
    from arzan.runfolder import EVAL_LOCK, STALE_AFTER_S, eval_in_progress

    run = _billed_run(run_dir, tmp_path)
    began = datetime.now(timezone.utc) - timedelta(seconds=STALE_AFTER_S + 100)
    mark = run / EVAL_LOCK
    mark.write_text(json.dumps({"host": "colab-runtime-1", "pid": 4242, "doing": "arzan eval is scoring",
                                "started_at": began.isoformat(), "device": "cpu", "phase": "eval",
                                "heartbeat_s": 10.0}))
    assert "an arzan eval (pid 4242 on colab-runtime-1) is scoring" in eval_in_progress(run)
    assert bill_if_killed(run) is None and mark.is_file()  # alive, as far as anyone here can tell
    os.utime(mark, (time.time(), began.timestamp() + 40))  # its last beat, 40 s in; silent since
    assert eval_in_progress(run) is None
    before = json.loads((run / "cost.json").read_text())
    note = bill_if_killed(run)
    lost = json.loads((run / "cost.json").read_text())["sessions"][-1]
    assert len(json.loads((run / "cost.json").read_text())["sessions"]) == len(before["sessions"]) + 1
    assert lost["billed_seconds"] == pytest.approx(40, abs=0.01) and lost["status"] == "interrupted"
    assert note.startswith("note: an earlier arzan eval (pid 4242 on colab-runtime-1) was killed") and not mark.exists()
    assert (lost["host"], lost["pid"]) == ("colab-runtime-1", 4242)  # its session, not the biller's
    assert bill_if_killed(run) is None  # billed once


def test_a_mark_here_is_stale_only_when_its_process_is_gone_and_is_billed_once(run_dir, tmp_path, monkeypatch):
    """On this host the process table decides: a stopped eval (Ctrl-Z) beats no heartbeat but lives,
    and billing it would bill its time twice. A killed one is billed once: not when another command
    marked the folder since the stale mark was read, nor when it had billed itself before it died."""
    import subprocess
    import sys
    import time
    from datetime import datetime, timedelta, timezone

    from arzan import runfolder
    from arzan.evaluation import session
    from arzan.runfolder import EVAL_LOCK, eval_in_progress, stale_mark

    run = _billed_run(run_dir, tmp_path)
    mark = run / EVAL_LOCK
    began = datetime.now(timezone.utc) - timedelta(seconds=600)

    def write_mark(pid: int) -> None:
        mark.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "doing": "arzan eval is scoring",
                                    "started_at": began.isoformat(), "device": "cpu", "phase": "eval",
                                    "heartbeat_s": 10.0}))
        os.utime(mark, (time.time(), began.timestamp() + 30))  # silent for 570 s

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        began = datetime.now(timezone.utc) - timedelta(seconds=0.2)  # the mark after its process started
        write_mark(sleeper.pid)
        os.utime(mark, (time.time(), time.time() - 600))
        assert stale_mark(run) is None and "is scoring this run" in eval_in_progress(run)
        assert session.bill_if_killed(run) is None and mark.is_file()
    finally:
        sleeper.kill()
        sleeper.wait()
    before = len(json.loads((run / "cost.json").read_text())["sessions"])
    judged = stale_mark(run)
    assert judged is not None  # gone now
    write_mark(sleeper.pid + 1)  # another eval marked the folder since `judged` was read
    with monkeypatch.context() as m:
        m.setattr(runfolder, "stale_mark", lambda path: judged)
        assert session.bill_if_killed(run) is None and mark.is_file()  # the new mark is given back
    assert len(json.loads((run / "cost.json").read_text())["sessions"]) == before
    # it billed itself, then was killed before it removed its mark: not billed again
    write_mark(sleeper.pid)
    session.bill(run, None, 5.0, "cpu", began, who=(socket.gethostname(), sleeper.pid))
    assert session.bill_if_killed(run) is None and not mark.exists()
    assert len(json.loads((run / "cost.json").read_text())["sessions"]) == before + 1


def test_a_billed_eval_marks_the_run_folder_while_it_scores(run_dir, tmp_path):
    """The mark a resume and --overwrite wait for is there from the first batch to the bill, then gone."""
    from arzan.runfolder import EVAL_LOCK

    task, _ = _readme_quiz(tmp_path)
    run, seen = _billed_run(run_dir, tmp_path), []

    def watch(fn):
        def call(*args, **kwargs):
            seen.append((run / EVAL_LOCK).is_file())
            return fn(*args, **kwargs)
        return call

    run_eval(run, tasks=[str(task)], guard=watch)
    assert seen and all(seen) and not (run / EVAL_LOCK).exists()
    assert json.loads((run / "cost.json").read_text())["sessions"][-1]["phases"]["eval"] > 0


def test_a_later_eval_of_the_same_adapter_keeps_the_earlier_tasks_whatever_its_base_is_called():
    """Evals made before the base name came from the recipe recorded the adapter config's name
    (unsloth's ...-bnb-4bit, the tiny model's cache folder): same weights, same model, scores kept."""
    from arzan.evaluation.results import merge_with_previous

    def doc(base, task, sha="abc", four_bit=False):
        return {"model": {"base": base, "adapter_sha256": sha, "load_in_4bit": four_bit},
                "rows": [{"task": task, "metric": "acc", "value": 0.5}], "tasks": {task: {"metric": "acc"}},
                "tasks_run": [task], "data_source": {}, "substituted": {}}

    merged = merge_with_previous(doc("unsloth/meta-llama-3.1-8b-instruct-bnb-4bit", "A"),
                                 doc("meta-llama/Llama-3.1-8B-Instruct", "B"))
    assert set(merged["tasks"]) == {"A", "B"}
    retrained = merge_with_previous(doc("m", "A"), doc("m", "B", sha="def"))
    assert set(retrained["tasks"]) == {"B"}  # other weights: another model
    base16, base4 = doc("m", "A", sha=None), doc("m", "B", sha=None, four_bit=True)
    assert set(merge_with_previous(base16, base4)["tasks"]) == {"B"}  # a plain model in other bits


@needs_shared
def test_a_data_dir_one_level_too_high_is_named(tmp_path):
    """--data-dir ../shared/data when the files are in ../shared/data/kazakh-eval: the message says
    where they are, not only that the hub is out of reach."""
    with pytest.raises(ArzanError, match=r"it is in .*kazakh-eval: give that folder"):
        run_eval(TINY_MODEL_NAME, tasks="arzan_kkcopa", limit=2, data_dir=SHARED.parent, out_dir=tmp_path)


def test_a_quiz_beside_other_folders_indexes_only_its_own_folder(tmp_path, caplog):
    """The README's quiz put in a repository's root: lm-eval would read every task YAML below it
    (arzan's own under src/, a second time, with an "overrides" warning each). Only the quiz's folder
    is read; its data in a subfolder and a template beside it still resolve."""
    import logging
    import shutil

    from arzan.evaluation.suites import tasks_dir

    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    task, jsonl = _readme_quiz(root)
    (root / "my_quiz.jsonl").rename(root / "data" / "my_quiz.jsonl")
    body = task.read_text("utf-8").replace("local_file: my_quiz.jsonl", "local_file: data/my_quiz.jsonl")
    (root / "_quiz_template_yaml").write_text("output_type: multiple_choice\ntest_split: test\n", "utf-8")
    task.write_text(body.replace("output_type: multiple_choice\n", "include: _quiz_template_yaml\n"), "utf-8")
    shutil.copytree(tasks_dir(), root / "src" / "tasks")  # what a scan of the whole tree would find again
    with caplog.at_level(logging.WARNING):
        doc = run_eval(TINY_MODEL_NAME, tasks=[str(task)], out_dir=tmp_path / "out")
    assert doc["tasks"]["my_kk_quiz"]["n"] == len(jsonl.strip().splitlines()) == 3
    assert not [r for r in caplog.records if "overrides existing task" in r.getMessage()]


def test_an_eval_past_the_runs_cap_says_so():
    from arzan.evaluation.runner import past_cap_note

    ledger = {"budget": {"max_kzt": 60.0, "max_usd": None}, "money": {"kzt": 349.2, "usd": 0.67}}
    assert past_cap_note(ledger) == ("the run's max_kzt cap of 60 ₸ is passed: 349.20 ₸ spent with this evaluation "
                                     "(arzan eval and arzan merge are not capped)")
    assert past_cap_note({"budget": {"max_kzt": 500.0}, "money": {"kzt": 349.2}}) is None
    assert past_cap_note(None) is None


def test_arzan_eval_sets_the_run_beside_its_base_scored_here_before(run_dir, tmp_path, monkeypatch):
    """`arzan eval BASE` then `arzan eval RUN` from the same folder: the second shows the gain at once
    instead of asking for the base's score it already has."""
    import shutil

    from typer.testing import CliRunner

    from arzan.cli import app

    task, _ = _readme_quiz(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "eval.json").unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path)
    base = CliRunner().invoke(app, ["eval", TINY_MODEL_NAME, "--tasks", str(task)])
    assert base.exit_code == 0 and (tmp_path / "evals" / "arzan_tiny-llama-kk" / "eval.json").is_file()
    tuned = CliRunner().invoke(app, ["eval", str(run), "--tasks", str(task)])
    said = " ".join(tuned.output.split())
    assert tuned.exit_code == 0 and "vs base" in said and "No score of the base model" not in said
    # a broken base file is not this eval's failure: the new scores are shown alone, exit 0
    (tmp_path / "evals" / "arzan_tiny-llama-kk" / "eval.json").write_text("{not json", encoding="utf-8")
    again = CliRunner().invoke(app, ["eval", str(run), "--tasks", str(task)])
    said = " ".join(again.output.split())
    assert again.exit_code == 0 and "my_kk_quiz" in said and "vs base" not in said, again.output


def test_a_runs_later_eval_follows_its_recipes_chat_template_and_a_chat_scored_base_keeps_its_plain_scores(
        run_dir, tmp_path, monkeypatch):
    """eval.chat_template: true in the run's recipe: `arzan eval RUN` scores it so unless told otherwise
    (as --load-in-4bit follows a QLoRA run), and the base scored with the template goes beside its
    plain scores (evals/NAME-chat), so a fine-tune of each kind still has its base to be set against."""
    import shutil

    from typer.testing import CliRunner

    from arzan.cli import app

    task, _ = _readme_quiz(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "eval.json").unlink(missing_ok=True)
    (run / "recipe.yaml").write_text(f"name: smoke\nmodel:\n  name: {TINY_MODEL_NAME}\neval:\n  chat_template: true\n")
    assert run_eval(run, tasks=[str(task)])["tasks"]["my_kk_quiz"]["chat_template"] is True
    assert run_eval(run, tasks=[str(task)], chat_template=False)["tasks"]["my_kk_quiz"]["chat_template"] is False
    monkeypatch.chdir(tmp_path)
    for flag in ([], ["--chat-template"]):
        assert CliRunner().invoke(app, ["eval", TINY_MODEL_NAME, "--tasks", str(task), *flag]).exit_code == 0
    plain = json.loads((tmp_path / "evals" / "arzan_tiny-llama-kk" / "eval.json").read_text(encoding="utf-8"))
    chat = json.loads((tmp_path / "evals" / "arzan_tiny-llama-kk-chat" / "eval.json").read_text(encoding="utf-8"))
    assert plain["tasks"]["my_kk_quiz"]["chat_template"] is False and chat["tasks"]["my_kk_quiz"]["chat_template"]
    tuned = CliRunner().invoke(app, ["eval", str(run), "--tasks", str(task)])  # the recipe's way: with it
    assert tuned.exit_code == 0 and "vs base" in " ".join(tuned.output.split())
    # compare given the plain base: the chat-scored one is already there, so no eval to pay for is suggested
    cmp = CliRunner().invoke(app, ["compare", str(run), "evals/arzan_tiny-llama-kk"], terminal_width=200)
    said = " ".join(cmp.output.split())
    assert cmp.exit_code == 0 and "evals/arzan_tiny-llama-kk-chat holds arzan/tiny-llama-kk scored as run was: " \
        f"`arzan compare {run} evals/arzan_tiny-llama-kk-chat` sets them side by side." in said, said
    assert "arzan eval arzan/tiny-llama-kk" not in said
