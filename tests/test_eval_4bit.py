"""Which base a fine-tune is scored on: a QLoRA run on its 4-bit base, as it was trained.

The 4-bit load itself needs CUDA and bitsandbytes (tests/test_gpu.py scores a QLoRA run that way);
here, on a CPU, the decision, what eval.json records, and the one-line errors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arzan.errors import ArzanError
from arzan.evaluation.runner import _in_4bit
from arzan.evaluation.targets import resolve_target
from tests.conftest import SHARED_DATA

pytest.importorskip("lm_eval")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory) -> Path:
    """A run folder whose recipe trained on a 4-bit base (the adapter itself is an ordinary LoRA)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arzan.tiny import TINY_MODEL_NAME, tiny_model_dir

    run = tmp_path_factory.mktemp("runs") / "qlora"
    base = tiny_model_dir()
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(run / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(run / "adapter")
    cfg_file = run / "adapter" / "adapter_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "base_model_name_or_path": TINY_MODEL_NAME}))
    (run / "recipe.yaml").write_text(f"name: qlora\nmodel:\n  name: {TINY_MODEL_NAME}\n  load_in_4bit: true\n")
    return run


def test_the_recipe_says_whether_the_base_was_4bit(qlora_run, tmp_path):
    assert resolve_target(qlora_run).trained_4bit
    assert resolve_target(qlora_run / "adapter").trained_4bit  # the adapter folder inside its run
    loose = tmp_path / "loose"  # an adapter copied out of its run: nothing says how it was trained
    shutil.copytree(qlora_run / "adapter", loose)
    assert not resolve_target(loose).trained_4bit


def test_as_trained_on_a_gpu_explicit_otherwise(qlora_run, monkeypatch):
    target = resolve_target(qlora_run)
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if has_bnb:
        assert _in_4bit(target, "cuda", None) == (True, None)
    else:
        with pytest.raises(ArzanError, match=r"needs bitsandbytes .*--no-load-in-4bit"):
            _in_4bit(target, "cuda", None)
    assert _in_4bit(target, "cuda", False) == (False, None)
    four_bit, note = _in_4bit(target, "cpu", None)  # a QLoRA run scored at home on a CPU
    assert not four_bit and "trained on a 4-bit base" in note
    with pytest.raises(ArzanError, match="--load-in-4bit needs a CUDA GPU"):
        _in_4bit(target, "cpu", True)


@pytest.mark.skipif(not (SHARED_DATA / "kkCOPA.jsonl").is_file(), reason=f"shared Kazakh eval data not at {SHARED_DATA}")
def test_eval_json_records_the_base_it_scored_on(qlora_run):
    from arzan.evaluation import run_eval

    doc = run_eval(qlora_run, tasks="arzan_kkcopa", limit=4, data_dir=SHARED_DATA, device="cpu")
    assert doc["model"]["load_in_4bit"] is False
    assert doc["tasks"]["arzan_kkcopa"]["base_4bit"] is False
    assert "trained on a 4-bit base" in doc["note"]
    on_disk = json.loads((qlora_run / "eval.json").read_text(encoding="utf-8"))
    assert on_disk["tasks"]["arzan_kkcopa"]["base_4bit"] is False and "note" not in on_disk


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or __import__("torch").cuda.is_available(),
                    reason="on a CUDA machine --load-in-4bit loads")
def test_cli_asking_for_4bit_on_a_cpu_is_one_line(qlora_run):
    from arzan.cli import app

    result = CliRunner().invoke(app, ["eval", str(qlora_run), "--tasks", "arzan_kkcopa", "--load-in-4bit"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--load-in-4bit needs a CUDA GPU" in result.output


def test_the_recipe_pins_the_bases_revision(qlora_run, tmp_path):
    """A run pinned to a Hub revision of its base is scored on that revision, not on main."""
    run = tmp_path / "pinned"
    shutil.copytree(qlora_run, run)
    text = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(text.replace("  load_in_4bit: true\n", "  load_in_4bit: true\n  revision: 0a1b2c3\n"))
    assert resolve_target(run).revision == "0a1b2c3" and resolve_target(qlora_run).revision is None
