"""The compiled engine, order type by order type: exact event sequences (docs/engine.md)."""

from __future__ import annotations

from engine_kit import Exchange


def test_limit_orders_rest_and_match_in_price_time_priority():
    ex = Exchange()
    assert ex.sell(1, 5, 102) == ["Accepted 1", "BookAdd 1 Sell 5@102"]
    assert ex.sell(1, 5, 101) == ["Accepted 2", "BookAdd 2 Sell 5@101"]
    assert ex.sell(2, 5, 101) == ["Accepted 3", "BookAdd 3 Sell 5@101"]
    assert ex.engine.best_ask(1) == 101
    # best price first, then the older order at that price, and the remainder rests
    assert ex.buy(3, 12, 102) == [
        "Accepted 4",
        "Trade 1 5@101 m=2 t=4 ml=0 tl=7", "BookExecute 2 5@101",
        "Trade 2 5@101 m=3 t=4 ml=0 tl=2", "BookExecute 3 5@101",
        "Trade 3 2@102 m=1 t=4 ml=3 tl=0", "BookExecute 1 2@102",
    ]
    assert ex.asks() == [[(1, 3, 3)]]
    assert ex.buy(3, 4, 102) == ["Accepted 5", "Trade 4 3@102 m=1 t=5 ml=0 tl=1", "BookExecute 1 3@102",
                                 "BookAdd 5 Buy 1@102"]
    assert ex.engine.best_bid(1) == 102 and ex.engine.best_ask(1) is None
    assert ex.engine.last_price(1) == 102


def test_trade_and_accept_carry_every_field_and_the_stamp():
    ex = Exchange()
    ex.define(2, kind="Perpetual")  # reduce-only is for perpetuals: account 2 goes short 2 first
    ex.sell(2, 2, 100, instrument=2)
    ex.buy(3, 2, 100, instrument=2)
    ex.sell(1, 5, 101, clOrdId=77, displayQty=0, instrument=2)
    ex.send("NewOrder", seq=999, timestampNs=123, ingressNs=456, clOrdId=88, price=101, qty=2,
            sessionId=5, account=2, instrument=2, side="Buy", ordType="Limit", timeInForce="IOC",
            reduceOnly=1, stpMode="CancelBoth")
    acc, trade, execute = ex.last
    assert acc.fields == dict(seq=999, timestampNs=123, ingressNs=456, orderId=4, clOrdId=88, price=101, qty=2,
                              displayQty=0, stopPrice=0, sessionId=5, account=2, instrument=2, side=1, ordType=2,
                              timeInForce=3, postOnly=0, reduceOnly=1)
    assert trade.fields == dict(seq=999, timestampNs=123, ingressNs=456, tradeId=2, price=101, qty=2,
                                makerOrderId=3, makerClOrdId=77, makerLeavesQty=3, takerOrderId=4,
                                takerClOrdId=88, takerLeavesQty=0, instrument=2, makerAccount=1,
                                makerSessionId=11, takerAccount=2, takerSessionId=5, aggressorSide=1)
    assert execute.fields == dict(seq=999, timestampNs=123, ingressNs=456, orderId=3, qty=2, price=101,
                                  tradeId=2, instrument=2)
    # the same order on a spot instrument: nothing to reduce
    ex.sell(1, 5, 101, clOrdId=78)
    assert ex.buy(2, 2, 101, tif="IOC", reduceOnly=1) == ["Rejected InvalidFlags"]


def test_ioc_trades_what_it_can_and_cancels_the_rest():
    ex = Exchange()
    ex.sell(1, 3, 101)
    ex.sell(1, 3, 103)
    assert ex.buy(2, 5, 102, tif="IOC") == [
        "Accepted 3", "Trade 1 3@101 m=1 t=3 ml=0 tl=2", "BookExecute 1 3@101", "Canceled 3 IocRemainder 2"]
    assert ex.buy(2, 5, 100, tif="IOC") == ["Accepted 4", "Canceled 4 IocRemainder 5"]
    assert ex.engine.live_orders == 1


def test_fok_fills_completely_or_is_rejected_without_a_trace():
    ex = Exchange()
    ex.sell(1, 3, 101)
    ex.sell(1, 3, 102)
    assert ex.buy(2, 7, 102, tif="FOK") == ["Rejected FokUnfillable"]
    assert ex.asks() == [[(1, 3, 3)], [(2, 3, 3)]]
    assert ex.engine.next_order_id == 3  # a rejected order takes no id
    assert ex.buy(2, 6, 102, tif="FOK") == [
        "Accepted 3", "Trade 1 3@101 m=1 t=3 ml=0 tl=3", "BookExecute 1 3@101",
        "Trade 2 3@102 m=2 t=3 ml=0 tl=0", "BookExecute 2 3@102"]


