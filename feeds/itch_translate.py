"""Engine events -> ITCH 5.0 messages (docs/market-data.md has the whole mapping).

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
live orders' generations and the orders emptied within the current input message.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

from ringex.engine.wire import messages as m
from ringex.feeds import itch
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.itch_instrument import ItchInstrument

__all__ = ["FEED_TEMPLATES", "GENERATION_SHIFT", "Translator", "engine_order_id"]

GENERATION_SHIFT = 40
_ID_MASK = (1 << GENERATION_SHIFT) - 1
NS_PER_DAY = itch.NS_PER_DAY
TRACKING = 0


def engine_order_id(reference: int) -> int:
    """The engine orderId an ITCH order reference number names."""
    return reference & _ID_MASK


def _unpacker(layout, names: tuple[str, ...]):
    """A function slot -> (seq, timestampNs, *fields), every offset from the schema."""
    fields = [layout.field(n) for n in ("seq", "timestampNs", *names)]
    if any(a.offset + a.size != b.offset for a, b in zip(fields, fields[1:])):
        # one struct over a contiguous run: a single unpack per event
        structs = [(f.offset, struct.Struct("<" + f.struct_code)) for f in fields]
        return lambda buf: tuple(s.unpack_from(buf, at)[0] for at, s in structs)
    whole = struct.Struct("<" + "".join(f.struct_code for f in fields))
    at = fields[0].offset
    return lambda buf: whole.unpack_from(buf, at)


_BOOK_ADD = _unpacker(m.BookAdd, ("orderId", "price", "qty", "instrument", "side"))
_BOOK_EXECUTE = _unpacker(m.BookExecute, ("orderId", "qty", "tradeId", "instrument"))
_BOOK_REDUCE = _unpacker(m.BookReduce, ("orderId", "qty", "instrument"))
_BOOK_DELETE = _unpacker(m.BookDelete, ("orderId", "instrument"))
_BOOK_REPLACE = _unpacker(m.BookReplace, ("orderId", "price", "qty", "instrument", "side"))
_STATUS = _unpacker(m.InstrumentStatus, ("instrument", "status"))
_STAMP = _unpacker(m.BookDelete, ())  # the stamp is at the same place in every ring message

_SIDE = {int(m.Side.Buy): itch.BUY, int(m.Side.Sell): itch.SELL}
_STATE = {int(m.TradingStatus.Trading): itch.TRADING_STATE_TRADING,
          int(m.TradingStatus.Halted): itch.TRADING_STATE_HALTED,
          int(m.TradingStatus.Closed): itch.TRADING_STATE_HALTED}
_REASON = {itch.TRADING_STATE_TRADING: "", itch.TRADING_STATE_HALTED: ""}

#: template ids of the events that become ITCH messages (the rest only move the clock)
FEED_TEMPLATES = np.array(sorted(x.template_id for x in (
    m.BookAdd, m.BookExecute, m.BookReduce, m.BookDelete, m.BookReplace, m.InstrumentStatus)), np.int64)


class Translator:
    """Engine events to ITCH messages, keeping ``book`` (the feed's own) up to date."""

    def __init__(self, instruments: Mapping[int, ItchInstrument], book: FeedBook) -> None:
        self.instruments = dict(instruments)
        self.by_locate = {i.locate: i for i in self.instruments.values()}
        self.book = book
        self.generation: dict[int, int] = {}  # live engine orderId -> generation of its reference
        self.emptied: dict[int, int] = {}  # orderId -> generation, emptied by the current input
        self.emptied_seq = 0  # the stamp seq those belong to
        self.last_timestamp = 0  # ns since midnight of the last event translated
        self.opened = False
        for ref in book.orders:
            self.generation[ref & _ID_MASK] = ref >> GENERATION_SHIFT

    def resume(self, emptied: Mapping[int, int], emptied_seq: int) -> None:
        """After a restart mid-session: the open group the store recorded."""
        self.emptied = dict(emptied)
        self.emptied_seq = emptied_seq
        self.opened = True

    # -- session bracket ------------------------------------------------------------------

    def open_session(self, timestamp: int) -> list[bytes]:
        """The messages that open a session: System Event O, the market as it is
        (``market``), System Events S and Q; then the book's resting orders (a session after
        a restart starts with the market as it is)."""
        self.opened = True
        directory, orders = self.market(timestamp)
        return ([itch.system_event(0, TRACKING, timestamp, itch.EVENT_START_OF_MESSAGES)] + directory
                + [itch.system_event(0, TRACKING, timestamp, code)
                   for code in (itch.EVENT_START_OF_SYSTEM_HOURS, itch.EVENT_START_OF_MARKET_HOURS)]
                + orders)

    def market(self, timestamp: int) -> tuple[list[bytes], list[bytes]]:
        """(every instrument's Stock Directory then its Stock Trading Action; an Add Order for
        every resting order in time priority): the book as ITCH messages, what a snapshot
        sends."""
        # Nasdaq's listing attributes mean nothing here: blank ("not available") where the spec
        # allows it; Authenticity P (live), Round Lots Only N, Inverse Indicator N
        directory = [itch.stock_directory(
            ins.locate, TRACKING, timestamp, ins.stock, b" ", b" ", ins.round_lot, b"N", b" ", "", b"P",
            b" ", b" ", b" ", b" ", 0, b"N") for ins in self.instruments.values()]
        for ins in self.instruments.values():
            state = self.book.states.setdefault(ins.locate, itch.TRADING_STATE_TRADING)
            directory.append(itch.stock_trading_action(ins.locate, TRACKING, timestamp, ins.stock, state, ""))
        orders = [itch.add_order(o.locate, TRACKING, timestamp, ref, bytes((o.side,)), o.shares,
                                 self.by_locate[o.locate].stock, o.price)
                  for ref, o in self.book.in_priority()]
        return directory, orders

    def close_session(self) -> list[bytes]:
        ts = self.last_timestamp
        return [itch.system_event(0, TRACKING, ts, code) for code in
                (itch.EVENT_END_OF_MARKET_HOURS, itch.EVENT_END_OF_SYSTEM_HOURS, itch.EVENT_END_OF_MESSAGES)]

    # -- events ---------------------------------------------------------------------------

    def translate(self, region: np.ndarray, out: list[bytes]) -> None:
        """Append the ITCH messages of ``region`` (ring slots, in order) to ``out``."""
        if not len(region):
            return
        tids = region[:, 2].astype(np.int64) | (region[:, 3].astype(np.int64) << 8)
        if not self.opened:
            seq, ts = _STAMP(region[0].tobytes())
            out += self.open_session(ts % NS_PER_DAY)
        for i in np.flatnonzero(np.isin(tids, FEED_TEMPLATES)).tolist():
            self.event(int(tids[i]), region[i].tobytes(), out)
        if len(region):
            self.last_timestamp = _STAMP(region[-1].tobytes())[1] % NS_PER_DAY

    def event(self, tid: int, buf: bytes, out: list[bytes]) -> None:
        """Append the ITCH messages of one engine event (template ``tid``) to ``out``."""
        book = self.book
        if tid == m.BookAdd.template_id:
            seq, ts, oid, price, qty, inst, side = _BOOK_ADD(buf)
            ins = self.instruments[inst]
            gen = self._refill_generation(oid, seq)
            self.generation[oid] = gen
            ref = oid | gen << GENERATION_SHIFT
            p = ins.itch_price(price)
            s = _SIDE[side]
            out.append(itch.add_order(ins.locate, TRACKING, ts % NS_PER_DAY, ref, s, qty, ins.stock, p))
            book.add(ref, ins.locate, s[0], qty, p)
        elif tid == m.BookExecute.template_id:
            seq, ts, oid, qty, trade_id, inst = _BOOK_EXECUTE(buf)
            ins = self.instruments[inst]
            gen = self.generation[oid]
            ref = oid | gen << GENERATION_SHIFT
            out.append(itch.order_executed(ins.locate, TRACKING, ts % NS_PER_DAY, ref, qty, trade_id))
            if book.execute(ref, qty).shares == 0:
                del self.generation[oid]
                self._note_emptied(oid, gen, seq)
        elif tid == m.BookReduce.template_id:
            seq, ts, oid, qty, inst = _BOOK_REDUCE(buf)
            ins = self.instruments[inst]
            ref = oid | self.generation[oid] << GENERATION_SHIFT
            out.append(itch.order_cancel(ins.locate, TRACKING, ts % NS_PER_DAY, ref, qty))
            if book.cancel(ref, qty).shares == 0:  # the engine deletes instead; kept consistent
                gen = self.generation.pop(oid)
                self._note_emptied(oid, gen, seq)
        elif tid == m.BookDelete.template_id:
            seq, ts, oid, inst = _BOOK_DELETE(buf)
            ins = self.instruments[inst]
            gen = self.generation.pop(oid)
            ref = oid | gen << GENERATION_SHIFT
            out.append(itch.order_delete(ins.locate, TRACKING, ts % NS_PER_DAY, ref))
            book.delete(ref)
            self._note_emptied(oid, gen, seq)
        elif tid == m.BookReplace.template_id:
            seq, ts, oid, price, qty, inst, side = _BOOK_REPLACE(buf)
            ins = self.instruments[inst]
            gen = self.generation[oid]
            ref = oid | gen << GENERATION_SHIFT
            new = oid | (gen + 1) << GENERATION_SHIFT
            self.generation[oid] = gen + 1
            p = ins.itch_price(price)
            out.append(itch.order_replace(ins.locate, TRACKING, ts % NS_PER_DAY, ref, new, qty, p))
            book.replace(ref, new, qty, p)
        elif tid == m.InstrumentStatus.template_id:
            seq, ts, inst, status = _STATUS(buf)
            ins = self.instruments.get(inst)
            if ins is None:
                return
            state = _STATE.get(status, itch.TRADING_STATE_HALTED)
            book.states[ins.locate] = state
            out.append(itch.stock_trading_action(ins.locate, TRACKING, ts % NS_PER_DAY, ins.stock, state,
                                                 _REASON[state]))

    def _note_emptied(self, oid: int, gen: int, seq: int) -> None:
        """An order's reference number ended within input ``seq``: a refill (or a replace's
        re-add) within the same input shows it under the next generation."""
        if seq != self.emptied_seq:
            self.emptied.clear()
            self.emptied_seq = seq
        self.emptied[oid] = gen

    def _refill_generation(self, oid: int, seq: int) -> int:
        if seq != self.emptied_seq:
            self.emptied.clear()
            self.emptied_seq = seq
            return 0
        gen = self.emptied.pop(oid, None)
        return 0 if gen is None else gen + 1
