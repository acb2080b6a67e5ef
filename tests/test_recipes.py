"""Every shipped recipe must load, price and build an SFTConfig, and its data section must work on
local stand-ins that have the hub datasets' columns: a typo found after renting a GPU costs money."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from arzan.cli import app
from arzan.data import load_data, prepare_data
from arzan.errors import ArzanError
from arzan.model import choose_backend, load_model
from arzan.recipe import DataSource, load_recipe
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
KAZAKH = [p for p in RECIPES if p.stem.startswith("kazakh-")]
STANDINS = REPO / "tests" / "fixtures" / "standins"
ids = [p.stem for p in RECIPES]


def standin_for(hub: str) -> Path:
    return STANDINS / (hub.replace("/", "__") + ".jsonl")


def with_standins(recipe):
    """The recipe's data section with each `hub:` swapped for its local stand-in; format, columns,
    licence and a fractional sample kept, so the mapping under test is the recipe's own. A sample of
    N rows is the real set's (6,000 of 52,201): a stand-in of a few rows is taken whole."""
    def swap(src: DataSource) -> DataSource:
        if src.hub is None:
            return src
        whole = src.sample is not None and src.sample > 1
        return DataSource.model_validate({**src.model_dump(), "hub": None, "path": str(standin_for(src.hub)),
                                         **({"sample": None} if whole else {})})

    return recipe.data.model_copy(update={"sources": [swap(s) for s in recipe.data.sources],
                                          "eval_sources": [swap(s) for s in recipe.data.eval_sources]})


def test_the_kazakh_recipes_are_all_here():
    assert {p.stem for p in KAZAKH} == {"kazakh-llama31-8b-colab-a100", "kazakh-llama31-8b-t4-free",
                                        "kazakh-llama31-8b-h100", "kazakh-llama32-3b-l4"}


@pytest.mark.parametrize("path", RECIPES, ids=ids)
def test_recipe_loads_prices_and_builds_an_sft_config(path, tmp_path):
    from trl import SFTConfig

    from arzan.billing import price_for

    recipe = load_recipe(path)
    assert recipe.name == path.stem  # runs/<name> then matches the file a user launched
    kwargs = recipe.train.sft_kwargs() | {"bf16": False, "fp16": False}
    SFTConfig(output_dir=str(tmp_path), use_cpu=True, **kwargs)  # every train: value TRL would reject
    price, exchange = price_for(recipe)
    if recipe.cost.gpu:
        assert price.gpu == recipe.cost.gpu and exchange.usd_kzt > 0
    if recipe.cost.provider:
        assert price.provider == recipe.cost.provider and price.usd_per_gpu_hour > 0 and price.source.startswith("http")


@pytest.mark.parametrize("path", KAZAKH, ids=[p.stem for p in KAZAKH])
def test_recipe_header_says_what_how_where_and_how_much(path):
    text = path.read_text("utf-8")
    assert text.startswith(f"# {path.stem} — ")
    header = text.split("\nname:")[0]
    for word in ("Launch:", "Override:", "Resume:", "GPU:", "Expected:", "DERIVED, NOT MEASURED", "Sources:",
                 f"arzan train recipes/{path.name}", "₸"):
        assert word in header, word


@pytest.mark.parametrize("path", KAZAKH, ids=[p.stem for p in KAZAKH])
def test_data_section_runs_on_standins_with_the_hub_columns(path, tiny_tokenizer):
    recipe = load_recipe(path)
    for src in recipe.data.sources:
        assert src.hub and src.license, "Kazakh recipes read public hub data and state its licence"
        assert standin_for(src.hub).is_file(), f"add a stand-in for {src.hub} under {STANDINS}"
    section = with_standins(recipe)
    rows = sum(len(standin_for(s.hub).read_text("utf-8").splitlines()) for s in recipe.data.sources)
    prepared = prepare_data(section, tiny_tokenizer, recipe.train.max_length, REPO)
    kept = len(prepared.train) + (len(prepared.eval) if prepared.eval is not None else 0)
    assert kept == rows, "no stand-in row may lose its answer to truncation or masking"
    assert prepared.trained_tokens > 0
    assert all(any(mask) for mask in prepared.train["assistant_masks"])
    assert [s.license for s in prepared.sources] == [s.license for s in recipe.data.sources]


def test_dolly_columns_map_context_into_the_user_turn():
    recipe = load_recipe(REPO / "recipes" / "kazakh-llama31-8b-colab-a100.yaml")
    raw = load_data(with_standins(recipe), REPO)
    rows = raw.train.to_list() + (raw.eval.to_list() if raw.eval is not None else [])
    convs = [json.loads(r["messages"]) for r in rows]
    closed_qa = next(c for c in convs if "Мәтін бойынша Алматы" in c[0]["content"])
    assert "Іле Алатауының бөктерінде" in closed_qa[0]["content"]  # context_kz -> input -> user turn
    assert closed_qa[1] == {"role": "assistant", "content": "Алматы Іле Алатауының бөктерінде орналасқан."}
    no_context = next(c for c in convs if c[0]["content"].startswith("Абай Құнанбаев"))
    assert no_context[0]["content"] == "Абай Құнанбаев кім болған?"  # a null context adds nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU-only machine does")
@pytest.mark.parametrize("path", KAZAKH, ids=[p.stem for p in KAZAKH])
def test_backend_on_a_cpu(path):
    recipe = load_recipe(path)
    if recipe.model.backend == "unsloth":
        with pytest.raises(ArzanError) as err:
            load_model(recipe)  # refused before any download
        assert "unsloth" in str(err.value) and "CUDA" in str(err.value) and "\n" not in str(err.value)
    else:
        assert choose_backend(recipe.model.backend) == ("hf", "no CUDA GPU")


def test_both_backend_choices_are_exercised():
    assert {load_recipe(p).model.backend for p in KAZAKH} == {"unsloth", "auto"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU-only machine does")
def test_cli_on_a_cpu_stops_at_the_backend_with_one_line(tmp_path):
    """End to end: data from the stand-ins loads fine, then `backend: unsloth` stops the run."""
    raw = yaml.safe_load((REPO / "recipes" / "kazakh-llama31-8b-colab-a100.yaml").read_text("utf-8"))
    for src in raw["data"]["sources"]:
        src["path"] = str(standin_for(src.pop("hub")))
    path = tmp_path / "kazakh.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1, result.output
    assert "needs a CUDA GPU" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before data, download or folder: the fixed rerun just works


def test_original_lora_matches_the_published_336_mb_adapter():
    """r=64 on all seven projections of the real Llama-3.1-8B architecture (built on the meta device:
    no weights, no download) = 167,772,160 parameters = 335.5 MB in 16-bit."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    recipe = load_recipe(REPO / "recipes" / "kazakh-llama31-8b-colab-a100.yaml")
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                         tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    lo = recipe.lora
    peft_model = get_peft_model(model, LoraConfig(r=lo.r, lora_alpha=lo.lora_alpha, target_modules=lo.target_modules,
                                                  task_type="CAUSAL_LM"))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert trainable == 167_772_160
    assert round(trainable * 2 / 1e6) == 336
