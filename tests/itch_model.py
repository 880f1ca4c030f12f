"""The reference model of ``feeds/itch_translate.py``: the same rules (that module's notes
state them: the mapping, reference numbers and generations, timestamps), one event at a time in
plain Python, with a ``FeedBook`` for state: its only state is the live orders' generations
and the orders emptied within the current input message. The tests hold the compiled
translator's bytes equal to this model's.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

from ringex.engine.wire import messages as m
from ringex.feeds import itch
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.itch_instrument import ItchInstrument
from ringex.feeds.itch_translate import market_messages, session_closing, session_opening

__all__ = ["FEED_TEMPLATES", "GENERATION_SHIFT", "Translator", "engine_order_id"]

GENERATION_SHIFT = 40
_ID_MASK = (1 << GENERATION_SHIFT) - 1
NS_PER_DAY = itch.NS_PER_DAY
TRACKING = 0


def engine_order_id(reference: int) -> int:
    """The engine orderId an ITCH order reference number names."""
    return reference & _ID_MASK


def _reader(layout, names: tuple[str, ...]) -> tuple[struct.Struct, int]:
    """(one struct, its offset in the slot) reading the stamp's seq and timestampNs and then
    ``names`` (in the layout's order), every offset from the schema: one unpack per event."""
    fields = [layout.field(n) for n in ("seq", "timestampNs", *names)]
    offsets = [f.offset for f in fields]
    if offsets != sorted(offsets):
        raise RuntimeError(f"{layout.name}: read {names} in the layout's order")
    code, at = "<", fields[0].offset
    for f in fields:
        code += f"{f.offset - at}x" if f.offset > at else ""
        code += f.struct_code
        at = f.offset + f.size
    return struct.Struct(code), fields[0].offset


_BOOK_ADD = _reader(m.BookAdd, ("orderId", "price", "qty", "instrument", "side"))
_BOOK_EXECUTE = _reader(m.BookExecute, ("orderId", "qty", "tradeId", "instrument"))
_BOOK_REDUCE = _reader(m.BookReduce, ("orderId", "qty", "instrument"))
_BOOK_DELETE = _reader(m.BookDelete, ("orderId", "instrument"))
_BOOK_REPLACE = _reader(m.BookReplace, ("orderId", "price", "qty", "instrument", "side"))
_STATUS = _reader(m.InstrumentStatus, ("instrument", "status"))
_STAMP = _reader(m.BookDelete, ())  # the stamp is at the same place in every ring message
if len({r[1] for r in (_BOOK_ADD, _BOOK_EXECUTE, _BOOK_REDUCE, _BOOK_DELETE, _BOOK_REPLACE, _STATUS, _STAMP)}) != 1:
    raise RuntimeError("the stamp is not at the same offset in every book event")

# the messages of the hot path, packed in wire form (itch.wire_struct: struct checks ranges)
_A, _E, _X, _D, _U = (itch.wire_struct(t) for t in (b"A", b"E", b"X", b"D", b"U"))

_SIDE = {int(m.Side.Buy): itch.BUY, int(m.Side.Sell): itch.SELL}
_STATE = {int(m.TradingStatus.Trading): itch.TRADING_STATE_TRADING,
          int(m.TradingStatus.Halted): itch.TRADING_STATE_HALTED,
          int(m.TradingStatus.Closed): itch.TRADING_STATE_HALTED}
_REASON = {itch.TRADING_STATE_TRADING: "", itch.TRADING_STATE_HALTED: ""}

_ADD_ID, _EXECUTE_ID, _REDUCE_ID, _DELETE_ID, _REPLACE_ID, _STATUS_ID = (x.template_id for x in (
    m.BookAdd, m.BookExecute, m.BookReduce, m.BookDelete, m.BookReplace, m.InstrumentStatus))
#: template ids of the events that become ITCH messages (the rest only move the clock)
FEED_TEMPLATES = np.array(sorted(x.template_id for x in (
    m.BookAdd, m.BookExecute, m.BookReduce, m.BookDelete, m.BookReplace, m.InstrumentStatus)), np.int64)


class Translator:
    """Engine events to ITCH messages, keeping ``book`` (the feed's own) up to date."""

    def __init__(self, instruments: Mapping[int, ItchInstrument], book: FeedBook) -> None:
        self.instruments = dict(instruments)
        self._stock = {i: itch.alpha(ins.stock, 8) for i, ins in self.instruments.items()}
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

    # -- session bracket: the production's (only the event translation is modelled) ---------

    def open_session(self, timestamp: int) -> list[bytes]:
        self.opened = True
        return session_opening(self.instruments, self.book, self.book.states, timestamp)

    def market(self, timestamp: int) -> tuple[list[bytes], list[bytes]]:
        return market_messages(self.instruments, self.book, self.book.states, timestamp)

    def close_session(self) -> list[bytes]:
        return session_closing(self.last_timestamp)

    # -- events ---------------------------------------------------------------------------

    def translate(self, region: np.ndarray, out: list[bytes]) -> None:
        """Append the ITCH messages of ``region`` (ring slots, in order) to ``out``."""
        n = len(region)
        if not n:
            return
        width = region.shape[1]
        buf = region.tobytes()
        stamp, at = _STAMP
        if not self.opened:
            out += self.open_session(stamp.unpack_from(buf, at)[1] % NS_PER_DAY)
        tids = region[:, 2].astype(np.int64) | (region[:, 3].astype(np.int64) << 8)
        for i in np.flatnonzero(np.isin(tids, FEED_TEMPLATES)).tolist():
            self.event(int(tids[i]), buf, i * width, out)
        self.last_timestamp = stamp.unpack_from(buf, (n - 1) * width + at)[1] % NS_PER_DAY

    def event(self, tid: int, buf: bytes, base: int, out: list[bytes]) -> None:
        """Append the ITCH messages of one engine event (template ``tid``, the slot at
        ``buf[base:]``) to ``out``."""
        book = self.book
        if tid == _ADD_ID:
            r, at = _BOOK_ADD
            seq, ts, oid, price, qty, inst, side = r.unpack_from(buf, base + at)
            ins = self.instruments[inst]
            gen = self._refill_generation(oid, seq)
            self.generation[oid] = gen
            ref = oid | gen << GENERATION_SHIFT
            p = price * ins.mul // ins.div
            s = _SIDE[side]
            ts %= NS_PER_DAY
            out.append(_A.pack(b"A", ins.locate, TRACKING, ts >> 32, ts & 0xFFFFFFFF, ref, s, qty, self._stock[inst], p))
            book.add(ref, ins.locate, s[0], qty, p)
        elif tid == _EXECUTE_ID:
            r, at = _BOOK_EXECUTE
            seq, ts, oid, qty, trade_id, inst = r.unpack_from(buf, base + at)
            ins = self.instruments[inst]
            gen = self.generation[oid]
            ref = oid | gen << GENERATION_SHIFT
            ts %= NS_PER_DAY
            out.append(_E.pack(b"E", ins.locate, TRACKING, ts >> 32, ts & 0xFFFFFFFF, ref, qty, trade_id))
            if book.execute(ref, qty).shares == 0:
                del self.generation[oid]
                self._note_emptied(oid, gen, seq)
        elif tid == _REDUCE_ID:
            r, at = _BOOK_REDUCE
            seq, ts, oid, qty, inst = r.unpack_from(buf, base + at)
            ins = self.instruments[inst]
            ref = oid | self.generation[oid] << GENERATION_SHIFT
            ts %= NS_PER_DAY
            out.append(_X.pack(b"X", ins.locate, TRACKING, ts >> 32, ts & 0xFFFFFFFF, ref, qty))
            if book.cancel(ref, qty).shares == 0:  # the engine deletes instead; kept consistent
                gen = self.generation.pop(oid)
                self._note_emptied(oid, gen, seq)
        elif tid == _DELETE_ID:
            r, at = _BOOK_DELETE
            seq, ts, oid, inst = r.unpack_from(buf, base + at)
            ins = self.instruments[inst]
            gen = self.generation.pop(oid)
            ref = oid | gen << GENERATION_SHIFT
            ts %= NS_PER_DAY
            out.append(_D.pack(b"D", ins.locate, TRACKING, ts >> 32, ts & 0xFFFFFFFF, ref))
            book.delete(ref)
            self._note_emptied(oid, gen, seq)
        elif tid == _REPLACE_ID:
            r, at = _BOOK_REPLACE
            seq, ts, oid, price, qty, inst, side = r.unpack_from(buf, base + at)
            ins = self.instruments[inst]
            gen = self.generation[oid]
            ref = oid | gen << GENERATION_SHIFT
            new = oid | (gen + 1) << GENERATION_SHIFT
            self.generation[oid] = gen + 1
            p = price * ins.mul // ins.div
            ts %= NS_PER_DAY
            out.append(_U.pack(b"U", ins.locate, TRACKING, ts >> 32, ts & 0xFFFFFFFF, ref, new, qty, p))
            book.replace(ref, new, qty, p)
        elif tid == _STATUS_ID:
            r, at = _STATUS
            seq, ts, inst, status = r.unpack_from(buf, base + at)
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
