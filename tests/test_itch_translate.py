"""Engine events -> ITCH 5.0 (feeds/itch_translate.py): each event's messages, field by field,
the reference-number generations, the session bracket, and determinism across batch splits."""

from __future__ import annotations

import numpy as np
import pytest

from ringex.engine.wire import messages as m
from ringex.feeds import itch
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.itch_instrument import ItchInstrument
from ringex.feeds.itch_translate import GENERATION_SHIFT, Translator, engine_order_id

DAY = 86_400 * 10**9
TS = 20_000 * DAY + 3_600 * 10**9 + 42  # 01:00:00.000000042 on some day
INSTRUMENTS = {7: ItchInstrument(instrument=7, locate=7, stock="BTC-USD", mul=10_000, div=1, round_lot=1),
               9: ItchInstrument(instrument=9, locate=9, stock="ETH", mul=1, div=100, round_lot=10)}
OPENING = 1 + 2 + 2 + 2  # S O, R and H per instrument, S S, S Q


def slots(*events: bytes) -> np.ndarray:
    out = np.zeros((len(events), m.SLOT_SIZE), np.uint8)
    for i, e in enumerate(events):
        out[i, :len(e)] = np.frombuffer(e, np.uint8)
    return out


def add(seq: int, oid: int, price: int = 50_000, qty: int = 5, side=m.Side.Buy, inst: int = 7) -> bytes:
    return m.BookAdd.encode(seq=seq, timestampNs=TS, orderId=oid, price=price, qty=qty, instrument=inst, side=side)


def execute(seq: int, oid: int, qty: int, trade: int, inst: int = 7) -> bytes:
    return m.BookExecute.encode(seq=seq, timestampNs=TS, orderId=oid, qty=qty, price=0, tradeId=trade, instrument=inst)


def translator(book: FeedBook | None = None) -> Translator:
    return Translator(INSTRUMENTS, book if book is not None else FeedBook())


def run(t: Translator, *events: bytes) -> list:
    out: list[bytes] = []
    t.translate(slots(*events), out)
    return [itch.decode(x) for x in out]


def test_the_first_event_opens_the_session() -> None:
    msgs = run(translator(), add(1, 5))
    kinds = [(type(x).__name__, getattr(x, "event_code", getattr(x, "stock_locate", None))) for x in msgs[:OPENING]]
    assert kinds == [("SystemEvent", b"O"), ("StockDirectory", 7), ("StockDirectory", 9),
                     ("StockTradingAction", 7), ("StockTradingAction", 9),
                     ("SystemEvent", b"S"), ("SystemEvent", b"Q")]
    assert all(x.timestamp == TS % DAY for x in msgs)  # nanoseconds since midnight, from the stamp
    r = msgs[2]
    assert (r.stock, r.round_lot_size, r.authenticity) == ("ETH", 10, b"P")
    assert all(x.trading_state == b"T" for x in msgs[3:5])


def test_book_add_is_an_add_order_at_its_price4() -> None:
    t = translator()
    a, = run(t, add(1, 5, price=50_001, qty=3, side=m.Side.Sell))[OPENING:]
    assert a == itch.AddOrder(7, 0, TS % DAY, 5, b"S", 3, "BTC-USD", 500_010_000)
    b, = run(t, add(2, 6, price=12_300, qty=20, inst=9))  # 100 engine units per 1/10000: 0.0123
    assert (b.price, b.stock, b.order_reference_number) == (123, "ETH", 6)


def test_execute_reduce_delete() -> None:
    t = translator()
    run(t, add(1, 5, qty=10), add(1, 6, qty=4))
    e, = run(t, execute(2, 5, 3, trade=77))
    assert e == itch.OrderExecuted(7, 0, TS % DAY, 5, 3, 77)
    x, = run(t, m.BookReduce.encode(seq=3, timestampNs=TS, orderId=5, qty=2, instrument=7))
    assert x == itch.OrderCancel(7, 0, TS % DAY, 5, 2)
    d, = run(t, m.BookDelete.encode(seq=4, timestampNs=TS, orderId=6, instrument=7))
    assert d == itch.OrderDelete(7, 0, TS % DAY, 6)
    assert t.book.canonical() == [(7, ord("B"), 500_000_000, 5, 5)]


def test_a_replace_that_loses_priority_takes_the_next_generation() -> None:
    t = translator()
    run(t, add(1, 5, qty=10))
    u, = run(t, m.BookReplace.encode(seq=2, timestampNs=TS, orderId=5, price=49_999, qty=4, instrument=7,
                                     side=m.Side.Buy))
    new = 5 | 1 << GENERATION_SHIFT
    assert u == itch.OrderReplace(7, 0, TS % DAY, 5, new, 4, 499_990_000)
    assert engine_order_id(new) == 5
    e, = run(t, execute(3, 5, 4, trade=1))
    assert e.order_reference_number == new and len(t.book) == 0


def test_an_iceberg_refill_is_a_new_add_under_the_next_generation() -> None:
    t = translator()
    run(t, add(1, 5, qty=2))
    # one aggressor (stamp seq 2): the displayed 2 execute, the reserve refills 2 at the back
    e, a = run(t, execute(2, 5, 2, trade=1), add(2, 5, qty=2))
    assert e.order_reference_number == 5 and e.executed_shares == 2
    assert a.order_reference_number == 5 | 1 << GENERATION_SHIFT and a.shares == 2
    # a later, unrelated add of another order starts at generation 0; a refill of this one
    # in another input goes on counting
    e2, a2 = run(t, execute(3, 5, 2, trade=2), add(3, 5, qty=1))
    assert a2.order_reference_number == 5 | 2 << GENERATION_SHIFT


