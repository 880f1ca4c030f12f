"""A subscriber's order-level book in arrays, applied a MoldUDP64 packet at a time by compiled code.

``FeedBook`` (``feed_book.py``) states the rules; this is the same book for the subscriber's hot
path: one compiled call takes a whole packet that is next in line (or overlaps what was
already applied), walks its message blocks and applies Add Order (A), Order Executed (E),
Order Cancel (X), Order Delete (D) and Order Replace (U) to the arrays, stopping at any other
message (System Event, Stock Directory, Stock Trading Action, ...: rare) for Python to apply,
and at anything the book cannot take (an unknown reference number, a reused one, more shares
than an order shows, a side other than B/S, a message shorter than its type's length), which
it reports by a status, having changed nothing for that message.

Arrays: orders by reference number (a chained hash: buckets, each row's next) with stock
locate, side, shares, price, time priority (a counter) and their price level; levels by
(locate, side, price) (a chained hash too) with shares and order count. ``to_feed_book``
gives the same book as a ``FeedBook`` (for views and comparisons; O(orders)); a test holds the
two equal message for message.

What the subscriber needs besides the book comes out of the same call: the executions
(locate, shares, price, match number) when asked for, and each applied message's latency
(now minus its ITCH timestamp, both nanoseconds since midnight) when asked for.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.feeds import itch
from ringex.feeds import moldudp64 as mold
from ringex.feeds.feed_book import BookError, FeedBook

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["PacketBook", "apply_packet", "replay", "STATUS_TEXT"]

# order rows
O_REF, O_LOCATE, O_SIDE, O_SHARES, O_PRICE, O_PRIO, O_NEXT, O_LEVEL, O_USED = range(9)
O_COLUMNS = 9
# level rows
L_LOCATE, L_SIDE, L_PRICE, L_SHARES, L_COUNT, L_NEXT, L_USED = range(7)
L_COLUMNS = 7
# meta words
M_ORDER_FREE, M_LEVEL_FREE, M_PRIO, M_ORDERS, M_EXECUTIONS = range(5)

OK, STOP, UNKNOWN, REUSED, TOO_MANY_SHARES, BAD_SIDE, NO_SHARES, SHORT, FULL = range(9)
STATUS_TEXT = {UNKNOWN: "names an order that is not on the book", REUSED: "reuses a reference number still on the book",
               TOO_MANY_SHARES: "takes more shares than the order shows", BAD_SIDE: "has a side other than B or S",
               NO_SHARES: "shows no shares", SHORT: "is shorter than its type's length",
               FULL: "does not fit the book's arrays (capacity)"}

_LEN = {t: itch.MESSAGE_LENGTH[t] for t in (b"A", b"E", b"X", b"D", b"U")}
HEADER = mold.HEADER_LENGTH
# order messages the kernel leaves to Python (replay hands them to FeedBook)
_ORDER_KINDS = (b"F", b"C")
LEN_A, LEN_E, LEN_X, LEN_D, LEN_U = _LEN.values()
for (_t, _f), _at in {(b"A", "order_reference_number"): 11, (b"A", "buy_sell_indicator"): 19, (b"A", "shares"): 20,
                      (b"A", "price"): 32, (b"E", "executed_shares"): 19, (b"E", "match_number"): 23,
                      (b"X", "canceled_shares"): 19, (b"U", "new_order_reference_number"): 19,
                      (b"U", "shares"): 27, (b"U", "price"): 31}.items():
    if itch.LAYOUTS[_t].offset(_f) != _at:
        raise RuntimeError(f"ITCH {_t!r}.{_f} is not at {_at}, where the kernel reads it")
if (mold.SEQUENCE_NUMBER_OFFSET, mold.MESSAGE_COUNT_OFFSET, mold.HEADER_LENGTH) != (10, 18, 20):
    raise RuntimeError("the MoldUDP64 header is not where the kernel reads it")


@njit(cache=True, inline="always")
def _be(b, at, n):
    v = np.int64(0)
    for k in range(n):
        v = (v << 8) | np.int64(b[at + k])
    return v


@njit(cache=True)
def _find_order(orders, obuckets, ref):
    r = obuckets[ref & (obuckets.shape[0] - 1)]
    while r != -1 and orders[r, O_REF] != ref:
        r = orders[r, O_NEXT]
    return r


@njit(cache=True)
def _level(levels, lbuckets, meta, lfree, locate, side, price, create):
    h = (price * 1000003 + locate * 31 + side) & (lbuckets.shape[0] - 1)
    r = lbuckets[h]
    while r != -1 and not (levels[r, L_PRICE] == price and levels[r, L_LOCATE] == locate
                           and levels[r, L_SIDE] == side):
        r = levels[r, L_NEXT]
    if r != -1 or not create:
        return r
    if meta[M_LEVEL_FREE] == 0:
        return -2
    meta[M_LEVEL_FREE] -= 1
    r = lfree[meta[M_LEVEL_FREE]]
    levels[r, L_LOCATE] = locate
    levels[r, L_SIDE] = side
    levels[r, L_PRICE] = price
    levels[r, L_SHARES] = 0
    levels[r, L_COUNT] = 0
    levels[r, L_USED] = 1
    levels[r, L_NEXT] = lbuckets[h]
    lbuckets[h] = r
    return r


@njit(cache=True)
def _drop_level(levels, lbuckets, meta, lfree, r):
    h = (levels[r, L_PRICE] * 1000003 + levels[r, L_LOCATE] * 31 + levels[r, L_SIDE]) & (lbuckets.shape[0] - 1)
    if lbuckets[h] == r:
        lbuckets[h] = levels[r, L_NEXT]
    else:
        p = lbuckets[h]
        while levels[p, L_NEXT] != r:
            p = levels[p, L_NEXT]
        levels[p, L_NEXT] = levels[r, L_NEXT]
    levels[r, L_USED] = 0
    lfree[meta[M_LEVEL_FREE]] = r
    meta[M_LEVEL_FREE] += 1


@njit(cache=True)
def _add(orders, obuckets, levels, lbuckets, meta, ofree, lfree, ref, locate, side, shares, price):
    if side != 66 and side != 83:
        return BAD_SIDE
    if shares <= 0:
        return NO_SHARES
    if _find_order(orders, obuckets, ref) != -1:
        return REUSED
    if meta[M_ORDER_FREE] == 0:
        return FULL
    lv = _level(levels, lbuckets, meta, lfree, locate, side, price, True)
    if lv == -2:
        return FULL
    meta[M_ORDER_FREE] -= 1
    r = ofree[meta[M_ORDER_FREE]]
    h = ref & (obuckets.shape[0] - 1)
    orders[r, O_REF] = ref
    orders[r, O_LOCATE] = locate
    orders[r, O_SIDE] = side
    orders[r, O_SHARES] = shares
    orders[r, O_PRICE] = price
    orders[r, O_PRIO] = meta[M_PRIO]
    orders[r, O_LEVEL] = lv
    orders[r, O_USED] = 1
    orders[r, O_NEXT] = obuckets[h]
    obuckets[h] = r
    meta[M_PRIO] += 1
    meta[M_ORDERS] += 1
    levels[lv, L_SHARES] += shares
    levels[lv, L_COUNT] += 1
    return OK


@njit(cache=True)
def _remove(orders, obuckets, levels, lbuckets, meta, ofree, lfree, r):
    lv = orders[r, O_LEVEL]
    levels[lv, L_SHARES] -= orders[r, O_SHARES]
    levels[lv, L_COUNT] -= 1
    if levels[lv, L_COUNT] == 0:
        _drop_level(levels, lbuckets, meta, lfree, lv)
    h = orders[r, O_REF] & (obuckets.shape[0] - 1)
    if obuckets[h] == r:
        obuckets[h] = orders[r, O_NEXT]
    else:
        p = obuckets[h]
        while orders[p, O_NEXT] != r:
            p = orders[p, O_NEXT]
        orders[p, O_NEXT] = orders[r, O_NEXT]
    orders[r, O_USED] = 0
    ofree[meta[M_ORDER_FREE]] = r
    meta[M_ORDER_FREE] += 1
    meta[M_ORDERS] -= 1


@njit(cache=True)
def _take(orders, obuckets, levels, lbuckets, meta, ofree, lfree, ref, shares):
    r = _find_order(orders, obuckets, ref)
    if r == -1:
        return UNKNOWN, r
    if shares <= 0 or shares > orders[r, O_SHARES]:
        return TOO_MANY_SHARES, r
    if shares == orders[r, O_SHARES]:
        _remove(orders, obuckets, levels, lbuckets, meta, ofree, lfree, r)
    else:
        orders[r, O_SHARES] -= shares
        levels[orders[r, O_LEVEL], L_SHARES] -= shares
    return OK, r


@njit(cache=True)
def apply_packet(pkt, size, start, expected, orders, obuckets, levels, lbuckets, meta, ofree, lfree,
                 fills, want_fills, lat, want_lat, lat_n, now_day):
    """Apply the messages of packet ``pkt[:size]`` from block offset ``start`` (20: the first)
    whose sequence numbers are ``expected`` on (those below were applied already). Stops
    after the last message, or before a message it leaves to Python (STOP), or at one the
    book refuses (its status). Returns (status, next expected, block offset reached,
    executions recorded, latencies recorded)."""
    seq = _be(pkt, 10, 8)
    count = _be(pkt, 18, 2)
    at = start
    # the sequence number of the block at ``at``: count the blocks before it
    k = 0
    p = 20
    while p < at:
        p += 2 + _be(pkt, p, 2)
        k += 1
    nfill = 0
    while k < count and at + 2 <= size:
        length = _be(pkt, at, 2)
        m = at + 2
        if m + length > size:
            return SHORT, expected, at, nfill, lat_n
        this = seq + k
        if this < expected:
            at = m + length
            k += 1
            continue
        t = pkt[m]
        status = OK
        if t == 65:  # A
            if length < LEN_A:
                return SHORT, expected, at, nfill, lat_n
            status = _add(orders, obuckets, levels, lbuckets, meta, ofree, lfree, _be(pkt, m + 11, 8),
                          _be(pkt, m + 1, 2), np.int64(pkt[m + 19]), _be(pkt, m + 20, 4), _be(pkt, m + 32, 4))
        elif t == 69 or t == 88:  # E, X
            if length < (LEN_E if t == 69 else LEN_X):
                return SHORT, expected, at, nfill, lat_n
            shares = _be(pkt, m + 19, 4)
            status, r = _take(orders, obuckets, levels, lbuckets, meta, ofree, lfree, _be(pkt, m + 11, 8), shares)
            if status == OK and t == 69:
                meta[M_EXECUTIONS] += 1
            if status == OK and t == 69 and want_fills and nfill < fills.shape[0]:
                fills[nfill, 0] = orders[r, O_LOCATE]
                fills[nfill, 1] = shares
                fills[nfill, 2] = orders[r, O_PRICE]
                fills[nfill, 3] = _be(pkt, m + 23, 8)
                nfill += 1
        elif t == 68:  # D
            if length < LEN_D:
                return SHORT, expected, at, nfill, lat_n
            r = _find_order(orders, obuckets, _be(pkt, m + 11, 8))
            if r == -1:
                status = UNKNOWN
            else:
                _remove(orders, obuckets, levels, lbuckets, meta, ofree, lfree, r)
        elif t == 85:  # U
            if length < LEN_U:
                return SHORT, expected, at, nfill, lat_n
            orig, new = _be(pkt, m + 11, 8), _be(pkt, m + 19, 8)
            shares, price = _be(pkt, m + 27, 4), _be(pkt, m + 31, 4)
            r = _find_order(orders, obuckets, orig)
            if r == -1:
                status = UNKNOWN
            elif new != orig and _find_order(orders, obuckets, new) != -1:
                status = REUSED
            elif shares <= 0:
                status = NO_SHARES
            else:
                locate, side = orders[r, O_LOCATE], orders[r, O_SIDE]
                _remove(orders, obuckets, levels, lbuckets, meta, ofree, lfree, r)
                status = _add(orders, obuckets, levels, lbuckets, meta, ofree, lfree, new, locate, side, shares, price)
        else:
            return STOP, expected, at, nfill, lat_n
        if status != OK:
            return status, expected, at, nfill, lat_n
        if want_lat and lat_n < lat.shape[0]:
            lat[lat_n] = (now_day - _be(pkt, m + 5, 6)) % 86400000000000
            lat_n += 1
        expected = this + 1
        at = m + length
        k += 1
    return OK, expected, at, nfill, lat_n


class PacketBook:
    """The arrays, and what ``FeedBook`` offers to read them."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        cap = 1 << max(4, (capacity - 1).bit_length())
        self.orders = np.zeros((cap, O_COLUMNS), np.int64)
        self.obuckets = np.full(cap, -1, np.int64)
        self.levels = np.zeros((cap, L_COLUMNS), np.int64)
        self.lbuckets = np.full(cap, -1, np.int64)
        self.ofree = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.lfree = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.meta = np.zeros(5, np.int64)
        self.meta[M_ORDER_FREE] = cap
        self.meta[M_LEVEL_FREE] = cap
        self.states: dict[int, bytes] = {}

    def __len__(self) -> int:
        return int(self.meta[M_ORDERS])

    @property
    def executions(self) -> int:
        """Order Executed messages applied."""
        return int(self.meta[M_EXECUTIONS])

    def clear(self) -> None:
        self.__init__(len(self.orders))

    def args(self) -> tuple[np.ndarray, ...]:
        return self.orders, self.obuckets, self.levels, self.lbuckets, self.meta, self.ofree, self.lfree

    def rows_in_priority(self) -> np.ndarray:
        """The live orders as rows (ref, locate, side, shares, price), oldest first."""
        o = self.orders
        used = np.flatnonzero(o[:, O_USED] == 1)
        used = used[np.argsort(o[used, O_PRIO], kind="stable")]
        return o[used][:, [O_REF, O_LOCATE, O_SIDE, O_SHARES, O_PRICE]]

    def grown(self) -> PacketBook:
        """The same book in arrays twice as large (time priority kept)."""
        bigger = PacketBook(2 * len(self.orders))
        bigger.states.update(self.states)
        bigger.meta[M_EXECUTIONS] = self.meta[M_EXECUTIONS]
        status = _add_all(*bigger.args(), self.rows_in_priority())
        assert status == OK, STATUS_TEXT.get(status, status)
        return bigger

    def to_feed_book(self) -> FeedBook:
        """The same book as a ``FeedBook`` (orders in time priority)."""
        o = self.orders
        used = np.flatnonzero(o[:, O_USED] == 1)
        used = used[np.argsort(o[used, O_PRIO], kind="stable")]
        book = FeedBook()
        for r in used.tolist():
            book.add(int(o[r, O_REF]), int(o[r, O_LOCATE]), int(o[r, O_SIDE]), int(o[r, O_SHARES]),
                     int(o[r, O_PRICE]))
        book.states.update(self.states)
        return book


