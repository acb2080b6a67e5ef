"""The generation check flags a model that never stops and passes one that does."""

from __future__ import annotations

import pytest

from arzan.evaluation import default_prompts, generation_check

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arzan.tiny import tiny_model_dir

    path = tiny_model_dir()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def test_default_prompts_are_kazakh():
    prompts = default_prompts()
    assert len(prompts) >= 3 and all(any("\u0400" <= ch <= "\u04ff" for ch in p) for p in prompts)


def test_model_that_never_stops_is_flagged(tiny):
    model, tok = tiny
    never = tok.convert_tokens_to_ids("<|pad|>")  # an EOS the model will not produce
    out = generation_check(model, tok, prompts=["Сәлем!", "Астана қай елде?"], max_new_tokens=6,
                           eos_token_id=never)
    assert not out["ok"] and out["stopped"] == 0 and out["total"] == 2
    assert all(p["n_tokens"] == 6 and not p["stopped_at_eos"] for p in out["prompts"])
    assert "ran to the 6-token limit" in out["summary"]


def test_model_that_stops_passes(tiny):
    from arzan.evaluation.generation import _encode

    model, tok = tiny
    with torch.no_grad():  # the model's own first greedy token, made the EOS: it must stop there
        token = int(model(torch.tensor([_encode(tok, "Сәлем!")])).logits[0, -1].argmax())
    model.train()
    out = generation_check(model, tok, prompts=["Сәлем!"], max_new_tokens=3, eos_token_id=token)
    assert out["ok"] and out["prompts"][0]["stopped_at_eos"] and out["prompts"][0]["n_tokens"] == 1
    assert out["summary"] == "1/1 answers stopped at EOS"
    assert model.training  # the caller's mode is restored
    model.eval()


def test_a_turn_end_the_tokenizer_names_counts_even_when_the_generation_config_names_another(tiny):
    """Llama-3.1: generation_config may list only <|end_of_text|>; the chat turn ends with <|eot_id|>."""
    from arzan.evaluation.generation import _encode

    model, tok = tiny
    with torch.no_grad():
        token = int(model(torch.tensor([_encode(tok, "Сәлем!")])).logits[0, -1].argmax())
    saved = (model.generation_config.eos_token_id, tok.eos_token)
    try:
        model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|pad|>")  # never produced
        tok.eos_token = tok.convert_ids_to_tokens(token)  # the turn end the fine-tune does produce
        out = generation_check(model, tok, prompts=["Сәлем!"], max_new_tokens=3)
    finally:
        model.generation_config.eos_token_id, tok.eos_token = saved
    assert out["ok"] and out["prompts"][0]["stopped_at_eos"]
