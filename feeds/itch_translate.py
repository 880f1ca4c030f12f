"""Engine events -> ITCH 5.0 messages, compiled: a whole batch of ring slots in one call.

=====================================  ==================================================
engine event (engine/wire/schema.xml)  ITCH 5.0
=====================================  ==================================================
``BookAdd``                            Add Order (A); an iceberg's refill: a new A
``BookExecute``                        Order Executed (E), match number = tradeId
``BookReduce``                         Order Cancel (X)
``BookDelete``                         Order Delete (D)
``BookReplace``                        Order Replace (U): the order lost its priority
``InstrumentStatus``                   Stock Trading Action (H): T trading, H halted/closed
the first event of a session           System Event O, then Stock Directory (R) and Stock
                                       Trading Action (H) per instrument, System Event S
                                       and Q, then an A per resting order (a new session
                                       after a restart carries the book)
the end of a session                   System Event M, E, C
everything else                        nothing (a Trade is told by its maker's E)
=====================================  ==================================================

Order reference numbers are unique for the session and name the engine's order:
``reference = orderId | generation << 40``; an order's first A has generation 0 (its
reference number is its engine orderId, the FIX OrderID its owner saw), and each time it
takes a new time priority (a replace that loses priority, an iceberg refill) the generation
goes up by one and the order shows under the new number. An execution that empties an
iceberg's displayed quantity ends that reference number (E of all its shares) and its refill
is a new A (the spec's Order Replace needs a live original; after a full execution a feed
handler has removed it). The engine never executes against hidden quantity and always at
the resting order's price, so Order Executed With Price (C) and Trade (P) are not produced.

Every message is stamped by the event that caused it: Timestamp = the sequencer's
``timestampNs`` mod one day (nanoseconds since midnight, UTC), Tracking Number 0; so replaying
a journal publishes the same bytes. The translator is deterministic: its only state is the
order table below. ``tests/itch_model.py`` is the same rules in plain Python, one event at a
time; the tests hold the two byte for byte equal.

The order table (``OrderTable``): one row per order the feed shows, or showed within the
current input message (an order an execution emptied or a delete removed stays findable
until the next input's first book event, so that a refill or a crossing replace's re-add in
the same input takes the next generation), found by engine orderId through a chained hash
(buckets, each row's next). Rows: orderId, generation, state (free, live, ended), stock
locate, side, displayed shares, Price(4), priority (a counter: time priority across the
table), hash chain. Capacity: the engine's ``max_orders`` (no more can rest) plus room for one
input's ended orders.

A slot's fields are read at the schema's offsets (little-endian); an ITCH message is written
big-endian at the specification's offsets (``feeds/itch.py``'s layouts, checked at import
against the constants used here). A value that does not fit its ITCH field, an order the table
does not know, or a full table stops the batch with a status (``TranslateError``), never a
truncated or wrong message.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.engine.wire import messages as m
from ringex.feeds import itch
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.itch_instrument import ItchInstrument

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["GENERATION_SHIFT", "OrderTable", "TranslateError", "Translator", "engine_order_id"]

GENERATION_SHIFT = 40
_ID_MASK = (1 << GENERATION_SHIFT) - 1
NS_PER_DAY = itch.NS_PER_DAY
TRACKING = 0
U32 = 1 << 32


def engine_order_id(reference: int) -> int:
    """The engine orderId an ITCH order reference number names."""
    return reference & _ID_MASK


class TranslateError(RuntimeError):
    """An event the feed cannot publish truthfully (a bug upstream, or a table too small)."""


# -- the order table's columns and states -------------------------------------------------------
C_OID, C_GEN, C_STATE, C_LOCATE, C_SIDE, C_SHARES, C_PRICE, C_PRIO, C_NEXT = range(9)
COLUMNS = 9
# LISTED: live again (a refill) while still in the list of the input's ended orders
FREE, LIVE, ENDED, LISTED = 0, 1, 2, 3
# meta words
M_FREE_TOP, M_PRIO, M_ENDED_SEQ, M_ENDED_N, M_LIVE = range(5)
META = 8

# -- statuses ------------------------------------------------------------------------------------
OK, UNKNOWN_ORDER, DUPLICATE_ORDER, TABLE_FULL, TOO_WIDE, UNKNOWN_INSTRUMENT, BAD_SHARES = range(7)
_STATUS_TEXT = {UNKNOWN_ORDER: "an event names an order the feed does not show",
                DUPLICATE_ORDER: "a BookAdd names an order the feed already shows",
                TABLE_FULL: "the feed's order table is full (capacity below the engine's max_orders?)",
                TOO_WIDE: "a price or quantity does not fit its 32-bit ITCH field",
                UNKNOWN_INSTRUMENT: "an event names an instrument the feed does not publish",
                BAD_SHARES: "an execution or cancel takes more shares than the order shows"}

# -- where the kernel reads and writes (from the schema and from feeds/itch.py's layouts) --------
_ADD, _EXE, _RED, _DEL, _REP, _STA = (x.template_id for x in (
    m.BookAdd, m.BookExecute, m.BookReduce, m.BookDelete, m.BookReplace, m.InstrumentStatus))
#: template ids of the events that become ITCH messages (the rest only move the clock)
FEED_TEMPLATES = np.array(sorted((_ADD, _EXE, _RED, _DEL, _REP, _STA)), np.int64)
_SEQ = m.BookAdd.offset("seq")
_TS = m.BookAdd.offset("timestampNs")
for _x in (m.BookExecute, m.BookReduce, m.BookDelete, m.BookReplace, m.InstrumentStatus):
    if (_x.offset("seq"), _x.offset("timestampNs")) != (_SEQ, _TS):
        raise RuntimeError(f"{_x.name}: the stamp is not where BookAdd has it")
A_OID, A_PRICE, A_QTY, A_INST, A_SIDE = (m.BookAdd.offset(n) for n in ("orderId", "price", "qty", "instrument", "side"))
E_OID, E_QTY, E_TRADE, E_INST = (m.BookExecute.offset(n) for n in ("orderId", "qty", "tradeId", "instrument"))
R_OID, R_QTY, R_INST = (m.BookReduce.offset(n) for n in ("orderId", "qty", "instrument"))
D_OID, D_INST = (m.BookDelete.offset(n) for n in ("orderId", "instrument"))
P_OID, P_PRICE, P_QTY, P_INST = (m.BookReplace.offset(n) for n in ("orderId", "price", "qty", "instrument"))
S_INST, S_STATUS = (m.InstrumentStatus.offset(n) for n in ("instrument", "status"))
_BUY = int(m.Side.Buy)
_TRADING = int(m.TradingStatus.Trading)

# ITCH offsets this kernel writes, checked against feeds/itch.py's layouts
_LEN_A, _LEN_E, _LEN_X, _LEN_D, _LEN_U, _LEN_H = (itch.MESSAGE_LENGTH[t] for t in (b"A", b"E", b"X", b"D", b"U", b"H"))
_CHECK = {
    (b"A", "order_reference_number"): 11, (b"A", "buy_sell_indicator"): 19, (b"A", "shares"): 20,
    (b"A", "stock"): 24, (b"A", "price"): 32,
    (b"E", "order_reference_number"): 11, (b"E", "executed_shares"): 19, (b"E", "match_number"): 23,
    (b"X", "order_reference_number"): 11, (b"X", "canceled_shares"): 19,
    (b"D", "order_reference_number"): 11,
    (b"U", "original_order_reference_number"): 11, (b"U", "new_order_reference_number"): 19,
    (b"U", "shares"): 27, (b"U", "price"): 31,
    (b"H", "stock"): 11, (b"H", "trading_state"): 19, (b"H", "reserved"): 20, (b"H", "reason"): 21,
}
for (_t, _f), _at in _CHECK.items():
    if itch.LAYOUTS[_t].offset(_f) != _at:
        raise RuntimeError(f"ITCH {_t!r}.{_f} is at {itch.LAYOUTS[_t].offset(_f)}, the kernel writes {_at}")
if (itch.STOCK_LOCATE_OFFSET, itch.TRACKING_NUMBER_OFFSET, itch.TIMESTAMP_OFFSET) != (1, 3, 5):
    raise RuntimeError("the ITCH common header is not where the kernel writes it")


@njit(cache=True, inline="always")
def _le(b, at, n):
    v = np.int64(0)
    for k in range(n):
        v |= np.int64(b[at + k]) << (8 * k)
    return v


@njit(cache=True, inline="always")
def _be(out, at, v, n):
    for k in range(n):
        out[at + n - 1 - k] = (v >> (8 * k)) & 0xFF


@njit(cache=True, inline="always")
def _header(out, at, kind, locate, ts):
    out[at] = kind
    _be(out, at + 1, locate, 2)
    _be(out, at + 3, 0, 2)  # Tracking Number
    _be(out, at + 5, ts, 6)


@njit(cache=True)
def _find(rows, buckets, oid):
    r = buckets[oid & (buckets.shape[0] - 1)]
    while r != -1 and rows[r, C_OID] != oid:
        r = rows[r, C_NEXT]
    return r


@njit(cache=True)
def _unlink(rows, buckets, meta, free, r):
    b = rows[r, C_OID] & (buckets.shape[0] - 1)
    if buckets[b] == r:
        buckets[b] = rows[r, C_NEXT]
    else:
        p = buckets[b]
        while rows[p, C_NEXT] != r:
            p = rows[p, C_NEXT]
        rows[p, C_NEXT] = rows[r, C_NEXT]
    rows[r, C_STATE] = FREE
    free[meta[M_FREE_TOP]] = r
    meta[M_FREE_TOP] += 1


@njit(cache=True, inline="always")
def _live(state):
    return state == LIVE or state == LISTED


@njit(cache=True)
def _close_input(rows, buckets, meta, free, ended, seq):
    """A new input message: the orders the last one ended are forgotten."""
    if meta[M_ENDED_SEQ] != seq:
        for i in range(meta[M_ENDED_N]):
            r = ended[i]
            if rows[r, C_STATE] == ENDED:
                _unlink(rows, buckets, meta, free, r)
            elif rows[r, C_STATE] == LISTED:
                rows[r, C_STATE] = LIVE
        meta[M_ENDED_N] = 0
        meta[M_ENDED_SEQ] = seq


@njit(cache=True)
def _end(rows, meta, ended, r):
    if rows[r, C_STATE] == LIVE:  # a LISTED row is in the list already
        ended[meta[M_ENDED_N]] = r
        meta[M_ENDED_N] += 1
    rows[r, C_STATE] = ENDED
    meta[M_LIVE] -= 1


@njit(cache=True)
def translate_batch(region, rows, buckets, meta, free, ended, inst_locate, inst_mul, inst_div, inst_stock,
                    out, offsets):
    """Translate ``region`` (ring slots) into ``out`` (message ``i`` at ``offsets[i]`` ..
    ``offsets[i + 1]``), updating the table. Returns (messages, status, slot index of the
    event that stopped it, last timestamp mod one day)."""
    n = 0
    at = 0
    last_ts = np.int64(-1)
    n_inst = inst_locate.shape[0]
    for i in range(region.shape[0]):
        b = region[i]
        tid = np.int64(b[2]) | (np.int64(b[3]) << 8)
        ts = _le(b, _TS, 8) % NS_PER_DAY
        last_ts = ts
        if tid != _ADD and tid != _EXE and tid != _RED and tid != _DEL and tid != _REP and tid != _STA:
            continue
        seq = _le(b, _SEQ, 8)
        offsets[n] = at
        if tid == _ADD:
            oid, inst = _le(b, A_OID, 8), _le(b, A_INST, 4)
            if inst >= n_inst or inst_locate[inst] == 0:
                return n, UNKNOWN_INSTRUMENT, i, last_ts
            price = _le(b, A_PRICE, 8) * inst_mul[inst] // inst_div[inst]
            qty = _le(b, A_QTY, 8)
            if price <= 0 or price >= U32 or qty <= 0 or qty >= U32:
                return n, TOO_WIDE, i, last_ts
            _close_input(rows, buckets, meta, free, ended, seq)
            r = _find(rows, buckets, oid)
            if r != -1 and _live(rows[r, C_STATE]):
                return n, DUPLICATE_ORDER, i, last_ts
            if r != -1:  # ended within this input: a refill or a re-add takes the next generation
                rows[r, C_GEN] += 1
                rows[r, C_STATE] = LISTED
            else:
                if meta[M_FREE_TOP] == 0:
                    return n, TABLE_FULL, i, last_ts
                meta[M_FREE_TOP] -= 1
                r = free[meta[M_FREE_TOP]]
                rows[r, C_OID] = oid
                rows[r, C_GEN] = 0
                bk = oid & (buckets.shape[0] - 1)
                rows[r, C_NEXT] = buckets[bk]
                buckets[bk] = r
                rows[r, C_STATE] = LIVE
            meta[M_LIVE] += 1
            side = 66 if _le(b, A_SIDE, 1) == _BUY else 83  # 'B' / 'S'
            rows[r, C_LOCATE] = inst_locate[inst]
            rows[r, C_SIDE] = side
            rows[r, C_SHARES] = qty
            rows[r, C_PRICE] = price
            rows[r, C_PRIO] = meta[M_PRIO]
            meta[M_PRIO] += 1
            _header(out, at, 65, inst_locate[inst], ts)
            _be(out, at + 11, oid | (rows[r, C_GEN] << GENERATION_SHIFT), 8)
            out[at + 19] = side
            _be(out, at + 20, qty, 4)
            for k in range(8):
                out[at + 24 + k] = inst_stock[inst, k]
            _be(out, at + 32, price, 4)
            at += _LEN_A
        elif tid == _EXE or tid == _RED:
            oid = _le(b, E_OID if tid == _EXE else R_OID, 8)
            qty = _le(b, E_QTY if tid == _EXE else R_QTY, 8)
            r = _find(rows, buckets, oid)
            if r == -1 or not _live(rows[r, C_STATE]):
                return n, UNKNOWN_ORDER, i, last_ts
            if qty <= 0 or qty > rows[r, C_SHARES]:
                return n, BAD_SHARES, i, last_ts
            ref = oid | (rows[r, C_GEN] << GENERATION_SHIFT)
            if tid == _EXE:
                _header(out, at, 69, rows[r, C_LOCATE], ts)
                _be(out, at + 11, ref, 8)
                _be(out, at + 19, qty, 4)
                _be(out, at + 23, _le(b, E_TRADE, 8), 8)
                at += _LEN_E
            else:
                _header(out, at, 88, rows[r, C_LOCATE], ts)
                _be(out, at + 11, ref, 8)
                _be(out, at + 19, qty, 4)
                at += _LEN_X
            rows[r, C_SHARES] -= qty
            if rows[r, C_SHARES] == 0:
                _close_input(rows, buckets, meta, free, ended, seq)
                _end(rows, meta, ended, r)
        elif tid == _DEL:
            oid = _le(b, D_OID, 8)
            r = _find(rows, buckets, oid)
            if r == -1 or not _live(rows[r, C_STATE]):
                return n, UNKNOWN_ORDER, i, last_ts
            _header(out, at, 68, rows[r, C_LOCATE], ts)
            _be(out, at + 11, oid | (rows[r, C_GEN] << GENERATION_SHIFT), 8)
            at += _LEN_D
            _close_input(rows, buckets, meta, free, ended, seq)
            _end(rows, meta, ended, r)
        elif tid == _REP:
            oid, inst = _le(b, P_OID, 8), _le(b, P_INST, 4)
            r = _find(rows, buckets, oid)
            if r == -1 or not _live(rows[r, C_STATE]):
                return n, UNKNOWN_ORDER, i, last_ts
            if inst >= n_inst or inst_locate[inst] == 0:
                return n, UNKNOWN_INSTRUMENT, i, last_ts
            price = _le(b, P_PRICE, 8) * inst_mul[inst] // inst_div[inst]
            qty = _le(b, P_QTY, 8)
            if price <= 0 or price >= U32 or qty <= 0 or qty >= U32:
                return n, TOO_WIDE, i, last_ts
            gen = rows[r, C_GEN]
            _header(out, at, 85, rows[r, C_LOCATE], ts)
            _be(out, at + 11, oid | (gen << GENERATION_SHIFT), 8)
            _be(out, at + 19, oid | ((gen + 1) << GENERATION_SHIFT), 8)
            _be(out, at + 27, qty, 4)
            _be(out, at + 31, price, 4)
            at += _LEN_U
            rows[r, C_GEN] = gen + 1
            rows[r, C_SHARES] = qty
            rows[r, C_PRICE] = price
            rows[r, C_PRIO] = meta[M_PRIO]
            meta[M_PRIO] += 1
        else:  # InstrumentStatus
            inst = _le(b, S_INST, 4)
            if inst >= n_inst or inst_locate[inst] == 0:
                continue  # an instrument the feed does not publish
            _header(out, at, 72, inst_locate[inst], ts)
            for k in range(8):
                out[at + 11 + k] = inst_stock[inst, k]
            out[at + 19] = 84 if _le(b, S_STATUS, 1) == _TRADING else 72  # 'T' / 'H'
            out[at + 20] = 32  # Reserved
            for k in range(4):
                out[at + 21 + k] = 32  # Reason: blank
            at += _LEN_H
        n += 1
    offsets[n] = at
    return n, OK, -1, last_ts


class OrderTable:
    """The orders the feed shows (see the module notes), in arrays the kernel updates."""

    def __init__(self, capacity: int) -> None:
        cap = 1 << max(4, (capacity - 1).bit_length())
        self.rows = np.zeros((cap, COLUMNS), np.int64)
        self.buckets = np.full(cap, -1, np.int64)
        self.meta = np.zeros(META, np.int64)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)  # a stack: row 0 taken first
        self.ended = np.zeros(cap, np.int64)
        self.meta[M_FREE_TOP] = cap

    def __len__(self) -> int:
        return int(self.meta[M_LIVE])

    def live_rows(self) -> np.ndarray:
        """Rows of the orders shown, in time priority."""
        live = np.flatnonzero((self.rows[:, C_STATE] == LIVE) | (self.rows[:, C_STATE] == LISTED))
        return live[np.argsort(self.rows[live, C_PRIO], kind="stable")]

    def to_book(self, states: Mapping[int, bytes]) -> FeedBook:
        """The orders shown as a ``FeedBook`` (for a checkpoint or a snapshot)."""
        book = FeedBook()
        rows = self.rows
        for r in self.live_rows().tolist():
            book.add(int(rows[r, C_OID]) | int(rows[r, C_GEN]) << GENERATION_SHIFT, int(rows[r, C_LOCATE]),
                     int(rows[r, C_SIDE]), int(rows[r, C_SHARES]), int(rows[r, C_PRICE]))
        book.states.update(states)
        return book

    def ended_orders(self) -> dict[int, int]:
        """Orders the current input ended: engine orderId -> generation."""
        rows = self.rows
        out = {}
        for r in self.ended[:self.meta[M_ENDED_N]].tolist():
            if rows[r, C_STATE] == ENDED:
                out[int(rows[r, C_OID])] = int(rows[r, C_GEN])
        return out

    def load(self, book: FeedBook, ended: Mapping[int, int], ended_seq: int) -> None:
        """Fill an empty table from a recovered book (in its time priority) and the orders the
        input being translated when it stopped had ended."""
        meta = self.meta
        for ref, o in book.in_priority():
            self._insert(ref & _ID_MASK, ref >> GENERATION_SHIFT, LIVE, o.locate, o.side, o.shares, o.price)
        for oid, gen in ended.items():
            r = self._insert(oid, gen, ENDED, 0, 0, 0, 0)
            self.ended[meta[M_ENDED_N]] = r
            meta[M_ENDED_N] += 1
        meta[M_ENDED_SEQ] = ended_seq

    def _insert(self, oid: int, gen: int, state: int, locate: int, side: int, shares: int, price: int) -> int:
        meta = self.meta
        if meta[M_FREE_TOP] == 0:
            raise TranslateError(_STATUS_TEXT[TABLE_FULL])
        meta[M_FREE_TOP] -= 1
        r = int(self.free[meta[M_FREE_TOP]])
        self.rows[r] = (oid, gen, state, locate, side, shares, price, meta[M_PRIO], self.buckets[oid & (len(self.buckets) - 1)])
        self.buckets[oid & (len(self.buckets) - 1)] = r
        meta[M_PRIO] += 1
        if state == LIVE:
            meta[M_LIVE] += 1
        return r


def _instrument_tables(instruments: Mapping[int, ItchInstrument]) -> tuple[np.ndarray, ...]:
    top = max(instruments, default=0) + 1
    locate = np.zeros(top, np.int64)
    mul = np.ones(top, np.int64)
    div = np.ones(top, np.int64)
    stock = np.zeros((top, 8), np.uint8)
    for i, ins in instruments.items():
        locate[i], mul[i], div[i] = ins.locate, ins.mul, ins.div
        stock[i] = np.frombuffer(itch.alpha(ins.stock, 8), np.uint8)
    return locate, mul, div, stock


def market_messages(instruments: Mapping[int, ItchInstrument], book: FeedBook, states: dict[int, bytes],
                    timestamp: int) -> tuple[list[bytes], list[bytes]]:
    """(every instrument's Stock Directory then its Stock Trading Action; an Add Order for
    every resting order of ``book`` in time priority): the book as ITCH messages, what a
    snapshot sends. ``states`` (locate -> trading state) gains a Trading entry for an
    instrument it lacks."""
    by_locate = {i.locate: i for i in instruments.values()}
    # Nasdaq's listing attributes mean nothing here: blank ("not available") where the spec
    # allows it; Authenticity P (live), Round Lots Only N, Inverse Indicator N
    directory = [itch.stock_directory(
        ins.locate, TRACKING, timestamp, ins.stock, b" ", b" ", ins.round_lot, b"N", b" ", "", b"P",
        b" ", b" ", b" ", b" ", 0, b"N") for ins in instruments.values()]
    for ins in instruments.values():
        state = states.setdefault(ins.locate, itch.TRADING_STATE_TRADING)
        directory.append(itch.stock_trading_action(ins.locate, TRACKING, timestamp, ins.stock, state, ""))
    orders = [itch.add_order(o.locate, TRACKING, timestamp, ref, bytes((o.side,)), o.shares,
                             by_locate[o.locate].stock, o.price)
              for ref, o in book.in_priority()]
    return directory, orders


def session_opening(instruments: Mapping[int, ItchInstrument], book: FeedBook, states: dict[int, bytes],
                    timestamp: int) -> list[bytes]:
    """The messages that open a session: System Event O, the market as it is
    (``market_messages``' directory), System Events S and Q; then the book's resting orders (a
    session after a restart starts with the market as it is)."""
    directory, orders = market_messages(instruments, book, states, timestamp)
    return ([itch.system_event(0, TRACKING, timestamp, itch.EVENT_START_OF_MESSAGES)] + directory
            + [itch.system_event(0, TRACKING, timestamp, code)
               for code in (itch.EVENT_START_OF_SYSTEM_HOURS, itch.EVENT_START_OF_MARKET_HOURS)]
            + orders)


def session_closing(timestamp: int) -> list[bytes]:
    """The System Events that end a session: M, E, C."""
    return [itch.system_event(0, TRACKING, timestamp, code) for code in
            (itch.EVENT_END_OF_MARKET_HOURS, itch.EVENT_END_OF_SYSTEM_HOURS, itch.EVENT_END_OF_MESSAGES)]


class Translator:
    """Engine events to ITCH messages (see the module notes), keeping the feed's order table.

    ``translate_into(region)`` is the publisher's path: the batch's messages in one buffer.
    ``book`` builds the table's ``FeedBook`` (what checkpoints and snapshots need), on demand.
    """

    def __init__(self, instruments: Mapping[int, ItchInstrument], book: FeedBook | None = None,
                 capacity: int = 1 << 16) -> None:
        self.instruments = dict(sorted(instruments.items()))
        self.by_locate = {i.locate: i for i in self.instruments.values()}
        self._tables = _instrument_tables(self.instruments)
        self.table = OrderTable(capacity)
        self.states: dict[int, bytes] = {}
        self.last_timestamp = 0
        self.opened = False
        self._out = np.zeros(0, np.uint8)
        self._offsets = np.zeros(1, np.int64)
        if book is not None:
            self.table.load(book, {}, 0)
            self.states.update(book.states)

    @property
    def book(self) -> FeedBook:
        return self.table.to_book(self.states)

    @property
    def emptied(self) -> dict[int, int]:
        return self.table.ended_orders()

    @property
    def emptied_seq(self) -> int:
        return int(self.table.meta[M_ENDED_SEQ])

    def resume(self, emptied: Mapping[int, int], emptied_seq: int) -> None:
        """After a restart mid-session: the orders the interrupted input had ended."""
        book = self.book
        self.table = OrderTable(len(self.table.rows))
        self.table.load(book, emptied, emptied_seq)
        self.opened = True

    # -- session bracket ------------------------------------------------------------------

    def open_session(self, timestamp: int) -> list[bytes]:
        """The messages that open a session (``session_opening``)."""
        self.opened = True
        return session_opening(self.instruments, self.book, self.states, timestamp)

    def market(self, timestamp: int) -> tuple[list[bytes], list[bytes]]:
        """The book as ITCH messages, what a snapshot sends (``market_messages``)."""
        return market_messages(self.instruments, self.book, self.states, timestamp)

    def close_session(self) -> list[bytes]:
        return session_closing(self.last_timestamp)

    # -- events ---------------------------------------------------------------------------

    def translate_into(self, region: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """The ITCH messages of ``region`` (ring slots, in order): ``(buffer, offsets,
        opening)``, message ``i`` being ``buffer[offsets[i]:offsets[i + 1]]``, after
        ``opening`` (the session's opening messages when this batch opens it, else [])."""
        k = len(region)
        opening: list[bytes] = []
        if not k:
            return self._out[:0], self._offsets[:1], opening
        if not self.opened:
            ts = int.from_bytes(region[0, _TS:_TS + 8].tobytes(), "little") % NS_PER_DAY
            opening = self.open_session(ts)
        if len(self._out) < k * _LEN_A:
            self._out = np.zeros(max(k, 1024) * _LEN_A, np.uint8)
            self._offsets = np.zeros(max(k, 1024) + 1, np.int64)
        t = self.table
        locate, mul, div, stock = self._tables
        n, status, bad, last = translate_batch(region, t.rows, t.buckets, t.meta, t.free, t.ended, locate, mul, div,
                                               stock, self._out, self._offsets)
        if status != OK:
            raise TranslateError(f"{_STATUS_TEXT[status]}: slot {bad} of the batch, template "
                                 f"{int(region[bad, 2]) | int(region[bad, 3]) << 8}")
        if last >= 0:
            self.last_timestamp = int(last)
        offsets = self._offsets[:n + 1]
        out = self._out
        if n:
            for j in np.flatnonzero(out[offsets[:-1]] == 72).tolist():  # trading states, for snapshots
                at = int(offsets[j])
                self.states[int.from_bytes(out[at + 1:at + 3].tobytes(), "big")] = bytes(out[at + 19:at + 20])
        return out, offsets, opening

    def translate(self, region: np.ndarray, out: list[bytes]) -> None:
        """Append the ITCH messages of ``region`` to ``out`` (as bytes objects: tests and tools)."""
        buf, offsets, opening = self.translate_into(region)
        out += opening
        data = buf.tobytes() if len(offsets) > 1 else b""
        out += [data[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def warm_up() -> None:
    """Compile (or load from the cache) the kernel, before anything is timed or waited on."""
    t = Translator({1: ItchInstrument(1, 1, "WARM", 1, 1, 1)}, capacity=16)
    t.opened = True
    slots = np.zeros((1, m.SLOT_SIZE), np.uint8)
    t.translate(slots, [])
    slots.flags.writeable = False  # a consumer's batch is a read-only view of the ring: its own specialization
    t.translate(slots, [])
