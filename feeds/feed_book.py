"""An order-level book as an ITCH 5.0 feed describes it, with its aggregated depth.

Both ends of the feed keep one: the publisher to serve snapshots (every resting order, in
time priority, as Add Order messages) and the subscriber to show the market. It holds what
the feed says and nothing else: orders by reference number (stock locate, side, displayed
shares, price in ITCH's Price(4) units) and, per stock locate and side, the shares at each
price.

The rules are the specification's: an Add Order puts an order at the back of its price
level; Order Executed and Order Cancel take shares from it (an order left with none is off
the book); Order Delete removes it; Order Replace removes the original and adds the new
reference number at the back of its new level, on the original's side and stock. A message
that names an unknown reference number, takes more shares than an order has, or reuses a
live reference number is a ``BookError``: a feed handler that sees one has lost a message.

Time priority is the insertion order of the ``orders`` dictionary: a new or replaced order is
(re)inserted at its end, and executions and partial cancels keep an order where it is, so
walking it gives every level's queue in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["BookError", "BookOrder", "FeedBook", "Level"]

BUY, SELL = ord("B"), ord("S")


class BookError(ValueError):
    """A feed message that does not fit the book: a message was lost or the feed is wrong."""


@dataclass(slots=True)
class BookOrder:
    locate: int
    side: int  # ord("B") or ord("S")
    shares: int
    price: int  # Price(4) units


@dataclass(frozen=True, slots=True)
class Level:
    price: int
    shares: int
    orders: int


class FeedBook:
    """Orders by reference number, and shares by (locate, side, price)."""

    def __init__(self) -> None:
        self.orders: dict[int, BookOrder] = {}
        self.states: dict[int, bytes] = {}  # locate -> its last Stock Trading Action's state
        # (locate, side) -> price -> [shares, orders]
        self._levels: dict[tuple[int, int], dict[int, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.orders)

    def _level(self, o: BookOrder) -> list[int]:
        side = self._levels.setdefault((o.locate, o.side), {})
        lv = side.get(o.price)
        if lv is None:
            lv = side[o.price] = [0, 0]
        return lv

    def _take(self, o: BookOrder, shares: int, orders: int) -> None:
        side = self._levels[(o.locate, o.side)]
        lv = side[o.price]
        lv[0] -= shares
        lv[1] -= orders
        if lv[1] == 0:
            del side[o.price]

    def _get(self, ref: int, what: str) -> BookOrder:
        o = self.orders.get(ref)
        if o is None:
            raise BookError(f"{what} of order {ref}, which is not on the book")
        return o

    def add(self, ref: int, locate: int, side: int, shares: int, price: int) -> None:
        if ref in self.orders:
            raise BookError(f"Add Order reuses reference number {ref}, still on the book")
        if side not in (BUY, SELL):
            raise BookError(f"Add Order {ref} has side {side!r}, neither B nor S")
        if shares <= 0:
            raise BookError(f"Add Order {ref} shows {shares} shares")
        o = self.orders[ref] = BookOrder(locate, side, shares, price)
        lv = self._level(o)
        lv[0] += shares
        lv[1] += 1

    def execute(self, ref: int, shares: int) -> BookOrder:
        """Order Executed (and Order Executed With Price): the order as it was."""
        return self._reduce(ref, shares, "execution")

    def cancel(self, ref: int, shares: int) -> BookOrder:
        """Order Cancel: a partial cancel."""
        return self._reduce(ref, shares, "cancel")

    def _reduce(self, ref: int, shares: int, what: str) -> BookOrder:
        o = self._get(ref, f"{what} of {shares} shares")
        if not 0 < shares <= o.shares:
            raise BookError(f"{what} of {shares} shares of order {ref}, which shows {o.shares}")
        gone = shares == o.shares
        self._take(o, shares, 1 if gone else 0)
        o.shares -= shares
        if gone:
            del self.orders[ref]
        return o

    def delete(self, ref: int) -> BookOrder:
        o = self._get(ref, "delete")
        self._take(o, o.shares, 1)
        del self.orders[ref]
        return o

    def replace(self, orig: int, new: int, shares: int, price: int) -> BookOrder:
        o = self._get(orig, "replace")
        if new != orig and new in self.orders:
            raise BookError(f"Order Replace of {orig} reuses reference number {new}, still on the book")
        if shares <= 0:  # checked before anything changes: a refused message leaves the book as it was
            raise BookError(f"Order Replace of {orig} shows {shares} shares")
        self.delete(orig)
        self.add(new, o.locate, o.side, shares, price)
        return self.orders[new]

    def clear(self) -> None:
        self.states.clear()
        self.orders.clear()
        self._levels.clear()

    # -- views -----------------------------------------------------------------------------

    def depth(self, locate: int, side: int, levels: int = 10) -> list[Level]:
        """The best ``levels`` price levels of one side: bids highest first, asks lowest first."""
        book = self._levels.get((locate, side), {})
        prices = sorted(book, reverse=side == BUY)[:levels]
        return [Level(p, book[p][0], book[p][1]) for p in prices]

    def best(self, locate: int, side: int) -> Level | None:
        book = self._levels.get((locate, side))
        if not book:
            return None
        p = max(book) if side == BUY else min(book)
        return Level(p, book[p][0], book[p][1])

    def in_priority(self, locate: int | None = None) -> Iterator[tuple[int, BookOrder]]:
        """Every resting order (of one stock, or all) as (reference, order), oldest first:
        adding them in this order rebuilds every level's queue."""
        for ref, o in self.orders.items():
            if locate is None or o.locate == locate:
                yield ref, o

    def canonical(self) -> list[tuple[int, int, int, int, int]]:
        """(locate, side, price, reference, shares) of every order, sorted by level then queue
        position: equal for two books exactly when their orders and queues are."""
        pos = {ref: i for i, ref in enumerate(self.orders)}
        rows = [(o.locate, o.side, o.price, pos[ref], ref, o.shares) for ref, o in self.orders.items()]
        rows.sort()
        return [(loc, side, price, ref, shares) for loc, side, price, _, ref, shares in rows]

    # -- the feed's messages -----------------------------------------------------------------

    def apply(self, msg: object) -> None:
        """Apply one decoded ITCH message (``ringex.feeds.itch``); messages that do not touch
        the book (System Event, Stock Directory, Trade) change nothing but are accepted."""
        t = type(msg).__name__
        if t in ("AddOrder", "AddOrderMpid"):
            self.add(msg.order_reference_number, msg.stock_locate, msg.buy_sell_indicator[0], msg.shares, msg.price)
        elif t in ("OrderExecuted", "OrderExecutedWithPrice"):
            self.execute(msg.order_reference_number, msg.executed_shares)
        elif t == "OrderCancel":
            self.cancel(msg.order_reference_number, msg.canceled_shares)
        elif t == "OrderDelete":
            self.delete(msg.order_reference_number)
        elif t == "OrderReplace":
            self.replace(msg.original_order_reference_number, msg.new_order_reference_number, msg.shares, msg.price)
        elif t == "StockTradingAction":
            self.states[msg.stock_locate] = msg.trading_state