def test_fok_counts_iceberg_reserves_met_again_behind_the_level():
    ex = Exchange()
    ex.sell(1, 10, 101, displayQty=2)
    ex.sell(2, 1, 101)
    assert ex.buy(3, 11, 101, tif="FOK")[0] == "Accepted 3"
    assert ex.asks() == []


def test_fok_and_self_trade_prevention():
    ex = Exchange()
    ex.sell(1, 3, 101)  # own order in front
    ex.sell(2, 3, 101)
    # CancelResting skips own orders: 3 of 6 reachable
    assert ex.buy(1, 4, 101, tif="FOK", stpMode="CancelResting") == ["Rejected FokUnfillable"]
    assert ex.buy(1, 3, 101, tif="FOK", stpMode="CancelResting") == [
        "Accepted 3", "Canceled 1 SelfTrade 3", "BookDelete 1", "Trade 1 3@101 m=2 t=3 ml=0 tl=0",
        "BookExecute 2 3@101"]
    ex.sell(1, 3, 102)
    ex.sell(2, 3, 102)
    # meeting an own order first makes it unfillable under the other modes
    for mode in ("CancelAggressor", "CancelBoth", "DecrementBoth"):
        assert ex.buy(1, 1, 102, tif="FOK", stpMode=mode) == ["Rejected FokUnfillable"], mode
    # Off: own orders count (and trade)
    assert ex.buy(1, 6, 102, tif="FOK", stpMode="Off")[0] == "Accepted 6"


def test_market_orders_trade_within_the_protection_and_cancel_the_rest():
    ex = Exchange(market_protection_ticks=2)
    assert ex.buy(1, 5, ordType="Market", tif="IOC") == ["Accepted 1", "Canceled 1 MarketRemainder 5"]
    ex.sell(1, 2, 101)
    ex.sell(1, 2, 103)
    ex.sell(1, 2, 104)  # beyond best ask + 2 ticks
    assert ex.buy(2, 10, ordType="Market", tif="Day") == [
        "Accepted 5", "Trade 1 2@101 m=2 t=5 ml=0 tl=8", "BookExecute 2 2@101",
        "Trade 2 2@103 m=3 t=5 ml=0 tl=6", "BookExecute 3 2@103", "Canceled 5 MarketRemainder 6"]
    assert ex.asks() == [[(4, 2, 2)]]
    ex.buy(1, 1, 99)
    assert ex.sell(2, 1, ordType="Market", tif="GTC") == [
        "Accepted 7", "Trade 3 1@99 m=6 t=7 ml=0 tl=0", "BookExecute 6 1@99"]


def test_post_only_rests_or_is_rejected_even_against_own_orders():
    ex = Exchange()
    ex.sell(1, 5, 101)
    assert ex.buy(1, 1, 101, postOnly=1) == ["Rejected PostOnlyWouldTrade"]
    assert ex.buy(2, 1, 102, postOnly=1) == ["Rejected PostOnlyWouldTrade"]
    assert ex.buy(2, 1, 100, postOnly=1) == ["Accepted 2", "BookAdd 2 Buy 1@100"]
    assert ex.sell(2, 1, 100, postOnly=1) == ["Rejected PostOnlyWouldTrade"]
    assert ex.buy(2, 1, 100, postOnly=1, tif="IOC") == ["Rejected InvalidFlags"]


def test_iceberg_shows_its_display_and_refills_at_the_back_of_its_level():
    ex = Exchange()
    assert ex.sell(1, 7, 101, displayQty=3) == ["Accepted 1", "BookAdd 1 Sell 3@101"]
    ex.sell(2, 2, 101)
    assert ex.buy(3, 4, 101) == [
        "Accepted 3",
        "Trade 1 3@101 m=1 t=3 ml=4 tl=1", "BookExecute 1 3@101", "BookAdd 1 Sell 3@101",
        "Trade 2 1@101 m=2 t=3 ml=1 tl=0", "BookExecute 2 1@101"]
    assert ex.asks() == [[(2, 1, 1), (1, 3, 4)]]
    # the aggressor meets the refilled order again within the same level
    assert ex.buy(3, 5, 101) == [
        "Accepted 4",
        "Trade 3 1@101 m=2 t=4 ml=0 tl=4", "BookExecute 2 1@101",
        "Trade 4 3@101 m=1 t=4 ml=1 tl=1", "BookExecute 1 3@101", "BookAdd 1 Sell 1@101",
        "Trade 5 1@101 m=1 t=4 ml=0 tl=0", "BookExecute 1 1@101"]
    # an iceberg aggressor trades its whole quantity and rests with its display
    ex.sell(1, 2, 105)
    assert ex.buy(2, 6, 105, displayQty=2) == [
        "Accepted 6", "Trade 6 2@105 m=5 t=6 ml=0 tl=4", "BookExecute 5 2@105", "BookAdd 6 Buy 2@105"]
    assert ex.bids() == [[(6, 2, 4)]]


