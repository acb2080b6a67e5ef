"""Cost: a price catalog, a ledger, and a meter that keeps the ledger while the model trains."""

from arzan.cost.ledger import (
    Ledger,
    apply_totals,
    money_for,
    new_ledger,
    per_million,
    read_ledger,
    write_ledger,
)
from arzan.cost.prices import (
    Exchange,
    Price,
    PriceEntry,
    canonical_gpu,
    load_catalog,
    lookup,
    prices_table,
    resolve_exchange,
    resolve_price,
)


def __getattr__(name: str):
    """CostMeter imports transformers (seconds); `arzan prices` should not pay for that."""
    if name == "CostMeter":
        from arzan.cost.meter import CostMeter

        return CostMeter
    raise AttributeError(name)


__all__ = [
    "CostMeter", "Exchange", "Ledger", "Price", "PriceEntry", "apply_totals", "canonical_gpu", "load_catalog",
    "lookup", "money_for", "new_ledger", "per_million", "prices_table", "read_ledger", "resolve_exchange",
    "resolve_price", "write_ledger",
]
