"""What a capped run needs to go on: the measured step, another session's overhead, the cap to ask for.

The meter's stop and the refused resume (runtime) both name a cap; one module computes it, so the
two never disagree.
"""

from __future__ import annotations

import math

from arzan.cost.ledger import Ledger, money_for
from arzan.cost.prices import Exchange, Price


def mean_step_seconds(ledger: Ledger) -> float:
    """Train seconds per optimizer step over every session so far (evaluations in training included)."""
    done = sum(max(s.steps[1] - s.steps[0], 0) for s in ledger.sessions)
    return ledger.phases.train / done if done else 0.0


def session_overhead_s(ledger: Ledger) -> float:
    """What another session pays besides its steps: loading the model, tokenizing, saving, as the
    latest session that got that far paid for them."""
    for s in reversed(ledger.sessions):
        if s.phases.setup or s.phases.data:
            return s.phases.setup + s.phases.data + s.phases.save
    return 0.0


def suggest_cap(kind: str, ledger: Ledger, step_s: float, price: Price, exchange: Exchange) -> str:
    """A `--budget` value that would let a capped run finish: spent so far plus the steps left and
    one more session's setup, overhead and closing work (saving, the after-training checks).

    One rule for the stop's hint and the refused resume's, so the two never name different caps:
    the steps are priced at the mean measured step time (`step_s` only before any step was measured)
    and what is still to come gets 10% to spare; on the estimate alone 50%, as an estimate assumes an idle machine (a
    shared one ran the smoke recipe 60% slower), and a too-low hint costs a second paid setup."""
    measured = mean_step_seconds(ledger)
    spare = 1.1 if measured else 1.5
    left = max(ledger.progress.max_steps - ledger.progress.step, 0)
    closing = next((s.phases.eval for s in reversed(ledger.sessions) if s.phases.setup or s.phases.data), 0.0)
    more_s = left * (measured or step_s) + price.overhead_s + session_overhead_s(ledger) + closing
    usd, kzt = money_for(more_s * spare, price, exchange)  # the spare is on what is still to come, not on the spent
    if kind == "max_kzt":
        return f"{math.ceil(ledger.money.kzt + kzt)}KZT"
    if kind == "max_usd":
        return f"{math.ceil((ledger.money.usd + usd) * 100) / 100:g}USD"
    return f"{math.ceil((ledger.billed_seconds + more_s * spare) / 3600 * 100) / 100:g}h"
