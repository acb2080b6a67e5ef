"""The unsloth backend's wiring, on a CPU, against a stand-in `unsloth` module.

Unsloth itself refuses to import without a CUDA GPU, so on CPU CI the real backend cannot run. These
tests check what arzan hands it (the recipe's fields reach `FastLanguageModel.from_pretrained` and
`get_peft_model` under unsloth's own argument names; the llama-3.1 template is applied only when the
tokenizer has none; the ledger and the model card name the backend and its version). The stand-in
records calls and builds the tiny model with transformers + peft; nothing it returns is presented as
an unsloth measurement. The real unsloth run is `tests/test_gpu.py` (marked `gpu`) and bench/.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from arzan import model as arzan_model
from arzan.recipe import load_recipe
from tests.conftest import base_recipe


class StandInFastLanguageModel:
    calls: dict[str, dict] = {}

    @classmethod
    def from_pretrained(cls, **kw):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cls.calls["from_pretrained"] = kw
        tokenizer = AutoTokenizer.from_pretrained(kw["model_name"])
        return AutoModelForCausalLM.from_pretrained(kw["model_name"]), tokenizer

    @classmethod
    def get_peft_model(cls, model, **kw):
        from peft import LoraConfig, get_peft_model

        cls.calls["get_peft_model"] = kw
        return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=kw["r"], lora_alpha=kw["lora_alpha"],
                                                target_modules=kw["target_modules"]))


@pytest.fixture
def stand_in_unsloth(monkeypatch):
    """`import unsloth` finds the stand-in, and this CPU says it has CUDA for the backend choice only."""
    StandInFastLanguageModel.calls = {}
    unsloth = types.ModuleType("unsloth")
    unsloth.__spec__ = importlib.machinery.ModuleSpec("unsloth", None)
    unsloth.FastLanguageModel = StandInFastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", unsloth)
    monkeypatch.setattr(arzan_model, "cuda_available", lambda: True)
    monkeypatch.setattr(arzan_model, "_UNSLOTH_IMPORT_ERROR", [])
    return StandInFastLanguageModel.calls


def _recipe(write_recipe, **model):
    r = base_recipe(lora={"r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    r["model"] = {**r["model"], **model}
    r["train"] = {**r["train"], "max_length": 80, "seed": 7}
    return load_recipe(write_recipe(r))


def test_auto_picks_unsloth_where_cuda_and_unsloth_are_present(stand_in_unsloth, write_recipe):
    assert arzan_model.choose_backend("auto") == ("unsloth", None)
    assert arzan_model.choose_backend("unsloth") == ("unsloth", None)
    assert arzan_model.choose_backend("hf") == ("hf", None)


def test_recipe_fields_reach_unsloth_under_its_own_argument_names(stand_in_unsloth, write_recipe, tiny_dir):
    recipe = _recipe(write_recipe, backend="unsloth", load_in_4bit=True)
    model, tokenizer, info = arzan_model.load_model(recipe)
    loaded, peft = stand_in_unsloth["from_pretrained"], stand_in_unsloth["get_peft_model"]
    assert loaded["model_name"] == str(tiny_dir) and loaded["max_seq_length"] == 80
    assert loaded["load_in_4bit"] is True and loaded["dtype"] is None  # dtype auto: unsloth picks bf16/fp16
    assert loaded["use_exact_model_name"] is True and loaded["trust_remote_code"] is False
    assert (peft["r"], peft["lora_alpha"], peft["lora_dropout"]) == (16, 32, 0.0)
    assert peft["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert peft["use_gradient_checkpointing"] == "unsloth" and peft["random_state"] == 7
    assert (info.name, info.method, info.device, info.requested) == ("unsloth", "qlora", "cuda", "unsloth")
    assert info.version.startswith("unsloth ") and info.trainable_params > 0
    assert tokenizer.pad_token is not None


def test_checkpointing_off_in_the_recipe_is_off_in_unsloth(stand_in_unsloth, write_recipe):
    recipe = _recipe(write_recipe, backend="auto")
    recipe.train.gradient_checkpointing = False
    arzan_model.load_model(recipe)
    assert stand_in_unsloth["get_peft_model"]["use_gradient_checkpointing"] is False


def test_unsloths_load_errors_are_one_line_naming_the_field(stand_in_unsloth, write_recipe, monkeypatch):
    """unsloth wraps a hub error in a multi-line RuntimeError; arzan shows the cause's first line."""
    from arzan.errors import ArzanError

    def failing(**kw):
        try:
            raise OSError("Repository Not Found for url: https://huggingface.co/x\nmore")
        except OSError as cause:
            raise RuntimeError("Unsloth: Failed to load model.\n\nAutoConfig error: ...") from cause

    monkeypatch.setattr(StandInFastLanguageModel, "from_pretrained", staticmethod(failing))
    with pytest.raises(ArzanError) as err:
        arzan_model.load_model(_recipe(write_recipe, backend="unsloth"))
    assert str(err.value).startswith("model.name: cannot load") and "Repository Not Found" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_model_without_a_chat_template_is_refused_before_a_folder_for_chat_data(write_recipe, tiny_dir, tmp_path):
    """A base model (Llama-3.1-8B, not -Instruct) has no chat template: alpaca data would fail after
    the download and a billed setup (hf) or get a template unsloth chose (unsloth). Refused on the
    tokenizer alone, by train and estimate; text data needs no template and passes."""
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from arzan.cli import app

    bare = tmp_path / "base-model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    (bare / "config.json").write_text((tiny_dir / "config.json").read_text("utf-8"), "utf-8")
    r = base_recipe()
    r["model"] = {**r["model"], "name": str(bare)}
    path = write_recipe(r)
    for args in (["train", str(path), "--out", str(tmp_path / "run")], ["estimate", str(path)]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
        assert "has no chat template, which data format 'alpaca' needs" in " ".join(out.output.split()), out.output
    assert not (tmp_path / "run").exists()
    from arzan.runplan import load_tokenizer

    r["data"]["sources"] = [{**r["data"]["sources"][0], "format": "text"}]
    assert load_tokenizer(load_recipe(write_recipe(r))).chat_template is None


def test_ledger_and_model_card_name_the_unsloth_backend_and_version(stand_in_unsloth, write_recipe, tmp_path):
    from arzan.cost.ledger import new_ledger
    from arzan.cost.meter import CostMeter
    from arzan.cost.prices import Price, resolve_exchange
    from arzan.modelcard import read_front_matter, write_card
    from arzan.runtime import record_backend

    recipe = _recipe(write_recipe, backend="auto")
    _, _, info = arzan_model.load_model(recipe)
    exchange = resolve_exchange()
    meter = CostMeter(tmp_path / "cost.json", new_ledger("t", Price(), exchange), Price(), exchange)
    record_backend(meter, info)
    ledger = meter.ledger.model_dump(mode="json")
    assert ledger["model"]["backend"] == "unsloth" and ledger["model"]["backend_version"] == info.version
    card = write_card(tmp_path / "README.md", recipe, ledger)
    assert "unsloth" in read_front_matter(card)["tags"]
    assert f"unsloth ({info.version})" in card.read_text(encoding="utf-8")
