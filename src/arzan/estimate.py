"""`arzan estimate`: what a run will cost on every catalog GPU, before one is rented.

Tokens the trainer will see (`runplan`: counted through the trainer's own data path) x hardware
FLOPs per token (`vram`) / what the GPU sustains (`throughput`: measured or derived, and it says
which), plus setup, checkpoints and the adapter save, x the catalog price. Speeds are *seen* tokens
per second, as the ledger's `tokens.per_second`, because compute scales with every token in a batch,
not only those with labels; the same arithmetic (`money_for`) turns seconds into tenge, so an
estimate and the bill that follows it can be compared line by line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arzan.cost.ledger import money_for
from arzan.cost.prices import (
    Exchange,
    Price,
    load_catalog,
    resolve_exchange,
    resolve_price,
)
from arzan.errors import ArzanError
from arzan import numbers
from arzan.numbers import amount, fixed, hms
from arzan.recipe import Recipe
from arzan.runplan import Plan, Tokens, count_tokens, plan_run
from arzan.throughput import Table, load_table, model_shape
from arzan.vram import ModelShape, Vram, estimate_vram, estimate_vram_both, size_label


# --- one place to run it -----------------------------------------------------------------------
@dataclass
class Option:
    device: str  # catalog GPU name, or "cpu"
    price: Price
    backend: str
    tokens_per_s: float | None  # seen tokens per train second, as the ledger's tokens.per_second
    basis: str  # measured | derived | unknown
    source: str
    phases: dict[str, float] = field(default_factory=dict)  # as the ledger's phases
    eval_s: float = 0.0  # inside "train": the Trainer evaluates from within train()
    billed_seconds: float | None = None
    usd: float | None = None
    kzt: float | None = None
    vram_gb: float | None = None  # the card's
    fits: bool | None = None  # with the recipe's gradient-checkpointing setting
    fits_other: bool | None = None  # with the other setting (checkpointing turned off, or on)

    @property
    def hours(self) -> float | None:
        return None if self.billed_seconds is None else self.billed_seconds / 3600


@dataclass
class Estimate:
    recipe: str
    model: str
    shape: ModelShape
    method: str
    lora_params: int
    tokens: Tokens
    plan: Plan
    vram: Vram  # on a GPU, with the backend the GPU rows assume and the recipe's checkpointing setting
    exchange: Exchange
    options: list[Option]  # every catalog GPU: those it fits on first, each group cheapest first
    target: Option | None  # how `arzan train` would bill this recipe here (its price, this machine's speed)
    target_label: str = "this machine"
    notes: list[str] = field(default_factory=list)
    vram_other: Vram | None = None  # the same run with gradient checkpointing the other way

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data for `arzan estimate --json`."""
        d = asdict(self)
        for o, od in zip([self.target, *self.options], [d["target"], *d["options"]]):
            if o is not None:
                od["price"], od["hours"] = o.price.model_dump(), o.hours
        d["exchange"] = self.exchange.model_dump()
        return d


