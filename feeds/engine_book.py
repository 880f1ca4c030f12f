"""The feed's book read from the engine's own state: how a publisher that missed events resyncs.

A publisher untethered from the output ring (dead or hung for half a ring), or started without
its store on an exchange that has a history, does not know the book from its own messages. The
engine's state does: the journal (from the newest snapshot) replayed into an engine of the same
configuration is the book after every journaled input, up to the journal's last complete
record ``through``. Events on the ring for inputs up to ``through`` are in that state already
(the engine journals an input before it publishes its events, and inputs are processed in
sequence order), so the publisher skips them and translates from the first event of a later
input: nothing twice, nothing missed.

The book comes out as a ``FeedBook`` under generation 0 (reference number = engine orderId),
each level's orders in their queue order, and every instrument's trading state: what a new
session opens with (docs/market-data.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ringex.engine.config import EngineConfig
from ringex.engine.kernel import state as S
from ringex.engine.wire import messages as m
from ringex.feeds import itch
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.itch_instrument import ItchInstrument

__all__ = ["book_from_engine"]


def book_from_engine(cfg: EngineConfig, data_dir: str | Path,
                     instruments: Mapping[int, ItchInstrument]) -> tuple[FeedBook, int]:
    """(the book, the last input sequence number it includes), from ``data_dir``'s newest
    snapshot and the journal after it."""
    from ringex.engine.storage.recovery import recover_engine  # the engine: only on this rare path

    engine, next_seq, _events, replay = recover_engine(cfg, Path(data_dir))
    through = next_seq - 1
    for rec, _out in replay:
        through = rec.first_seq + rec.count - 1
    book = FeedBook()
    ins_state = engine.state.ins
    for inst, ins in sorted(instruments.items()):
        trading = int(ins_state[S.I_STATUS, inst]) == int(m.TradingStatus.Trading)
        book.states[ins.locate] = itch.TRADING_STATE_TRADING if trading else itch.TRADING_STATE_HALTED
        for side, letter in ((m.Side.Buy, ord("B")), (m.Side.Sell, ord("S"))):
            for level in engine.book(inst, int(side)):
                for oid, displayed, _leaves in level:
                    price = engine.order(oid)["price"]
                    book.add(oid, ins.locate, letter, displayed, ins.itch_price(price))
    return book, through
