"""Shared fixtures: the offline tiny model, recipe files in tmp folders, the shared Kazakh data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]

# The models here are tiny: one thread beats two on a shared 2-core box (measured: 26 s vs 392 s
# for the same 1000 steps while other jobs ran), and CI is such a box.
import torch  # noqa: E402

torch.set_num_threads(1)
SHARED_DATA = Path(os.environ.get("ARZAN_KK_EVAL_DIR") or REPO.parent / "shared" / "data" / "kazakh-eval")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip with a reason on a machine without CUDA instead of failing."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(_tiny_cache) -> Path:
    from arzan.tiny import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(autouse=True, scope="session")
def _tiny_cache(tmp_path_factory):
    """Every test (and every CLI run inside a test) builds the tiny model in one tmp cache."""
    os.environ["ARZAN_CACHE"] = str(tmp_path_factory.mktemp("arzan-cache-env"))
    yield


def base_recipe(**sections) -> dict:
    """A small valid recipe on the tiny model and the shipped sample data; tests change one part."""
    recipe = {
        "name": "t",
        "model": {"name": "arzan/tiny-llama-kk", "backend": "auto"},
        "lora": {"r": 8, "lora_alpha": 16},
        "data": {"sources": [{"path": "arzan://sample/kk_arith.jsonl", "format": "alpaca", "sample": 64}]},
        "train": {"max_length": 96, "max_steps": 4, "per_device_train_batch_size": 8,
                  "gradient_accumulation_steps": 1, "learning_rate": 2e-3, "logging_steps": 1, "save_steps": 2},
    }
    for key, value in sections.items():
        recipe[key] = value
    return recipe


@pytest.fixture
def write_recipe(tmp_path):
    def write(data: dict | str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    return write