@njit(cache=True)
def _add_all(orders, obuckets, levels, lbuckets, meta, ofree, lfree, rows):
    """Add each row (ref, locate, side, shares, price) in order; the first status not OK."""
    for i in range(rows.shape[0]):
        status = _add(orders, obuckets, levels, lbuckets, meta, ofree, lfree, rows[i, 0], rows[i, 1], rows[i, 2],
                      rows[i, 3], rows[i, 4])
        if status != OK:
            return status
    return OK


#: messages in one packet of a replay (MoldUDP64's count is 16 bits, 0xFFFF ends a session)
REPLAY_CHUNK = 0xFFFE
_NONE = np.zeros((1, 4), np.int64)
_NO_LATENCY = np.zeros(1, np.int64)
# messages the kernel leaves to Python that touch no order: what FeedBook.apply does with them
_TRADING_ACTION = b"H"


def replay(book: FeedBook, messages: list[bytes]) -> FeedBook:
    """``book`` with ``messages`` (ITCH, in order) applied, as ``FeedBook.apply`` of each one
    decoded would leave it, in compiled passes: how a restarted publisher rebuilds its book
    from its store's newest segment (up to 2**20 messages; one by one in Python, 3-4 µs
    each). The book goes into a ``PacketBook`` (growing when full), the messages through
    ``apply_packet`` a packet's worth at a time; those it leaves to Python are decoded (so a
    malformed one raises as ``apply`` would) and applied: a Stock Trading Action sets its
    state, an order message the kernel does not read (Add Order with MPID, Order Executed
    with Price) goes through ``FeedBook`` itself, the rest change nothing. A message the book
    refuses raises ``BookError``, as ``apply`` would."""
    pb = _packet_book(book)
    at = 0
    while True:
        status, at = _replay_packets(pb, messages, at)
        if status == OK:
            return pb.to_feed_book()
        if status == FULL:
            pb = pb.grown()
        elif status == STOP:  # an order message of a kind the kernel does not read: FeedBook's
            book = pb.to_feed_book()
            book.apply(itch.decode(messages[at]))
            pb = _packet_book(book)
            at += 1
        else:
            raise BookError(f"message {at} of the replay ({messages[at][:1]!r}) {STATUS_TEXT.get(status, status)}")


