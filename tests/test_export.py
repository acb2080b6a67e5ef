"""Export: a merged model must compute what base + adapter computed, and a hub push must leave no
trace of the token in the run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from arzan.errors import ArzanError
from arzan.export import merge_adapter, push_to_hub, unquantised_name
from arzan.recipe import ALL_PROJECTIONS

TOKEN = "hf_arzanTESTtoken0123456789abcdef"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_dir):
    """A run folder holding a deliberately non-trivial LoRA (random A and B) on the tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("export") / "run"
    (run / "adapter").mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    ids = tokenizer("Қазақстанның астанасы қай қала?", return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = base(ids).logits
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=ALL_PROJECTIONS,
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    model.eval()
    with torch.no_grad():
        adapter_logits = model(ids).logits
    model.save_pretrained(run / "adapter")
    tokenizer.save_pretrained(run / "adapter")
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "t", "model": {"name": "arzan/tiny-llama-kk"}}))
    from arzan.cost.ledger import new_ledger, write_ledger
    from arzan.cost.prices import Price, resolve_exchange

    write_ledger(run / "cost.json", new_ledger("t", Price(usd_per_gpu_hour=1.0), resolve_exchange()))
    return run, ids, base_logits, adapter_logits


def _logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def test_merged_model_gives_the_adapters_logits(lora_run, tmp_path):
    run, ids, base_logits, adapter_logits = lora_run
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-3), "the LoRA must change the output"
    out = merge_adapter(run, tmp_path / "merged", dtype="float32")
    assert not (out / "adapter_config.json").exists()  # an ordinary transformers model now
    torch.testing.assert_close(_logits(out, ids), adapter_logits, atol=1e-5, rtol=1e-5)
    card = (out / "README.md").read_text("utf-8")
    assert card.startswith("---\n") and "library_name: transformers" in card and "Training cost" in card


def test_merge_from_adapter_folder_saves_requested_dtype(lora_run, tmp_path):
    from safetensors import safe_open

    run, ids, _, adapter_logits = lora_run
    out = merge_adapter(run / "adapter", tmp_path / "m16", dtype="bfloat16")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    torch.testing.assert_close(_logits(out, ids), adapter_logits, atol=0.1, rtol=0.05)  # bf16 rounding only


def test_merge_refuses_bad_requests(lora_run, tmp_path):
    run = lora_run[0]
    with pytest.raises(ArzanError, match="dtype"):
        merge_adapter(run, tmp_path / "x", dtype="int8")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("paid for")
    with pytest.raises(ArzanError, match="not empty"):
        merge_adapter(run, tmp_path / "busy")
    with pytest.raises(ArzanError, match="adapter_config.json"):
        merge_adapter(tmp_path / "busy")


