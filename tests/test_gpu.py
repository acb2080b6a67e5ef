"""On a CUDA GPU only (marked `gpu`, skipped on CPU with the reason): the real backends train.

Run on a lent GPU machine with `python -m pytest -q -m gpu`. The tiny model keeps it to seconds;
throughput on the real 8B architecture is bench/throughput.py's GPU mode, not a test.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from arzan.recipe import load_recipe
from tests.conftest import base_recipe

pytestmark = pytest.mark.gpu


def _train(write_recipe, tmp_path, backend: str, **model):
    from arzan.train import train

    recipe = base_recipe(train={"max_steps": 30, "per_device_train_batch_size": 8, "max_length": 96,
                                "learning_rate": 2e-3, "logging_steps": 5, "save_steps": 15},
                         cost={"gpu": "H100"}, eval={"generation_check": True, "max_new_tokens": 16})
    recipe["model"] = {**recipe["model"], "backend": backend, **model}
    return train(load_recipe(write_recipe(recipe, f"{backend}.yaml")), out=tmp_path / backend)


def _losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("loss") is not None]


def test_hf_backend_trains_on_the_gpu_and_bills_it(write_recipe, tmp_path):
    result = _train(write_recipe, tmp_path, "hf")
    led = result.ledger
    assert result.status == "finished" and led["hardware"]["device"] == "cuda"
    assert led["model"]["backend"] == "hf" and led["model"]["dtype"] in ("bfloat16", "float16")
    assert led["gpu_hours"] > 0 and led["money"]["usd"] > 0
    losses = _losses(result.run_dir)
    assert losses[-1] < losses[0]


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="unsloth not installed (pip install 'arzan[gpu]')")
def test_unsloth_backend_trains_and_is_named_in_ledger_and_card(write_recipe, tmp_path):
    result = _train(write_recipe, tmp_path, "unsloth")
    led = result.ledger
    assert result.status == "finished" and led["model"]["backend"] == "unsloth"
    assert led["model"]["backend_version"].startswith("unsloth ")
    assert "unsloth" in (result.run_dir / "adapter" / "README.md").read_text(encoding="utf-8")
    losses = _losses(result.run_dir)
    assert losses[-1] < losses[0]


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_qlora_4bit_on_the_hf_backend(write_recipe, tmp_path):
    result = _train(write_recipe, tmp_path, "hf", load_in_4bit=True)
    assert result.status == "finished" and result.ledger["model"]["method"] == "qlora"
