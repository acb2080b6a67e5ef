"""On a CUDA GPU only (marked `gpu`, skipped on CPU with the reason): the real backends train.

Run on a lent GPU machine with `python -m pytest -q -m gpu`. The tiny model keeps it to seconds;
throughput on the real 8B architecture is bench/throughput.py's GPU mode, not a test.

Each training is its own `arzan train` process: importing unsloth replaces trl's SFTTrainer and
transformers' training loop for the rest of a process, so an hf run after an unsloth run in one
pytest process would silently train on unsloth's code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import REPO, SHARED_DATA, base_recipe

pytestmark = pytest.mark.gpu


def _train(write_recipe, tmp_path, backend: str, **model):
    recipe = base_recipe(train={"max_steps": 30, "per_device_train_batch_size": 8, "max_length": 96,
                                "learning_rate": 2e-3, "logging_steps": 5, "save_steps": 15},
                         cost={"gpu": "H100"}, eval={"generation_check": True, "max_new_tokens": 16})
    recipe["model"] = {**recipe["model"], "backend": backend, **model}
    out = tmp_path / backend
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", "from arzan.cli import run; run()", "train",
                           str(write_recipe(recipe, f"{backend}.yaml")), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ledger = json.loads((out / "cost.json").read_text(encoding="utf-8"))
    return SimpleNamespace(status=ledger["status"], ledger=ledger, run_dir=out)


def _writer(folder):
    def write(data, name):
        (folder / name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return folder / name
    return write


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    return _train(_writer(folder), folder, "hf")


@pytest.fixture(scope="module")
def unsloth_run(tmp_path_factory):
    if importlib.util.find_spec("unsloth") is None:
        pytest.skip("unsloth not installed (pip install 'arzan[gpu]')")
    folder = tmp_path_factory.mktemp("unsloth")
    return _train(_writer(folder), folder, "unsloth")


def _losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("loss") is not None]


def _hardware_dtype() -> str:
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def test_hf_backend_trains_on_the_gpu_and_bills_it(hf_run):
    led = hf_run.ledger
    assert hf_run.status == "finished" and led["hardware"]["device"] == "cuda"
    assert led["hardware"]["gpu_count"] == 1  # one GPU trained and billed, however many are visible
    assert led["model"]["backend"] == "hf" and led["model"]["dtype"] == _hardware_dtype()  # no emulated bf16
    assert led["gpu_hours"] > 0 and led["money"]["usd"] > 0
    # NVML reads the energy counter where nvidia-ml-py is installed (extra `gpu`); else H100's TDP × time
    assert led["energy"]["method"] == ("nvml" if importlib.util.find_spec("pynvml") else "tdp"), led["energy"]
    assert led["energy"]["kwh"] > 0
    losses = _losses(hf_run.run_dir)
    assert losses[-1] < losses[0]


def test_unsloth_backend_trains_and_is_named_in_ledger_and_card(unsloth_run):
    led = unsloth_run.ledger
    assert unsloth_run.status == "finished" and led["model"]["backend"] == "unsloth"
    assert led["model"]["backend_version"].startswith("unsloth ") and led["model"]["dtype"] == _hardware_dtype()
    assert "unsloth" in (unsloth_run.run_dir / "adapter" / "README.md").read_text(encoding="utf-8")
    losses = _losses(unsloth_run.run_dir)
    assert losses[-1] < losses[0]


def test_both_backends_train_on_the_same_tokens(hf_run, unsloth_run):
    """The README's claim: one masking rule (arzan's own assistant masks) serves both backends, so the
    same recipe trains on the same tokens, whichever backend ran it (no packing here)."""
    assert unsloth_run.ledger["tokens"]["trained"] == hf_run.ledger["tokens"]["trained"]


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_qlora_4bit_on_the_hf_backend(write_recipe, tmp_path):
    result = _train(write_recipe, tmp_path, "hf", load_in_4bit=True)
    assert result.status == "finished" and result.ledger["model"]["method"] == "qlora"
    if (SHARED_DATA / "kkCOPA.jsonl").is_file():  # scored as trained: on the same NF4 base
        from arzan.evaluation import run_eval

        doc = run_eval(result.run_dir, tasks="arzan_kkcopa", limit=8, data_dir=SHARED_DATA)
        assert doc["model"]["load_in_4bit"] is True and doc["tasks"]["arzan_kkcopa"]["base_4bit"] is True
        assert 0.0 <= doc["tasks"]["arzan_kkcopa"]["acc"] <= 1.0
