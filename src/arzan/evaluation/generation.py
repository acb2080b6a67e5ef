"""Does the fine-tune answer in Kazakh and then stop?

Why this check exists: a LoRA trained without the end-of-turn token in its loss mask scores fine
on log-likelihood benchmarks (they never ask the model to stop) yet rambles until max_new_tokens
in every chat; that bug is invisible in the numbers above and obvious in three sample answers.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import ArzanError


def default_prompts() -> list[str]:
    path = Path(str(resources.files("arzan") / "resources" / "generation_prompts_kk.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ArzanError(f"{path}: expected `prompts:` as a list of strings")
    return prompts


def _eos_ids(model: Any, tokenizer: Any, eos_token_id: int | list[int] | None) -> set[int]:
    """The given ids, else every id the model's generation config and the tokenizer call EOS: a
    Llama-3.1 config may list only <|end_of_text|> while the chat template ends turns with <|eot_id|>."""
    sources = [eos_token_id] if eos_token_id is not None else [
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None)]
    ids = {i for c in sources if c is not None for i in (c if isinstance(c, (list, tuple, set)) else [c])}
    if not ids:
        raise ArzanError("the model and tokenizer name no EOS token, so stopping cannot be checked")
    return ids


def _encode(tokenizer: Any, prompt: str) -> list[int]:
    """Chat template when there is one (that is how the fine-tune will be used), else raw text."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def generation_check(model: Any, tokenizer: Any, prompts: list[str] | None = None,
                     max_new_tokens: int = 128, eos_token_id: int | list[int] | None = None) -> dict:
    """Greedy answers to a few prompts; each says whether it ended with EOS and how long it was.

    Returns {"prompts": [{prompt, text, stopped_at_eos, n_tokens}], "stopped", "empty", "total",
    "ok", "summary"}; `ok` is false when any answer ran to `max_new_tokens` without an EOS, or is
    empty (EOS at once: a model that learnt to stop but not to answer).
    """
    import torch

    prompts = prompts or default_prompts()
    eos = _eos_ids(model, tokenizer, eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    try:
        for prompt in prompts:
            ids = torch.tensor([_encode(tokenizer, prompt)], device=device)
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=sorted(eos), pad_token_id=pad)
            new = out[0, ids.shape[1]:].tolist()
            stop = next((i for i, t in enumerate(new) if t in eos), None)
            kept = new if stop is None else new[:stop]
            text = tokenizer.decode(kept, skip_special_tokens=True).strip()
            results.append({"prompt": prompt, "text": text, "stopped_at_eos": stop is not None,
                            "n_tokens": len(new) if stop is None else stop + 1})
    finally:
        model.train(was_training)
    stopped = sum(r["stopped_at_eos"] for r in results)
    empty = sum(1 for r in results if not r["text"])
    summary = f"{stopped}/{len(results)} answers stopped at EOS"
    if stopped < len(results):
        summary += (f"; {len(results) - stopped} ran to the {max_new_tokens}-token limit: the model may "
                    "never stop (too few steps to learn it yet, or the end-of-turn token outside the trained "
                    "assistant mask?)")
    if empty:
        summary += (f"; {empty} {'is' if empty == 1 else 'are'} empty: the model stops before answering "
                    "(too few steps, or EOS trained right after the prompt?)")
    return {"prompts": results, "stopped": stopped, "empty": empty, "total": len(results),
            "ok": stopped == len(results) and not empty, "summary": summary}