def test_stop_orders_trigger_on_the_last_trade_in_order_id_order():
    ex = Exchange(market_protection_ticks=10)
    ex.sell(1, 1, 101)
    ex.sell(1, 5, 103)
    ex.buy(2, 1, 95)
    assert ex.buy(2, 2, ordType="Stop", stopPrice=101) == ["Accepted 4"]
    assert ex.buy(3, 2, 110, ordType="StopLimit", stopPrice=101) == ["Accepted 5"]
    assert ex.sell(3, 1, ordType="Stop", stopPrice=96) == ["Accepted 6"]
    assert ex.engine.order(4)["state"] == 2
    assert ex.buy(1, 1, 101, tif="IOC") == [
        "Accepted 7", "Trade 1 1@101 m=1 t=7 ml=0 tl=0", "BookExecute 1 1@101",
        "StopTriggered 4 @101", "Trade 2 2@103 m=2 t=4 ml=3 tl=0", "BookExecute 2 2@103",
        "StopTriggered 5 @103", "Trade 3 2@103 m=2 t=5 ml=1 tl=0", "BookExecute 2 2@103"]
    # the sell stop fires on a trade at or below its price, as a market order
    assert ex.sell(1, 1, 95) == [
        "Accepted 8", "Trade 4 1@95 m=3 t=8 ml=0 tl=0", "BookExecute 3 1@95",
        "StopTriggered 6 @95", "Canceled 6 MarketRemainder 1"]
    assert ex.engine.live_orders == 1


def test_stop_price_must_not_be_triggered_already():
    ex = Exchange()
    ex.sell(1, 1, 101)
    ex.buy(2, 1, 101)
    assert ex.buy(1, 1, ordType="Stop", stopPrice=101) == ["Rejected InvalidStopPrice"]
    assert ex.sell(1, 1, ordType="Stop", stopPrice=101) == ["Rejected InvalidStopPrice"]
    assert ex.buy(1, 1, 105, ordType="StopLimit", stopPrice=102) == ["Accepted 3"]
    assert ex.buy(1, 1, ordType="Limit", stopPrice=102, price=100) == ["Rejected InvalidStopPrice"]
    assert ex.buy(1, 1, ordType="Stop", stopPrice=102, price=100) == ["Rejected PriceOutOfRange"]


def test_stop_limit_rests_after_triggering():
    ex = Exchange()
    ex.sell(1, 1, 100)
    ex.buy(2, 3, 100, ordType="StopLimit", stopPrice=100)
    assert ex.buy(3, 1, 100) == [
        "Accepted 3", "Trade 1 1@100 m=1 t=3 ml=0 tl=0", "BookExecute 1 1@100",
        "StopTriggered 2 @100", "BookAdd 2 Buy 3@100"]
    assert ex.bids() == [[(2, 3, 3)]]


def test_cancel():
    ex = Exchange()
    ex.sell(1, 5, 101)
    ex.buy(1, 2, ordType="Stop", stopPrice=110)
    assert ex.cancel(2, 1) == ["CancelRejected NotYourOrder"]
    assert ex.cancel(1, 1, instrument=2) == ["CancelRejected UnknownOrder"]
    assert ex.cancel(1, 99) == ["CancelRejected UnknownOrder"]
    assert ex.cancel(1, 0) == ["CancelRejected UnknownOrder"]
    assert ex.cancel(1, 1) == ["Canceled 1 User 5", "BookDelete 1"]
    assert ex.cancel(1, 1) == ["CancelRejected UnknownOrder"]
    assert ex.cancel(1, 2) == ["Canceled 2 User 2"]  # a pending stop: no book event
    assert ex.engine.live_orders == 0 and ex.engine.best_ask(1) is None
    rej = ex.cancel(3, 7)
    assert rej == ["CancelRejected UnknownOrder"]
    f = ex.last[0].fields
    assert (f["orderId"], f["account"], f["sessionId"], f["refTemplateId"]) == (7, 3, 13, 2)


