"""An instrument as the ITCH feed names and prices it.

ITCH 5.0 has room for a stock of 8 characters, a locate code of 16 bits, prices of 32 bits
with 4 implied decimals (Price(4)) and share counts of 32 bits. The engine's are wider, so
every instrument is checked at start, once, against the whole range the engine can produce:
any price of its book window (``engine/kernel/fixed.py``: the engine never rests or trades
outside it) and any quantity up to its ``max_qty``. A configuration that does not fit is
refused then, with the key to change; nothing is truncated at run time.

Prices: ITCH Price(4) = engine price x ``mul`` / ``div``, exact for every multiple of the
tick. ``itch_price_scale`` (engine price units per 1/10000 of the ITCH price) gives
``mul = 1, div = scale``; left out, the feed writes the instrument's FIX decimal price
(``price_decimals``): ``10**(4 - price_decimals)`` as a ratio. Quantities: ITCH shares =
engine quantity units (a feed handler scales them by ``qty_decimals``, as FIX does).
The stock locate code is the instrument id (the engine's ids are small; 0 is not used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ItchInstrument", "check_instrument", "itch_instruments"]

U32 = 1 << 32
MAX_LOCATE = (1 << 16) - 1
STOCK_LEN = 8


class InstrumentLike(Protocol):
    id: int
    symbol: str
    tick_size: int
    lot_size: int
    max_qty: int
    price_decimals: int
    itch_price_scale: int | None


@dataclass(frozen=True, slots=True)
class ItchInstrument:
    instrument: int
    locate: int
    stock: str  # ITCH pads it to 8 characters
    mul: int
    div: int
    round_lot: int

    def itch_price(self, price: int) -> int:
        """Engine price -> Price(4); exact for any price of the book window (checked at start)."""
        return price * self.mul // self.div


def price_ratio(ins: InstrumentLike) -> tuple[int, int]:
    """(mul, div) with ITCH Price(4) = engine price x mul / div."""
    if ins.itch_price_scale is not None:
        return 1, ins.itch_price_scale
    d = ins.price_decimals
    return (10 ** (4 - d), 1) if d <= 4 else (1, 10 ** (d - 4))


def check_instrument(ins: InstrumentLike, key: str, low: int | None, high: int | None) -> list[str]:
    """Problems with publishing ``ins`` on an ITCH feed, each as ``$.key: what``; ``low`` and
    ``high`` are its book window's lowest and highest price (None when the window is invalid,
    reported elsewhere)."""
    problems: list[str] = []

    def need(ok: bool, k: str, what: str) -> None:
        if not ok:
            problems.append(f"$.{k}: {what}")

    need(0 < ins.id <= MAX_LOCATE, f"{key}.id", f"must be in 1..{MAX_LOCATE} to be an ITCH stock locate code")
    need(0 < len(ins.symbol) <= STOCK_LEN and ins.symbol.isascii() and ins.symbol.isprintable()
         and " " not in ins.symbol, f"{key}.symbol",
         f"must be 1..{STOCK_LEN} printable ASCII characters without spaces (ITCH's Stock field)")
    if ins.itch_price_scale is not None:
        need(ins.itch_price_scale >= 1, f"{key}.itch_price_scale", "must be >= 1")
        if ins.itch_price_scale < 1:
            return problems
    mul, div = price_ratio(ins)
    if ins.tick_size > 0:
        need(ins.tick_size * mul % div == 0, f"{key}.itch_price_scale",
             f"the tick ({ins.tick_size} engine units) is not a whole number of ITCH price units "
             f"(1/10000) at {mul}/{div}: set itch_price_scale to a divisor of the tick")
    if high is not None:
        top = high * mul // div
        need(top < U32, f"{key}.itch_price_scale",
             f"the top of the book window ({high}) is {top} in ITCH Price(4), over its 32 bits "
             f"({U32 - 1}): raise itch_price_scale, or lower reference_price or [engine] price_levels")
    if low is not None and ins.tick_size > 0 and ins.tick_size * mul % div == 0:
        need(low * mul // div > 0, f"{key}.itch_price_scale", "the bottom of the book window is 0 in ITCH Price(4)")
    need(0 < ins.max_qty < U32, f"{key}.max_qty",
         f"must be below 2**32 to fit ITCH's 32-bit Shares fields on a feed (got {ins.max_qty})")
    need(0 < ins.lot_size < U32, f"{key}.lot_size", "must be below 2**32 (ITCH's Round Lot Size)")
    return problems


def itch_instruments(instruments: list[InstrumentLike]) -> dict[int, ItchInstrument]:
    """Instrument id -> its ITCH naming and pricing (a checked configuration's)."""
    out: dict[int, ItchInstrument] = {}
    for ins in instruments:
        mul, div = price_ratio(ins)
        out[ins.id] = ItchInstrument(ins.id, ins.id, ins.symbol, mul, div,
                                     ins.lot_size)
    return out
