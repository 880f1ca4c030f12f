"""What the compiled delivery reads and writes of one FIX session's orders: their report state in arrays.

``OrderBook`` keeps a session's orders as ``Order`` objects, which the Python paths (entry,
replace, cancel, status, mass cancel, recovery) use. ``fix_report_kernel`` renders the
ExecutionReports of the common engine events (an acceptance, a fill, an order's end) for
a whole delivery in one compiled call, which cannot read objects: it reads this mirror.

Layout: slot ``s`` of an order is ``state[s * WORDS : (s + 1) * WORDS]`` (int64 words,
``array('q')``), by the ``W_*`` names below; ``slot_of[num - base]`` is the slot of the
order that had engine clOrdId ``num`` (-1: none, a request's number or a dropped order's);
an order's ClOrdID and its ``order_fields`` text lie in ``arena`` at the offsets its slot
gives (written again, at the end, whenever the order is saved whole).

It is a mirror, kept in step at two points only: every change the Python paths make to an
order is saved through the book (``save`` / ``save_state``: the file's records are written
there too), which calls ``put`` / ``put_state``; and what the kernel changes it reports
back as change rows, which ``OrderBook.apply_changes`` applies to the objects. An order
whose numbers do not fit the kernel's arithmetic (``LIMIT``) is flagged (``W_FLAGS``): the
kernel leaves its events to the Python path. A book compaction rebuilds the mirror from the
orders kept (``rebuild``), so it never holds more than the book does.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Any, Iterable

from ringex.gateways.fix_instrument import AVG_PX_EXTRA_DIGITS, _render

if TYPE_CHECKING:
    from ringex.gateways.fix_order_book import Order, Pending

__all__ = ["ReportState", "order_fields", "WORDS", "C_WORDS", "LIMIT", "AVG_LIMIT", "F_PYTHON", "F_PYTHON_STATE"]

# the words of an order's slot
(W_KEY, W_ORDER_ID, W_STATUS, W_CUM, W_LEAVES, W_NOTIONAL, W_TRIGGERED, W_PRICE_DECIMALS, W_QTY_DECIMALS,
 W_CL_OFF, W_CL_LEN, W_FIELDS_OFF, W_FIELDS_LEN, W_ACCOUNT, W_FLAGS,
 # its cancel or replace pending or held (``OrderBook.pending_for``): how many there are (more
 # than one: the kernel leaves the order's end to Python), and the one's engine clOrdId (0: not
 # known here), kind (``P_CANCEL``, ``P_REPLACE``) and ClOrdID in ``arena``; ``slot_of`` maps
 # that request's engine clOrdId to ``-2 - slot``
 W_PENDINGS, W_PENDING_NUM, W_PENDING_KIND, W_PENDING_CL_OFF, W_PENDING_CL_LEN) = range(20)
WORDS = 20
_ORDER_WORDS = W_FLAGS + 1  # what ``put`` writes; the pending words are ``add_pending``'s
P_CANCEL, P_REPLACE = 1, 2
_KINDS = {"cancel": P_CANCEL, "replace": P_REPLACE}
#: a row of what the kernel changed (``fix_report_kernel``'s output, ``OrderBook.apply_reports``):
#: the slot, its new report state, and where its U record's text lies in the output
C_SLOT, C_ORDER_ID, C_STATUS, C_CUM, C_LEAVES, C_NOTIONAL, C_TRIGGERED, C_TEXT_OFF, C_TEXT_LEN = range(9)
C_WORDS = 9
#: ``W_FLAGS`` (any set: the kernel leaves this order's events to Python): its key or
#: decimals out of the kernel's range; its report state's numbers out of it
F_PYTHON, F_PYTHON_STATE = 1, 2
#: The largest magnitude of a number the kernel takes (its products and sums stay in int64).
LIMIT = 1 << 62
#: AvgPx in int64 (``fix_report_kernel._avg_px``): cum and notional // cum at most this
AVG_LIMIT = (1 << 63) // 10 ** AVG_PX_EXTRA_DIGITS - 1
_NO_PENDING = [0] * (WORDS - _ORDER_WORDS)


def order_fields(o: Order) -> bytes:
    """1 55 54 38 40 [44] [99] 59 [18] [111] of ``o``, written; remembered by their values,
    since every report of an order repeats them (and many orders share them)."""
    key = (o.account, o.symbol, o.side, o.qty, o.ord_type, o.price, o.stop_price, o.tif, o.post_only,
           o.reduce_only, o.display_qty, o.qty_decimals, o.price_decimals)
    text = _ORDER_FIELDS.get(key)
    if text is not None:
        return text
    qd, pd = o.qty_decimals, o.price_decimals
    text = b"1=%d\x0155=%s\x0154=%d\x0138=%s\x0140=%d\x01" % (o.account, o.symbol, o.side, _render(o.qty, qd),
                                                               o.ord_type)
    if o.price:
        text += b"44=%s\x01" % _render(o.price, pd)
    if o.stop_price:
        text += b"99=%s\x01" % _render(o.stop_price, pd)
    text += b"59=%d\x01" % o.tif
    if o.post_only or o.reduce_only:
        text += b"18=%s\x01" % b" ".join(x for x, on in ((b"6", o.post_only), (b"E", o.reduce_only)) if on)
    if o.display_qty:
        text += b"111=%s\x01" % _render(o.display_qty, qd)
    if len(_ORDER_FIELDS) >= _ORDER_FIELDS_KEPT:
        _ORDER_FIELDS.clear()
    _ORDER_FIELDS[key] = text
    return text


_ORDER_FIELDS: dict[tuple[Any, ...], bytes] = {}  # order_fields' memory: the values -> their fields
_ORDER_FIELDS_KEPT = 1 << 16


def _fits(order_id: int, cum: int, leaves: int, notional: int) -> bool:
    """Do an order's report state's numbers fit the kernel's arithmetic (``LIMIT``, AvgPx)?"""
    return (min(order_id, cum, leaves, notional) >= 0 and max(order_id, cum, leaves, notional) < LIMIT
            and (cum == 0 or (cum <= AVG_LIMIT and notional // cum <= AVG_LIMIT)))


def _grown(buffer: Any, more: Any) -> Any:
    """``buffer`` with ``more`` after it: in place, or in a copy while something still views
    it (a kernel's argument kept alive by a traceback, say: growing it in place would raise)."""
    try:
        buffer += more
    except BufferError:
        buffer = buffer + more
    return buffer


class ReportState:
    """The mirror of one book's orders (see the module docstring)."""

    def __init__(self) -> None:
        self.state = array("q")
        self.arena = bytearray()
        self.slot_of = array("q")
        self.base = 1  # the engine clOrdId of slot_of[0]
        self.orders: list[Order] = []  # by slot
        self.longest = 0  # the most arena bytes one order has (ClOrdID and order fields): a report's room
        self._slot: dict[int, int] = {}  # order key -> slot

    def __len__(self) -> int:
        return len(self.orders)

    def put(self, o: Order) -> None:
        """``o`` whole: its ids, texts and state (a new order, or one whose ClOrdID, engine
        ids or order fields may have changed). Every order entered comes here: kept short."""
        cl, fields = o.cl_ord_id, order_fields(o)
        arena = self.arena
        at = len(arena)
        try:
            arena += cl
            arena += fields
        except BufferError:  # (a view of it still alive: grown in a copy)
            self.arena = arena = arena + cl + fields
        n = len(cl)
        if n + len(fields) > self.longest:
            self.longest = n + len(fields)
        key, order_id, cum, leaves, notional = o.key, o.order_id, o.cum_qty, o.leaves_qty, o.notional
        pd, qd = o.price_decimals, o.qty_decimals
        flags = 0 if 0 <= key < LIMIT and 0 <= pd < 10 and 0 <= qd < 19 and 0 <= o.account < LIMIT else F_PYTHON
        if not (order_id == cum == notional == 0 and 0 <= leaves < LIMIT) and not _fits(order_id, cum, leaves,
                                                                                            notional):
            flags |= F_PYTHON_STATE
            order_id = cum = leaves = notional = 0
        words = [key, order_id, o.status[0], cum, leaves, notional, 1 if o.triggered else 0, pd, qd, at, n, at + n,
                 len(fields), o.account, flags]  # in W_* order
        slot = self._slot.get(key)
        if slot is None:
            slot = self._slot[key] = len(self.orders)
            self.orders.append(o)
            words += _NO_PENDING
            try:
                self.state.fromlist(words)
            except BufferError:
                self.state = self.state + array("q", words)
        else:
            self.orders[slot] = o
            self.state[slot * WORDS:slot * WORDS + _ORDER_WORDS] = array("q", words)
        slot_of, base = self.slot_of, self.base
        for num in o.nums:
            if 0 <= num - base < len(slot_of):
                slot_of[num - base] = slot
            else:
                self._index(num, slot)

    def put_state(self, o: Order) -> None:
        """``o``'s report state (order_id, status, cum_qty, leaves_qty, notional, triggered)."""
        slot = self._slot.get(o.key)
        if slot is None:
            self.put(o)
            return
        order_id, cum, leaves, notional = o.order_id, o.cum_qty, o.leaves_qty, o.notional
        b = slot * WORDS
        st = self.state
        if _fits(order_id, cum, leaves, notional):
            st[b + W_ORDER_ID:b + W_TRIGGERED + 1] = array("q", (order_id, o.status[0], cum, leaves, notional,
                                                                 1 if o.triggered else 0))
            if st[b + W_FLAGS] & F_PYTHON_STATE:
                st[b + W_FLAGS] &= ~F_PYTHON_STATE
        else:
            st[b + W_STATUS] = o.status[0]
            st[b + W_TRIGGERED] = 1 if o.triggered else 0
            st[b + W_FLAGS] |= F_PYTHON_STATE

    def _index(self, num: int, slot: int) -> None:
        at = num - self.base
        if at < 0:  # a number below the base (an order read back, or numbered unusually)
            self.slot_of = array("q", [-1] * -at) + self.slot_of
            self.base, at = num, 0
        need = at + 1 - len(self.slot_of)
        if need > 0:
            self.slot_of = _grown(self.slot_of, array("q", [-1]) * max(need, len(self.slot_of) // 2, 64))
        self.slot_of[at] = slot

    def add_pending(self, p: Pending) -> None:
        """A cancel or replace of an order (``p.key``) pending or held, new or written again
        (sent, held again): the order's pending words (see ``W_PENDINGS``)."""
        kind = _KINDS.get(p.kind)
        slot = self._slot.get(p.key)
        if kind is None or slot is None:
            return
        b = slot * WORDS
        st = self.state
        if st[b + W_PENDING_NUM] == p.num and st[b + W_PENDINGS]:
            return  # written again: the same request
        at = len(self.arena)
        self.arena = _grown(self.arena, p.cl_ord_id)
        st[b + W_PENDINGS:b + WORDS] = array("q", (st[b + W_PENDINGS] + 1, p.num, kind, at, len(p.cl_ord_id)))
        self._index(p.num, -2 - slot)

    def drop_pending(self, p: Pending) -> None:
        """Pending request ``p`` answered (or dropped) by the Python path (the kernel does this
        itself for what it answers)."""
        slot = self._slot.get(p.key)
        if p.kind not in _KINDS or slot is None:
            return
        b = slot * WORDS
        st = self.state
        if st[b + W_PENDINGS] > 0:
            st[b + W_PENDINGS] -= 1
        if st[b + W_PENDING_NUM] == p.num:
            st[b + W_PENDING_NUM] = 0  # (another one left, if any, is not known here: Python's)
        at = p.num - self.base
        if 0 <= at < len(self.slot_of) and self.slot_of[at] == -2 - slot:
            self.slot_of[at] = -1

    def rebuild(self, orders: Iterable[Order], pendings: Iterable[Pending] = ()) -> None:
        """Hold ``orders`` only (what a compaction kept), their slots numbered afresh, and
        ``pendings`` (the book's, in its order)."""
        self.__init__()  # type: ignore[misc]
        orders = list(orders)
        nums = [n for o in orders for n in o.nums]
        if nums:
            self.base = min(nums)
        for o in orders:
            self.put(o)
        for p in pendings:
            self.add_pending(p)
