"""The invariants of any correct event stream (the model's or the engine's), rebuilt from
the events alone: a book that is never crossed, quantities that add up per order,
price-time priority of every fill, order and trade ids without gaps (``EventChecker``).
"""

from __future__ import annotations

from dataclasses import dataclass

from raw_wire import BUY, SELL, Event, describe
from ringex.engine.wire.messages import Side


@dataclass(eq=False)
class _Seen:
    qty: int
    side: int
    instrument: int
    filled: int = 0
    canceled: int = 0  # since the last replace
    leaves: int = 0


class EventChecker:
    """Checks any event stream (the model's or the engine's), message by message.

    It rebuilds, from the events alone, every order's quantities and the public book (from
    ``Book*`` events, FIFO per level), and asserts after each input message that:

    * no book is crossed (best bid < best ask);
    * each order's filled + open + canceled == its quantity (as last set by
      ``OrderAccepted`` / ``OrderReplaced``), and leaves quantities reported by ``Trade``
      and ``OrderReplaced`` agree;
    * every ``Trade``'s maker is the head of the best level on its side at that moment, at
      that level's price, and its ``BookExecute`` follows with the same quantity;
    * order ids and trade ids count from 1 without gaps.
    """

    def __init__(self) -> None:
        self.orders: dict[int, _Seen] = {}
        # instrument -> side -> price -> [orderId] (FIFO); shown[orderId] = (instrument, side, price, qty)
        self.book: dict[int, dict[int, dict[int, list[int]]]] = {}
        self.shown: dict[int, tuple[int, int, int, int]] = {}
        self.next_oid = 1
        self.next_tid = 1

    def _side(self, instrument: int, side: int) -> dict[int, list[int]]:
        return self.book.setdefault(instrument, {BUY: {}, SELL: {}})[side]

    def _best(self, instrument: int, side: int) -> int | None:
        prices = [p for p, q in self._side(instrument, side).items() if q]
        if not prices:
            return None
        return max(prices) if side == BUY else min(prices)

    def _unshow(self, oid: int) -> None:
        inst, side, price, _ = self.shown.pop(oid)
        self._side(inst, side)[price].remove(oid)

    def _show(self, oid: int, inst: int, side: int, price: int, qty: int) -> None:
        assert oid not in self.shown, f"order {oid} added to the book twice"
        assert qty > 0, f"order {oid} shown with qty {qty}"
        self.shown[oid] = (inst, side, price, qty)
        self._side(inst, side).setdefault(price, []).append(oid)

    def _account(self, o: _Seen, oid: int) -> None:
        assert o.leaves >= 0, f"order {oid} has negative leaves"
        assert o.filled + o.leaves + o.canceled == o.qty, (
            f"order {oid}: filled {o.filled} + open {o.leaves} + canceled {o.canceled} != qty {o.qty}")
        if oid in self.shown:
            assert self.shown[oid][3] <= o.leaves, f"order {oid} shows more than it has"
        if o.leaves == 0:
            assert oid not in self.shown, f"order {oid} is done but still in the book"

    def feed(self, events: list[Event]) -> None:
        """The events of one input message."""
        pending_exec: tuple[int, int, int, int] | None = None
        for idx, (name, f) in enumerate(events):
            where = f"event {idx} {describe((name, f))}"
            if pending_exec is not None:
                assert name == "BookExecute", f"{where}: a Trade must be followed by its BookExecute"
                assert (f["orderId"], f["qty"], f["price"], f["tradeId"]) == pending_exec, where
                pending_exec = None
                maker = f["orderId"]
                inst, side, price, qty = self.shown[maker]
                if qty == f["qty"]:
                    self._unshow(maker)
                else:
                    self.shown[maker] = (inst, side, price, qty - f["qty"])
                continue
            if name == "OrderAccepted":
                assert f["orderId"] == self.next_oid, f"{where}: expected order id {self.next_oid}"
                self.next_oid += 1
                self.orders[f["orderId"]] = _Seen(qty=f["qty"], side=f["side"], instrument=f["instrument"],
                                                  leaves=f["qty"])
            elif name == "Trade":
                assert f["tradeId"] == self.next_tid, f"{where}: expected trade id {self.next_tid}"
                self.next_tid += 1
                maker, taker = self.orders[f["makerOrderId"]], self.orders[f["takerOrderId"]]
                assert maker.side != taker.side and f["aggressorSide"] == taker.side, where
                assert f["takerOrderId"] not in self.shown, f"{where}: the aggressor is in the book"
                mside = maker.side
                best = self._best(f["instrument"], mside)
                assert best is not None and f["price"] == best, (
                    f"{where}: trade at {f['price']} while the best {Side(mside).name} price is {best}")
                head = self._side(f["instrument"], mside)[best][0]
                assert head == f["makerOrderId"], (
                    f"{where}: maker {f['makerOrderId']} is not the head of its level (head {head})")
                assert 0 < f["qty"] <= self.shown[head][3], f"{where}: fills more than is shown"
                for o, oid, leaves in ((maker, f["makerOrderId"], f["makerLeavesQty"]),
                                       (taker, f["takerOrderId"], f["takerLeavesQty"])):
                    o.filled += f["qty"]
                    o.leaves -= f["qty"]
                    assert o.leaves == leaves, f"{where}: order {oid} leaves {o.leaves}, reported {leaves}"
                pending_exec = (f["makerOrderId"], f["qty"], f["price"], f["tradeId"])
            elif name == "OrderCanceled":
                o = self.orders[f["orderId"]]
                assert f["canceledQty"] > 0, where
                o.canceled += f["canceledQty"]
                o.leaves -= f["canceledQty"]
                assert o.leaves >= 0, f"{where}: cancels more than is left"
            elif name == "OrderReplaced":
                o = self.orders[f["orderId"]]
                assert f["leavesQty"] == f["qty"] - o.filled, f"{where}: leaves != qty - filled ({o.filled})"
                o.qty, o.leaves, o.canceled = f["qty"], f["leavesQty"], 0
            elif name == "BookAdd":
                self._show(f["orderId"], f["instrument"], f["side"], f["price"], f["qty"])
            elif name == "BookReduce":
                inst, side, price, qty = self.shown[f["orderId"]]
                assert 0 < f["qty"] <= qty, where
                if qty == f["qty"]:  # only before a refill's BookAdd
                    self._unshow(f["orderId"])
                    assert idx + 1 < len(events) and events[idx + 1][0] == "BookAdd" and \
                        events[idx + 1][1]["orderId"] == f["orderId"], f"{where}: reduced to 0 without a refill"
                else:
                    self.shown[f["orderId"]] = (inst, side, price, qty - f["qty"])
            elif name == "BookDelete":
                self._unshow(f["orderId"])
            elif name == "BookReplace":
                self._unshow(f["orderId"])
                self._show(f["orderId"], f["instrument"], f["side"], f["price"], f["qty"])
            elif name == "BookExecute":
                raise AssertionError(f"{where}: BookExecute without a Trade")
        assert pending_exec is None, "a Trade ends the stream without its BookExecute"
        for oid, o in self.orders.items():
            self._account(o, oid)
        for inst, sides in self.book.items():
            bid, ask = self._best(inst, BUY), self._best(inst, SELL)
            assert bid is None or ask is None or bid < ask, f"instrument {inst} crossed: bid {bid} >= ask {ask}"
        done = [oid for oid, o in self.orders.items() if o.leaves == 0]
        for oid in done:
            del self.orders[oid]

    def book_view(self, instrument: int) -> dict[int, list[tuple[int, int, int]]]:
        out = {}
        for side in (BUY, SELL):
            rows = []
            lv = self._side(instrument, side)
            for p in sorted(lv, reverse=side == BUY):
                rows.extend((p, oid, self.shown[oid][3]) for oid in lv[p])
            out[side] = rows
        return out