def estimate(recipe: Recipe, gpu: str | None = None, provider: str | None = None, sample_rows: int | None = None,
             *, size_hint: str | None = None, table: Table | None = None, tokenizer: Any = None) -> Estimate:
    """Time and money of `recipe` on every catalog GPU (or `gpu`), and on the machine it would run on now."""
    from arzan.model import resolve_model_name
    from arzan.billing import price_for

    table = table or load_table()
    shape = model_shape(recipe, size_hint, table)
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        from arzan.runplan import load_tokenizer

        tokenizer = load_tokenizer(recipe, tokenizer)
    tokens = count_tokens(recipe, tokenizer, sample_rows)
    mismatch = _tokenizer_mismatch(tokenizer, shape)
    plan = plan_run(recipe, tokens)
    lo, qlora = recipe.lora, recipe.model.load_in_4bit
    lora = shape.lora_params(lo.r, lo.target_modules)
    method = "qlora" if qlora else "lora"
    hub = not Path(resolve_model_name(recipe.model.name)).is_dir()
    gpu_backend = "hf" if recipe.model.backend == "hf" else "unsloth"
    # on a GPU checkpointing is on unless the recipe turns it off (train.py; unsloth's own kind likewise)
    gpu_ckpt = recipe.train.gradient_checkpointing is not False
    micro = recipe.train.per_device_train_batch_size * recipe.train.max_length
    full = sum(shape.embedding_params for m in lo.modules_to_save or [] if m in ("embed_tokens", "lm_head"))
    def vram_with(backend: str) -> tuple[Vram, Vram]:
        return estimate_vram_both(shape, lora_params=lora, micro_batch_tokens=micro, qlora=qlora,
                                  checkpointing=gpu_ckpt, backend=backend, extra_trainable=full)

    vram, vram_other = vram_with(gpu_backend)
    unused = (f"--size {size_hint} not used: the model's own config is known ({shape.source})"
              if size_hint and not shape.source.startswith("size hint") else None)
    notes = [n for n in [mismatch, unused, tokens.extrapolated, *tokens.truncated] if n]
    if recipe.model.backend == "auto":
        notes.append("GPU rows assume backend auto picks unsloth there (arzan[gpu] installed); "
                     "with backend hf they take longer: `--set model.backend=hf` shows how much")
    if recipe.eval.tasks:
        notes.append("lm-eval tasks after training (eval.tasks) are not in the estimate; they are billed as eval")
    if hub:
        notes.append(f"GPU rows include downloading {shape.total_params * 2 / 1e9:.0f} GB of weights from the hub")

    def option(device: str, price: Price, backend: str, ckpt: bool, card_gb: float | None, v: Vram,
               download: bool, other: Vram | None = None) -> Option:
        entry = table.find(device, method, backend, shape.total_params)
        opt = Option(device=device, price=price, backend=backend, tokens_per_s=None, basis="unknown",
                     source=f"no throughput figure for {device}/{method}/{backend} in throughput.yaml",
                     vram_gb=card_gb, fits=None if card_gb is None else v.total <= card_gb,
                     fits_other=None if card_gb is None or other is None else other.total <= card_gb)
        if entry is None:
            return opt
        phases, opt.eval_s = table.phase_seconds(entry, shape, tokens, plan, recipe, lora, ckpt, hub=download)
        opt.phases, opt.basis, opt.source = phases, entry.basis, entry.source
        opt.tokens_per_s = plan.seen / max(phases["train"], 1e-9)
        opt.billed_seconds = sum(phases.values()) + price.overhead_s
        opt.usd, opt.kzt = money_for(opt.billed_seconds, price, exchange)
        return opt

    c = recipe.cost
    exchange = resolve_exchange(c.usd_kzt)  # the same rate price_for uses below
    cat = load_catalog()
    wanted = [gpu] if gpu else list(cat.gpus)
    options = []
    for g in wanted:
        try:
            try:
                price = resolve_price(gpu=g, provider=provider, gpu_count=c.gpu_count,
                                      overhead_s=c.overhead_minutes * 60, pricing=c.pricing, exchange=exchange)
            except ArzanError:
                if c.pricing is None or gpu:  # --gpu G prices G as `arzan train --gpu G` would, or refuses
                    raise
                # the recipe's way of paying (Colab's compute units) exists at one provider only: the
                # other GPUs are priced as they are rented, or the catalog would show Colab alone
                price = resolve_price(gpu=g, provider=provider, gpu_count=c.gpu_count,
                                      overhead_s=c.overhead_minutes * 60, exchange=exchange)
        except ArzanError as exc:
            if gpu:
                raise
            notes.append(f"{g}: {exc}")
            continue
        options.append(option(price.gpu, price, gpu_backend, gpu_ckpt, cat.gpus[price.gpu].get("vram_gb"), vram,
                              download=hub, other=vram_other))
    options.sort(key=lambda o: (o.fits is False, o.usd if o.usd is not None else math.inf))

    price, _ = price_for(recipe)  # exactly how `arzan train` will bill it
    here = _detected_gpu() or "cpu"
    device = price.gpu or here
    priced = c.gpu or c.usd_per_gpu_hour is not None or c.kzt_per_gpu_hour is not None
    where = ", ".join(w for w in ["this machine" if device == here else "", "recipe's price" if priced else ""] if w)
    if device == "cpu":
        if qlora:
            target, notes = None, notes + ["this machine has no CUDA GPU: 4-bit QLoRA cannot run here"]
        else:
            v = estimate_vram(shape, lora_params=lora, micro_batch_tokens=micro, qlora=False,
                              checkpointing=bool(recipe.train.gradient_checkpointing), device="cpu",
                              extra_trainable=full)
            target = option("cpu", price, "hf", bool(recipe.train.gradient_checkpointing), None, v,
                            download=hub and not _cached(recipe))
            if (busy := _cpu_busy()) is not None:
                notes.append(busy)
    else:
        backend = _backend_here(recipe, gpu_backend) if device == here else gpu_backend
        v, other = (vram, vram_other) if backend == gpu_backend else vram_with(backend)  # hf needs more than unsloth
        target = option(device, price, backend, gpu_ckpt, cat.gpus.get(device, {}).get("vram_gb"), v,
                        download=hub and not (device == here and _cached(recipe)), other=other)
    return Estimate(recipe=recipe.name, model=recipe.model.name, shape=shape, method=method, lora_params=lora,
                    tokens=tokens, plan=plan, vram=vram, exchange=exchange, options=options, target=target,
                    target_label=where or "as `arzan train` bills it", notes=notes, vram_other=vram_other)