def _packet_book(book: FeedBook) -> PacketBook:
    """``book`` in arrays, with room for as many orders again."""
    rows = np.array([(ref, o.locate, o.side, o.shares, o.price) for ref, o in book.orders.items()],
                    np.int64).reshape(-1, 5)
    pb = PacketBook(max(1024, 2 * len(rows)))
    pb.states.update(book.states)
    status = _add_all(*pb.args(), rows)
    if status != OK:
        raise BookError(f"the book to replay onto {STATUS_TEXT.get(status, status)}")
    return pb


def _replay_packets(pb: PacketBook, messages: list[bytes], at: int) -> tuple[int, int]:
    """Apply ``messages[at:]`` to ``pb``; (OK, len) or (the status that stopped it, the index of
    the message it stopped at: not applied)."""
    header = b"REPLAY    " + (1).to_bytes(8, "big")
    while at < len(messages):
        chunk = messages[at:at + REPLAY_CHUNK]
        pkt = np.frombuffer(header + len(chunk).to_bytes(2, "big")
                            + b"".join([len(m).to_bytes(2, "big") + m for m in chunk]), np.uint8)
        start, expected = HEADER, 1
        while True:
            status, expected, start, _, _ = apply_packet(pkt, len(pkt), start, expected, *pb.args(), _NONE, False,
                                                         _NO_LATENCY, False, 0, 0)
            if status == OK:
                break
            i = at + expected - 1
            if status != STOP:
                return status, i
            msg = messages[i]
            decoded = itch.decode(msg)
            if msg[:1] == _TRADING_ACTION:
                pb.states[decoded.stock_locate] = decoded.trading_state
            elif msg[:1] in _ORDER_KINDS:
                return STOP, i
            start += 2 + len(msg)
            expected += 1
        at += len(chunk)
    return OK, at


def warm_up() -> None:
    """Compile (or load from the cache) the kernel."""
    b = PacketBook(16)
    pkt = np.frombuffer(mold.encode_packet(b"WARM", 1, [itch.add_order(1, 0, 0, 1, b"B", 1, "W", 1)]), np.uint8)
    _add_all(*b.args(), np.zeros((0, 5), np.int64))
    for pk in (pkt, np.frombuffer(pkt.tobytes(), np.uint8)):  # both read-only: np.frombuffer of bytes
        apply_packet(pk, len(pk), 20, 1, *b.args(), np.zeros((1, 4), np.int64), False, np.zeros(1, np.int64), False,
                     0, 0)
