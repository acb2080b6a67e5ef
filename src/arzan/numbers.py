"""How figures are printed: one rule for the terminal, the cards and the reports.

A CPU demo costs fractions of a tenge and one step of it 0.003 ₸: printed with a fixed two decimals
those read as 0.00, which tells a paying user the cap check or the step was free. So a figure too
small for its decimals keeps two significant digits instead.
"""

from __future__ import annotations

import math


def fixed(v: float, digits: int) -> str:
    """`digits` decimals with a comma between thousands (5,300 ₸ in the terminal, the card and the
    report alike, so a figure copied from one is found in the others); below 10**(1-digits) two
    significant digits."""
    if v and abs(v) < 10 ** (1 - digits):
        digits = 1 - math.floor(math.log10(abs(v)))
    return f"{v:,.{digits}f}"


def amount(v: float) -> str:
    """A cap or a figure the user typed, as typed: 5,000 for 5000, 2.5 for 2.5 (never 5e+03)."""
    return f"{v:,.0f}" if float(v).is_integer() else fixed(v, 2)


def kzt(v: float) -> str:
    """Tenge: two decimals below 1,000, none from there up (5,300 ₸; 412.37 ₸; 0.0031 ₸)."""
    return fixed(v, 0 if abs(v) >= 1000 else 2)


def usd(v: float) -> str:
    """Dollars: two decimals (0.0024 $ keeps two significant digits)."""
    return fixed(v, 2)


def hms(seconds: float | None) -> str:
    """A duration as people say it: 9.5s, 1m30s, 2h05m."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
