"""The offline tiny model and the shipped sample data: deterministic, cached, and trainable as-is."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from arzan import tiny

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Мына санды цифрмен жаз: қырық екі"


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny.tiny_model_dir(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def test_build_is_deterministic_across_processes(tiny_dir, tmp_path):
    # a fresh process: tokenizer training and weight init must not depend on hash seeds or RNG state
    code = "import sys; from arzan.tiny import tiny_model_dir; print(tiny_model_dir(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    other = Path(out)
    assert other.name == tiny_dir.name
    assert _digest(other) == _digest(tiny_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(
        _digest(tiny_dir))


def test_cache_is_reused_and_env_respected(tiny_dir, monkeypatch):
    def no_build(out):
        raise AssertionError("rebuilt although the cache was there")

    monkeypatch.setattr(tiny, "_build", no_build)
    assert tiny.tiny_model_dir(tiny_dir.parent) == tiny_dir
    monkeypatch.setenv("ARZAN_CACHE", str(tiny_dir.parent))
    assert tiny.tiny_model_dir() == tiny_dir
    assert tiny_dir.name.startswith("tiny-llama-kk-")


def test_concurrent_builder_wins_race_cleanly(tmp_path, monkeypatch):
    final = tmp_path / f"tiny-llama-kk-{tiny._version_hash()}"

    def racing_build(out):  # another process finishes first while we are still building
        (out / "mine.txt").write_text("ours")
        final.mkdir()
        (final / "theirs.txt").write_text("theirs")

    monkeypatch.setattr(tiny, "_build", racing_build)
    assert tiny.tiny_model_dir(tmp_path) == final
    assert [p.name for p in final.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == [final.name]  # no temp dir left behind


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken_build(out):
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "_build", broken_build)
    with pytest.raises(RuntimeError):
        tiny.tiny_model_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_is_tiny():
    assert tiny.is_tiny(tiny.TINY_MODEL_NAME)
    assert tiny.is_tiny("Arzan/Tiny-Llama-KK/")
    assert not tiny.is_tiny("meta-llama/Llama-3.2-1B-Instruct")


def test_model_loads_and_stops_at_eot(tiny_dir, tok):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert tok.eos_token == "<|eot_id|>" and tok.eos_token_id == eot
    assert tok.bos_token == "<|begin_of_text|>" and tok.pad_token == "<|pad|>"
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert model.generation_config.eos_token_id == eot
    assert model.config.vocab_size == len(tok)
    assert 500 <= len(tok) <= 2048


@pytest.mark.parametrize("text", [
    QUESTION,
    "Жеті мен бестің қосындысы қанша?  Қазақстан, ӘҒҚҢӨҰҮҺІ әғқңөұүһі!",
    "unseen: Ёлка ǵ 日本 🙂\n\ttabs",
])
def test_tokenizer_round_trips(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok(text)["input_ids"][0] == tok.bos_token_id


def test_sample_words_are_compact(tok):
    # trained on our own text: common Kazakh words are single tokens, not byte soup
    assert len(tok(QUESTION, add_special_tokens=False)["input_ids"]) <= 10


def test_chat_template_masks_answer_and_eot_only(tok):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "42"}]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    trained = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained) == "42<|eot_id|>"
    assert trained[-1] == tok.eos_token_id
    prompt = tok.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True,
                                      return_dict=True)["input_ids"]
    assert ids[: len(prompt)] == prompt  # the generation prompt is exactly the training prefix
    assert not any(mask[: len(prompt)])
    assert all(mask[len(prompt):])
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def _rows() -> list[dict]:
    return [json.loads(line) for line in tiny.sample_data_path().read_text("utf-8").splitlines()]


def test_sample_data_shape():
    rows = _rows()
    assert 300 <= len(rows) <= 600
    assert all(list(r) == ["instruction", "input", "output"] for r in rows)
    assert all(isinstance(v, str) for r in rows for v in r.values())
    assert all(r["instruction"].strip() and r["output"].strip() and r["input"] == "" for r in rows)
    assert len({r["instruction"] for r in rows}) == len(rows)
    assert all(len(r["output"]) <= 30 for r in rows)  # short enough for a tiny model
    assert any("қ" in r["instruction"] for r in rows)  # Kazakh Cyrillic, not Russian
    assert {"instruction": QUESTION, "input": "", "output": "42"} in rows


def test_generator_reproduces_committed_file(tmp_path):
    out = tmp_path / "kk.jsonl"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_data.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == tiny.sample_data_path().read_bytes()


def test_number_words():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_sample_data as gen
    finally:
        sys.path.pop(0)
    assert gen.words(0) == "нөл"
    assert gen.words(42) == "қырық екі"
    assert gen.words(100) == "жүз"
    assert gen.words(123) == "жүз жиырма үш"
    assert gen.words(905) == "тоғыз жүз бес"
    assert f"{gen.conj(7)} {gen.genitive(5)}" == "жеті мен бестің"
    assert f"{gen.conj(18)} {gen.genitive(13)}" == "он сегіз бен он үштің"