def _cached(recipe: Recipe) -> bool:
    """Weights already in this machine's hub cache cost no download here (a rented GPU starts empty)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(recipe.model.name, "config.json", revision=recipe.model.revision),
                          str)
    except Exception:  # an odd name or cache layout: assume a download, the dearer case
        return False


def _backend_here(recipe: Recipe, default: str) -> str:
    """What `arzan train` would pick on this GPU (auto: unsloth only if it is installed)."""
    from arzan.model import choose_backend

    try:
        return choose_backend(recipe.model.backend)[0]
    except ArzanError:
        return default


def _detected_gpu() -> str | None:
    from arzan.billing import _detected_gpu as detected

    name = detected()
    if name is None:
        return None
    try:
        from arzan.cost.prices import canonical_gpu

        return canonical_gpu(name)
    except ArzanError:
        return name


# --- output -------------------------------------------------------------------------------------
def _money(x: float | None, digits: int) -> str:
    return "?" if x is None else fixed(x, digits)


def _cpu_busy() -> str | None:
    from arzan.model import cpu_load

    busy = cpu_load()
    return None if busy is None else (f"this machine is busy (load {busy[0]:.1f} on {busy[1]} cores): the CPU row "
                                      "assumes idle cores, so expect the run to take longer")


def _tokenizer_mismatch(tokenizer: Any, shape: ModelShape) -> str | None:
    """A --tokenizer copy of another model (a tiny one's, an older Llama's) counts other tokens, and
    every figure of the estimate with them: said, not silently priced."""
    n = len(tokenizer)
    if shape.source.startswith("size hint"):  # a shipped config standing in: its vocabulary is not the model's
        return None
    if shape.vocab and abs(n - shape.vocab) > 0.01 * shape.vocab:
        return (f"WARNING: the tokenizer has {n:,} tokens but the model ({shape.source}) has a {shape.vocab:,}-token "
                "vocabulary: it is probably another model's, and the token counts below are not this model's")
    return None


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def kzt_text(x: float | None) -> str:
    """Tenge as printed everywhere (arzan.numbers.kzt): whole tenge from 1,000 up, kopecks below."""
    return "?" if x is None else f"{numbers.kzt(x)} ₸"


def _ckpt_words(v: Vram) -> str:
    return "with gradient checkpointing" if v.checkpointing else "without gradient checkpointing"


_PRICING_SHORT = {"on-demand": "", "spot": "spot", "compute-units": "CU", "user": ""}


def _price_cell(p: Any) -> str:
    """'vast spot', 'colab CU', 'runpod': on-demand is the default and goes unsaid."""
    who = p.provider or p.source
    return f"{who} {_PRICING_SHORT.get(p.pricing, p.pricing)}".strip()


def render(est: Estimate) -> Any:
    """The table `arzan estimate` prints: this machine first, then every catalog GPU."""
    from rich import box
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    t, p, v = est.tokens, est.plan, est.vram
    head = [
        Text(f"{est.recipe}: {est.model} ({size_label(est.shape.total_params)} params, {est.method}, "
             f"{size_label(est.lora_params)} trainable) · config from {est.shape.source}", style="bold"),
        Text(f"tokens: {p.seen:,} seen / {p.trained:,} trained in {p.steps:,} steps ({p.epochs:.2f} epochs of "
             f"{t.rows:,} sequences), {_count(p.evals, 'evaluation')}, {_count(p.saves, 'checkpoint')}"),
        Text(f"GPU memory {_ckpt_words(v)} (the recipe's setting): ~{v.total:.1f} GB = weights {v.weights:.1f} + "
             f"LoRA and optimizer {v.adapter:.1f} + activations {v.activations:.1f} + logits {v.logits:.1f} + "
             f"CUDA and allocator {v.overhead:.1f} (micro-batch of {v.tokens_per_micro_batch:,} tokens)"),
    ]
    w = est.vram_other
    if w is not None:
        trade = ("each layer's forward is recomputed: about a third more compute" if w.checkpointing
                 else "nothing recomputed: faster")
        head.append(Text(f"GPU memory {_ckpt_words(w)}: ~{w.total:.1f} GB (activations {w.activations:.1f}, "
                         f"the rest as above; {trade})"))
    # Narrow enough for an 80-column terminal or a Colab cell: provider and pricing share a cell, the
    # recipe's own row is marked rather than labelled, and the borders are a single rule under the head.
    table = RichTable(box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False, title_justify="left", caption_justify="left",
                      caption=f"▸ {est.target_label}. 1 USD = {est.exchange.usd_kzt:g} ₸ ({est.exchange.source}). "
                              "tok/s: seen tokens per train second, as in the ledger. Rows that do not fit come "
                              "last.")
    other = "w/o ckpt" if est.vram.checkpointing else "with ckpt"
    for col, just in [("GPU", "left"), ("price", "left"), ("VRAM", "right"), ("fits", "center"),
                      (other, "center"), ("tok/s", "right"), ("basis", "left"), ("time", "right"),
                      ("₸", "right"), ("$", "right")]:
        table.add_column(col, justify=just, no_wrap=True)
    t = est.target  # the recipe's own row once: its catalog twin (same GPU, price and figures) is not repeated
    twin = (lambda o: t is not None and (o.device, o.price, o.backend, o.kzt) == (t.device, t.price, t.backend, t.kzt))
    rows = ([(True, t)] if t else []) + [(False, o) for o in est.options if not twin(o)]

    def yes_no(x: bool | None) -> str:
        return "" if x is None else ("yes" if x else "[red]no[/]")

    for mine, o in rows:
        table.add_row(f"▸ {o.device}" if mine else o.device, _price_cell(o.price), f"{o.vram_gb:g} GB"
                      if o.vram_gb else "", yes_no(o.fits), yes_no(o.fits_other), _money(o.tokens_per_s, 0),
                      o.basis, hms(o.billed_seconds), kzt_text(o.kzt).removesuffix(" ₸"),
                      "?" if o.usd is None else numbers.usd(o.usd),
                      style="bold" if mine else None)
    if est.target and est.target.billed_seconds is not None:
        ph = est.target.phases
        head.append(Text(f"{est.target_label}: setup {hms(ph['setup'])} · data {hms(ph['data'])} · train "
                         f"{hms(ph['train'])} ({hms(est.target.eval_s)} of it evaluating) · generation check "
                         f"{hms(ph['eval'])} · save {hms(ph['save'])} · {est.target.source}"))
    notes = [Text(f"note: {n}", style="dim") for n in est.notes]
    return Group(*head, table, *notes)


# --- budget -------------------------------------------------------------------------------------
def check_budget(recipe: Recipe, est: Estimate, option: Option | None = None) -> str | None:
    """Why the run should not start, or None: the estimate for where it will run (or for `option`,
    a catalog row the user asked about with --gpu) against `budget:`."""
    b, o = recipe.budget, option or est.target
    if o is None or o.billed_seconds is None:
        return None
    over = []
    if b.max_kzt is not None and o.kzt > b.max_kzt:
        over.append(f"budget.max_kzt {amount(b.max_kzt)} ₸")
    if b.max_usd is not None and o.usd > b.max_usd:
        over.append(f"budget.max_usd {amount(b.max_usd)} $")
    if b.max_hours is not None and o.hours > b.max_hours:
        over.append(f"budget.max_hours {amount(b.max_hours)} h ({hms(b.max_hours * 3600)})")
    if not over:
        return None
    where = f"{hms(o.billed_seconds)} on {o.device} at {o.price.provider or o.price.source} " \
            f"{o.price.usd_per_gpu_hour:g} $/h"
    return (f"the estimate for '{recipe.name}' is {kzt_text(o.kzt)} ({numbers.usd(o.usd)} $, {where}; "
            f"{o.basis} throughput) and it is over {' and '.join(over)}. Shorten the run (train.max_steps, a data "
            f"sample), choose a cheaper GPU (`arzan estimate` lists them), raise the cap, or start anyway with "
            f"--allow-over-budget (the meter still stops the run at the cap)")


def catalog_within_cap(recipe: Recipe, est: Estimate) -> str | None:
    """The cap against the catalog rows, not only the row the run is billed at: a free CPU row under
    a 1 ₸ cap says nothing of the GPU someone is about to rent."""
    b = recipe.budget
    if b.max_kzt is None and b.max_usd is None and b.max_hours is None:
        return None
    rows = [o for o in est.options if o.billed_seconds is not None and o.fits is not False]
    if not rows:
        return None
    within = [o for o in rows if check_budget(recipe, est, o) is None]
    if not within:
        # the exit status follows the recipe's own row: say so when that row is under the cap
        here = "; the recipe's own row (▸) is within it" if est.target is not None and \
            est.target.billed_seconds is not None and check_budget(recipe, est) is None else ""
        if b.max_kzt is None and b.max_usd is None:  # a time cap: the fastest row is the nearest to it
            fastest = min(rows, key=lambda o: o.billed_seconds)
            return (f"over the cap on every catalog GPU it fits on (the fastest: {fastest.device} at "
                    f"{fastest.price.provider or fastest.price.source}, {hms(fastest.billed_seconds)} billed){here}")
        cheapest = min(rows, key=lambda o: o.kzt)
        return (f"over the cap on every catalog GPU it fits on (the cheapest: {cheapest.device} at "
                f"{cheapest.price.provider or cheapest.price.source}, {kzt_text(cheapest.kzt)}){here}")
    if len(within) == len(rows):
        return "within the cap on every catalog GPU it fits on"
    names = ", ".join(f"{o.device} {o.price.provider or o.price.source}" for o in within)
    return f"within the cap on {len(within)} of the {len(rows)} catalog GPUs it fits on: {names}"


def preflight_budget(recipe: Recipe, allow_over_budget: bool = False,
                     tokenizer: Any = None) -> tuple[str | None, float, int]:
    """For `arzan train`, before the meter starts: refuse a run whose estimate is over its caps.

    Estimates only when a cap is set (it tokenizes the data once more). Returns a line to print (or
    None), the estimated train seconds per step and the planned steps (0 when unknown), which the
    meter uses for its budget checks until it has measured a step; raises ArzanError to refuse. An estimate that
    cannot be made never blocks a run: the meter enforces the caps during training anyway.
    """
    b = recipe.budget
    if b.max_kzt is None and b.max_usd is None and b.max_hours is None:
        return None, 0.0, 0
    try:
        est = estimate(recipe, tokenizer=tokenizer)  # the tokenizer train's model.name check loaded
    except ArzanError as exc:
        return f"budget pre-check skipped: {exc}", 0.0, 0
    o, steps = est.target, est.plan.steps
    step_s = o.phases.get("train", 0.0) / steps if o is not None and o.phases and steps else 0.0
    msg = check_budget(recipe, est)
    if msg is None:
        return None, step_s, steps
    if allow_over_budget:
        return f"starting over budget (--allow-over-budget): {msg}", step_s, steps
    raise ArzanError(f"refusing to start: {msg}")
