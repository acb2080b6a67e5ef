"""The price catalog: what a GPU-hour costs, in dollars and tenge, and who said so.

Prices live in ``resources/prices.yaml`` (data, not code) so a student can correct a stale figure
without reading Python. Every figure carries its source and date, and a price the user types in
wins over the catalog and is recorded as ``source: "user"``: the bill must say where it came from.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.table import Table

from arzan.errors import ArzanError

Pricing = Literal["on-demand", "spot", "compute-units", "user"]
_PROVIDER_ALIASES = {"vastai": "vast", "lambdalabs": "lambda", "googlecolab": "colab"}


class Price(BaseModel):
    """The price a run is billed at; the ledger's ``price`` section."""

    provider: str | None = None
    gpu: str | None = None
    pricing: Pricing = "user"
    usd_per_gpu_hour: float = Field(0.0, ge=0)
    gpu_count: int = Field(1, ge=1)
    source: str = "user"
    as_of: str | None = None
    overhead_s: float = Field(0.0, ge=0)


class Exchange(BaseModel):
    usd_kzt: float = Field(gt=0)
    source: str
    as_of: str | None = None


class GridFactor(BaseModel):
    region: str
    kg_co2_per_kwh: float = Field(ge=0)
    source: str
    as_of: str | None = None
    note: str = ""


class PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str
    gpu: str
    variant: str = ""
    pricing: Pricing
    usd_per_gpu_hour: float | None = Field(None, ge=0)
    units_per_hour: float | None = Field(None, gt=0)  # compute-units pricing only
    min_gpus: int = 1
    vram_gb: float | None = None
    tdp_watts: float | None = None
    source: str
    as_of: str
    note: str = ""


class Catalog(BaseModel):
    exchange: Exchange
    grid: GridFactor
    colab_usd_per_unit: float
    gpus: dict[str, dict[str, float]]
    aliases: dict[str, str]
    prices: list[PriceEntry]

    @model_validator(mode="after")
    def _fill(self) -> Catalog:
        """Derive compute-unit prices and copy GPU specs into entries, so each row stands alone."""
        for e in self.prices:
            if e.gpu not in self.gpus:
                raise ValueError(f"price entry {e.provider}/{e.gpu}: unknown gpu, add it under gpus:")
            if e.usd_per_gpu_hour is None:
                if e.units_per_hour is None:
                    raise ValueError(f"price entry {e.provider}/{e.gpu}: needs usd_per_gpu_hour or units_per_hour")
                e.usd_per_gpu_hour = round(e.units_per_hour * self.colab_usd_per_unit, 4)
            e.vram_gb = e.vram_gb or self.gpus[e.gpu].get("vram_gb")
            e.tdp_watts = e.tdp_watts or self.gpus[e.gpu].get("tdp_watts")
        return self


def _key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for prefix in ("nvidia", "tesla", "geforce"):
        key = key.removeprefix(prefix)
    return key


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    raw = yaml.safe_load(resources.files("arzan").joinpath("resources/prices.yaml").read_text("utf-8"))
    return Catalog(
        exchange=raw["exchange"],
        grid=raw["grid"],
        colab_usd_per_unit=raw["colab_compute_unit"]["usd_per_unit"],
        gpus=raw["gpus"],
        aliases={str(k): v for k, v in raw["aliases"].items()},
        prices=raw["prices"],
    )


def canonical_gpu(name: str) -> str:
    """Map 'a100', 'NVIDIA A100-SXM4-80GB', 'Tesla T4' ... to a catalog name, or raise."""
    cat = load_catalog()
    table = {_key(g): g for g in cat.gpus} | {_key(a): g for a, g in cat.aliases.items()}
    if (found := table.get(_key(name))) is not None:
        return found
    raise ArzanError(f"unknown GPU '{name}'; known GPUs: {', '.join(cat.gpus)} (another GPU is priced by your own figure: cost.usd_per_gpu_hour, or --price on arzan train)")


