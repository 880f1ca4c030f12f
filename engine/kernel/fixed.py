"""Fixed-point arithmetic of the risk engine: rates in parts per million, notionals.

Every product here could leave int64 if written naively (a notional near 2**57 times a rate
near 2**20), so rates are applied in two parts: ``x = q * 1e6 + r`` gives
``x * ppm / 1e6 = q * ppm + r * ppm / 1e6`` with both terms inside int64 (``ppm <= 1e6``).
Rounding is named by each function and is what docs/risk.md specifies.
"""

from __future__ import annotations

from numba import njit

from ringex.engine.kernel.flags import INLINE, PPM
from ringex.engine.kernel.state import G_LEVELS, I_BASE, I_NOTIONAL_DIV, I_TICK



@njit(**INLINE)
def signed32(v):
    """An int32 field read as its unsigned bits, back to its sign."""
    return v - (1 << 32) if v >= (1 << 31) else v


def book_base(ref_ticks, levels):
    """Tick number of book index 0 (docs/engine.md): the window of ``levels`` ticks is
    centred on the reference price and never reaches tick 0. Plain Python as well as
    compiled (``base_of``), so configuration checks use the kernel's own formula."""
    return max(1, ref_ticks - levels // 2)


base_of = njit(**INLINE)(book_base)


@njit(**INLINE)
def window(ins, glob, inst):
    """(lowest, highest) price of an instrument's book window (docs/engine.md)."""
    tick = ins[I_TICK, inst]
    base = ins[I_BASE, inst]
    return base * tick, (base + glob[G_LEVELS] - 1) * tick


@njit(**INLINE)
def div_ceil(x, d):
    """ceil(x / d) for any x and d > 0 (floor division of the negation, negated)."""
    return -((-x) // d)


@njit(**INLINE)
def ppm_floor(x, ppm):
    """floor(x * ppm / 1e6) for x >= 0, 0 <= ppm <= 1e6."""
    return (x // PPM) * ppm + (x % PPM) * ppm // PPM


@njit(**INLINE)
def ppm_ceil(x, ppm):
    """ceil(x * ppm / 1e6) for x >= 0, 0 <= ppm <= 1e6."""
    r = (x % PPM) * ppm
    return (x // PPM) * ppm + div_ceil(r, PPM)


@njit(**INLINE)
def fee_step(n, ppm, carry):
    """(fee, carry after) of a fill of notional ``n`` at rate ``ppm`` (negative: a rebate) to
    an order whose fees so far were rounded up by ``carry`` millionths: the order's fees
    always sum to their exact total rounded up once. ``n // PPM * ppm`` is exact; only
    ``(n % PPM) * ppm`` (below 1e12) carries a fraction."""
    r = (n % PPM) * ppm - carry
    return (n // PPM) * ppm - ((-r) // PPM), (-r) % PPM


@njit(**INLINE)
def ppm_trunc(x, ppm):
    """trunc(x * ppm / 1e6) (toward zero) for any signs, |ppm| <= 1e6."""
    neg = (x < 0) != (ppm < 0)
    v = ppm_floor(abs(x), abs(ppm))
    return -v if neg else v


@njit(**INLINE)
def notional(ins, inst, price, qty):
    """floor(price * qty / notionalDivisor) for price, qty >= 0 (bounded by the definition
    checks: price * qty < 2**62). Exact for a trade: ``InstrumentLimits`` keeps the divisor
    a divisor of tickSize * lotSize; a mark price need not be on a tick."""
    d = ins[I_NOTIONAL_DIV, inst]
    if d == 1:  # the usual case, and a division saved on every order and fill
        return price * qty
    return price * qty // d


@njit(**INLINE)
def notional_ceil(ins, inst, price, qty):
    d = ins[I_NOTIONAL_DIV, inst]
    if d == 1:
        return price * qty
    return div_ceil(price * qty, d)


@njit(**INLINE)
def signed_value(ins, inst, mark, qty):
    """A position's value at ``mark``, rounded against its holder: floor(mark * qty / div)
    for a long, -ceil(mark * |qty| / div) for a short (a mark need not be on a tick, so
    the division may leave a fraction)."""
    if qty >= 0:
        return notional(ins, inst, mark, qty)
    return -notional_ceil(ins, inst, mark, -qty)