def test_replace_keeps_priority_only_when_it_shrinks_in_place():
    ex = Exchange()
    ex.sell(1, 5, 101)
    ex.sell(2, 5, 101)
    assert ex.replace(1, 1, 3, 101) == ["Replaced 1 3@101 leaves=3", "BookReduce 1 2"]
    assert ex.asks() == [[(1, 3, 3), (2, 5, 5)]]
    assert ex.replace(1, 1, 4, 101) == ["Replaced 1 4@101 leaves=4", "BookReplace 1 Sell 4@101"]
    assert ex.asks() == [[(2, 5, 5), (1, 4, 4)]]
    assert ex.replace(1, 1, 4, 102) == ["Replaced 1 4@102 leaves=4", "BookReplace 1 Sell 4@102"]
    # partially filled: the new qty is the total; leaves = qty - filled
    ex.buy(3, 7, 102)
    assert ex.asks() == [[(1, 2, 2)]]
    assert ex.replace(1, 1, 2, 102) == ["CancelRejected QtyOutOfRange"]  # not more than filled (2)
    assert ex.replace(1, 1, 3, 102) == ["Replaced 1 3@102 leaves=1", "BookReduce 1 1"]
    f = ex.last[0].fields
    assert (f["clOrdId"], f["qty"], f["leavesQty"], f["displayQty"]) == (ex.clord, 3, 1, 0)
    assert ex.engine.order(1)["clOrdId"] == ex.clord


def test_replace_that_crosses_trades_then_rests():
    ex = Exchange()
    ex.buy(1, 2, 99)
    ex.sell(2, 5, 101)
    assert ex.replace(2, 2, 5, 99) == [
        "Replaced 2 5@99 leaves=5", "BookDelete 2", "Trade 1 2@99 m=1 t=2 ml=0 tl=3",
        "BookExecute 1 2@99", "BookAdd 2 Sell 3@99"]
    ex.sell(1, 1, 105, postOnly=1)
    ex.buy(3, 1, 97)
    assert ex.replace(1, 3, 1, 97) == ["CancelRejected PostOnlyWouldTrade"]
    assert ex.replace(1, 3, 1, 104) == ["Replaced 3 1@104 leaves=1", "BookReplace 3 Sell 1@104"]


def test_replace_rejections():
    ex = Exchange(max_orders=8)
    ex.sell(1, 4, 101, displayQty=2)
    ex.buy(1, 1, ordType="Stop", stopPrice=110)
    assert ex.replace(2, 1, 4, 101) == ["CancelRejected NotYourOrder"]
    assert ex.replace(1, 9, 4, 101) == ["CancelRejected UnknownOrder"]
    assert ex.replace(1, 2, 4, 101) == ["CancelRejected StopNotAllowed"]
    assert ex.replace(1, 1, 0, 101) == ["CancelRejected QtyOutOfRange"]
    assert ex.replace(1, 1, 4, 0) == ["CancelRejected PriceOutOfRange"]
    assert ex.replace(1, 1, 4, 500) == ["CancelRejected PriceOutOfRange"]
    assert ex.replace(1, 1, 4, 101, display=5) == ["CancelRejected InvalidDisplayQty"]
    assert ex.replace(1, 1, 4, 101, display=1) == ["Replaced 1 4@101 leaves=4", "BookReduce 1 1"]
    assert ex.asks() == [[(1, 1, 4)]]


def test_mass_cancel_every_scope_in_ascending_order_id():
    ex = Exchange()
    ex.define(2)
    ex.sell(1, 1, 101)
    ex.sell(2, 1, 102)
    ex.sell(1, 1, 101, instrument=2)
    ex.buy(1, 1, ordType="Stop", stopPrice=110)
    ex.sell(1, 1, 103)
    assert ex.mass_cancel("AccountInstrument", account=1, instrument=1) == [
        "Canceled 1 MassCancel 1", "BookDelete 1", "Canceled 4 MassCancel 1",
        "Canceled 5 MassCancel 1", "BookDelete 5", "MassCancelDone 3"]
    assert ex.mass_cancel("Instrument", instrument=1) == ["Canceled 2 MassCancel 1", "BookDelete 2",
                                                          "MassCancelDone 1"]
    assert ex.mass_cancel("Account", account=1) == ["Canceled 3 MassCancel 1", "BookDelete 3",
                                                    "MassCancelDone 1"]
    assert ex.mass_cancel("Account", account=1) == ["MassCancelDone 0"]
    assert ex.mass_cancel("Account", account=7) == ["CancelRejected UnknownAccount"]
    assert ex.mass_cancel("Instrument", instrument=3) == ["CancelRejected UnknownInstrument"]
    assert ex.send_raw("MassCancel", dict(scope=9), account=1, instrument=1) == ["CancelRejected InvalidScope"]
    assert ex.engine.live_orders == 0
