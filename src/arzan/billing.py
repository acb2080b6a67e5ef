"""What a run is billed at and capped by: the price (the recipe's, the command line's, or the
catalog's for the GPU that is there), the caps, and the lines that say both before a step is paid.

Kept apart from train.py and resume.py because `arzan estimate`, a new run and a resume must price
and cap a run the same way.
"""

from __future__ import annotations

from typing import Any

from arzan.cost.prices import Exchange, Price, resolve_exchange, resolve_price
from arzan.errors import ArzanError
from arzan.recipe import BudgetSection, Recipe


def _detected_gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken driver must not stop the bill from being written
        return None


def price_for(recipe: Recipe) -> tuple[Price, Exchange]:
    """The recipe's price (a user figure beats the catalog); on a GPU nobody named, the catalog's
    cheapest entry for the GPU that is actually there, if the catalog knows it."""
    c = recipe.cost
    exchange = resolve_exchange(c.usd_kzt)
    gpu = c.gpu
    if gpu is None and c.usd_per_gpu_hour is None and c.kzt_per_gpu_hour is None:
        detected = _detected_gpu()
        if detected:
            try:
                from arzan.cost.prices import canonical_gpu

                gpu = canonical_gpu(detected)
            except ArzanError:
                gpu = None
    price = resolve_price(gpu=gpu, provider=c.provider, usd_per_gpu_hour=c.usd_per_gpu_hour,
                          kzt_per_gpu_hour=c.kzt_per_gpu_hour, gpu_count=c.gpu_count,
                          overhead_s=c.overhead_minutes * 60, pricing=c.pricing, exchange=exchange)
    return price, exchange


def cap_line(recipe: Recipe) -> str | None:
    """The caps this session runs under, as read: `--budget 1,500h` is 1,500 hours, and a misread
    figure must show before it costs anything."""
    from arzan.numbers import amount, hms

    b = recipe.budget
    caps = [f"{amount(v)} {unit}" for v, unit in ((b.max_kzt, "₸"), (b.max_usd, "$")) if v is not None]
    if b.max_hours is not None:  # --budget 1m reads 0.017 h: the clock time says what was meant
        caps.append(f"{amount(b.max_hours)} h" + (f" ({hms(b.max_hours * 3600)})" if b.max_hours < 1 else ""))
    return f"budget cap: {', '.join(caps)}" if caps else None


def price_line(recipe: Recipe) -> str:
    """What this session is billed at and where that figure comes from, said before it starts:
    `--gpu A100` alone takes the catalog's cheapest A100 offer, which may be a spot machine the
    user is not renting."""
    from arzan.cost.prices import load_catalog
    from arzan.numbers import fixed

    price, exchange = price_for(recipe)
    per_hour = f"{price.usd_per_gpu_hour:.2f} $/h ≈ {fixed(price.usd_per_gpu_hour * exchange.usd_kzt, 0)} ₸/h"
    count = f" × {price.gpu_count} GPUs" if price.gpu_count > 1 else ""
    if price.pricing == "user":
        if price.usd_per_gpu_hour == 0:
            return "billed at 0 ₸: no price for this machine (--price USD_PER_GPU_HOUR bills your own rate)"
        return f"billed at your price: {per_hour}{count}"
    offers = [e for e in load_catalog().prices if e.gpu == price.gpu and e.min_gpus <= price.gpu_count]
    line = (f"billed as {price.gpu}{count} at {price.provider} ({price.pricing}): {per_hour} per GPU "
            f"(catalog, {price.source}, {price.as_of})")
    if recipe.cost.provider is None and len(offers) > 1:
        others = sorted({e.provider for e in offers} - {price.provider})
        line += (f"; the cheapest of {len(offers)} offers, not necessarily yours: --provider "
                 f"{'/'.join(others[:3])} or --price USD_PER_GPU_HOUR")
    return line


def unbindable_cap(recipe: Recipe) -> str | None:
    """A money cap at a price of 0 (a CPU, a GPU the catalog does not know, no --price) never stops
    anything: say so before the run, instead of letting the user believe the cap guards them."""
    b = recipe.budget
    money_caps = [f"{n} {v:g}" for n, v in (("max_kzt", b.max_kzt), ("max_usd", b.max_usd)) if v is not None]
    if not money_caps or price_for(recipe)[0].usd_per_gpu_hour > 0:
        return None
    return (f"{' and '.join(money_caps)} cannot stop this run: its price is 0 (no GPU price is known here); "
            "give --price USD_PER_GPU_HOUR, --gpu with --provider, or cap the time with --budget 2h")


def given_terms(cost_overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The price flags the command line actually gave (--price, --gpu, --provider; None is "not given")."""
    return {k: v for k, v in (cost_overrides or {}).items() if v is not None}


def with_terms(recipe: Recipe, budget: BudgetSection | None = None,
               cost_overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe with the command line's price and budget folded in.

    The run folder's recipe.yaml is written from this, so it records the terms the run started on
    and `--resume` keeps them. `--budget 5000KZT` sets one cap and keeps the recipe's others.
    """
    r = recipe.model_copy(deep=True)
    update = given_terms(cost_overrides)
    if update.get("usd_per_gpu_hour") is not None:
        update["kzt_per_gpu_hour"] = None  # one price: the one given last
    elif update.get("gpu") is not None or update.get("provider") is not None:
        update["usd_per_gpu_hour"] = update["kzt_per_gpu_hour"] = None  # a catalog GPU: its catalog price
    if update:
        r.cost = r.cost.model_copy(update=update)
    if budget is not None:
        r.budget = r.budget.model_copy(update=budget.model_dump(include=budget.model_fields_set))
    return r
