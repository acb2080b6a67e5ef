"""An offline tiny Llama and tokenizer, built from the shipped Kazakh sample data.

Why it exists: the tests, the CPU smoke recipe and the notebooks must run the real pipeline
(chat template, assistant mask, LoRA, SFTTrainer, cost ledger) with no network and no model
download, and in seconds. A random-weight Llama with a byte-level BPE trained on our own sample
text is the smallest thing that exercises every code path and still visibly learns.

Recipes name it `arzan/tiny-llama-kk`; `model.py` resolves that name here, never on the Hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

TINY_MODEL_NAME = "arzan/tiny-llama-kk"

# Everything that decides the built files goes into the cache key, so a change to any of it
# builds a fresh directory instead of silently reusing a stale one.
_BUILD = 1
_SEED = 1234
_VOCAB_SIZE = 1024  # an upper bound: the sample text runs out of merges earlier (~760)
# initializer_range=0.1, not Llama's 0.02: LoRA cannot touch the tied embedding/lm_head, and at
# 0.02 their norm caps every logit near 2.5, so the loss stalls at ~5.5 whatever the adapter
# learns. At 0.1 a r=16 LoRA reaches loss ~0.6 in 1000 steps (~26 s on one CPU thread).
_LLAMA = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
    rms_norm_eps=1e-5, initializer_range=0.1, tie_word_embeddings=True,
)
BOS, EOS_TEXT, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"
_SPECIAL = [BOS, EOS_TEXT, "<|start_header_id|>", "<|end_header_id|>", EOT, PAD]

# Llama-3 layout. The {% generation %} block covers the answer *and* <|eot_id|>, so
# return_assistant_tokens_mask trains the model to stop as well as to answer.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def is_tiny(name: str) -> bool:
    """True for the name recipes use, so callers never send it to the Hub."""
    return str(name).strip().rstrip("/").lower() == TINY_MODEL_NAME


def sample_data_path() -> Path:
    """The shipped alpaca JSONL; via importlib.resources so it works from a wheel too."""
    return Path(str(resources.files("arzan") / "resources" / "sample" / "kk_arith.jsonl"))


def _version_hash() -> str:
    import tokenizers
    import torch
    import transformers

    key = {
        "build": _BUILD, "seed": _SEED, "vocab": _VOCAB_SIZE, "llama": _LLAMA,
        "special": _SPECIAL, "template": CHAT_TEMPLATE,
        "data": hashlib.sha256(sample_data_path().read_bytes()).hexdigest(),
        # random init and serialisation may change across releases
        "versions": [torch.__version__, transformers.__version__, tokenizers.__version__],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def tiny_model_dir(cache_dir: Path | str | None = None) -> Path:
    """Build once, then reuse: returns `<cache>/tiny-llama-kk-<hash>`.

    `<cache>` is `cache_dir`, else $ARZAN_CACHE, else ~/.cache/arzan. The build happens in a
    temporary sibling directory that is renamed into place, so a concurrent reader (pytest
    workers, a CLI run) sees either nothing or a complete model, never half of one.
    """
    base = Path(cache_dir or os.environ.get("ARZAN_CACHE") or Path.home() / ".cache" / "arzan")
    final = base.expanduser() / f"tiny-llama-kk-{_version_hash()}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a shared cache should be readable
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not "someone else finished first": a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _corpus() -> list[str]:
    rows = [json.loads(line) for line in sample_data_path().read_text("utf-8").splitlines() if line]
    texts = [r[k] for r in rows for k in ("instruction", "input", "output") if r.get(k)]
    return texts + ["system", "user", "assistant"] * 4  # every chat header holds a role name


def build_tokenizer():
    """Byte-level BPE on our own text: any Unicode still encodes, and Kazakh gets real merges."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE, min_frequency=2, special_tokens=_SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(  # plain text gets BOS, like Llama 3
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, bos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOT, pad_token=PAD,
        additional_special_tokens=[t for t in _SPECIAL if t not in (BOS, EOT, PAD)],
        chat_template=CHAT_TEMPLATE, model_max_length=_LLAMA["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )


def _build(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (BOS, EOT, PAD)}
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=ids[BOS], eos_token_id=ids[EOT],
        pad_token_id=ids[PAD], **_LLAMA,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(_SEED)
        model = LlamaForCausalLM(config)
    # generate() stops at end of turn, the token the chat template puts after every answer
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=ids[EOT], pad_token_id=ids[PAD],
    )
    model.save_pretrained(out)
