"""End to end on the CPU: recipe -> SFTTrainer -> run folder with adapter, model card and ledger."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arzan.cli import app
from arzan.modelcard import read_front_matter
from tests.conftest import REPO, base_recipe

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """One real training of the smoke recipe, shortened, priced as a catalog T4 so money is non-zero."""
    out = tmp_path_factory.mktemp("runs") / "smoke"
    result = cli("train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(out), "--gpu", "T4",
                 "--set", "train.max_steps=300", "--set", "train.save_steps=150", "--set", "train.eval_steps=150",
                 "--set", "train.logging_steps=25")
    assert result.exit_code == 0, result.output
    return out


def test_loss_falls(smoke_run):
    rows = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    assert len(losses) >= 4
    assert losses[-1] < losses[0] * 0.6, losses


def test_run_folder_layout(smoke_run):
    for name in ("recipe.yaml", "cost.json", "metrics.jsonl", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "adapter/README.md", "adapter/tokenizer.json"):
        assert (smoke_run / name).is_file(), name
    assert any((smoke_run / "checkpoints").glob("checkpoint-*/arzan_ledger.json"))


def test_ledger_adds_up(smoke_run):
    led = json.loads((smoke_run / "cost.json").read_text())
    assert led["status"] == "finished"
    assert led["model"]["backend"] == "hf" and "auto fell back to hf" in led["model"]["backend_version"]
    assert led["price"]["gpu"] == "T4" and led["price"]["usd_per_gpu_hour"] > 0
    usd = led["billed_seconds"] / 3600 * led["price"]["usd_per_gpu_hour"]
    assert led["money"]["usd"] == pytest.approx(usd, rel=1e-9)
    assert led["money"]["kzt"] == pytest.approx(usd * led["exchange"]["usd_kzt"], rel=1e-9)
    assert led["tokens"]["trained"] > 0 and led["tokens"]["seen"] >= led["tokens"]["trained"]
    assert all(led["phases"][p] > 0 for p in ("setup", "data", "train", "save"))
    assert led["summary"]["data"][0]["fingerprint"].startswith("sha256:")


def test_trained_tokens_equal_the_data(smoke_run):
    """Every token the meter counted went through compute_loss; the data says how many there are."""
    from transformers import AutoTokenizer

    from arzan.data import prepare_data
    from arzan.recipe import load_recipe

    recipe = load_recipe(smoke_run / "recipe.yaml")
    tok = AutoTokenizer.from_pretrained(smoke_run / "adapter")
    data = prepare_data(recipe.data, tok, recipe.train.max_length, recipe.base_dir)
    per_epoch = data.trained_tokens
    led = json.loads((smoke_run / "cost.json").read_text())
    batch = recipe.train.per_device_train_batch_size
    steps_per_epoch = -(-len(data.train) // batch)
    epochs, rest = divmod(300, steps_per_epoch)
    assert led["tokens"]["trained"] >= epochs * per_epoch
    assert led["tokens"]["trained"] <= (epochs + (1 if rest else 0)) * per_epoch


def test_model_card_front_matter_is_hf_metadata(smoke_run):
    meta = read_front_matter(smoke_run / "adapter" / "README.md")
    assert "base_model" not in meta  # the offline tiny model is not on the Hub: no dead link in the metadata
    assert meta["library_name"] == "peft"
    assert meta["language"] == ["kk"]
    assert "arzan" in meta["tags"]
    body = (smoke_run / "adapter" / "README.md").read_text()
    led = json.loads((smoke_run / "cost.json").read_text())
    if led["energy"]["co2_kg"] is None:  # a CPU priced as a T4 drew no T4's power: RAPL or nothing
        assert led["energy"]["method"] in ("rapl", "none") and "co2_eq_emissions" not in meta
    else:
        assert meta["co2_eq_emissions"]["emissions"] == pytest.approx(led["energy"]["co2_kg"] * 1000)
    assert "## Training cost" in body
    assert f"{led['money']['kzt']:,.2f} ₸" in body
    assert "`arzan/tiny-llama-kk`" in body  # the base is still named, in the body


def test_adapter_reloads_and_generates(smoke_run, tiny_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smoke_run / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), smoke_run / "adapter")
    ids = tok.apply_chat_template([{"role": "user", "content": "Цифрмен жаз: он екі"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_existing_run_folder_is_never_overwritten(smoke_run):
    before = (smoke_run / "cost.json").read_bytes()
    result = cli("train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(smoke_run))
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert "--resume" not in result.output  # a finished run: a resume would only refuse
    assert (smoke_run / "cost.json").read_bytes() == before


def test_a_users_own_folder_is_refused_without_offering_resume(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = cli("train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(mine))
    assert result.exit_code == 2 and "not empty and not an arzan run" in result.output
    assert "--resume" not in result.output and (mine / "notes.txt").read_text() == "mine"


def test_overwrite_moves_the_old_folder_aside(tmp_path, write_recipe):
    out = tmp_path / "run"
    out.mkdir()
    (out / "cost.json").write_text("{}")
    recipe = write_recipe(base_recipe(train={"max_steps": 1, "per_device_train_batch_size": 4,
                                             "max_length": 64, "logging_steps": 1}))
    result = cli("train", str(recipe), "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    aside = list(tmp_path.glob("run.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "cost.json").read_text() == "{}"
    assert "moved to" in result.output


def test_overwrite_refuses_a_folder_a_live_training_writes_or_the_one_you_stand_in(tmp_path, write_recipe,
                                                                                   monkeypatch):
    """A live trainer would go on writing by path into the new folder, and its bill be lost."""
    import socket
    import subprocess
    import sys

    from arzan.cost.ledger import Session, new_ledger, utcnow, write_ledger
    from arzan.cost.prices import Price, resolve_exchange

    recipe = write_recipe(base_recipe(train={"max_steps": 1, "per_device_train_batch_size": 4, "max_length": 64}))
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text(recipe.read_text())
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ledger = new_ledger("t", Price(), resolve_exchange())
        ledger.updated_at = utcnow()
        ledger.sessions.append(Session(index=0, started_at=utcnow(), host=socket.gethostname(), pid=trainer.pid))
        write_ledger(out / "cost.json", ledger)
        before = (out / "cost.json").read_bytes()
        result = cli("train", str(recipe), "--out", str(out), "--overwrite")
        assert result.exit_code == 2, result.output
        assert "another arzan process is training into this folder" in result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1
        assert (out / "cost.json").read_bytes() == before and not list(tmp_path.glob("run.replaced-*"))
        parent = cli("train", str(recipe), "--out", str(tmp_path), "--overwrite")  # `--out runs` over runs/live
        assert parent.exit_code == 2 and f"training into {out}, inside it" in parent.output, parent.output
    finally:
        trainer.kill()
        trainer.wait()
    monkeypatch.chdir(out)
    for here in (".", ".."):
        result = cli("train", str(recipe), "--out", here, "--overwrite")
        assert result.exit_code == 2 and "the folder you are working in" in result.output, result.output
    assert out.is_dir() and (out / "cost.json").read_bytes() == before


@pytest.mark.parametrize("content,expected", [
    ("name: [oops", "malformed YAML"),
    (base_recipe(train={"learnin_rate": 1}), "unknown field 'learnin_rate'"),
    (base_recipe(data={"sources": [{"path": "nope.jsonl", "format": "alpaca"}]}), "file not found: nope.jsonl"),
    ("EMPTY", "the dataset is empty"),
    ("COLUMNS", "missing column 'instruction'"),
], ids=["malformed-yaml", "unknown-field", "missing-file", "empty-dataset", "wrong-columns"])
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, write_recipe, content, expected):
    if content in ("EMPTY", "COLUMNS"):
        data = tmp_path / "d.jsonl"
        data.write_text("" if content == "EMPTY" else '{"question": "a", "answer": "b"}\n')
        content = base_recipe(data={"sources": [{"path": str(data), "format": "alpaca"}]})
    result = cli("train", str(write_recipe(content)), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "run").exists()  # checked before a folder is made: the fixed rerun just works


@pytest.mark.parametrize("model, expected", [
    ({"backend": "unsloth"}, "model.backend: 'unsloth' needs a CUDA GPU"),
    ({"dtype": "bfloat16"}, "model.dtype: 'bfloat16' training needs a GPU"),
    ({"load_in_4bit": True}, "model.load_in_4bit: 4-bit QLoRA needs a CUDA GPU"),
])
def test_what_this_machine_cannot_run_is_refused_before_any_folder(tmp_path, write_recipe, model, expected):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks what a CPU-only machine refuses")
    recipe = base_recipe()
    recipe["model"] = {**recipe["model"], **model}
    result = cli("train", str(write_recipe(recipe)), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and expected in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_a_tracker_that_is_not_installed_is_refused_before_any_folder(tmp_path, write_recipe):
    """It used to fail in the Trainer's constructor, after the model load, with a 30-line traceback."""
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    recipe = base_recipe(train={**base_recipe()["train"], "report_to": ["tensorboard", "wandb"]})
    result = cli("train", str(write_recipe(recipe)), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "train.report_to: wandb is not installed here" in result.output and "tensorboard" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_model_that_cannot_load_is_refused_before_any_folder_even_with_overwrite(tmp_path, write_recipe):
    """A typo in model.name (offline here: the same path as a repo that does not exist) or a folder
    without a tokenizer fails in one line, and --overwrite does not move the good run aside first."""
    good = tmp_path / "run"
    good.mkdir()
    (good / "recipe.yaml").write_text("name: t\n")
    (good / "cost.json").write_text(json.dumps({"status": "finished"}))
    (tmp_path / "empty-model").mkdir()
    missing = "model.name: cannot load the tokenizer of 'no-such-org/no-such-model' for this run"
    for name, expected, extra in (("no-such-org/no-such-model", missing, []),
                                  # with a cap, the budget pre-check needs the tokenizer too: still one line,
                                  # not a "pre-check skipped" warning about estimate's --tokenizer first
                                  ("no-such-org/no-such-model", missing, ["--budget", "100KZT"]),
                                  (str(tmp_path / "empty-model"), "is a folder with no tokenizer", [])):
        recipe = base_recipe()
        recipe["model"] = {**recipe["model"], "name": name}
        result = cli("train", str(write_recipe(recipe)), "--out", str(good), "--overwrite", *extra)
        assert result.exit_code == 2 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert json.loads((good / "cost.json").read_text()) == {"status": "finished"}
        assert not list(tmp_path.glob("run.replaced-*"))


def test_bf16_asked_for_on_a_cpu_is_said_not_silently_dropped(tmp_path, write_recipe):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks what a CPU-only machine does")
    recipe = base_recipe(train={"max_steps": 1, "max_length": 64, "per_device_train_batch_size": 2, "bf16": True},
                         eval={"generation_check": False})
    result = cli("train", str(write_recipe(recipe)), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "train.bf16: true needs a GPU; this CPU trains in float32" in result.output
    assert json.loads((tmp_path / "run" / "cost.json").read_text())["model"]["dtype"] == "float32"


@pytest.mark.parametrize("args, expected", [
    (["--price", "-1"], "--price: -1 is not a price"),
    (["--price", "nan"], "--price: nan is not a price"),
    (["--price", "inf"], "--price: inf is not a price"),
    (["--budget", "infUSD"], "--budget: 'infUSD' is not an amount"),
    (["--budget", "1e400KZT"], "--budget: '1e400KZT' is not an amount"),
    (["--provider", "nope"], "--provider: 'nope' is not in the price catalog"),
])
def test_command_line_price_terms_are_checked_like_the_recipes(tmp_path, write_recipe, args, expected):
    """--price/--budget/--provider bypass the recipe's schema, so they are checked on their own:
    an infinite price would make every figure inf and the ledger's price null."""
    recipe = str(write_recipe(base_recipe(train={"max_steps": 1, "max_length": 64})))
    result = cli("train", recipe, "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    if args[0] == "--provider":
        est = cli("estimate", recipe, *args)
        assert est.exit_code == 2 and expected in est.output


def test_more_cli_inputs_that_are_named_in_one_line(tmp_path):
    smoke = str(REPO / "recipes" / "smoke.yaml")
    cases = [
        (["train", "--resume", str(tmp_path / "gone")], "no such run folder to resume"),
        (["estimate", str(tmp_path)], "is a folder; give a recipe YAML file"),
        (["eval", "arzan/tiny-llama-kk", "--data-dir", str(tmp_path / "nowhere")], "--data-dir"),
        (["eval", "arzan/tiny-llama-kk", "--batch-size", "abc"], "--batch-size: 'abc' is not"),
        (["eval", "arzan/tiny-llama-kk", "--batch-size", "0"], "--batch-size: '0' is not"),
        (["estimate", smoke, "--tokenizer", str(tmp_path / "tok")], "--tokenizer"),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.exit_code == 2 and expected in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert cli("estimate", smoke, "--sample-rows", "-5").exit_code == 2  # typer's own range check


def test_cli_edge_cases_are_one_line_errors(tmp_path, write_recipe):
    recipe = str(write_recipe(base_recipe(train={"max_steps": 1, "max_length": 64})))
    bracket = cli("train", recipe, "--set", "lora.target_modules=[q_proj", "--out", str(tmp_path / "r"))
    assert bracket.exit_code == 2 and "'lora.target_modules=[q_proj'" in bracket.output  # not eaten as markup
    a_file = tmp_path / "taken"
    a_file.write_text("mine")
    on_file = cli("train", recipe, "--out", str(a_file))
    assert on_file.exit_code == 2 and "is a file, not a run folder" in on_file.output
    assert a_file.read_text() == "mine"
    unknown_gpu = cli("train", recipe, "--gpu", "B900", "--out", str(tmp_path / "g"))
    assert unknown_gpu.exit_code == 2 and not (tmp_path / "g").exists()
    run = tmp_path / "failed"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: x\n")
    (run / "cost.json").write_text(json.dumps({"status": "failed", "status_reason": "ValueError: boom"}))
    refused = cli("train", recipe, "--out", str(run))
    assert refused.exit_code == 2 and "(its run is failed: ValueError: boom)" in refused.output
    with_set = cli("train", "--resume", str(run), "--set", "train.max_steps=9")
    assert with_set.exit_code == 2 and "keeps the recipe it started with" in with_set.output
    for res in (bracket, on_file, unknown_gpu, refused, with_set):
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_version_and_prices():
    assert cli("--version").output.startswith("arzan ")
    result = cli("prices", "--gpu", "A100-80GB", "--currency", "USD")
    assert result.exit_code == 0 and "A100" in result.output
    bad = cli("prices", "--currency", "EUR")
    assert bad.exit_code == 2 and "EUR" in bad.output


def test_generation_check_is_in_the_summary(smoke_run):
    led = json.loads((smoke_run / "cost.json").read_text())
    check = led["summary"]["generation_check"]
    assert check["total"] == len(check["prompts"]) > 0
    assert all("before" in p and "text" in p for p in check["prompts"])
    assert led["phases"]["eval"] > 0
    # the visible difference training makes: the random base never ends its turn, the fine-tune
    # answers and stops (what a Kazakh user complains about first when it does not)
    before = sum(p["before_stopped_at_eos"] for p in check["prompts"])
    after = sum(p["stopped_at_eos"] for p in check["prompts"])
    assert after > before and after == check["stopped"]
    assert all(len(p["text"]) < len(p["before"]) for p in check["prompts"] if p["stopped_at_eos"])


def test_cli_eval_compare_report_on_the_run(smoke_run, tmp_path):
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/kazakh-eval is absent (a user's fresh clone)")
    result = cli("eval", str(smoke_run), "--tasks", "kazakh_local", "--limit", "3", "--data-dir", str(SHARED_DATA))
    assert result.exit_code == 0, result.output
    doc = json.loads((smoke_run / "eval.json").read_text())
    assert {r["task"] for r in doc["rows"]} >= {"arzan_belebele_kk", "arzan_kkcopa"}
    assert json.loads((smoke_run / "cost.json").read_text())["summary"]["eval"]["tasks"]
    assert cli("compare", str(smoke_run), "--markdown").exit_code == 0
    out = tmp_path / "r.html"
    rep = cli("report", str(smoke_run), "--out", str(out))
    assert rep.exit_code == 0 and out.is_file() and out.with_suffix(".md").is_file()
    bad = cli("report", str(tmp_path / "nope"))
    assert bad.exit_code == 2 and "nope" in bad.output


def test_save_merged_writes_a_plain_transformers_model(tmp_path, write_recipe):
    from transformers import AutoModelForCausalLM

    recipe = write_recipe(base_recipe(train={"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 64,
                                             "logging_steps": 1}, output={"save_merged": True},
                                      eval={"generation_check": False}))
    result = cli("train", str(recipe), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ledger = json.loads((tmp_path / "run" / "cost.json").read_text(encoding="utf-8"))
    assert ledger["status"] == "finished" and len(ledger["sessions"]) == 1  # the merge is the session's save phase
    assert ledger["phases"]["save"] > 0
    card = (tmp_path / "run" / "merged" / "README.md").read_text(encoding="utf-8")
    assert "| Status | finished |" in card  # rewritten from the final ledger, not the one mid-session


def test_over_budget_is_refused_before_renting_and_capped_when_allowed(tmp_path, write_recipe):
    recipe = write_recipe(base_recipe(train={"max_steps": 40, "per_device_train_batch_size": 4, "max_length": 64,
                                             "logging_steps": 1}, eval={"generation_check": False}))
    out = tmp_path / "run"
    refused = cli("train", str(recipe), "--out", str(out), "--price", "500", "--budget", "1KZT")
    assert refused.exit_code == 2
    assert "refusing to start" in refused.output and "--allow-over-budget" in refused.output
    assert not out.exists(), "a refused run leaves no folder behind"
    allowed = cli("train", str(recipe), "--out", str(out), "--price", "500", "--budget", "1KZT",
                  "--allow-over-budget")
    assert allowed.exit_code == 3, allowed.output
    led = json.loads((out / "cost.json").read_text())
    # at 500 $/h loading the model alone passes 1 ₸: not one step is bought, so there is no adapter
    assert led["status"] == "stopped_budget" and led["progress"]["step"] == 0
    assert "the first step of this session" in led["status_reason"]
    assert f"arzan train --resume {out}" in allowed.output
    assert not (out / "adapter").exists()


def test_padding_free_without_packing_is_a_config_trl_accepts_under_unsloth(tmp_path, write_recipe, tiny_dir):
    """The Colab recipes ask for padding_free without packing. TRL 1.14 refuses that while
    max_length is set; arzan's data step has already cut the rows, so max_length goes, not the
    speed-up. (On hf + sdpa padding_free itself goes: exact, but dearer than padding there.)"""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from arzan.data import prepare_data
    from arzan.recipe import load_recipe
    from arzan.runfolder import RunFolder
    from arzan.train import sft_config

    recipe = load_recipe(write_recipe(base_recipe(train={"max_steps": 1, "max_length": 48, "padding_free": True,
                                                         "per_device_train_batch_size": 4})))
    folder = RunFolder(tmp_path / "run")
    unsloth_args = sft_config(recipe, folder, on_cuda=False, has_eval=False, backend="unsloth")
    assert unsloth_args.padding_free and unsloth_args.max_length is None
    hf_args = sft_config(recipe, folder, on_cuda=False, has_eval=False, backend="hf")
    assert not hf_args.padding_free and hf_args.max_length == 48
    flash = load_recipe(write_recipe(base_recipe(
        model={"name": "arzan/tiny-llama-kk", "backend": "hf", "attn_implementation": "flash_attention_2"},
        train={"max_steps": 1, "max_length": 48, "padding_free": True}), name="flash.yaml"))
    flash_args = sft_config(flash, folder, on_cuda=False, has_eval=False, backend="hf")
    assert flash_args.padding_free and flash_args.max_length is None  # varlen attention: padding-free pays
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    data = prepare_data(recipe.data, tok, recipe.train.max_length, recipe.base_dir)
    assert max(len(x) for x in data.train["input_ids"]) <= 48  # already cut to the recipe's max_length
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    SFTTrainer(model=model, args=unsloth_args, train_dataset=data.train, processing_class=tok)  # no ValueError


def test_a_flattened_batch_on_sdpa_scores_each_document_alone():
    """Packing on the hf path (TRL's bfd: padding-free rows with position_ids, no attention mask)
    relies on transformers masking each document from its position_ids under sdpa. Were a
    document to see the one before it, this loss would differ from the padded batch's."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from arzan.tiny import tiny_model_dir

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype=torch.float32).train()
    assert model.config._attn_implementation == "sdpa"
    rows = [{"input_ids": torch.randint(5, 200, (n,)).tolist()} for n in (9, 4, 13)]
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    padded = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=False)(rows)
    assert "attention_mask" not in flat and flat["input_ids"].shape == (1, 26)
    with torch.no_grad():  # use_cache=False as TRL's compute_loss passes it: a cache turns the masking off
        flat_loss = model(**flat, use_cache=False).loss
        padded_loss = model(**padded, use_cache=False).loss
        leaky = model(input_ids=flat["input_ids"], labels=flat["labels"], use_cache=False).loss
    assert flat_loss.item() == pytest.approx(padded_loss.item(), abs=1e-5)
    assert abs(leaky.item() - padded_loss.item()) > 1e-3  # the check can fail: without position_ids it leaks


@pytest.mark.parametrize("targets", [["qproj"], ["q_proj", "qproj"]])  # alone, or beside a real one peft accepts
def test_a_lora_target_the_model_does_not_have_is_one_line_naming_the_field(tmp_path, write_recipe, targets):
    recipe = write_recipe(base_recipe(lora={"r": 4, "lora_alpha": 8, "target_modules": targets}))
    result = cli("train", str(recipe), "--out", str(tmp_path / "run"))
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "lora.target_modules: 'qproj' matches no module of this model (its linear layers: down_proj, gate_proj, " \
           "k_proj, o_proj, q_proj, up_proj, v_proj)" in said
    assert "Traceback" not in result.output


def test_recipe_eval_section_scores_after_training_as_its_own_paid_phase(tmp_path, write_recipe):
    """`eval: {tasks, limit}` in a recipe: lm-eval runs on the saved adapter after training, its
    scores land in eval.json and the ledger's summary, and its time is billed in the eval phase."""
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "kkCOPA.jsonl").is_file():
        pytest.skip(f"shared Kazakh eval data not at {SHARED_DATA} (a user's fresh clone)")
    recipe = write_recipe(base_recipe(
        train={"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 64, "logging_steps": 1},
        cost={"usd_per_gpu_hour": 1.0},
        eval={"generation_check": False, "tasks": "kazakh_local", "limit": 3, "data_dir": str(SHARED_DATA)}))
    result = cli("train", str(recipe), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {r["task"] for r in doc["rows"]} >= {"arzan_belebele_kk", "arzan_kkcopa"}
    assert all(h["limit"] == 3 and h["n"] == 3 for h in doc["tasks"].values())
    led = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert led["status"] == "finished"
    assert set(led["summary"]["eval"]["tasks"]) == set(doc["tasks"])
    # only lm-eval ran after training (no generation check): the eval phase is its time, and it is paid for
    assert led["phases"]["eval"] >= doc["seconds"] - 0.005 and doc["seconds"] > 0  # eval.json rounds to 0.01 s
    assert led["money"]["usd"] == pytest.approx(led["billed_seconds"] / 3600 * 1.0)
    assert led["billed_seconds"] >= sum(led["phases"].values()) - 1e-6
    said = " ".join(result.output.split())  # the scores are shown, not only filed, as `arzan eval RUN` shows them
    assert "Kazakh scores (% correct)" in said and f"scores written to {tmp_path / 'run' / 'eval.json'}" in said
    assert all(task in said for task in doc["tasks"]) and "(n=3)" in said
    from arzan.reporting.table import kzt

    # the table's cost is the closed bill's, the one the status line and cost.json give, not a figure before the eval
    assert f"│ measured │ {kzt(led['money']['kzt'])} ₸" in result.output
    assert f"finished · {tmp_path / 'run'} · " in said


def test_the_console_script_turns_usage_mistakes_into_one_error_line():
    """`arzan` as installed (arzan.cli:run, also `python -m arzan`): click's framed usage panel
    becomes one `error:` line with exit 2; a command's own exit code still comes through."""
    import subprocess
    import sys

    def arzan(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "arzan", *args], capture_output=True, text=True, cwd=REPO,
                              timeout=120)

    for args, expected in ((["eval", "x", "--limit", "0"], "Invalid value for '--limit'"),
                           (["trian"], "No such command 'trian'"),
                           (["train"], "Missing argument 'RECIPE'")):
        res = arzan(*args)
        assert res.returncode == 2 and res.stdout == "", (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
        assert "--help" in lines[0]
    assert arzan("prices", "--currency", "EUR").returncode == 2
    version = arzan("--version")
    assert version.returncode == 0 and version.stdout.startswith("arzan ")


def test_the_hf_adapters_initial_weights_follow_train_seed(write_recipe):
    """Two backends or two runs with one seed start from the same adapter (unsloth seeds with
    random_state; the hf path seeds before get_peft_model), so their losses can be compared."""
    from arzan.model import load_model
    from arzan.recipe import load_recipe

    def lora_a(seed):
        recipe = base_recipe()
        recipe["train"] = {**recipe["train"], "seed": seed}
        model, _, _ = load_model(load_recipe(write_recipe(recipe, f"s{seed}.yaml")))
        return next(p for n, p in model.named_parameters() if "lora_A" in n).detach().clone()

    import torch

    assert torch.equal(lora_a(3), lora_a(3)) and not torch.equal(lora_a(3), lora_a(4))


def test_a_finished_run_is_not_offered_a_resume_and_an_edited_recipe_is_not_resumed(tmp_path, write_recipe,
                                                                                     monkeypatch):
    """The folder of a finished run points to --out / --overwrite, not to a --resume that would refuse;
    `arzan train EDITED.yaml --resume --out DIR` names the fields that differ instead of training DIR's
    own recipe.yaml silently."""
    section = {"max_length": 64, "max_steps": 4, "per_device_train_batch_size": 2, "save_steps": 2}
    path = write_recipe(base_recipe(train=section, eval={"generation_check": False}))
    run = tmp_path / "run"
    assert cli("train", str(path), "--out", str(run)).exit_code == 0
    again = cli("train", str(path), "--out", str(run))
    assert again.exit_code == 2 and "its run is finished" in again.output and "--resume" not in again.output
    assert "--overwrite" in again.output

    led = json.loads((run / "cost.json").read_text())
    led["status"] = "interrupted"  # as if stopped: --resume is now a real option
    (run / "cost.json").write_text(json.dumps(led))
    edited = base_recipe(train={**section, "learning_rate": 1e-3, "max_steps": 8}, eval={"generation_check": False})
    result = cli("train", str(write_recipe(edited, "edited.yaml")), "--resume", "--out", str(run))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "differs from" in result.output and "train.learning_rate" in result.output
    assert "train.max_steps" in result.output
    assert json.loads((run / "cost.json").read_text()) == led  # nothing ran, nothing was billed
    # a run folder's own recipe.yaml given to --resume resumes that folder, also a copy of it under
    # another name (a Drive copy), not the folder the recipe's output.dir names
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    monkeypatch.chdir(tmp_path)
    resumed = cli("train", "moved/recipe.yaml", "--resume")
    assert resumed.exit_code == 0 and "finished · moved" in " ".join(resumed.output.split()), resumed.output
    assert json.loads((moved / "cost.json").read_text())["status"] == "finished"
    assert json.loads((run / "cost.json").read_text()) == led  # the original is untouched


def test_a_money_cap_that_a_zero_price_cannot_enforce_is_said(tmp_path, write_recipe):
    section = {"max_length": 64, "max_steps": 2, "per_device_train_batch_size": 2}
    path = write_recipe(base_recipe(train=section, eval={"generation_check": False}))
    free = cli("train", str(path), "--out", str(tmp_path / "a"), "--budget", "0.5KZT")
    assert free.exit_code == 0 and "max_kzt 0.5 cannot stop this run: its price is 0" in free.output
    priced = cli("train", str(path), "--out", str(tmp_path / "b"), "--budget", "500KZT", "--price", "1")
    assert priced.exit_code == 0 and "cannot stop this run" not in priced.output


def test_ctrl_c_before_the_run_folder_exists_says_there_is_nothing_to_resume(tmp_path, write_recipe, monkeypatch):
    """A first Ctrl-C during the checks and imports used to print "interrupted twice ... --resume DIR"
    for a folder that was never made."""
    import arzan.model

    def interrupted(recipe):
        raise KeyboardInterrupt

    monkeypatch.setattr(arzan.model, "check_model_name", interrupted)
    section = {"max_length": 64, "max_steps": 2, "per_device_train_batch_size": 2}
    result = cli("train", str(write_recipe(base_recipe(train=section))), "--out", str(tmp_path / "run"))
    assert result.exit_code == 130 and "no new run folder was made; there is nothing to resume" in result.output
    assert "--resume" not in result.output and not (tmp_path / "run").exists()
    old = tmp_path / "old"  # --overwrite: the run being replaced is not offered as the one to resume
    old.mkdir()
    (old / "recipe.yaml").write_text("name: t\n")
    (old / "cost.json").write_text(json.dumps({"status": "finished", "sessions": [{"pid": 1}]}))
    result = cli("train", str(write_recipe(base_recipe(train=section))), "--out", str(old), "--overwrite")
    assert result.exit_code == 130 and "no new run folder was made" in result.output
    assert json.loads((old / "cost.json").read_text())["status"] == "finished"


def test_the_price_a_run_is_billed_at_is_said_before_it_starts(tmp_path, write_recipe):
    """`--gpu A100` alone takes the catalog's cheapest A100 (a spot offer): say which, and how to pick another."""
    from arzan.cost.prices import load_catalog

    recipe = write_recipe(base_recipe(train={"max_steps": 1, "per_device_train_batch_size": 4, "max_length": 64},
                                      eval={"generation_check": False}))
    result = cli("train", str(recipe), "--out", str(tmp_path / "a"), "--gpu", "A100")
    assert result.exit_code == 0, result.output
    cheapest = min((e for e in load_catalog().prices if e.gpu == "A100-40GB"), key=lambda e: e.usd_per_gpu_hour)
    first = re.search(r"billed as .*", result.output).group(0)  # a progress bar may share its line
    assert first.startswith(f"billed as A100-40GB at {cheapest.provider} ({cheapest.pricing}): "
                            f"{cheapest.usd_per_gpu_hour:.2f} $/h")
    assert "not necessarily yours: --provider" in first and cheapest.as_of in first
    led = json.loads((tmp_path / "a" / "cost.json").read_text())
    assert led["price"]["provider"] == cheapest.provider  # the line says what the ledger bills
    chosen = cli("train", str(recipe), "--out", str(tmp_path / "b"), "--gpu", "A100", "--provider", "colab")
    assert "billed as A100-40GB at colab" in chosen.output and "not necessarily yours" not in chosen.output


def test_the_commands_own_start_up_is_billed_as_setup(tmp_path, write_recipe):
    """`arzan train` on a rented GPU pays for its imports and checks too: billed from the command's
    start (cli.STARTED), not from when the meter could first be made."""
    import time

    from arzan.recipe import load_recipe
    from arzan.train import train

    recipe = load_recipe(write_recipe(base_recipe(train={"max_steps": 1, "per_device_train_batch_size": 4,
                                                         "max_length": 64}, eval={"generation_check": False})))
    began = time.monotonic() - 30.0  # a command that spent 30 s before train() was called
    led = train(recipe, out=tmp_path / "a", started=began).ledger
    plain = train(recipe, out=tmp_path / "b").ledger  # the Python API: the time before the call is not billed
    assert led["phases"]["setup"] >= 30.0 > plain["phases"]["setup"]
    assert led["billed_seconds"] >= 30.0 + led["phases"]["train"]


def test_an_evaluation_that_fails_after_training_leaves_a_finished_run(tmp_path, write_recipe, monkeypatch):
    """The adapter is saved by then: the run is finished (a resume would pay its setup to fail
    again), and its status says what failed and the `arzan eval` that redoes it."""
    from arzan import runtime
    from arzan.errors import ArzanError
    from arzan.recipe import load_recipe
    from arzan.train import train

    def fails(recipe, folder, meter):
        raise ArzanError("lm-eval: the hub would not serve the data")

    monkeypatch.setattr(runtime, "evaluate_after_training", fails)
    monkeypatch.setattr("arzan.evaluation.runner.check_tasks", lambda *a, **k: None)  # as if online: it fails later
    path = write_recipe(base_recipe(train={"max_steps": 2, "logging_steps": 1, "save_steps": 2},
                                    eval={"tasks": ["arzan_kkcopa"], "limit": 2}))
    result = train(load_recipe(path), out=tmp_path / "run")
    led = json.loads((tmp_path / "run" / "cost.json").read_text("utf-8"))
    assert result.status == led["status"] == "finished" and led["progress"]["step"] == 2
    assert led["status_reason"].startswith("training finished; the evaluation after it failed (lm-eval: the hub")
    assert "score it with: arzan eval" in led["status_reason"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("error,said", [
    ("arzan", "(runs/x/merged.partial: exists"),
    ("oom", "(OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB)"),  # a library's: not a failed run
])
def test_a_merge_that_fails_after_training_leaves_a_finished_run(tmp_path, write_recipe, monkeypatch, error, said):
    import torch

    import arzan.export
    from arzan.errors import ArzanError
    from arzan.recipe import load_recipe
    from arzan.train import train

    def fails(*args, **kwargs):
        if error == "arzan":
            raise ArzanError("runs/x/merged.partial: exists and is not an unfinished arzan merge")
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(arzan.export, "merge_adapter", fails)
    path = write_recipe(base_recipe(train={"max_steps": 2, "logging_steps": 1, "save_steps": 2},
                                    output={"save_merged": True}))
    result = train(load_recipe(path), out=tmp_path / "run")
    led = json.loads((tmp_path / "run" / "cost.json").read_text("utf-8"))
    assert result.status == led["status"] == "finished"
    assert led["status_reason"].startswith(f"training finished; the merge after it failed {said}")
    assert f"merge it with: arzan merge {tmp_path / 'run'}" in led["status_reason"]


def test_a_library_failure_mid_run_is_one_line_exit_1_with_the_traceback_kept(tmp_path, write_recipe, monkeypatch):
    """A CUDA OOM is not input to fix line by line nor a bug to read a traceback for: exit 1, one
    line with what to change, the ledger closed as failed and the traceback in error.log."""
    import torch
    from trl import SFTTrainer

    step = SFTTrainer.training_step

    def oom_on_the_third_step(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", oom_on_the_third_step)
    path = write_recipe(base_recipe(train={"max_steps": 4, "logging_steps": 1, "save_steps": 1}))
    result = cli("train", str(path), "--out", str(tmp_path / "run"))
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: the run failed at step 2 (OutOfMemoryError: CUDA out of memory" in said
    assert "lower train.per_device_train_batch_size" in said
    assert f"arzan train --resume {tmp_path / 'run'} continues from checkpoint-2 on a GPU with more memory" in said
    led = json.loads((tmp_path / "run" / "cost.json").read_text("utf-8"))
    assert led["status"] == "failed" and led["resume_command"] == f"arzan train --resume {tmp_path / 'run'}"
    assert "OutOfMemoryError" in (tmp_path / "run" / "error.log").read_text("utf-8")
    # before any checkpoint: a resume would pay its setup to fail the same way; the ledger names no resume
    early = write_recipe(base_recipe(train={"max_steps": 4, "logging_steps": 1, "save_steps": 1000}), "early.yaml")
    result = cli("train", str(early), "--out", str(tmp_path / "early"))
    assert result.exit_code == 1 and "no checkpoint was saved, so fix it and start again with --overwrite" in \
        " ".join(result.output.split())
    assert json.loads((tmp_path / "early" / "cost.json").read_text("utf-8"))["resume_command"] is None



def test_a_full_disk_mid_run_keeps_its_own_line_saying_to_free_space(tmp_path, write_recipe, monkeypatch):
    import errno

    import arzan.train

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(arzan.train, "replace_dir", full)
    path = write_recipe(base_recipe(train={"max_steps": 2, "logging_steps": 1, "save_steps": 1}))
    result = cli("train", str(path), "--out", str(tmp_path / "run"))
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "No space left on device; what was saved before it (checkpoints, the ledger) stays; free space, then " \
           f"arzan train --resume {tmp_path / 'run'}" in said
    assert json.loads((tmp_path / "run" / "cost.json").read_text("utf-8"))["status"] == "failed"
    assert not (tmp_path / "run" / "error.log").exists()  # not written onto a full disk


def test_a_sigterm_before_the_run_folder_exists_is_one_line_not_a_silent_143(tmp_path, monkeypatch):
    """A provider's SIGTERM during the first seconds (imports, checks): nothing written or billed, and
    the command says so instead of dying with `Terminated`."""
    import os
    import signal

    import arzan.recipe

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM is handled by something else in this test process")
    real = arzan.recipe.load_recipe

    def preempted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(arzan.recipe, "load_recipe", preempted)
    result = cli("train", str(REPO / "recipes" / "smoke.yaml"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 130
    assert "interrupted before the run started: no new run folder was made" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
