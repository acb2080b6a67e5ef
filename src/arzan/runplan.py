"""What the trainer will do with a recipe: tokens per epoch, steps, evaluations, checkpoints.

Counted by the trainer's own data path (`arzan.data.load_data` + `tokenize_data`, i.e.
`prepare_data`) with the recipe's tokenizer and nothing else loaded, then scheduled the way
transformers' Trainer and TRL's SFTTrainer schedule it (packing, padding, accumulation, epochs), so
that `arzan estimate` prices the batches that will actually be paid for.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arzan.errors import ArzanError, first_line
from arzan.recipe import Recipe

SAMPLE_ROWS = 20_000  # above this many rows, tokenize a seeded sample and scale up


# --- tokens -------------------------------------------------------------------------------------
@dataclass
class Tokens:
    """One pass over the training data as the trainer will see it."""

    rows: int  # training sequences after tokenization (packed sequences when packing)
    seen: int  # per epoch
    trained: int  # per epoch
    context: float  # tokens of attention context, averaged per token
    padding: float  # padded / real tokens of the training micro-batches
    eval_rows: int = 0
    eval_seen: int = 0
    eval_padding: float = 1.0
    data_seconds: float = 0.0
    extrapolated: str | None = None
    truncated: list[str] = field(default_factory=list)  # rows max_length drops or cuts short (data.Truncation)


def _padding(lengths: list[int], batch: int, seed: int, shuffle: bool = True) -> float:
    """Padded/real tokens: the collator pads each micro-batch to its longest row."""
    if not lengths:
        return 1.0
    order = list(lengths)
    pads = []
    for s in range(3 if shuffle else 1):
        if shuffle:
            random.Random(seed + s).shuffle(order)
        pads.append(sum(max(order[i:i + batch]) * len(order[i:i + batch]) for i in range(0, len(order), batch)))
    return sum(pads) / len(pads) / sum(lengths)


def count_tokens(recipe: Recipe, tokenizer: Any = None, sample_rows: int | None = None) -> Tokens:
    """Tokenize the recipe's data exactly as `arzan train` does; sample and scale up above `sample_rows`."""
    from arzan.data import RawData, load_data, tokenize_data

    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(recipe, tokenizer)
    limit = sample_rows or SAMPLE_ROWS
    t0 = time.perf_counter()
    raw = load_data(recipe.data, recipe.base_dir)  # its progress bars stay: a hub download can be long
    load_s = time.perf_counter() - t0
    scale, note = 1.0, None
    if len(raw.train) > limit:
        scale = len(raw.train) / limit
        note = (f"tokenized a seeded sample of {limit:,} of {len(raw.train):,} rows (seed {recipe.data.seed}) "
                f"and scaled counts by {scale:.2f}")
        pick = lambda ds, n: ds.shuffle(seed=recipe.data.seed).select(range(min(n, len(ds))))  # noqa: E731
        ev = raw.eval and pick(raw.eval, max(1, round(len(raw.eval) / scale)))
        raw = RawData(pick(raw.train, limit), ev or None, raw.sources)
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # an estimate prints one table, not a progress bar per map()
    try:
        t1 = time.perf_counter()
        data = tokenize_data(raw, tokenizer, recipe.data, recipe.train.max_length)
        tok_s = time.perf_counter() - t1
    finally:
        if bars:
            datasets.enable_progress_bars()
    tr = recipe.train
    lengths = [len(x) for x in data.train["input_ids"]]
    masks = data.train["assistant_masks"]
    seen, trained = sum(lengths), sum(sum(m) for m in masks)
    context = sum(n * n for n in lengths) / max(seen, 1)  # attention context per token: sum(l^2)/sum(l)
    rows, padding = len(lengths), _padding(lengths, tr.per_device_train_batch_size, tr.seed)
    # TRL: bfd packing implies padding-free; padding_free alone holds only with varlen attention
    # (train.sft_config turns it off on hf + sdpa), so such a recipe pays for its padding
    from arzan.train import varlen_attention

    backend = "hf" if recipe.model.backend == "hf" else "unsloth"  # auto: unsloth on the GPU it is estimated for
    flat = tr.packing or (bool(getattr(tr, "padding_free", False)) and varlen_attention(recipe, backend))
    if tr.packing:
        rows = _packed_rows(data.train, tr.max_length, getattr(tr, "packing_strategy", None) or "bfd")
    if flat:  # one flattened row per micro-batch: no padding, and each document's first label is masked
        padding = 1.0
        trained -= sum(1 for m in masks if m and m[0])
        if recipe.model.backend == "hf" and "flash" not in str(recipe.model.attn_implementation or ""):
            row = tr.max_length if tr.packing else seen / max(len(lengths), 1)
            context = tr.per_device_train_batch_size * row  # sdpa attends across the whole flat row
    ev_len = [len(x) for x in data.eval["input_ids"]] if data.eval is not None else []
    return Tokens(rows=round(rows * scale), seen=round(seen * scale), trained=round(trained * scale),
                  context=context, padding=padding, eval_rows=round(len(ev_len) * scale),
                  eval_seen=round(sum(ev_len) * scale),
                  eval_padding=1.0 if flat else _padding(ev_len, tr.per_device_eval_batch_size, 0, False),
                  data_seconds=load_s + tok_s * scale, extrapolated=note,
                  truncated=[n + (" (in the sample)" if note else "") for n in data.truncation_notes()])