def test_merge_names_a_damaged_adapter_or_a_file_as_out(lora_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(lora_run[0], run)
    a_file = tmp_path / "smoke.yaml"
    a_file.write_text("name: mine\n")
    with pytest.raises(ArzanError, match="is a file; --out names a folder"):
        merge_adapter(run, a_file)
    assert a_file.read_text() == "name: mine\n"
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short
    with pytest.raises(ArzanError, match=r"the adapter cannot be read .*a copy cut short\? copy it again") as err:
        merge_adapter(run, tmp_path / "m1")
    assert "\n" not in str(err.value) and not (tmp_path / "m1").exists()
    (run / "adapter" / "adapter_config.json").write_text("{")
    with pytest.raises(ArzanError, match="the adapter cannot be read"):
        merge_adapter(run, tmp_path / "m2")


def test_merge_never_uses_a_quantised_base(lora_run, tiny_dir, tmp_path):
    quantised = tmp_path / "tiny-bnb-4bit"
    shutil.copytree(tiny_dir, quantised)
    cfg = json.loads((quantised / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantised / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArzanError, match="quantised"):
        merge_adapter(lora_run[0], tmp_path / "out", base_model=str(quantised))


def test_a_run_trained_on_a_prequantised_repo_merges_into_its_16bit_original(tmp_path):
    """A recipe naming unsloth's -bnb-4bit repo trains on it; the merge must reload the 16-bit original
    (loading the 4-bit repo would be refused as a quantised base after the paid-for training)."""
    from arzan.export import base_model_of

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("model: {name: unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit, revision: abc}\n")
    assert base_model_of(run / "adapter", run) == ("unsloth/Meta-Llama-3.1-8B-Instruct", None)
    (run / "recipe.yaml").write_text("model: {name: meta-llama/Llama-3.1-8B-Instruct, revision: abc}\n")
    assert base_model_of(run / "adapter", run) == ("meta-llama/Llama-3.1-8B-Instruct", "abc")


def test_unsloth_prequantised_names_map_to_16bit_repos():
    assert unquantised_name("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit") == "unsloth/Meta-Llama-3.1-8B-Instruct"
    assert unquantised_name("unsloth/Llama-3.2-3B-Instruct-unsloth-bnb-4bit") == "unsloth/Llama-3.2-3B-Instruct"
    assert unquantised_name("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"


class FakeHfApi:
    """Records what would be sent; `fail` makes it raise an error that quotes the token."""

    calls: list = []
    fail = False

    def __init__(self, token=None):
        FakeHfApi.calls.append(("init", token))

    def create_repo(self, repo_id, private, exist_ok, repo_type):
        if FakeHfApi.fail:
            raise RuntimeError(f"401 Unauthorized: bad token {TOKEN}")
        FakeHfApi.calls.append(("create_repo", repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, repo_type, commit_message):
        FakeHfApi.calls.append(("commit", repo_id, sorted(op.path_in_repo for op in operations)))
        return type("Info", (), {"oid": "abc123"})()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHfApi.calls, FakeHfApi.fail = [], False
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the stand-in hub is "reachable"
    return FakeHfApi


def _files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_push_uploads_adapter_with_its_bill_and_leaves_no_token(lora_run, fake_hub, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    before = len(json.loads((run / "cost.json").read_text("utf-8"))["sessions"])
    url = push_to_hub(run, "someone/kazakh-llama", private=True)
    assert url == "https://huggingface.co/someone/kazakh-llama"
    sessions = json.loads((run / "cost.json").read_text("utf-8"))["sessions"]
    assert len(sessions) == before + 1 and sessions[-1]["phases"]["save"] > 0  # the upload is paid time too
    assert ("init", TOKEN) in fake_hub.calls and ("create_repo", "someone/kazakh-llama", True) in fake_hub.calls
    files = next(c[2] for c in fake_hub.calls if c[0] == "commit")
    assert {"adapter_config.json", "adapter_model.safetensors", "arzan/cost.json", "arzan/recipe.yaml"} <= set(files)
    hub = json.loads((run / "hub.json").read_text())
    assert hub["repo_id"] == "someone/kazakh-llama" and hub["commit"] == "abc123"
    assert _files_containing(run, TOKEN) == []


def test_push_errors_name_the_problem_not_the_token(lora_run, fake_hub, monkeypatch, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    fake_hub.fail = True
    with pytest.raises(ArzanError) as err:
        push_to_hub(run, "someone/kazakh-llama")
    assert TOKEN not in str(err.value) and "someone/kazakh-llama" in str(err.value)
    with pytest.raises(ArzanError, match="merge_adapter first"):
        push_to_hub(run, "someone/kazakh-llama", merged=True)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ArzanError, match="HF_TOKEN is not set"):
        push_to_hub(run, "someone/kazakh-llama")
    assert _files_containing(run, TOKEN) == []


def test_arzan_merge_writes_whole_or_nothing_and_links_no_local_base(lora_run, tmp_path):
    """`arzan merge` (the CLI) writes beside its target and renames at the end; the tiny model is no
    Hub repo, so the merged card's metadata names no base_model."""
    from typer.testing import CliRunner

    from arzan.cli import app

    run, ids, _, adapter_logits = lora_run
    out = tmp_path / "merged"
    from arzan.export import PARTIAL_MARK

    (tmp_path / "merged.partial").mkdir()  # left by a merge that was cut short
    (tmp_path / "merged.partial" / "model.safetensors").write_bytes(b"half")
    (tmp_path / "merged.partial" / PARTIAL_MARK).write_text("", encoding="utf-8")
    (tmp_path / "mine.partial").mkdir()  # a folder of the user's that happens to have the name
    (tmp_path / "mine.partial" / "notes.txt").write_text("keep", encoding="utf-8")
    refused = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "mine")])
    assert refused.exit_code == 2 and "is not an unfinished arzan merge" in " ".join(refused.output.split())
    assert (tmp_path / "mine.partial" / "notes.txt").read_text("utf-8") == "keep"
    res = CliRunner().invoke(app, ["merge", str(run), "--out", str(out), "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    last = json.loads((run / "cost.json").read_text("utf-8"))["sessions"][-1]
    assert f"as session {last['index']} of {run / 'cost.json'}" in " ".join(res.output.split())  # what it cost
    assert not (tmp_path / "merged.partial").exists() and not (out / PARTIAL_MARK).exists()
    assert torch.allclose(_logits(out, ids), adapter_logits, atol=1e-4)
    card = (out / "README.md").read_text("utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert "base_model" not in meta and meta["library_name"] == "transformers"
    assert "merged into `arzan/tiny-llama-kk`" in card  # the recipe's name, not the tiny model's cache folder
    again = CliRunner().invoke(app, ["merge", str(run), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_merge_is_billed_as_a_session_of_the_run(lora_run, tmp_path):
    """`arzan merge` on the rented GPU takes minutes of it: they join the run's bill as a `save`
    session, as an eval's join it as an `eval` one."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    before = json.loads((run / "cost.json").read_text())
    merge_adapter(run, tmp_path / "merged", dtype="float32", device="cpu")
    after = json.loads((run / "cost.json").read_text())
    assert len(after["sessions"]) == len(before["sessions"]) + 1
    merged = after["sessions"][-1]
    assert merged["status"] == "finished" and merged["phases"]["save"] > 0 and merged["billed_seconds"] > 0
    assert after["money"]["usd"] == pytest.approx(before["money"]["usd"] + merged["billed_seconds"] / 3600)
    card = (tmp_path / "merged" / "README.md").read_text(encoding="utf-8")
    assert f"| Sessions | {len(after['sessions'])} |" in card  # the merged model's card shows the bill with the merge
    assert not (run / ".arzan-eval.json").exists()  # the mark is gone with the merge


def test_merging_a_run_stopped_mid_training_says_it_is_its_adapter_so_far(lora_run, tmp_path):
    """A merge of an interrupted (or budget-stopped) run is a model of the steps trained so far, as an
    eval of it is: said, with the command that finishes the run."""
    import shutil

    from typer.testing import CliRunner

    from arzan.cli import app

    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    led = json.loads((run / "cost.json").read_text())
    led.update(status="interrupted", progress={**led["progress"], "step": 0, "max_steps": 8})
    (run / "cost.json").write_text(json.dumps(led))
    out = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "merged"), "--dtype", "float32"])
    said = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert (f"note: this run is interrupted at step 0/8: this is a merge of its adapter so far, not of the finished "
            f"run (arzan train --resume {run})") in said
    finished = tmp_path / "done"
    shutil.copytree(lora_run[0], finished)
    (finished / "cost.json").write_text(json.dumps({**led, "status": "finished"}))
    out = CliRunner().invoke(app, ["merge", str(finished), "--out", str(tmp_path / "m2"), "--dtype", "float32"])
    assert out.exit_code == 0 and "note:" not in out.output


def test_a_merge_refuses_a_run_a_training_still_writes(lora_run, tmp_path):
    import shutil

    import os
    import socket

    from arzan.cost.ledger import Session, read_ledger, utcnow, write_ledger

    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    led = read_ledger(run / "cost.json")
    led.status, led.updated_at = "running", utcnow()
    led.sessions.append(Session(index=0, started_at=utcnow(), host=socket.gethostname(), pid=os.getpid()))
    write_ledger(run / "cost.json", led)  # written just now, by a live process (this one)
    with pytest.raises(ArzanError, match="a training is still running into this folder"):
        merge_adapter(run, tmp_path / "merged", dtype="float32", device="cpu")
    assert not (tmp_path / "merged").exists()


def test_a_push_without_a_token_is_refused_before_training(write_recipe, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from arzan.cli import app
    from tests.conftest import base_recipe

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = write_recipe(base_recipe(output={"push_to_hub": True, "hub_model_id": "someone/kk"}))
    out = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert out.exit_code == 2 and "output.push_to_hub: HF_TOKEN is not set" in out.output, out.output
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub from here (or arzan.hub found none): the push would fail
    out = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert out.exit_code == 2 and "the Hugging Face hub cannot be reached from here" in " ".join(out.output.split())
    assert not (tmp_path / "run").exists()


def test_the_push_after_training_is_billed_as_a_save_session(write_recipe, fake_hub, tmp_path):
    """The upload is paid GPU time too: it joins the bill as its own session, after the training's,
    and the card in the run folder shows it."""
    from typer.testing import CliRunner

    from arzan.cli import app
    from tests.conftest import base_recipe

    path = write_recipe(base_recipe(train={"max_steps": 2, "logging_steps": 1, "save_steps": 2},
                                    output={"push_to_hub": True, "hub_model_id": "someone/kk"}))
    out = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    ledger = json.loads((tmp_path / "run" / "cost.json").read_text("utf-8"))
    push = ledger["sessions"][1]
    assert push["status"] == "finished" and push["phases"]["save"] > 0 and push["phases"]["train"] == 0
    assert ledger["status"] == "finished" and ledger["billed_seconds"] == pytest.approx(
        sum(x["billed_seconds"] for x in ledger["sessions"]))
    assert [c[1] for c in fake_hub.calls if c[0] == "commit"] == ["someone/kk"]
    card = (tmp_path / "run" / "adapter" / "README.md").read_text("utf-8")
    assert "| Sessions | 2 |" in card


def test_a_preempted_merge_is_billed_and_said_in_one_line(lora_run, tmp_path, monkeypatch):
    """SIGTERM (a spot preemption) used to kill `arzan merge` with no message and no bill."""
    import os
    import shutil
    import signal
    import time

    from typer.testing import CliRunner

    import arzan.export as export
    from arzan.cli import app

    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    before = len(json.loads((run / "cost.json").read_text("utf-8"))["sessions"])

    def preempted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM should have stopped the merge")

    monkeypatch.setattr(export, "_merge", preempted)
    result = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 130 and "merge interrupted" in result.output and "Traceback" not in result.output
    sessions = json.loads((run / "cost.json").read_text("utf-8"))["sessions"]
    assert len(sessions) == before + 1 and sessions[-1]["status"] == "interrupted"
    assert not (run / ".arzan-eval.json").exists()
    said = " ".join(result.output.split())  # what was left, by name, and where its time went: no <out> placeholder
    assert "<out>" not in said and "the adapter is untouched, nothing merged was kept; its " in said
    assert f"s are in {run / 'cost.json'} as session {sessions[-1]['index']}, status interrupted" in said
    (tmp_path / "merged.partial").mkdir()
    (tmp_path / "merged.partial" / ".arzan-merge-partial").write_text("")
    again = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "merged")])
    assert f"nothing merged was kept (only the unfinished {tmp_path / 'merged.partial'}, which the next merge " \
           "replaces)" in " ".join(again.output.split())


def test_a_merge_that_passes_the_runs_cap_says_so(lora_run, tmp_path):
    """A merge is not capped (it was asked for by name), but the bill it adds to is: as an eval says it."""
    import shutil

    from typer.testing import CliRunner

    from arzan.cli import app

    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    led = json.loads((run / "cost.json").read_text())
    led["budget"]["max_kzt"], led["status"] = 0.0001, "finished"
    (run / "cost.json").write_text(json.dumps(led))
    out = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "merged"), "--dtype", "float32"])
    assert out.exit_code == 0, out.output
    assert "note: the run's max_kzt cap of 0.00010 ₸ is passed: " in out.output
    assert "spent with this merge (arzan eval and arzan merge are not capped)" in " ".join(out.output.split())
    from arzan.evaluation.runner import past_cap_note

    timed = {"budget": {"max_hours": 0.01}, "money": {"kzt": 1.0}, "billed_seconds": 61.0}  # a time cap: said too
    assert past_cap_note(timed, "merge") == ("the run's max_hours cap of 0.010 h (36s) is passed: 1m01s billed with this "
                                             "merge (arzan eval and arzan merge are not capped)")


def test_a_merge_out_of_memory_is_billed_and_said_in_one_line_exit_1(lora_run, tmp_path, monkeypatch):
    import shutil

    import torch
    from typer.testing import CliRunner

    import arzan.export as export
    from arzan.cli import app

    run = tmp_path / "run"
    shutil.copytree(lora_run[0], run)
    before = len(json.loads((run / "cost.json").read_text("utf-8"))["sessions"])

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.96 GiB")

    monkeypatch.setattr(export, "_merge", oom)
    result = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "merged")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert said.startswith("error: the merge failed (OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 "
                           "GiB); a merge loads the whole base unquantised")
    assert "its minutes are in the run's cost.json, status failed" in said and "error.log" in said
    sessions = json.loads((run / "cost.json").read_text("utf-8"))["sessions"]
    assert len(sessions) == before + 1 and sessions[-1]["status"] == "failed"
    assert "OutOfMemoryError" in (run / "error.log").read_text("utf-8")


def test_merging_a_run_that_has_no_adapter_yet_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: t\n", encoding="utf-8")
    (run / "cost.json").write_text(json.dumps({"status": "running"}), encoding="utf-8")
    with pytest.raises(ArzanError, match=r"this run has no adapter to merge yet \(its status is running\)"):
        merge_adapter(run)
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # killed before it saved an adapter: no training will ever save one, so do not say "wait"
    (run / "cost.json").write_text(json.dumps({"status": "running", "sessions": [
        {"host": socket.gethostname(), "pid": dead.pid}]}), encoding="utf-8")
    with pytest.raises(ArzanError, match=rf"killed before its training saved an adapter .*arzan train --resume {run}$"):
        merge_adapter(run)


def test_a_failed_evaluation_after_training_still_pushes_the_adapter(write_recipe, fake_hub, tmp_path, monkeypatch):
    """The training is complete and its adapter saved: an lm-eval that failed after it (a hub
    benchmark out of reach) is no reason to skip the upload the recipe asked for."""
    from typer.testing import CliRunner

    from arzan import runtime
    from arzan.cli import app
    from tests.conftest import base_recipe

    def fails(recipe, folder, meter):
        raise ArzanError("lm-eval: the hub would not serve the data")

    monkeypatch.setattr(runtime, "evaluate_after_training", fails)
    path = write_recipe(base_recipe(train={"max_steps": 2, "logging_steps": 1, "save_steps": 2},
                                    eval={"tasks": ["arzan_kkcopa"], "limit": 2},
                                    output={"push_to_hub": True, "hub_model_id": "someone/kk"}))
    out = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    ledger = json.loads((tmp_path / "run" / "cost.json").read_text("utf-8"))
    assert ledger["status"] == "finished" and "the evaluation after it failed (lm-eval: the hub would not serve " \
        "the data)" in ledger["status_reason"]
    assert [c[1] for c in fake_hub.calls if c[0] == "commit"] == ["someone/kk"], out.output