def test_a_refill_split_across_batches_or_a_restart_keeps_its_generation() -> None:
    t = translator()
    run(t, add(1, 5, qty=2))
    run(t, execute(2, 5, 2, trade=1))
    a, = run(t, add(2, 5, qty=2))  # the next batch, same input
    assert a.order_reference_number == 5 | 1 << GENERATION_SHIFT
    # a publisher restarted between the two: the store gave it the open group back
    t2 = translator()
    run(t2, add(1, 5, qty=2))
    run(t2, execute(2, 5, 2, trade=1))
    resumed = Translator(INSTRUMENTS, t2.book)
    resumed.resume(t2.emptied, t2.emptied_seq)
    a2, = run(resumed, add(2, 5, qty=2))
    assert a2 == a


def test_a_crossing_replace_is_delete_then_add_under_the_next_generation() -> None:
    t = translator()
    run(t, add(1, 5, qty=3))
    d, a = run(t, m.BookDelete.encode(seq=2, timestampNs=TS, orderId=5, instrument=7), add(2, 5, price=50_010, qty=1))
    assert d.order_reference_number == 5 and a.order_reference_number == 5 | 1 << GENERATION_SHIFT


def test_instrument_status_is_a_stock_trading_action() -> None:
    t = translator()
    run(t, add(1, 5))
    h, = run(t, m.InstrumentStatus.encode(seq=2, timestampNs=TS, instrument=7, status=m.TradingStatus.Halted))
    assert (h.stock_locate, h.stock, h.trading_state) == (7, "BTC-USD", b"H")
    h2, = run(t, m.InstrumentStatus.encode(seq=3, timestampNs=TS, instrument=7, status=m.TradingStatus.Trading))
    assert h2.trading_state == b"T" and t.book.states[7] == b"T"


def test_order_level_events_without_a_book_change_publish_nothing() -> None:
    t = translator()
    run(t, add(1, 5))
    trade = m.Trade.encode(seq=2, timestampNs=TS, tradeId=1, price=50_000, qty=1, makerOrderId=5, takerOrderId=6,
                           instrument=7)
    accepted = m.OrderAccepted.encode(seq=2, timestampNs=TS, orderId=6, instrument=7)
    assert run(t, trade, accepted) == []


def test_closing_and_reopening_a_session_carries_the_book() -> None:
    t = translator()
    run(t, add(1, 5, qty=3), add(1, 6, qty=2, side=m.Side.Sell, price=50_010), add(1, 8, qty=1))
    closing = [itch.decode(x) for x in t.close_session()]
    assert [x.event_code for x in closing] == [b"M", b"E", b"C"]
    again = Translator(INSTRUMENTS, t.book)
    opening = [itch.decode(x) for x in again.open_session(123)]
    adds = [x for x in opening if isinstance(x, itch.AddOrder)]
    assert [x.order_reference_number for x in adds] == [5, 6, 8]  # time priority
    rebuilt = FeedBook()
    for x in opening:
        rebuilt.apply(x)
    assert rebuilt.canonical() == t.book.canonical()


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_batch_boundaries_do_not_change_the_bytes(cut: int) -> None:
    events = [add(1, 5, qty=2), add(1, 6, qty=4, side=m.Side.Sell, price=50_002), execute(2, 5, 2, trade=1),
              add(2, 5, qty=2), m.BookReduce.encode(seq=3, timestampNs=TS, orderId=6, qty=1, instrument=7),
              m.BookReplace.encode(seq=4, timestampNs=TS, orderId=6, price=50_003, qty=3, instrument=7,
                                   side=m.Side.Sell)]
    whole: list[bytes] = []
    translator().translate(slots(*events), whole)
    t, parts = translator(), []
    t.translate(slots(*events[:cut]), parts)
    t.translate(slots(*events[cut:]), parts)
    assert parts == whole


def test_the_compiled_translator_makes_the_models_bytes_on_the_engine_benchmark_stream() -> None:
    """Differential: the engine's output for the benchmark's order stream (passive limits,
    cancels, aggressive IOCs), in batches, through both translators."""
    from itch_model import Translator as Model
    from ringex.tools.bench_feed import engine_events
    from ringex.feeds.itch_instrument import itch_instruments

    events, ins = engine_events(20_000, seed=3)
    instruments = itch_instruments([ins])
    compiled, model = Translator(instruments, capacity=1 << 16), Model(instruments, FeedBook())
    got, want = [], []
    for i in range(0, len(events), 777):
        compiled.translate(events[i:i + 777], got)
        model.translate(events[i:i + 777], want)
    assert len(got) > 10_000 and got == want
    assert compiled.book.canonical() == model.book.canonical()


def test_an_event_the_table_cannot_place_stops_the_batch() -> None:
    from ringex.feeds.itch_translate import TranslateError

    t = translator()
    run(t, add(1, 5))
    with pytest.raises(TranslateError, match="does not show"):
        run(t, execute(2, 99, 1, trade=1))
    with pytest.raises(TranslateError, match="already shows"):
        run(t, add(3, 5))
    with pytest.raises(TranslateError, match="more shares"):
        run(t, execute(4, 5, 6, trade=2))
    small = Translator(INSTRUMENTS, capacity=16)
    small.opened = True
    with pytest.raises(TranslateError, match="full"):
        run(small, *(add(1, k) for k in range(1, 40)))
    with pytest.raises(TranslateError, match="32-bit"):
        run(translator(), add(1, 5, price=500_000))  # 5,000,000,000 in Price(4)
