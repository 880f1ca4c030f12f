"""Exact conversion between FIX decimals and the engine's integer prices and quantities.

A ``FixInstrument`` says how many decimals an instrument's prices and quantities have on
the FIX side: engine integer = FIX decimal × 10**decimals, exactly, both ways; a FIX number
that does not convert exactly (too many decimals, off the tick or lot, out of range, not a
number) is refused, never rounded. AvgPx 6 (``_avg_px``) is the one rounded value.

``FixRefusal`` is the exception every FIX application mapping raises (here and in
``fix_orders``) for a message refused before it reaches the engine; ``ORD_REJ_REASON`` gives
the OrdRejReason 103 of a refusal or an engine reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringex.engine.wire import messages as m
from ringex.gateways.fix_tags import T_MAX_FLOOR, T_ORDER_QTY, T_PRICE, T_STOP_PX

if TYPE_CHECKING:
    from ringex.tools.config import InstrumentConfig

__all__ = [
    "ORD_REJ_REASON",
    "FixInstrument",
    "FixRefusal",
]

INT64_MAX = (1 << 63) - 1
MAX_NUMBER_TEXT = 40  # longer than any int64 with a decimal point: refuse before int() works on it
AVG_PX_EXTRA_DIGITS = 8


R = m.RejectReason
#: engine RejectReason -> FIX 4.4 OrdRejReason (103). FIX 4.4 has no code for a bad tick,
#: a price band, post-only or funds (5.0's 16/18 are not 4.4), so those are 99 Other; the
#: engine's reason name always goes in Text 58, which is what a client should read.
ORD_REJ_REASON: dict[m.RejectReason, int] = {
    R.UnknownInstrument: 1,  # Unknown symbol
    R.InstrumentHalted: 2, R.InstrumentClosed: 2, R.ExchangeNotAccepting: 2,  # Exchange closed
    R.MaxOrderQty: 3, R.MaxNotional: 3, R.MaxOpenOrders: 3, R.PositionLimit: 3, R.PriceBand: 3,  # Order exceeds limit
    R.UnknownOrder: 5,  # Unknown order
    R.BadLot: 13, R.QtyOutOfRange: 13,  # Incorrect quantity
    R.UnknownAccount: 15,  # Unknown account(s)
    R.InvalidSide: 11, R.InvalidOrdType: 11, R.InvalidTimeInForce: 11, R.InvalidStopPrice: 11,
    R.InvalidDisplayQty: 11, R.InvalidFlags: 11, R.InvalidStpMode: 11, R.StopNotAllowed: 11,
    R.NotPerpetual: 11, R.UnsupportedMessage: 11,  # Unsupported order characteristic
    R.KillSwitchAccount: 0, R.KillSwitchSession: 0, R.KillSwitchInstrument: 0, R.KillSwitchExchange: 0,
    R.AccountNotPermitted: 0, R.Throttled: 0,  # Broker / Exchange option
}  # everything else: 99 Other


class FixRefusal(Exception):
    """An application message refused before it reaches the engine.

    ``kind``: ``"reject"`` answer with the request's own reject message (NewOrderSingle /
    OrderStatusRequest: ExecutionReport ExecType 8; cancel / replace: OrderCancelReject 9;
    mass cancel: OrderMassCancelReport r with MassCancelResponse 0), ``"business"``: the
    request cannot be referred to (no usable ClOrdID): BusinessMessageReject j.
    ``refusal_report`` builds the answer.
    """

    def __init__(self, kind: str, text: str, tag: int | None = None, ord_rej_reason: int | None = None, *,
                 cxl_rej_reason: int | None = None, mass_cancel_reject_reason: int | None = None,
                 business_reason: int | None = None) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.tag = tag
        self.ord_rej_reason = ord_rej_reason
        self.cxl_rej_reason = cxl_rej_reason
        self.mass_cancel_reject_reason = mass_cancel_reject_reason
        self.business_reason = business_reason

    def __repr__(self) -> str:
        return f"FixRefusal({self.kind!r}, {self.text!r}, tag={self.tag})"


def _refuse(text: str, tag: int | None, reason: m.RejectReason | None = None, ord_rej: int | None = None) -> FixRefusal:
    """A "reject" refusal; with an engine reason its name ends the text and gives OrdRejReason."""
    if reason is not None:
        text = f"{text} ({reason.name})"
        ord_rej = ORD_REJ_REASON.get(reason, 99) if ord_rej is None else ord_rej
    return FixRefusal("reject", text, tag, 99 if ord_rej is None else ord_rej)


# -- numbers ------------------------------------------------------------------------------

def _scaled(text: bytes, decimals: int, tag: int, what: str, reason: m.RejectReason) -> int:
    """``text`` (a FIX float: [-]digits[.digits]) times 10**decimals, exactly, or a refusal."""
    s = bytes(text)
    if s.isdigit() and len(s) <= 18:  # the common case, a whole number (ASCII digits only)
        return int(s) * 10**decimals
    if not s or len(s) > MAX_NUMBER_TEXT:
        raise _refuse(f"{what} {s[:MAX_NUMBER_TEXT]!r} is not a number", tag, reason)
    neg = s.startswith(b"-")
    whole, _, frac = (s[1:] if neg else s).partition(b".")
    # bytes.isdigit is ASCII-only: no "+", exponent, underscore, space or Unicode digit gets in
    if (not whole and not frac) or (whole and not whole.isdigit()) or (frac and not frac.isdigit()) \
            or s.count(b".") > 1:
        raise _refuse(f"{what} {s!r} is not a number", tag, reason)
    if len(frac) > decimals:
        if frac[decimals:].strip(b"0"):
            raise _refuse(f"{what} {s.decode()} has more than {decimals} decimals", tag, reason)
        frac = frac[:decimals]
    value = int(whole or b"0") * 10**decimals + int(frac.ljust(decimals, b"0") or b"0")
    return -value if neg else value


def _render(value: int, decimals: int) -> bytes:
    """``value / 10**decimals`` as a FIX float, shortest exact form ("50000.5", "3", "-0.25")."""
    if not decimals:
        return b"%d" % value
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals) if decimals else (abs(value), 0)
    if not frac:
        return f"{sign}{whole}".encode()
    return f"{sign}{whole}.{str(frac).rjust(decimals, '0').rstrip('0')}".encode()


def _avg_px(notional: int, cum: int, price_decimals: int) -> bytes:
    """AvgPx = notional / cum (engine price units), shown with price_decimals +
    AVG_PX_EXTRA_DIGITS decimals at most, rounded half to even; exact whenever the quotient
    terminates within that many digits (it always does when every fill has one price)."""
    if cum == 0:
        return b"0"
    scale = 10**AVG_PX_EXTRA_DIGITS
    q, r = divmod(notional * scale, cum)
    if 2 * r > cum or (2 * r == cum and q % 2):
        q += 1
    return _render(q, price_decimals + AVG_PX_EXTRA_DIGITS)


@dataclass(frozen=True)
class FixInstrument:
    """An instrument as FIX sees it: engine integer = FIX decimal × 10**decimals, exactly."""

    id: int
    symbol: bytes
    price_decimals: int
    qty_decimals: int
    tick_size: int
    lot_size: int
    min_qty: int
    max_qty: int

    @classmethod
    def from_config(cls, inst: InstrumentConfig, price_decimals: int = 0, qty_decimals: int = 0) -> FixInstrument:
        return cls(id=inst.id, symbol=inst.symbol.encode("ascii"), price_decimals=price_decimals,
                   qty_decimals=qty_decimals, tick_size=inst.tick_size, lot_size=inst.lot_size,
                   min_qty=inst.min_qty, max_qty=inst.max_qty)

    def engine_price(self, text: bytes, tag: int = T_PRICE) -> int:
        """Price 44 (or StopPx 99 with ``tag=99``) in engine units: > 0, int64, on the tick.
        Refusal reasons: PriceOutOfRange, BadTick (InvalidStopPrice for a stop price)."""
        what = "StopPx" if tag == T_STOP_PX else "price"
        rng = R.InvalidStopPrice if tag == T_STOP_PX else R.PriceOutOfRange
        v = _scaled(text, self.price_decimals, tag, what, rng)
        if v <= 0:
            raise _refuse(f"{what} must be > 0", tag, rng)
        if v > INT64_MAX:
            raise _refuse(f"{what} {bytes(text).decode()} is beyond the engine's int64", tag, rng)
        if v % self.tick_size:
            raise _refuse(f"{what} {bytes(text).decode()} is not a multiple of the tick "
                          f"{self.fix_price(self.tick_size).decode()}", tag,
                          R.InvalidStopPrice if tag == T_STOP_PX else R.BadTick)
        return v

    def engine_qty(self, text: bytes, tag: int = T_ORDER_QTY) -> int:
        """OrderQty 38 (or MaxFloor 111 with ``tag=111``: no min/max bounds) in engine units:
        > 0, int64, on the lot, within [min_qty, max_qty]. Refusal reasons: QtyOutOfRange,
        BadLot (InvalidDisplayQty for MaxFloor)."""
        floor = tag == T_MAX_FLOOR
        what = "MaxFloor" if floor else "quantity"
        rng = R.InvalidDisplayQty if floor else R.QtyOutOfRange
        v = _scaled(text, self.qty_decimals, tag, what, rng)
        if v <= 0:
            raise _refuse(f"{what} must be > 0", tag, rng)
        if v > INT64_MAX:
            raise _refuse(f"{what} {bytes(text).decode()} is beyond the engine's int64", tag, rng)
        if v % self.lot_size:
            raise _refuse(f"{what} {bytes(text).decode()} is not a multiple of the lot "
                          f"{self.fix_qty(self.lot_size).decode()}", tag, R.InvalidDisplayQty if floor else R.BadLot)
        if not floor and not self.min_qty <= v <= self.max_qty:
            raise _refuse(f"quantity {bytes(text).decode()} is outside [{self.fix_qty(self.min_qty).decode()}, "
                          f"{self.fix_qty(self.max_qty).decode()}]", tag, R.QtyOutOfRange)
        return v

    def fix_price(self, price: int) -> bytes:
        return _render(price, self.price_decimals)

    def fix_qty(self, qty: int) -> bytes:
        return _render(qty, self.qty_decimals)
