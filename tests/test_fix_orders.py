"""The FIX 4.4 application mapping (gateways/fix_orders.py): requests, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ringex.engine.wire import messages as m
from ringex.gateways import fix_orders as fo
from ringex.gateways.fix_order_book import Order, OrderBook

from fix_kit import (
    INSTRUMENTS,
    OTHER,
    SESSION,
    accepted,
    account_ok,
    fields_of,
    new,
    nos,
    one,
    refusal,
    report,
    roundtrip,
    trade,
)


def kept_as_written(b: OrderBook) -> None:
    """What compaction relies on, after every lifecycle these tests drive: the set of live
    orders (kept up as orders are saved) is what a look at every order says, in memory and
    after a reopen; each order's last O and U record texts (which compaction copies) give
    the order as it is; and a compacted file reads back as the book was."""
    looked = {k for k, o in b._orders.items() if o.live}
    assert b._live == looked
    for key, (order, state) in b._texts.items():
        o = Order.from_json(json.loads(order))
        if state:
            o.set_state(json.loads(state))
        assert o.json_text() == b._orders[key].json_text()
    b.flush()
    with OrderBook(b.path) as again:
        assert again._live == looked
    b.compact()
    kept = {k: o.json_text() for k, o in b._orders.items()}
    with OrderBook(b.path) as again:
        assert {k: o.json_text() for k, o in again._orders.items()} == kept and again._live == looked


@pytest.fixture
def book(tmp_path: Path):
    b = OrderBook(tmp_path / "s7.orders")
    yield b
    b.write_events()
    kept_as_written(b)
    b.close()


# -- NewOrderSingle ---------------------------------------------------------------------

def test_limit_order(book: OrderBook) -> None:
    kw = new(book, nos())
    assert kw == dict(clOrdId=1, price=5_000_050, qty=1500, displayQty=0, stopPrice=0, sessionId=SESSION,
                      account=100, instrument=1, side=m.Side.Buy, ordType=m.OrdType.Limit,
                      timeInForce=m.TimeInForce.Day, postOnly=0, reduceOnly=0, stpMode=m.StpMode.AccountDefault)
    o = book.order(b"A1")
    assert o is not None and o.status == b"A" and o.num == 1 and o.leaves_qty == 1500
    assert new(book, nos(b"A2", t54=b"2"))["clOrdId"] == 2
    assert new(book, nos(b"A3"))["side"] == m.Side.Buy


def test_market_order(book: OrderBook) -> None:
    kw = new(book, nos(t40=b"1", t44=None, t59=b"3"))
    assert kw["ordType"] == m.OrdType.Market and kw["price"] == 0 and kw["stopPrice"] == 0
    assert kw["timeInForce"] == m.TimeInForce.IOC


def test_stop_orders(book: OrderBook) -> None:
    kw = new(book, nos(b"S1", t40=b"3", t44=None, t99=b"51000"))
    assert (kw["ordType"], kw["price"], kw["stopPrice"]) == (m.OrdType.Stop, 0, 5_100_000)
    kw = new(book, nos(b"S2", t40=b"4", t99=b"51000", t54=b"2"))
    assert (kw["ordType"], kw["price"], kw["stopPrice"], kw["side"]) == (m.OrdType.StopLimit, 5_000_050, 5_100_000,
                                                                         m.Side.Sell)


@pytest.mark.parametrize("fix, tif", [(None, m.TimeInForce.Day), (b"0", m.TimeInForce.Day), (b"1", m.TimeInForce.GTC),
                                      (b"3", m.TimeInForce.IOC), (b"4", m.TimeInForce.FOK)])
def test_time_in_force(book: OrderBook, fix: bytes | None, tif: m.TimeInForce) -> None:
    assert new(book, nos(t59=fix))["timeInForce"] == tif


@pytest.mark.parametrize("inst, post, reduce", [(b"6", 1, 0), (b"E", 0, 1), (b"6 E", 1, 1), (b"E 6", 1, 1)])
def test_exec_inst(book: OrderBook, inst: bytes, post: int, reduce: int) -> None:
    kw = new(book, nos(t18=inst))
    assert (kw["postOnly"], kw["reduceOnly"]) == (post, reduce)


def test_iceberg_and_stp(book: OrderBook) -> None:
    kw = new(book, nos(t38=b"10", t111=b"0.5", t7928=b"5"))
    assert kw["displayQty"] == 500 and kw["qty"] == 10_000 and kw["stpMode"] == m.StpMode.DecrementBoth
    for v in (b"1", b"2", b"3", b"4"):
        assert new(book, nos(b"B" + v, t7928=v))["stpMode"] == m.StpMode(int(v))


@pytest.mark.parametrize("over, tag, text", [
    (dict(t55=b"DOGE"), 55, "UnknownInstrument"),
    (dict(t55=None), 55, "Symbol (55) missing"),
    (dict(t1=b"200"), 1, "AccountNotPermitted"),
    (dict(t1=None), 1, "Account (1) missing"),
    (dict(t1=b"-3"), 1, "not an account number"),
    (dict(t1=b"99999999999"), 1, "not an account number"),
    (dict(t44=None), 44, "Price (44) missing"),
    (dict(t40=b"1"), 44, "not allowed on a Market"),
    (dict(t40=b"3", t44=None), 99, "StopPx (99) missing"),
    (dict(t40=b"3", t99=b"1"), 44, "not allowed on a Stop"),
    (dict(t99=b"1"), 99, "not allowed on a Limit"),
    (dict(t18=b"6 A"), 18, "InvalidFlags"),
    (dict(t18=b""), 18, "InvalidFlags"),
    (dict(t54=b"5"), 54, "InvalidSide"),
    (dict(t54=None), 54, "Side (54) missing"),
    (dict(t40=b"P"), 40, "InvalidOrdType"),
    (dict(t59=b"6"), 59, "InvalidTimeInForce"),
    (dict(t38=None), 38, "OrderQty (38) missing"),
    (dict(t38=b"0"), 38, "QtyOutOfRange"),
    (dict(t111=b"2"), 111, "over OrderQty"),
    (dict(t111=b"0.005"), 111, "InvalidDisplayQty"),
    (dict(t7928=b"6"), 7928, "InvalidStpMode"),
    (dict(t44=b"50000.51"), 44, "BadTick"),
])
def test_new_order_refused(book: OrderBook, over: dict, tag: int, text: str) -> None:
    e = refusal(fo.new_order, nos(**over), book, INSTRUMENTS, account_ok, SESSION)
    assert e.kind == "reject" and e.tag == tag and text in e.text, e.text
    assert book.next_cl_ord_id == 1 and book.order(b"A1") is None  # nothing allocated or kept
    msg = fo.refusal_report(b"D", nos(**over), e, b"E1", book)
    f = fields_of(msg)
    assert msg.msg_type == b"8" and f[150] == b"8" and f[39] == b"8" and f[11] == b"A1" and f[58]
    assert f[103] == str(e.ord_rej_reason).encode()


def test_bad_cl_ord_id_is_a_business_reject(book: OrderBook) -> None:
    for cl in (None, b"", b"x" * 65, b"a\x01b", b"caf\xc3\xa9"):
        e = refusal(fo.new_order, nos(cl), book, INSTRUMENTS, account_ok, SESSION)
        assert e.kind == "business" and e.tag == 11
        msg = fo.refusal_report(b"D", nos(cl), e, b"E1")
        assert msg.msg_type == b"j" and fields_of(msg)[372] == b"D"
    assert new(book, nos(b"x" * 64))["clOrdId"] == 1


def test_duplicate_cl_ord_id(book: OrderBook) -> None:
    new(book, nos(b"A1"))
    e = refusal(fo.new_order, nos(b"A1"), book, INSTRUMENTS, account_ok, SESSION)
    assert "duplicate ClOrdID" in e.text and e.ord_rej_reason == 6
    # terminal: reusable
    report(book, "OrderRejected", m.OrderRejected, clOrdId=1, sessionId=SESSION, reason=m.RejectReason.BadTick,
           refTemplateId=1)
    assert new(book, nos(b"A1"))["clOrdId"] == 2
    assert book.order(b"A1").num == 2


# -- engine events -----------------------------------------------------------------------

def test_accepted(book: OrderBook) -> None:
    f = accepted(book, b"A1", 900, t111=b"0.5", t18=b"6", t59=b"1")
    assert f[150] == b"0" and f[39] == b"0" and f[37] == b"900" and f[11] == b"A1" and f[55] == b"BTC-USD"
    assert f[54] == b"1" and f[38] == b"1.5" and f[44] == b"50000.5" and f[40] == b"2" and f[59] == b"1"
    assert f[18] == b"6" and f[111] == b"0.5" and f[1] == b"100"
    assert (f[14], f[151], f[6]) == (b"0", b"1.5", b"0") and f[17]
    assert 41 not in f and 60 not in f
    assert book.order(b"A1").order_id == 900
    # again (a retransmitted event) or another session's: nothing
    assert report(book, "OrderAccepted", m.OrderAccepted, orderId=900, clOrdId=1, sessionId=SESSION) == []
    assert report(book, "OrderAccepted", m.OrderAccepted, orderId=901, clOrdId=1, sessionId=OTHER) == []


def test_rejected(book: OrderBook) -> None:
    new(book, nos())
    f = one(report(book, "OrderRejected", m.OrderRejected, clOrdId=1, sessionId=SESSION, account=100, instrument=1,
                   reason=m.RejectReason.PostOnlyWouldTrade, refTemplateId=1))
    assert (f[150], f[39], f[103], f[58], f[37]) == (b"8", b"8", b"99", b"PostOnlyWouldTrade", b"NONE")
    assert (f[14], f[151]) == (b"0", b"0")
    assert not book.order(b"A1").live


def test_fills_maker_side(book: OrderBook) -> None:
    accepted(book, b"A1", 900, t38=b"3")  # 3000 units at 50000.5
    f = one(trade(book, price=5_000_050, qty=1000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=2000,
                  makerSessionId=SESSION, takerClOrdId=1, takerOrderId=5))
    assert (f[150], f[39], f[31], f[32], f[14], f[151], f[6], f[851], f[527]) == (
        b"F", b"1", b"50000.5", b"1", b"1", b"2", b"50000.5", b"1", b"1")
    f = one(trade(book, tradeId=2, price=5_000_000, qty=2000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=0,
                  makerSessionId=SESSION))
    # (50000.5 * 1 + 50000 * 2) / 3 = 50000.1666...
    assert (f[150], f[39], f[14], f[151], f[6]) == (b"F", b"2", b"3", b"0", b"50000.1666666667")
    assert not book.order(b"A1").live


def test_fills_taker_side(book: OrderBook) -> None:
    accepted(book, b"T1", 77, t54=b"2", t38=b"2", t59=b"3")
    f = one(trade(book, price=5_000_100, qty=500, takerOrderId=77, takerClOrdId=1, takerLeavesQty=1500,
                  takerSessionId=SESSION, makerClOrdId=1, makerSessionId=OTHER))
    assert (f[39], f[14], f[151], f[6], f[851], f[54]) == (b"1", b"0.5", b"1.5", b"50001", b"2", b"2")
    # IOC remainder: Expired
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=77, clOrdId=1, canceledQty=1500,
                   sessionId=SESSION, reason=m.CancelReason.IocRemainder))
    assert (f[150], f[39], f[14], f[151], f[6], f[58]) == (b"C", b"C", b"0.5", b"0", b"50001", b"IocRemainder")


def test_self_match_gives_two_reports(book: OrderBook) -> None:
    accepted(book, b"M", 1, t38=b"1")
    accepted(book, b"T", 2, t38=b"2", t54=b"2")
    msgs = trade(book, price=5_000_050, qty=1000, makerOrderId=1, makerClOrdId=1, makerLeavesQty=0,
                 makerSessionId=SESSION, takerOrderId=2, takerClOrdId=2, takerLeavesQty=1000, takerSessionId=SESSION)
    t, mk = (fields_of(x) for x in msgs)
    assert (t[11], t[39], t[851]) == (b"T", b"1", b"2") and (mk[11], mk[39], mk[851]) == (b"M", b"2", b"1")
    assert mk[17] == t[17] + b"-2"


def test_trade_of_other_sessions_ignored(book: OrderBook) -> None:
    accepted(book, b"A1", 900)
    assert trade(book, price=1, qty=10, makerClOrdId=1, takerClOrdId=1) == []
    assert book.order(b"A1").cum_qty == 0


@pytest.mark.parametrize("reason, exec_type, status", [
    (m.CancelReason.MarketRemainder, b"C", b"C"), (m.CancelReason.Expired, b"C", b"C"),
    (m.CancelReason.SelfTrade, b"4", b"4"), (m.CancelReason.MassCancel, b"4", b"4"),
    (m.CancelReason.KillSwitch, b"4", b"4"), (m.CancelReason.Liquidation, b"4", b"4"),
    (m.CancelReason.Halted, b"4", b"4"), (m.CancelReason.ReduceOnly, b"4", b"4"), (m.CancelReason.User, b"4", b"4"),
])
def test_cancel_reasons(book: OrderBook, reason, exec_type: bytes, status: bytes) -> None:
    accepted(book, b"A1", 900)
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=900, clOrdId=1, canceledQty=1500,
                   sessionId=SESSION, reason=reason))
    assert (f[150], f[39], f[151], f[11], f[58]) == (exec_type, status, b"0", b"A1", reason.name.encode())
    assert 41 not in f


def test_decrement_both_restates(book: OrderBook) -> None:
    accepted(book, b"A1", 900, t38=b"3")
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=900, clOrdId=1, canceledQty=1000,
                   sessionId=SESSION, reason=m.CancelReason.SelfTrade))
    assert (f[150], f[39], f[378], f[38], f[151], f[14]) == (b"D", b"0", b"5", b"2", b"2", b"0")
    assert book.order(b"A1").live


def test_cancel_request_and_report(book: OrderBook) -> None:
    accepted(book, b"A1", 900)
    kw = fo.cancel({11: b"C1", 41: b"A1", 55: b"BTC-USD", 54: b"1"}, book, SESSION)
    assert kw == dict(clOrdId=2, orderId=900, origClOrdId=1, sessionId=SESSION, account=100, instrument=1)
    roundtrip(m.CancelOrder, kw)
    # a second cancel while this one is pending; a reused ClOrdID
    assert refusal(fo.cancel, {11: b"C2", 41: b"A1"}, book, SESSION).cxl_rej_reason == 3
    assert refusal(fo.cancel, {11: b"C1", 41: b"A1"}, book, SESSION).cxl_rej_reason == 6
    assert refusal(fo.new_order, nos(b"C1"), book, INSTRUMENTS, account_ok, SESSION).ord_rej_reason == 6
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=900, clOrdId=1, canceledQty=1500,
                   sessionId=SESSION, reason=m.CancelReason.User))
    assert (f[150], f[39], f[11], f[41], f[37]) == (b"4", b"4", b"C1", b"A1", b"900")
    assert book.pending(2) is None
    e = refusal(fo.cancel, {11: b"C3", 41: b"A1"}, book, SESSION)
    assert e.cxl_rej_reason == 0  # too late
    e = refusal(fo.cancel, {11: b"C3", 41: b"nope"}, book, SESSION)
    assert e.cxl_rej_reason == 1 and e.text == "Unknown order"
    msg = fo.refusal_report(b"F", {11: b"C3", 41: b"nope"}, e, b"E", book)
    f = fields_of(msg)
    assert msg.msg_type == b"9" and (f[102], f[434], f[39], f[41]) == (b"1", b"1", b"8", b"nope")


def test_cancel_refusals(book: OrderBook) -> None:
    new(book, nos(b"P1"))
    assert refusal(fo.cancel, {11: b"C1", 41: b"P1", 55: b"ETH-USD"}, book, SESSION).tag == 55  # even held
    assert refusal(fo.cancel, {11: b"C1"}, book, SESSION).tag == 41
    assert refusal(fo.cancel, {41: b"P1"}, book, SESSION).kind == "business"
    accepted(book, b"A1", 5)
    assert refusal(fo.cancel, {11: b"C1", 41: b"A1", 54: b"2"}, book, SESSION).tag == 54


def test_cancel_rejected(book: OrderBook) -> None:
    accepted(book, b"A1", 900)
    kw = fo.cancel({11: b"C1", 41: b"A1"}, book, SESSION)
    f = one(report(book, "CancelRejected", m.CancelRejected, orderId=900, clOrdId=kw["clOrdId"], origClOrdId=1,
                   sessionId=SESSION, reason=m.RejectReason.NotYourOrder, refTemplateId=2), b"9")
    assert (f[11], f[41], f[39], f[434], f[102], f[58], f[37]) == (b"C1", b"A1", b"0", b"1", b"99", b"NotYourOrder",
                                                                   b"900")
    assert not book.in_use(b"C1")


def test_replace(book: OrderBook) -> None:
    accepted(book, b"A1", 900, t38=b"3")
    trade(book, price=5_000_050, qty=1000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=2000,
          makerSessionId=SESSION)
    g = {11: b"R1", 41: b"A1", 55: b"BTC-USD", 54: b"1", 40: b"2", 38: b"4", 44: b"49999.5", 111: b"1"}
    kw = fo.replace(g, book, INSTRUMENTS, SESSION)
    assert kw == dict(clOrdId=2, orderId=900, origClOrdId=1, price=4_999_950, qty=4000, displayQty=1000,
                      sessionId=SESSION, account=100, instrument=1)
    roundtrip(m.ReplaceOrder, kw)
    assert book.in_use(b"R1")
    f = one(report(book, "OrderReplaced", m.OrderReplaced, orderId=900, clOrdId=2, origClOrdId=1, price=4_999_950,
                   qty=4000, leavesQty=3000, displayQty=1000, sessionId=SESSION, account=100, instrument=1))
    assert (f[150], f[39], f[11], f[41], f[38], f[44], f[151], f[14], f[6], f[111]) == (
        b"5", b"1", b"R1", b"A1", b"4", b"49999.5", b"3", b"1", b"50000.5", b"1")
    o = book.order(b"R1")
    assert o is book.order(b"A1") and o.num == 2 and o.chain == [b"A1"]
    # the engine now names it by the replace's clOrdId
    f = one(trade(book, tradeId=2, price=4_999_950, qty=3000, makerOrderId=900, makerClOrdId=2, makerLeavesQty=0,
                  makerSessionId=SESSION))
    assert (f[11], f[39], f[14], f[6]) == (b"R1", b"2", b"4", b"49999.75")
    # a terminal order cannot be replaced, by its latest ClOrdID or an earlier one
    for orig in (b"R1", b"A1"):
        assert refusal(fo.replace, {**g, 11: b"R2", 41: orig}, book, INSTRUMENTS, SESSION).cxl_rej_reason == 0


def test_replace_chain_names(book: OrderBook) -> None:
    accepted(book, b"A1", 900)
    g = {11: b"R1", 41: b"A1", 38: b"2", 44: b"50000"}
    kw = fo.replace(g, book, INSTRUMENTS, SESSION)
    report(book, "OrderReplaced", m.OrderReplaced, orderId=900, clOrdId=kw["clOrdId"], origClOrdId=1,
           price=5_000_000, qty=2000, leavesQty=2000, sessionId=SESSION)
    kw = fo.replace({**g, 11: b"R2", 41: b"R1", 38: b"3"}, book, INSTRUMENTS, SESSION)
    assert (kw["origClOrdId"], kw["qty"], kw["displayQty"]) == (2, 3000, 0)
    f = one(report(book, "OrderReplaced", m.OrderReplaced, orderId=900, clOrdId=kw["clOrdId"], origClOrdId=2,
                   price=5_000_000, qty=3000, leavesQty=3000, sessionId=SESSION))
    assert (f[11], f[41], f[39], f[38]) == (b"R2", b"R1", b"0", b"3")
    assert not book.in_use(b"R9") and all(book.in_use(c) for c in (b"A1", b"R1", b"R2"))
    kw = fo.cancel({11: b"C1", 41: b"A1"}, book, SESSION)  # any ClOrdID of the chain names it
    assert kw["origClOrdId"] == 3
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=900, clOrdId=3, canceledQty=3000,
                   sessionId=SESSION, reason=m.CancelReason.User))
    assert (f[11], f[41]) == (b"C1", b"R2")


def test_replace_refusals_and_reject(book: OrderBook) -> None:
    accepted(book, b"A1", 900)
    g = {11: b"R1", 41: b"A1", 55: b"BTC-USD", 54: b"1", 40: b"2", 38: b"4", 44: b"49999.5"}
    for over, tag in (({40: b"1"}, 40), ({59: b"4"}, 59), ({18: b"E"}, 18), ({54: b"2"}, 54), ({44: b"1.01"}, 44),
                      ({38: b"0.001"}, 38), ({1: b"101"}, 1), ({111: b"5"}, 111)):
        e = refusal(fo.replace, {**g, **over}, book, INSTRUMENTS, SESSION)
        assert e.kind == "reject" and e.tag == tag and e.cxl_rej_reason is not None, (over, e)
    g.pop(44)
    assert refusal(fo.replace, g, book, INSTRUMENTS, SESSION).tag == 44
    g[44] = b"49999.5"
    kw = fo.replace(g, book, INSTRUMENTS, SESSION)
    f = one(report(book, "CancelRejected", m.CancelRejected, orderId=900, clOrdId=kw["clOrdId"], origClOrdId=1,
                   sessionId=SESSION, reason=m.RejectReason.PostOnlyWouldTrade, refTemplateId=3), b"9")
    assert (f[11], f[41], f[434], f[39], f[58]) == (b"R1", b"A1", b"2", b"0", b"PostOnlyWouldTrade")
    assert book.order(b"R1") is None and not book.in_use(b"R1") and book.order(b"A1").cl_ord_id == b"A1"


def test_replace_fills_before_filled_qty(book: OrderBook) -> None:
    accepted(book, b"A1", 900, t38=b"3")
    trade(book, price=5_000_050, qty=2000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=1000,
          makerSessionId=SESSION)
    g = {11: b"R1", 41: b"A1", 38: b"2", 44: b"50000.5"}
    assert "QtyOutOfRange" in refusal(fo.replace, g, book, INSTRUMENTS, SESSION).text


def test_mass_cancel(book: OrderBook) -> None:
    kw = fo.mass_cancel({11: b"M1", 530: b"7"}, book, INSTRUMENTS, account_ok, SESSION)
    assert kw == dict(clOrdId=1, sessionId=SESSION, account=0, instrument=0, scope=m.MassCancelScope.Session)
    roundtrip(m.MassCancel, kw)
    kw2 = fo.mass_cancel({11: b"M2", 530: b"7", 1: b"101"}, book, INSTRUMENTS, account_ok, SESSION)
    assert (kw2["scope"], kw2["account"]) == (m.MassCancelScope.Account, 101)
    kw3 = fo.mass_cancel({11: b"M3", 530: b"1", 55: b"ETH-USD", 1: b"100"}, book, INSTRUMENTS, account_ok, SESSION)
    assert kw3 == dict(clOrdId=3, sessionId=SESSION, account=100, instrument=2,
                       scope=m.MassCancelScope.AccountInstrument)
    roundtrip(m.MassCancel, kw3)
    f = one(report(book, "MassCancelDone", m.MassCancelDone, clOrdId=1, canceledCount=4, sessionId=SESSION,
                   scope=m.MassCancelScope.Session), b"r")
    assert (f[11], f[530], f[531], f[533]) == (b"M1", b"7", b"7", b"4")
    f = one(report(book, "CancelRejected", m.CancelRejected, clOrdId=3, sessionId=SESSION, account=100, instrument=2,
                   reason=m.RejectReason.UnknownInstrument, refTemplateId=4), b"r")
    # FIX 4.4 MassCancelRejectReason: 1 = invalid or unknown security (0 = not supported)
    assert (f[11], f[531], f[532], f[58]) == (b"M3", b"0", b"1", b"UnknownInstrument")
    for fields, tag, code in (({11: b"M9", 530: b"3"}, 530, 99), ({11: b"M9", 530: b"1", 1: b"100"}, 55, 1),
                              ({11: b"M9", 530: b"1", 55: b"ETH-USD"}, 1, 99),
                              ({11: b"M9", 530: b"7", 1: b"555"}, 1, 99), ({11: b"M2", 530: b"7"}, 11, 99)):
        e = refusal(fo.mass_cancel, fields, book, INSTRUMENTS, account_ok, SESSION)
        assert (e.tag, e.mass_cancel_reject_reason) == (tag, code), fields
        msg = fo.refusal_report(b"q", fields, e, b"E")
        assert msg.msg_type == b"r" and fields_of(msg)[531] == b"0"


def test_mass_cancel_orders_then_done(book: OrderBook) -> None:
    accepted(book, b"A1", 900)
    fo.mass_cancel({11: b"M1", 530: b"7"}, book, INSTRUMENTS, account_ok, SESSION)
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=900, clOrdId=1, canceledQty=1500,
                   sessionId=SESSION, reason=m.CancelReason.MassCancel))
    assert (f[150], f[11]) == (b"4", b"A1")


def test_stop_triggered(book: OrderBook) -> None:
    accepted(book, b"S1", 10, t40=b"3", t44=None, t99=b"51000")
    f = one(report(book, "StopTriggered", m.StopTriggered, orderId=10, clOrdId=1, stopPrice=5_100_000,
                   triggerPrice=5_100_000, sessionId=SESSION, account=100, instrument=1))
    assert (f[150], f[39], f[99], f[40]) == (b"L", b"0", b"51000", b"3") and 44 not in f
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=10, clOrdId=1, canceledQty=1500,
                   sessionId=SESSION, reason=m.CancelReason.MarketRemainder))
    assert (f[150], f[39]) == (b"C", b"C")


def test_status(book: OrderBook) -> None:
    accepted(book, b"A1", 900, t38=b"3")
    trade(book, price=5_000_050, qty=1000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=2000,
          makerSessionId=SESSION)
    f = fields_of(fo.status({11: b"A1", 790: b"q1", 54: b"1", 55: b"BTC-USD"}, book))
    assert (f[150], f[39], f[14], f[151], f[6], f[37], f[17], f[790]) == (
        b"I", b"1", b"1", b"2", b"50000.5", b"900", b"0", b"q1")
    f = fields_of(fo.status({11: b"zz"}, book, b"E5"))
    assert (f[150], f[39], f[103], f[17], f[37]) == (b"I", b"8", b"5", b"E5", b"NONE")
    assert refusal(fo.status, {}, book).kind == "business"


def test_unknown_events_ignored(book: OrderBook) -> None:
    assert report(book, "OrderCanceled", m.OrderCanceled, clOrdId=42, sessionId=SESSION, reason=1) == []
    assert report(book, "CancelRejected", m.CancelRejected, clOrdId=42, sessionId=SESSION) == []
    assert report(book, "MassCancelDone", m.MassCancelDone, clOrdId=42, sessionId=SESSION) == []
    assert report(book, "BookAdd", m.BookAdd, orderId=1) == []


# -- cancels and replaces held until the order is accepted -------------------------------

def test_held_cancel_is_sent_when_the_order_is_accepted(book: OrderBook) -> None:
    new(book, nos(b"P1"))
    kw = fo.cancel({11: b"C1", 41: b"P1", 55: b"BTC-USD", 54: b"1"}, book, SESSION)
    assert kw == dict(clOrdId=2, orderId=0, origClOrdId=1, sessionId=SESSION, account=100, instrument=1)
    assert fo.is_held(book, kw) and [p.num for p in book.held()] == [2] and book.in_use(b"C1")
    assert fo.release(book, SESSION) == []  # not accepted yet: stays held
    # one request per order, held or not; a held request's ClOrdID is taken
    assert refusal(fo.cancel, {11: b"C2", 41: b"P1"}, book, SESSION).cxl_rej_reason == 3
    assert refusal(fo.replace, {11: b"R2", 41: b"P1", 38: b"2", 44: b"50000"}, book, INSTRUMENTS,
                   SESSION).cxl_rej_reason == 3
    assert refusal(fo.cancel, {11: b"C1", 41: b"P1"}, book, SESSION).cxl_rej_reason == 6
    f = one(report(book, "OrderAccepted", m.OrderAccepted, orderId=900, clOrdId=1, sessionId=SESSION))
    assert (f[150], f[11], f[37]) == (b"0", b"P1", b"900")
    (name, sent), = fo.release(book, SESSION)
    assert name == "CancelOrder"
    assert sent == dict(clOrdId=2, orderId=900, origClOrdId=1, sessionId=SESSION, account=100, instrument=1)
    roundtrip(m.CancelOrder, sent)
    assert fo.release(book, SESSION) == [(name, sent)]  # held until the caller records it sent
    book.sent(2, 55, 17)
    assert fo.release(book, SESSION) == [] and not book.has_held and book.pending(2).at == [55, 17]
    f = one(report(book, "OrderCanceled", m.OrderCanceled, orderId=900, clOrdId=1, canceledQty=1500,
                   sessionId=SESSION, reason=m.CancelReason.User))
    assert (f[150], f[39], f[11], f[41]) == (b"4", b"4", b"C1", b"P1")
    assert book.pending(2) is None and not book.in_use(b"C1")


def test_held_cancel_of_a_rejected_order_is_answered_unknown(book: OrderBook) -> None:
    new(book, nos(b"P1"))
    fo.cancel({11: b"C1", 41: b"P1"}, book, SESSION)
    f = one(report(book, "OrderRejected", m.OrderRejected, clOrdId=1, sessionId=SESSION, account=100, instrument=1,
                   reason=m.RejectReason.PostOnlyWouldTrade, refTemplateId=1))
    assert f[150] == b"8"
    (msg,) = fo.release(book, SESSION)
    f = fields_of(msg)
    assert msg.msg_type == b"9"
    assert (f[11], f[41], f[37], f[39], f[434], f[102]) == (b"C1", b"P1", b"NONE", b"8", b"1", b"1")
    assert book.pending(2) is None and not book.has_held and not book.in_use(b"C1")
    assert fo.release(book, SESSION) == []


@pytest.mark.parametrize("end", ["filled", "expired"])
def test_held_cancel_of_an_order_that_ends_on_entry_is_too_late_and_never_sent(book: OrderBook, end: str) -> None:
    """An IOC that trades on entry: OrderAccepted, Trade (and OrderCanceled for its
    remainder) in one batch; release, after the batch, answers the cancel itself."""
    new(book, nos(b"I1", t59=b"3"))
    fo.cancel({11: b"C1", 41: b"I1"}, book, SESSION)
    report(book, "OrderAccepted", m.OrderAccepted, orderId=77, clOrdId=1, sessionId=SESSION)
    left = 0 if end == "filled" else 500
    trade(book, price=5_000_050, qty=1500 - left, takerOrderId=77, takerClOrdId=1, takerLeavesQty=left,
          takerSessionId=SESSION)
    if left:
        report(book, "OrderCanceled", m.OrderCanceled, orderId=77, clOrdId=1, canceledQty=left, sessionId=SESSION,
               reason=m.CancelReason.IocRemainder)
    (msg,) = fo.release(book, SESSION)
    f = fields_of(msg)
    assert msg.msg_type == b"9" and (f[11], f[37], f[102], f[434]) == (b"C1", b"77", b"0", b"1")
    assert f[39] == (b"2" if end == "filled" else b"C")
    assert book.pending(2) is None and not book.has_held


def test_a_released_cancel_that_arrives_too_late_is_rejected_by_the_engine(book: OrderBook) -> None:
    """The order's events split between two batches: the cancel went after its acceptance,
    the engine finds the order filled."""
    new(book, nos(b"I1", t59=b"3"))
    fo.cancel({11: b"C1", 41: b"I1"}, book, SESSION)
    report(book, "OrderAccepted", m.OrderAccepted, orderId=77, clOrdId=1, sessionId=SESSION)
    (_, kw), = fo.release(book, SESSION)
    book.sent(kw["clOrdId"], 1, 1)
    trade(book, price=5_000_050, qty=1500, takerOrderId=77, takerClOrdId=1, takerLeavesQty=0, takerSessionId=SESSION)
    f = one(report(book, "CancelRejected", m.CancelRejected, orderId=77, clOrdId=2, origClOrdId=1, sessionId=SESSION,
                   reason=m.RejectReason.UnknownOrder, refTemplateId=2), b"9")
    assert (f[11], f[41], f[39], f[102]) == (b"C1", b"I1", b"2", b"0")


def test_a_throttled_held_cancel_is_dropped(book: OrderBook) -> None:
    new(book, nos(b"P1"))
    kw = fo.cancel({11: b"C1", 41: b"P1"}, book, SESSION)
    f = one(report(book, "CancelRejected", m.CancelRejected, clOrdId=kw["clOrdId"], sessionId=SESSION,
                   reason=m.RejectReason.Throttled, refTemplateId=2), b"9")
    assert (f[11], f[102], f[58]) == (b"C1", b"99", b"Throttled")
    assert not book.has_held and not book.in_use(b"C1")


def test_held_replace(book: OrderBook) -> None:
    new(book, nos(b"P1", t38=b"3"))
    g = {11: b"R1", 41: b"P1", 55: b"BTC-USD", 54: b"1", 40: b"2", 38: b"4", 44: b"49999.5", 111: b"1"}
    kw = fo.replace(g, book, INSTRUMENTS, SESSION)
    assert fo.is_held(book, kw) and kw["orderId"] == 0
    assert refusal(fo.replace, {**g, 11: b"R2"}, book, INSTRUMENTS, SESSION).cxl_rej_reason == 3
    report(book, "OrderAccepted", m.OrderAccepted, orderId=900, clOrdId=1, sessionId=SESSION)
    (name, sent), = fo.release(book, SESSION)
    assert name == "ReplaceOrder"
    assert sent == dict(clOrdId=2, orderId=900, origClOrdId=1, price=4_999_950, qty=4000, displayQty=1000,
                        sessionId=SESSION, account=100, instrument=1)
    roundtrip(m.ReplaceOrder, sent)
    book.sent(2, 1, 1)
    f = one(report(book, "OrderReplaced", m.OrderReplaced, orderId=900, clOrdId=2, origClOrdId=1, price=4_999_950,
                   qty=4000, leavesQty=4000, displayQty=1000, sessionId=SESSION, account=100, instrument=1))
    assert (f[150], f[11], f[41], f[38], f[44]) == (b"5", b"R1", b"P1", b"4", b"49999.5")
    # and one of a rejected order
    new(book, nos(b"P2"))
    fo.replace({**g, 11: b"R3", 41: b"P2"}, book, INSTRUMENTS, SESSION)
    report(book, "OrderRejected", m.OrderRejected, clOrdId=book.order(b"P2").num, sessionId=SESSION,
           reason=m.RejectReason.MaxNotional, refTemplateId=1)
    (msg,) = fo.release(book, SESSION)
    f = fields_of(msg)
    assert msg.msg_type == b"9" and (f[11], f[41], f[434], f[102], f[39]) == (b"R3", b"P2", b"2", b"1", b"8")
    assert book.order(b"R3") is None and not book.in_use(b"R3")


def test_held_requests_survive_reopening_the_book(tmp_path: Path) -> None:
    path = tmp_path / "h.orders"
    with OrderBook(path) as b:
        for seq, cl in enumerate((b"P1", b"P2", b"P3"), 1):
            fo.new_order(nos(cl), b, INSTRUMENTS, account_ok, SESSION, fo.Origin(seq, 7, seq))
        fo.cancel({11: b"C1", 41: b"P1"}, b, SESSION, fo.Origin(4, 7, 4))  # engine clOrdId 4
        fo.replace({11: b"R2", 41: b"P2", 38: b"2", 44: b"50000"}, b, INSTRUMENTS, SESSION, fo.Origin(5, 7, 4))  # 5
        fo.cancel({11: b"C3", 41: b"P3"}, b, SESSION, fo.Origin(6, 7, 4))  # 6
        assert [p.at for p in b.held()] == [[], [], []]  # held: staged nowhere
        for num, order_id in ((1, 901), (2, 902), (3, 903)):
            report(b, "OrderAccepted", m.OrderAccepted, orderId=order_id, clOrdId=num, sessionId=SESSION)
        # 4 and 5 released for positions 10 and 11 of ring incarnation 7; 6 not yet (a crash)
        for _, kw in fo.release(b, SESSION)[:2]:
            b.sent(kw["clOrdId"], 7, kw["clOrdId"] + 6)
    with OrderBook(path) as b:
        assert [p.num for p in b.held()] == [6] and b.pending(4).at == [7, 10] and b.in_use(b"C3")
        assert b.pending(4).released and b.pending(6).in_seq == 6
        # another ring incarnation, or both published: nothing to do
        assert fo.recover(b, 6, 0, 7) == [] and fo.recover(b, 7, 12, 7) == [] and len(b.held()) == 1
        # restarted with position 11 next: 11 was never published, so 5 is held again
        assert fo.recover(b, 7, 11, 7) == []
        assert [p.num for p in b.held()] == [5, 6]
    with OrderBook(path) as b:
        assert [p.num for p in b.held()] == [5, 6] and b.pending(5).at == [] and not b.pending(5).released
        out = fo.release(b, SESSION)
        assert [(name, kw["clOrdId"], kw["orderId"]) for name, kw in out] == [("ReplaceOrder", 5, 902),
                                                                               ("CancelOrder", 6, 903)]
        b.compact()  # held requests and their orders are kept
    with OrderBook(path) as b:
        assert [p.num for p in b.held()] == [5, 6] and b.order(b"P3").order_id == 903
        report(b, "OrderCanceled", m.OrderCanceled, orderId=903, clOrdId=3, canceledQty=1500, sessionId=SESSION,
               reason=m.CancelReason.MassCancel)
        out = fo.release(b, SESSION)
        assert out[0][0] == "ReplaceOrder" and fields_of(out[1])[102] == b"0"
    with OrderBook(path) as b:
        assert [p.num for p in b.held()] == [5] and b.pending(6) is None


def test_recover_settles_what_a_crash_left_unpublished(book: OrderBook) -> None:
    """The book is written before the engine message is published: a gateway killed in
    between finds at restart what the engine never saw (staged for position 103 or later).
    The session store counts messages 1-5 as applied (next_in 6)."""
    def at(seq: int) -> fo.Origin:
        return fo.Origin(seq, 7, 100 + seq)

    fo.new_order(nos(b"A1"), book, INSTRUMENTS, account_ok, SESSION, at(1))
    report(book, "OrderAccepted", m.OrderAccepted, orderId=900, clOrdId=1, sessionId=SESSION)
    fo.new_order(nos(b"W1"), book, INSTRUMENTS, account_ok, SESSION, at(2))  # published, not answered yet
    fo.cancel({11: b"C1", 41: b"A1"}, book, SESSION, at(3))
    fo.new_order(nos(b"L1"), book, INSTRUMENTS, account_ok, SESSION, at(4))
    fo.mass_cancel({11: b"M1", 530: b"7"}, book, INSTRUMENTS, account_ok, SESSION, at(5))
    fo.new_order(nos(b"L2"), book, INSTRUMENTS, account_ok, SESSION, at(6))  # not counted: sent again
    kw = fo.cancel({11: b"H2", 41: b"L2"}, book, SESSION, at(7))  # held, not counted: sent again
    assert fo.is_held(book, kw)
    assert fo.recover(book, 6, 103, 6) == []  # another incarnation of the ring: not known
    out = fo.recover(book, 7, 103, 6)
    assert [x.msg_type for x in out] == [b"9", b"r", b"8"]
    cxl, mass, rej = (fields_of(x) for x in out)
    assert (cxl[11], cxl[41], cxl[102], cxl[39], cxl[58]) == (b"C1", b"A1", b"99", b"0", fo.LOST)
    assert (mass[11], mass[531], mass[532]) == (b"M1", b"0", b"99")
    assert (rej[11], rej[150], rej[39], rej[103], rej[37], rej[17]) == (b"L1", b"8", b"8", b"99", b"NONE", b"L4")
    assert book.order(b"W1").status == b"A" and book.order(b"A1").live and book.pending_for(book.order(b"A1")) is None
    assert not any(book.in_use(c) for c in (b"C1", b"M1", b"L1", b"L2", b"H2")) and not book.has_held
    # the counterparty sends 6 and 7 again: handled afresh
    assert new(book, nos(b"L2"))["clOrdId"] == 8
    assert fo.is_held(book, fo.cancel({11: b"H2", 41: b"L2"}, book, SESSION))
    assert fo.recover(book, 7, 103, 6) == []  # done once


def test_an_events_changes_are_written_whole_after_its_reports(tmp_path: Path) -> None:
    """The gateway stores an event's reports, then the book's record of it
    (begin_event/end_event, written by write_events); applied_through says which events the
    book has, so a restarted gateway applies each event to the book once."""
    path = tmp_path / "e.orders"
    b = OrderBook(path)
    new(b, nos(b"A1", t38=b"3"))
    b.flush()  # as the gateway does before it publishes the order
    b.begin_event()
    report(b, "OrderAccepted", m.OrderAccepted, orderId=900, clOrdId=1, sessionId=SESSION)
    b.end_event(1, 77, 10)
    b.begin_event()
    trade(b, price=5_000_050, qty=1000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=2000, makerSessionId=SESSION)
    b.end_event(1, 77, 11)
    assert b.applied_through(1, 77) == 11 and b.order(b"A1").cum_qty == 1000
    assert b.applied_through(1, 78) == -1 and b.applied_through(2, 77) == -1  # another ring, or incarnation
    with OrderBook(path) as crashed:  # before write_events: neither event is in the file
        assert crashed.order(b"A1").status == b"A" and crashed.applied_through(1, 77) == -1
    b.write_events()
    with OrderBook(path) as again:
        o = again.order(b"A1")
        assert (o.order_id, o.status, o.cum_qty) == (900, b"1", 1000) and again.applied_through(1, 77) == 11
    b.close()
    path.write_bytes(path.read_bytes()[:-5])  # the second event's record torn
    with OrderBook(path) as torn:
        o = torn.order(b"A1")
        assert torn.cut_bytes and (o.order_id, o.status, o.cum_qty) == (900, b"0", 0)
        assert torn.applied_through(1, 77) == 10
        torn.compact()
    with OrderBook(path) as compacted:
        assert compacted.applied_through(1, 77) == 10 and compacted.order(b"A1").order_id == 900


def _report_as_pairs(o, exec_id: bytes, exec_type: bytes, cl=None, orig=None, extra=()) -> list[tuple[int, bytes]]:
    """An ExecutionReport's body as the tag/value pairs the report table above lists, in its
    order (the reference ``fo._report``'s written bytes are held to)."""
    from ringex.gateways.fix_instrument import _avg_px, _render

    body = [(37, b"%d" % o.order_id if o.order_id else b"NONE"), (11, cl or o.cl_ord_id)]
    body += [(41, orig)] if orig else []
    body += [(17, exec_id), (150, exec_type), (39, o.status), (1, b"%d" % o.account), (55, o.symbol),
             (54, b"%d" % o.side), (38, _render(o.qty, o.qty_decimals)), (40, b"%d" % o.ord_type)]
    body += [(44, _render(o.price, o.price_decimals))] if o.price else []
    body += [(99, _render(o.stop_price, o.price_decimals))] if o.stop_price else []
    body += [(59, b"%d" % o.tif)]
    inst = [x for x, on in ((b"6", o.post_only), (b"E", o.reduce_only)) if on]
    body += [(18, b" ".join(inst))] if inst else []
    body += [(111, _render(o.display_qty, o.qty_decimals))] if o.display_qty else []
    body += list(extra)
    return body + [(151, _render(o.leaves_qty if o.live else 0, o.qty_decimals)),
                   (14, _render(o.cum_qty, o.qty_decimals)), (6, _avg_px(o.notional, o.cum_qty, o.price_decimals))]


def test_reports_are_written_as_their_fields_one_by_one() -> None:
    """``_report`` writes the body in one go, an order's own fields remembered by their
    values: for thousands of orders (decimals, flags, stops, icebergs, fills, statuses,
    two sessions' orders with the same engine numbers) the bytes are those of the fields
    written one by one."""
    import random

    from ringex.gateways.fix_codec import _fields_one_by_one
    from ringex.gateways.fix_order_book import Order

    rng = random.Random(3)
    for i in range(3000):
        qd, pd = rng.choice((0, 0, 2, 8)), rng.choice((0, 1, 4))
        o = Order(key=i % 50, num=i % 50, cl_ord_id=b"c%d" % i, chain=[], nums=[i % 50],
                  order_id=rng.choice((0, 7, 10**12)), account=rng.randrange(1, 5), instrument=1,
                  symbol=rng.choice((b"BTC-USD", b"ETH-USD")), price_decimals=pd, qty_decimals=qd,
                  side=rng.choice((1, 2)), ord_type=rng.choice((1, 2, 3, 4)), tif=rng.choice((0, 1, 3, 4)),
                  qty=rng.randrange(1, 10**6), price=rng.choice((0, rng.randrange(1, 10**9))),
                  stop_price=rng.choice((0, 0, rng.randrange(1, 10**9))), display_qty=rng.choice((0, 0, 5)),
                  post_only=rng.random() < 0.3, reduce_only=rng.random() < 0.3, stp_mode=0,
                  cum_qty=rng.choice((0, 3)), leaves_qty=rng.randrange(0, 10), notional=rng.randrange(0, 10**12),
                  status=rng.choice((b"0", b"1", b"2", b"4", b"8", b"A")))
        extra = rng.choice(([], [(58, b"Text")], [(31, b"5"), (32, b"1"), (851, b"2"), (527, b"9")]))
        cl, orig = rng.choice(((None, None), (b"x%d" % i, b"c%d" % i)))
        got = fo._report(o, b"%d.1" % i, b"F", cl, orig, extra)
        assert got.body == _fields_one_by_one(_report_as_pairs(o, b"%d.1" % i, b"F", cl, orig, extra)), o


def test_engine_messages_are_the_codecs_bytes(book: OrderBook) -> None:
    """``engine_message`` packs what ``new_order`` and ``cancel`` checked without the codec
    checking it again: the same bytes as the codec, order types, flags and cancels alike."""
    variants = [{}, {"t40": b"1", "t44": None}, {"t40": b"3", "t44": None, "t99": b"49000"},
                {"t40": b"4", "t99": b"49000"}, {"t59": b"3"}, {"t59": b"4"}, {"t18": b"6 E"}, {"t111": b"0.5"},
                {"t54": b"2", "t7928": b"3"}, {"t38": b"1000", "t44": b"0.5"}]
    for i, over in enumerate(variants):
        kw = fo.new_order(nos(b"E%d" % i, **over), book, INSTRUMENTS, account_ok, SESSION)
        assert fo.engine_message("NewOrder", kw) == m.NewOrder.encode(**kw), over
    accepted(book, b"X1", 77)
    kw = fo.cancel({11: b"XC", 41: b"X1"}, book, SESSION)
    assert fo.engine_message("CancelOrder", kw) == m.CancelOrder.encode(**kw)
    kw = fo.mass_cancel({11: b"M1", 530: b"7"}, book, INSTRUMENTS, account_ok, SESSION)
    assert fo.engine_message("MassCancel", kw) == m.MassCancel.encode(**kw)  # (through the codec)
    import struct

    with pytest.raises(struct.error):
        fo.engine_message("NewOrder", {"clOrdId": -1})  # a number its field cannot hold


def test_with_fields_writes_what_the_fields_one_by_one_write() -> None:
    """A written body takes one more field at once; anything the writer refuses is still
    refused."""
    from ringex.gateways.fix_codec import _fields_one_by_one

    body = b"37=1\x0111=a\x01"
    assert fo.with_fields(body, [(60, b"20240102-03:04:05.678")]) == body + _fields_one_by_one([(60, b"20240102-03:04:05.678")])
    assert fo.with_fields(body, [(45, 7)]) == body + b"45=7\x01"
    assert fo.with_fields([(37, b"1")], [(60, b"t")]) == [(37, b"1"), (60, b"t")]
    for bad in ([(60, b"")], [(60, b"a\x01b")], [(0, b"x")]):
        with pytest.raises(ValueError):
            fo.with_fields(body, bad)
