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


def _greedy(model, tok, prompt: str, n: int) -> list[int]:
    from arzan.evaluation.generation import _encode

    ids = torch.tensor([_encode(tok, prompt)])
    with torch.no_grad():
        return model.generate(input_ids=ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()


def test_model_that_stops_passes(tiny):
    model, tok = tiny
    first, second = _greedy(model, tok, "Сәлем!", 2)  # the second greedy token made the EOS: one word, then stop
    assert first != second and tok.decode([first]).strip()
    model.train()
    out = generation_check(model, tok, prompts=["Сәлем!"], max_new_tokens=3, eos_token_id=second)
    assert out["ok"] and out["prompts"][0]["stopped_at_eos"] and out["prompts"][0]["n_tokens"] == 2
    assert out["prompts"][0]["text"] == tok.decode([first]).strip()
    assert out["summary"] == "1/1 answers stopped at EOS"
    assert model.training  # the caller's mode is restored
    model.eval()


def test_an_empty_answer_is_not_a_pass(tiny):
    """EOS as the first token: it "stops", but says nothing; the check used to call that a pass."""
    model, tok = tiny
    first = _greedy(model, tok, "Сәлем!", 1)[0]
    model.eval()
    out = generation_check(model, tok, prompts=["Сәлем!"], max_new_tokens=3, eos_token_id=first)
    assert out["prompts"][0]["stopped_at_eos"] and out["prompts"][0]["text"] == ""
    assert not out["ok"] and out["empty"] == 1 and "1 is empty" in out["summary"]


def test_a_turn_end_the_tokenizer_names_counts_even_when_the_generation_config_names_another(tiny):
    """Llama-3.1: generation_config may list only <|end_of_text|>; the chat turn ends with <|eot_id|>."""
    model, tok = tiny
    token = _greedy(model, tok, "Сәлем!", 2)[1]
    saved = (model.generation_config.eos_token_id, tok.eos_token)
    try:
        model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|pad|>")  # never produced
        tok.eos_token = tok.convert_ids_to_tokens(token)  # the turn end the fine-tune does produce
        out = generation_check(model, tok, prompts=["Сәлем!"], max_new_tokens=3)
    finally:
        model.generation_config.eos_token_id, tok.eos_token = saved
    assert out["ok"] and out["prompts"][0]["stopped_at_eos"]
