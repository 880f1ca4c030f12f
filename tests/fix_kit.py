"""Builders shared by the FIX application tests (test_fix_instrument, test_fix_order_book,
test_fix_orders): two instruments, a NewOrderSingle, engine events and the reports they give."""

from __future__ import annotations

import pytest

from ringex.engine.wire import messages as m
from ringex.gateways import fix_orders as fo
from ringex.gateways.fix_instrument import FixInstrument, FixRefusal
from ringex.gateways.fix_order_book import OrderBook

SESSION = 7
OTHER = 8

BTC = FixInstrument(id=1, symbol=b"BTC-USD", price_decimals=2, qty_decimals=3, tick_size=50, lot_size=10,
                    min_qty=10, max_qty=100_000_000)
ETH = FixInstrument(id=2, symbol=b"ETH-USD", price_decimals=0, qty_decimals=0, tick_size=1, lot_size=1,
                    min_qty=1, max_qty=1_000)
INSTRUMENTS = {BTC.symbol: BTC, ETH.symbol: ETH}
BY_ID = {BTC.id: BTC, ETH.id: ETH}


def account_ok(acct: int) -> bool:
    return acct in (100, 101)


def roundtrip(layout, kw: dict) -> dict:
    """kw is accepted by the layout's encoder and decodes back to the same values."""
    decoded = layout.decode_body(layout.encode(**kw))
    for k, v in kw.items():
        assert decoded[k] == v, k
    return decoded


def event(layout, **fields) -> dict:
    """An engine event as the client decodes it: every name must be a real field."""
    unknown = set(fields) - set(layout.field_names)
    assert not unknown, unknown
    return layout.decode_body(layout.encode(**fields))


def nos(cl: bytes = b"A1", **over: bytes) -> dict[int, bytes]:
    f = {11: cl, 55: b"BTC-USD", 54: b"1", 40: b"2", 38: b"1.5", 44: b"50000.5", 1: b"100"}
    for k, v in over.items():
        tag = int(k[1:])
        if v is None:
            f.pop(tag, None)
        else:
            f[tag] = v
    return f


def fields_of(msg) -> dict[int, bytes]:
    body = msg.body if isinstance(msg, fo.Outgoing) else msg
    if isinstance(body, bytes):  # written out already (fo._report)
        assert body.endswith(b"\x01") and b"=\x01" not in body, body
        body = [(int(t), v) for t, _, v in (f.partition(b"=") for f in body[:-1].split(b"\x01"))]
    d = dict(body)
    assert len(d) == len(body), "a tag twice"
    return d


def refusal(fn, *args) -> FixRefusal:
    with pytest.raises(FixRefusal) as e:
        fn(*args)
    return e.value


def new(book: OrderBook, f: dict[int, bytes], session: int = SESSION) -> dict:
    kw = fo.new_order(f, book, INSTRUMENTS, account_ok, session)
    roundtrip(m.NewOrder, kw)
    return kw


_exec = iter(range(1, 1 << 30))


def report(book: OrderBook, name: str, layout, session: int = SESSION, **fields) -> list[fo.Outgoing]:
    ev = event(layout, **fields)
    return fo.execution_report(name, ev, book, BY_ID, session, str(next(_exec)).encode())


def one(msgs: list[fo.Outgoing], msg_type: bytes = b"8") -> dict[int, bytes]:
    assert len(msgs) == 1 and msgs[0].msg_type == msg_type
    return fields_of(msgs[0])


def accepted(book: OrderBook, cl: bytes, order_id: int, **over: bytes) -> dict[int, bytes]:
    kw = new(book, nos(cl, **over))
    names = set(m.OrderAccepted.field_names)
    return one(report(book, "OrderAccepted", m.OrderAccepted, orderId=order_id,
                      **{k: v for k, v in kw.items() if k in names}))


def trade(book: OrderBook, session: int = SESSION, **f) -> list[fo.Outgoing]:
    base = dict(tradeId=1, instrument=1, makerSessionId=OTHER, takerSessionId=OTHER, makerAccount=1, takerAccount=1,
                aggressorSide=m.Side.Sell)
    base.update(f)
    return report(book, "Trade", m.Trade, session, **base)