def _packed_rows(train: Any, max_length: int, strategy: str) -> int:
    from trl.data_utils import pack_dataset

    return len(pack_dataset(train.select_columns(["input_ids"]), max_length, strategy))


def load_tokenizer(recipe: Recipe, path: str | Path | None = None, purpose: str = "to count tokens") -> Any:
    """Only the tokenizer: a few MB, where the model would be gigabytes. `path`: a local copy of it.

    Also how `arzan train` checks model.name before a run folder exists (`model.check_model_name`):
    one loader, so a typo, a gated repo or a folder without a tokenizer reads the same everywhere.
    """
    from transformers import AutoTokenizer

    from arzan.model import resolve_model_name

    m = recipe.model
    field, shown = (f"--tokenizer {path}", str(path)) if path is not None else ("model.name", m.name)
    name = str(path) if path is not None else resolve_model_name(m.name)
    local = Path(name).expanduser()
    if local.is_dir() and not any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                  "tokenizer.model")):
        raise ArzanError(f"{field}: '{shown}' is a folder with no tokenizer (tokenizer.json or "
                         "tokenizer_config.json); give a model folder saved with save_pretrained, or a Hub id")
    try:
        if path is not None:
            tokenizer = AutoTokenizer.from_pretrained(name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except Exception as exc:  # OSError/ValueError from the hub, the tokenizers backend or a bad folder
        first = first_line(exc)
        hint = " (it needs the hub once, or --tokenizer DIR with a local copy)" if purpose == "to count tokens" else ""
        raise ArzanError(f"{field}: cannot load the tokenizer of '{shown}' {purpose}: {first}{hint}") from None
    _check_chat_template(recipe, tokenizer, field, shown)
    return tokenizer


def _check_chat_template(recipe: Recipe, tokenizer: Any, field: str, shown: str) -> None:
    """Chat-format data without a chat template (a base model such as Llama-3.1-8B, not -Instruct)
    would fail at the data step, after the model download and a billed setup. Refused here, on the
    kilobytes of the tokenizer; arzan never picks a template for a model (both backends alike)."""
    chat = sorted({s.format for s in [*recipe.data.sources, *recipe.data.eval_sources]} & {"alpaca", "messages"})
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ArzanError(f"{field}: '{shown}' has no chat template, which data format '{chat[0]}' needs; use "
                         "the model's instruct version, or data format text or prompt_completion")


# --- the run: steps, rows, evaluations, checkpoints, as transformers' Trainer schedules them ----
@dataclass
class Plan:
    steps: int
    micro_batches: int
    epochs: float
    seen: int
    trained: int
    compute_tokens: float  # seen tokens plus the padding the collator adds
    evals: int
    eval_compute_tokens: float  # over all evaluations
    saves: int


def plan_run(recipe: Recipe, tokens: Tokens) -> Plan:
    """Trainer.set_initial_training_values: ceil(batches / accumulation) updates per epoch, epochs
    cycled until max_steps; DefaultFlowCallback saves (and evaluates) at the last step too."""
    tr = recipe.train
    n, bs, ga = max(tokens.rows, 1), tr.per_device_train_batch_size, tr.gradient_accumulation_steps
    batches = math.ceil(n / bs)
    per_epoch = math.ceil(batches / ga)
    steps = tr.max_steps if tr.max_steps > 0 else math.ceil(tr.num_train_epochs * per_epoch)
    full, rest = divmod(steps, per_epoch)
    epochs = full + min(rest * ga * bs, n) / n
    strategy = getattr(tr, "eval_strategy", None) or ("steps" if tr.eval_steps else "epoch")  # as train.sft_config
    if tokens.eval_rows == 0 or strategy == "no":
        evals = 0
    else:
        evals = math.ceil(steps / (tr.eval_steps or tr.logging_steps)) if strategy == "steps" else math.ceil(epochs)
    return Plan(steps=steps, micro_batches=full * batches + rest * ga, epochs=epochs,
                seen=round(tokens.seen * epochs), trained=round(tokens.trained * epochs),
                compute_tokens=tokens.seen * epochs * tokens.padding, evals=evals,
                eval_compute_tokens=evals * tokens.eval_seen * tokens.eval_padding,
                saves=math.ceil(steps / tr.save_steps))