def canonical_provider(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return _PROVIDER_ALIASES.get(key, key)


def check_provider(name: str) -> str:
    """A provider the catalog prices, by its canonical name; a typo is an error, not an empty table."""
    prov = canonical_provider(name)
    known = sorted({e.provider for e in load_catalog().prices})
    if prov not in known:
        raise ArzanError(f"--provider: '{name}' is not in the price catalog ({', '.join(known)}); "
                         "for another provider give your own price (cost.usd_per_gpu_hour, or --price on arzan train)")
    return prov


def lookup(gpu: str, provider: str | None = None, pricing: str | None = None, gpu_count: int = 1) -> PriceEntry:
    """The cheapest catalog entry that fits; several fit when a provider sells tiers (SXM/PCIe...)."""
    cat = load_catalog()
    name = canonical_gpu(gpu)
    rows = [e for e in cat.prices if e.gpu == name]
    if not rows:
        raise ArzanError(f"no catalog price for {name}; give your own: cost.usd_per_gpu_hour, or --price on arzan train")
    if provider is not None:
        prov = canonical_provider(provider)
        sold_by = sorted({e.provider for e in rows})
        rows = [e for e in rows if e.provider == prov]
        if not rows:
            raise ArzanError(
                f"no price for {name} at '{provider}'; {name} is listed at: {', '.join(sold_by) or 'nobody'}; "
                f"providers: {', '.join(sorted({e.provider for e in cat.prices}))}"
            )
    if pricing is not None:
        kinds = sorted({e.pricing for e in rows})
        rows = [e for e in rows if e.pricing == pricing]
        if not rows:
            where = f" at {provider}" if provider else ""
            raise ArzanError(f"no {pricing} price for {name}{where}; have: {', '.join(kinds)}")
    fits = [e for e in rows if e.min_gpus <= gpu_count]
    if not fits:
        raise ArzanError(f"{name} there is sold only in {min(e.min_gpus for e in rows)}-GPU instances")
    return min(fits, key=lambda e: e.usd_per_gpu_hour)


def resolve_exchange(usd_kzt: float | None = None) -> Exchange:
    if usd_kzt is not None:
        return Exchange(usd_kzt=usd_kzt, source="user", as_of=date.today().isoformat())
    return load_catalog().exchange.model_copy()


def grid_factor(kg_co2_per_kwh: float | None = None) -> float:
    return load_catalog().grid.kg_co2_per_kwh if kg_co2_per_kwh is None else kg_co2_per_kwh


def resolve_price(
    gpu: str | None = None,
    provider: str | None = None,
    usd_per_gpu_hour: float | None = None,
    kzt_per_gpu_hour: float | None = None,
    gpu_count: int = 1,
    overhead_s: float = 0.0,
    *,
    pricing: str | None = None,
    exchange: Exchange | None = None,
) -> Price:
    """A user's price beats the catalog; with neither a price nor a GPU (a CPU run) it is 0 USD/h."""
    if usd_per_gpu_hour is not None and kzt_per_gpu_hour is not None:
        raise ArzanError("give a price in USD or in KZT per GPU-hour, not both")
    gpu_name = canonical_gpu(gpu) if gpu else None
    if kzt_per_gpu_hour is not None:
        usd_per_gpu_hour = kzt_per_gpu_hour / (exchange or resolve_exchange()).usd_kzt
    if usd_per_gpu_hour is None and provider:
        check_provider(provider)  # priced from the catalog (or 0 on a CPU): it must know the provider
    if usd_per_gpu_hour is not None or gpu_name is None:
        return Price(
            provider=canonical_provider(provider) if provider else None,
            gpu=gpu_name,
            pricing="user",
            usd_per_gpu_hour=usd_per_gpu_hour or 0.0,
            gpu_count=gpu_count,
            source="user",
            as_of=date.today().isoformat(),
            overhead_s=overhead_s,
        )
    e = lookup(gpu_name, provider, pricing, gpu_count)
    return Price(
        provider=e.provider,
        gpu=e.gpu,
        pricing=e.pricing,
        usd_per_gpu_hour=e.usd_per_gpu_hour,
        gpu_count=gpu_count,
        source=e.source,
        as_of=e.as_of,
        overhead_s=overhead_s,
    )


def prices_table(gpu: str | None = None, currency: str = "KZT") -> Table:
    """`arzan prices`: every row shows its source and date, cheapest first.

    Sources are numbered and listed in full under the table: a URL in a column would fold into
    a dozen fragments on an 80-column terminal or in a Colab cell."""
    from rich import box

    cur = currency.upper()
    if cur not in ("KZT", "USD"):
        raise ArzanError(f"unknown currency '{currency}'; use KZT or USD")
    cat = load_catalog()
    rate = cat.exchange.usd_kzt
    rows = [e for e in cat.prices if gpu is None or e.gpu == canonical_gpu(gpu)]
    rows.sort(key=lambda e: (e.usd_per_gpu_hour, e.gpu, e.provider))
    sources = list(dict.fromkeys(e.source for e in rows))
    title = f"GPU price per hour · 1 USD = {rate:g} ₸ ({cat.exchange.as_of}, source [0])"
    caption = "\n".join([f"[0] {cat.exchange.source}"] + [f"[{i}] {u}" for i, u in enumerate(sources, start=1)])
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col, just in [("GPU", "left"), ("Offer", "left"), ("₸/h" if cur == "KZT" else "$/h", "right"),
                      ("$/h" if cur == "KZT" else "₸/h", "right"), ("VRAM", "right"), ("Source", "left"),
                      ("As of", "left")]:
        table.add_column(col, justify=just, overflow="fold")
    for e in rows:
        kzt, usd = f"{e.usd_per_gpu_hour * rate:,.0f}", f"{e.usd_per_gpu_hour:.2f}"
        first, second = (kzt, usd) if cur == "KZT" else (usd, kzt)
        variant = e.variant + (f" (min {e.min_gpus} GPUs)" if e.min_gpus > 1 else "")
        offer = " · ".join(x for x in (e.provider, variant, e.pricing) if x)
        table.add_row(e.gpu, offer, first, second, f"{e.vram_gb:g} GB" if e.vram_gb else "",
                      f"[{sources.index(e.source) + 1}]", e.as_of)
    return table
