"""Perpetual futures (docs/risk.md "Perpetual futures", pre-trade checks 4-7): positions
(qty, entry cost, realized PnL), MaxOrderQty, PositionLimit (with the overflow cap),
ReduceOnlyWouldIncrease, the loss check of reduce-only orders, InsufficientMargin with
tiered initial margin, PerpetualParams and IndexPrice checks (the index inside the book
window), the mark price (smoothed, clamped basis, kept in the book window) and funding.
"""

from __future__ import annotations

from risk_kit import BOTTOM, PPM, T0, TOP, Risk

BIG = 1_000_000


def perp_ex(accounts=(1, 2, 3, 4, 5), deposit: int = BIG, **params) -> Risk:
    """Instrument 1 a perpetual (tick 1, lot 1, reference 100, no fees), funded accounts."""
    ex = Risk(accounts=accounts)
    ex.perp(1)
    if params:
        assert ex.params(1, **params) == ["Admin None"]
    if deposit:
        for a in accounts:
            ex.deposit(a, deposit)
    return ex


# -- positions ---------------------------------------------------------------------------------


def test_positions_open_reduce_and_flip():
    ex = perp_ex()
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert (ex.pos(1), ex.pos(2)) == ((10, 1000, 0), (-10, -1000, 0))
    assert (ex.bal(1), ex.bal(2)) == (BIG - 1000, BIG + 1000)
    # reducing 4 of 10 at 110: cost falls by 400, realized 440 - 400
    ex.buy(3, 4, 110)
    ex.sell(1, 4, 110)
    assert ex.pos(1) == (6, 600, 40)
    assert ex.pos(3) == (4, 440, 0)
    # selling 10 at 95 closes 6 (realized 570 - 600) and opens a short of 4 at 95
    ex.buy(3, 10, 95)
    assert ex.sell(1, 10, 95) == ["Accepted 6", "Trade 3 10@95 m=5 t=6 ml=0 tl=0", "BookExecute 5 10@95"]
    assert ex.pos(1) == (-4, -380, 10)
    assert ex.pos(3) == (14, 1390, 0)
    assert ex.pos(2) == (-10, -1000, 0)
    assert ex.bal(1) == BIG - 1000 + 440 + 950
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()


def test_reducing_removes_cost_truncated_toward_zero():
    ex = perp_ex()
    ex.sell(4, 2, 100)
    ex.sell(4, 1, 101)
    ex.buy(5, 3, 101)
    assert (ex.pos(4), ex.pos(5)) == ((-3, -301, 0), (3, 301, 0))
    ex.sell(5, 1, 90)
    ex.buy(4, 1, 90)
    # c = trunc(-301 / 3) = -100 (not -101): cost -201, realized -(90 - 100)
    assert ex.pos(4) == (-2, -201, 10)
    assert ex.pos(5) == (2, 201, -10)
    ex.sell(5, 2, 90)
    ex.buy(4, 2, 90)
    assert ex.pos(4) == (0, 0, 31)
    assert ex.pos(5) == (0, 0, -31)
    assert (ex.bal(4), ex.bal(5)) == (BIG + 301 - 270, BIG - 301 + 270)
    ex.assert_conserved()


def test_perpetual_trades_settle_cash_and_fees():
    ex = Risk()
    ex.perp(1, takerFeePpm=4000, makerFeePpm=-1000)
    for a in (1, 2):
        ex.deposit(a, 10_000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)  # n 1000: the buyer pays 1000 + 4, the seller receives 1000 + 1
    assert (ex.bal(1), ex.bal(2), ex.fees()) == (10_000 - 1004, 10_000 + 1001, 3)
    assert (ex.pos(1), ex.pos(2)) == ((10, 1000, 0), (-10, -1000, 0))
    assert (ex.held(1), ex.held(2)) == (0, 0)  # perpetual orders hold nothing
    ex.assert_conserved()


def test_account_risk_reports_equity_and_margins():
    ex = perp_ex(deposit=0)
    ex.deposit(1, 10_000)
    ex.deposit(2, 10_000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    # mark = reference 100; initial 100%, maintenance half of it
    assert ex.risk(1) == dict(equity=10_000, initial=1000, maintenance=500, free=9000)
    ex.buy(1, 5, 100)  # an open buy: W = 15
    assert ex.risk(1) == dict(equity=10_000, initial=1500, maintenance=500, free=8500)
    ex.sell(1, 20, 101)  # W = max(15, 10) stays 15; selling above the mark is no loss
    assert ex.risk(1)["initial"] == 1500
    ex.index(1, 120)
    # equity 9000 + 1200; W 15 at 120 = 1800, plus buying 5 at 100 below the mark: no loss,
    # selling 20 at 101 below it: 2400 - 2020 = 380
    assert ex.risk(1) == dict(equity=10_200, initial=1800 + 380, maintenance=600, free=10_200 - 2180)
    assert ex.risk(2) == dict(equity=11_000 - 1200, initial=1200, maintenance=600, free=9800 - 1200)
    assert ex.risk(3) == dict(equity=0, initial=0, maintenance=0, free=0)


# -- pre-trade checks ------------------------------------------------------------------------------


def test_max_order_qty():
    ex = perp_ex()
    ex.spot(2)
    assert ex.limits(1, maxOrderQty=-1) == ["Admin InvalidInstrumentDefinition"]
    assert ex.limits(1, maxPosition=-1) == ["Admin InvalidInstrumentDefinition"]
    assert ex.limits(1, maxOrderQty=5) == ["Admin None"]
    assert ex.buy(1, 6, 100) == ["Rejected MaxOrderQty"]
    assert ex.sell(1, 6, ordType="Market", tif="IOC") == ["Rejected MaxOrderQty"]
    assert ex.buy(1, 5, 100) == ["Accepted 1", "BookAdd 1 Buy 5@100"]
    # before ReduceOnlyWouldIncrease
    assert ex.buy(2, 6, 100, reduceOnly=1) == ["Rejected MaxOrderQty"]
    assert ex.buy(2, 5, 100, reduceOnly=1) == ["Rejected ReduceOnlyWouldIncrease"]
    # a spot instrument has one too
    ex.deposit(3, 5000)
    assert ex.limits(2, maxOrderQty=3) == ["Admin None"]
    assert ex.buy(3, 4, 100, instrument=2) == ["Rejected MaxOrderQty"]
    assert ex.buy(3, 3, 100, instrument=2) == ["Accepted 2", "BookAdd 2 Buy 3@100"]
    assert ex.limits(1) == ["Admin None"]  # 0 = none
    assert ex.buy(1, 600, 99)[0] == "Accepted 3"


def test_position_limit_counts_open_orders():
    ex = perp_ex()
    assert ex.limits(1, maxPosition=10) == ["Admin None"]
    assert ex.buy(1, 6, 99) == ["Accepted 1", "BookAdd 1 Buy 6@99"]
    assert ex.buy(1, 5, 99) == ["Rejected PositionLimit"]  # |0 + 11| > 10
    assert ex.sell(1, 16, 101) == ["Rejected PositionLimit"]  # |0 - 16|
    assert ex.sell(1, 10, 101) == ["Accepted 2", "BookAdd 2 Sell 10@101"]  # max(6, 10)
    assert ex.sell(1, 1, 102) == ["Rejected PositionLimit"]
    ex.sell(2, 6, 99)  # fills order 1: Q 6, S 10
    assert ex.pos(1)[0] == 6
    assert ex.buy(1, 5, 98) == ["Rejected PositionLimit"]
    assert ex.buy(1, 4, 98) == ["Accepted 4", "BookAdd 4 Buy 4@98"]  # |6 + 4|
    assert ex.sell(1, 6, 101) == ["Accepted 5", "BookAdd 5 Sell 6@101"]  # |6 - 16|
    assert ex.sell(1, 1, 101) == ["Rejected PositionLimit"]
    # reduce-only orders are not checked
    assert ex.sell(1, 6, 102, reduceOnly=1) == ["Accepted 6", "BookAdd 6 Sell 6@102"]
    # another account's orders don't count
    assert ex.sell(3, 10, 103) == ["Accepted 7", "BookAdd 7 Sell 10@103"]


def test_position_limit_has_an_overflow_cap():
    max_qty = 2**62 // TOP
    cap = 2**56 // TOP  # top of the book window 131
    ex = Risk()
    ex.perp(1, maxQty=max_qty)
    ex.deposit(1, 2**60)
    ex.deposit(2, 2**60)
    assert ex.buy(1, cap + 1, 100) == ["Rejected PositionLimit"]
    assert ex.sell(2, cap + 1, 101) == ["Rejected PositionLimit"]
    assert ex.buy(1, cap, 100) == ["Accepted 1", f"BookAdd 1 Buy {cap}@100"]
    assert ex.buy(1, 1, 99) == ["Rejected PositionLimit"]
    assert ex.limits(1, maxPosition=2**62) == ["Admin None"]  # larger than the cap: the cap
    assert ex.buy(1, 1, 99) == ["Rejected PositionLimit"]
    assert ex.limits(1, maxPosition=5) == ["Admin None"]
    assert ex.buy(1, 1, 99) == ["Rejected PositionLimit"]
    ex.cancel(1, 1)
    assert ex.buy(1, 5, 99) == ["Accepted 2", "BookAdd 2 Buy 5@99"]
    assert ex.buy(1, 1, 99) == ["Rejected PositionLimit"]


def test_reduce_only():
    ex = perp_ex(deposit=0)
    ex.deposit(1, 1000)
    ex.deposit(2, 10_000)
    assert ex.buy(1, 1, 100, reduceOnly=1) == ["Rejected ReduceOnlyWouldIncrease"]  # no position
    assert ex.sell(1, 1, 100, reduceOnly=1) == ["Rejected ReduceOnlyWouldIncrease"]
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert ex.pos(1)[0] == 10
    assert ex.buy(1, 1, 99, reduceOnly=1) == ["Rejected ReduceOnlyWouldIncrease"]  # same side
    assert ex.sell(1, 11, 105, reduceOnly=1) == ["Rejected ReduceOnlyWouldIncrease"]  # more than held
    assert ex.index(1, 95) == ["Admin None", "Mark 95 idx=95 basis=0"]
    # equity 950 = initial margin 950: a sell below the mark would need more ...
    assert ex.risk(1) == dict(equity=950, initial=950, maintenance=475, free=0)
    assert ex.sell(1, 1, 90) == ["Rejected InsufficientMargin"]
    # ... a reduce-only one needs no initial margin, only its loss (950 - 900 = 50) covered
    # by the excess over maintenance (950 - 475)
    assert ex.sell(1, 10, 90, reduceOnly=1) == ["Accepted 3", "BookAdd 3 Sell 10@90"]
    assert ex.buy(2, 1, 90) == ["Accepted 4", "Trade 2 1@90 m=3 t=4 ml=9 tl=0", "BookExecute 3 1@90"]
    assert (ex.pos(1), ex.pos(2)) == ((9, 900, -10), (-9, -900, 10))
    ex.assert_conserved()


def test_reduce_only_buy_above_the_mark_needs_its_loss_in_the_excess_over_maintenance():
    """A short (cash 1100, equity 100, maintenance 50) buying back above the mark 100 loses
    notional(price, qty) - 100 * qty the moment it fills: only equity - held - maintenance
    (here 50) may pay for it."""
    ex = perp_ex(deposit=0, imPpm=100_000)
    ex.spot(2)
    ex.deposit(1, 100)
    ex.deposit(2, 10_000)
    ex.buy(2, 10, 100)
    ex.sell(1, 10, 100)
    assert ex.risk(1) == dict(equity=100, initial=100, maintenance=50, free=0)
    before = ex.wallet((1, 2))
    # filled, this one would leave the account flat with 1100 - 1310 = -210
    assert ex.buy(1, 10, TOP, reduceOnly=1) == ["Rejected InsufficientMargin"]  # loss 310
    assert ex.buy(1, 10, 106, reduceOnly=1) == ["Rejected InsufficientMargin"]  # 60 > 50
    assert ex.buy(1, 5, 111, reduceOnly=1) == ["Rejected InsufficientMargin"]  # 55 > 50
    assert ex.wallet((1, 2)) == before and ex.engine.next_order_id == 3
    assert ex.buy(1, 10, 105, reduceOnly=1) == ["Accepted 3", "BookAdd 3 Buy 10@105"]  # 50: enough
    assert ex.buy(1, 5, 110, reduceOnly=1) == ["Accepted 4", "BookAdd 4 Buy 5@110"]
    assert ex.buy(1, 10, 99, reduceOnly=1) == ["Accepted 5", "BookAdd 5 Buy 10@99"]  # below the mark: no loss
    assert ex.risk(1) == dict(equity=100, initial=100, maintenance=50, free=0)  # they add no margin
    for oid in (3, 4, 5):
        ex.cancel(1, oid)
    # a spot hold comes off the excess: 200 - 100 - 50 = 50
    ex.deposit(1, 100)
    assert ex.buy(1, 1, 100, instrument=2) == ["Accepted 6", "BookAdd 6 Buy 1@100"]
    assert ex.held(1) == 100
    assert ex.buy(1, 10, 106, reduceOnly=1) == ["Rejected InsufficientMargin"]
    assert ex.buy(1, 10, 105, reduceOnly=1) == ["Accepted 7", "BookAdd 7 Buy 10@105"]
    ex.cancel(1, 7)
    ex.cancel(1, 6, instrument=2)
    # without it: 150
    assert ex.buy(1, 10, 116, reduceOnly=1) == ["Rejected InsufficientMargin"]
    assert ex.buy(1, 10, 115, reduceOnly=1) == ["Accepted 8", "BookAdd 8 Buy 10@115"]
    # filled, it leaves the account flat with the maintenance it had: 1200 - 1150 = 50
    assert ex.sell(2, 10, 115) == ["Accepted 9", "Trade 2 10@115 m=8 t=9 ml=0 tl=0", "BookExecute 8 10@115"]
    assert ex.pos(1) == (0, 0, -150)
    assert ex.bal(1) == 50 and ex.risk(1) == dict(equity=50, initial=0, maintenance=0, free=50)
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()


def test_reduce_only_sell_below_the_mark_with_a_divisor():
    """Lot 10, notionalDivisor 10 (a lot at price p is worth p): loss = notional at mark -
    notional at the price, both exact."""
    ex = Risk(accounts=(1, 2))
    ex.perp(1, lotSize=10, minQty=10)
    assert ex.params(1, imPpm=100_000) == ["Admin None"]
    assert ex.limits(1, notionalDivisor=10) == ["Admin None"]
    ex.deposit(1, 100)
    ex.deposit(2, 100_000)
    ex.sell(2, 100, 100)
    ex.buy(1, 100, 100)  # notional 1000: cash -900
    assert ex.risk(1) == dict(equity=100, initial=100, maintenance=50, free=0)
    assert ex.sell(1, 100, 94, reduceOnly=1) == ["Rejected InsufficientMargin"]  # 1000 - 940 = 60 > 50
    assert ex.sell(1, 100, 95, reduceOnly=1) == ["Accepted 3", "BookAdd 3 Sell 100@95"]  # 50
    # 30 at 83: 300 - 249 = 51; at 84: 300 - 252 = 48
    assert ex.sell(1, 30, 83, reduceOnly=1) == ["Rejected InsufficientMargin"]
    assert ex.sell(1, 30, 84, reduceOnly=1) == ["Accepted 4", "BookAdd 4 Sell 30@84"]
    assert ex.buy(2, 30, 84) == ["Accepted 5", "Trade 2 30@84 m=4 t=5 ml=0 tl=0", "BookExecute 4 30@84"]
    assert (ex.bal(1), ex.pos(1)) == (-900 + 252, (70, 700, -48))
    assert ex.risk(1) == dict(equity=52, initial=70, maintenance=35, free=-18)
    ex.assert_conserved()


def test_reduce_only_order_without_a_loss_is_not_checked():
    """A short whose spot hold takes its excess over maintenance below zero (the mark rose
    after the hold was taken; equity stays above maintenance: not liquidatable) may still
    close at or below the mark, not a tick above it."""
    ex = perp_ex(deposit=0, imPpm=100_000)
    ex.spot(2)
    ex.deposit(1, 170)
    ex.deposit(2, 10_000)
    ex.buy(2, 10, 100)
    ex.sell(1, 10, 100)  # cash 1170, equity 170, initial margin 100
    assert ex.buy(1, 1, 70, instrument=2) == ["Accepted 3", "BookAdd 3 Buy 1@70"]  # free 70
    assert ex.index(1, 106) == ["Admin None", "Mark 106 idx=106 basis=0"]
    # equity 110, maintenance 53, held 70: 110 - 70 - 53 = -13
    assert ex.risk(1) == dict(equity=110, initial=106, maintenance=53, free=110 - 70 - 106)
    assert ex.buy(1, 10, 106, reduceOnly=1) == ["Accepted 4", "BookAdd 4 Buy 10@106"]  # loss 0
    assert ex.buy(1, 10, 105, reduceOnly=1) == ["Accepted 5", "BookAdd 5 Buy 10@105"]  # a gain
    assert ex.buy(1, 1, 107, reduceOnly=1) == ["Rejected InsufficientMargin"]  # 1 > -13
    # a buy that is not reduce-only still needs its initial margin
    assert ex.buy(1, 1, 105) == ["Rejected InsufficientMargin"]


def test_reduce_only_loss_at_the_risk_price_of_stop_and_market_orders():
    """The price a reduce-only order's loss is taken at: a Stop's stop price plus 3 protection
    ticks (clamped to the window), a Market order's best ask plus 3 ticks (nothing when the
    ask side is empty: it can trade nothing). The short of 10 has 50 over maintenance."""
    ex = perp_ex(deposit=0, imPpm=100_000)
    ex.deposit(1, 100)
    ex.deposit(2, 10_000)
    ex.deposit(3, 10_000)
    ex.buy(2, 10, 100)
    ex.sell(1, 10, 100)  # last trade 100
    assert ex.buy(1, 10, ordType="Stop", stopPrice=103, reduceOnly=1) == ["Rejected InsufficientMargin"]  # 106
    assert ex.buy(1, 10, ordType="Stop", stopPrice=102, reduceOnly=1) == ["Accepted 3"]  # 105: 50
    ex.cancel(1, 3)
    assert ex.buy(1, 10, ordType="Market", tif="IOC", reduceOnly=1) == ["Accepted 4", "Canceled 4 MarketRemainder 10"]
    assert ex.sell(3, 1, 103) == ["Accepted 5", "BookAdd 5 Sell 1@103"]
    assert ex.buy(1, 10, ordType="Market", tif="IOC", reduceOnly=1) == ["Rejected InsufficientMargin"]  # 106
    ex.cancel(3, 5)
    ex.sell(3, 1, 102)
    assert ex.buy(1, 10, ordType="Market", tif="IOC", reduceOnly=1) == [
        "Accepted 7", "Trade 2 1@102 m=6 t=7 ml=0 tl=9", "BookExecute 6 1@102", "Canceled 7 MarketRemainder 9"]
    # short 9, cash 998: equity 98, maintenance 45. With 279 over maintenance a stop at 129
    # is priced at 131, not 132: a loss of 9 * 31 = 279, not 288
    ex.deposit(1, 226)
    assert ex.risk(1) == dict(equity=324, initial=90, maintenance=45, free=234)
    assert ex.buy(1, 9, ordType="Stop", stopPrice=129, reduceOnly=1) == ["Accepted 8"]
    assert ex.withdraw(1, 1) == ["Admin None 1223"]
    assert ex.buy(1, 9, ordType="Stop", stopPrice=129, reduceOnly=1) == ["Rejected InsufficientMargin"]
    ex.assert_conserved()


def test_insufficient_margin_with_tiers():
    """Tier 1000, 10% then 15%: each tier's rate on the notional within it."""
    ex = perp_ex(deposit=0, imPpm=100_000, mmPpm=500_000, tierNotional=1000, tierStepPpm=50_000)
    ex.deposit(1, 99)
    assert ex.buy(1, 10, 100) == ["Rejected InsufficientMargin"]  # 1000 at 10%: 100
    assert ex.buy(1, 9, 100) == ["Accepted 1", "BookAdd 1 Buy 9@100"]  # 900 at 10%: 90
    ex.deposit(1, 1)
    assert ex.buy(1, 1, 100) == ["Accepted 2", "BookAdd 2 Buy 1@100"]  # W 10: 100
    # W 15: 100 + 15% of 500 = 175
    assert ex.buy(1, 5, 100) == ["Rejected InsufficientMargin"]
    ex.deposit(1, 75)
    assert ex.buy(1, 5, 100) == ["Accepted 3", "BookAdd 3 Buy 5@100"]
    assert ex.risk(1) == dict(equity=175, initial=175, maintenance=0, free=0)
    # the rate never exceeds 100%: tiers of 100 at 10%, 60%, then 100%
    assert ex.params(1, imPpm=100_000, tierNotional=100, tierStepPpm=500_000) == ["Admin None"]
    ex.deposit(2, 169)
    assert ex.buy(2, 3, 99) == ["Rejected InsufficientMargin"]  # 300 at mark: 10 + 60 + 100
    ex.deposit(2, 1)
    assert ex.buy(2, 3, 99) == ["Accepted 4", "BookAdd 4 Buy 3@99"]


def test_insufficient_margin_counts_the_loss_of_trading_away_from_the_mark():
    ex = perp_ex(deposit=0, imPpm=100_000)
    ex.deposit(3, 149)
    assert ex.buy(3, 5, 120) == ["Rejected InsufficientMargin"]  # 50 + (600 - 500)
    assert ex.sell(3, 5, 80) == ["Rejected InsufficientMargin"]  # 50 + (500 - 400)
    ex.deposit(3, 1)
    assert ex.buy(3, 5, 120) == ["Accepted 1", "BookAdd 1 Buy 5@120"]
    assert ex.sell(3, 5, 121) == ["Accepted 2", "BookAdd 2 Sell 5@121"]  # W stays 5, no loss
    assert ex.sell(3, 1, 121) == ["Rejected InsufficientMargin"]  # W 6


def test_insufficient_margin_is_cross_margin_and_counts_spot_holds():
    ex = Risk(accounts=(1, 2))
    ex.perp(1)
    ex.spot(2)
    ex.perp(3)
    ex.params(1, imPpm=100_000)
    ex.deposit(1, 1000)
    ex.buy(1, 9, 100, instrument=2)  # a spot hold of 900
    assert ex.held(1) == 900
    assert ex.buy(1, 11, 100) == ["Rejected InsufficientMargin"]  # 110 > 1000 - 900
    assert ex.buy(1, 10, 100) == ["Accepted 2", "BookAdd 2 Buy 10@100"]
    ex.cancel(1, 1, instrument=2)
    # instrument 3 at 100%: 800 more, then 100 for instrument 1: 900 of 1000
    assert ex.buy(1, 10, 100, instrument=3) == ["Rejected InsufficientMargin"]
    assert ex.buy(1, 8, 100, instrument=3) == ["Accepted 3", "BookAdd 3 Buy 8@100"]
    assert ex.buy(1, 2, 100, instrument=3) == ["Rejected InsufficientMargin"]
    assert ex.buy(1, 1, 100, instrument=3) == ["Accepted 4", "BookAdd 4 Buy 1@100"]
    assert ex.risk(1)["free"] == 0
    assert ex.withdraw(1, 1) == ["Admin InsufficientMargin 1000"]


# -- PerpetualParams, IndexPrice, the mark price ------------------------------------------------------


def test_perpetual_params_checks():
    ex = Risk()  # instruments 1 .. 3
    ex.spot(1)
    ex.perp(2)
    ex.deposit(1, 100)
    bad = ["Admin InvalidInstrumentDefinition"]
    assert ex.params(3) == ["Admin UnknownInstrument"]
    assert ex.params(4, imPpm=0) == ["Admin UnknownInstrument"]
    assert ex.params(3, imPpm=0) == ["Admin UnknownInstrument"]
    assert ex.params(1) == ["Admin NotPerpetual"]
    assert ex.params(1, imPpm=0) == ["Admin NotPerpetual"]
    for field, value in (("imPpm", 0), ("imPpm", -1), ("imPpm", PPM + 1), ("mmPpm", 0), ("mmPpm", PPM + 1),
                         ("tierNotional", -1), ("tierStepPpm", -1), ("tierStepPpm", PPM + 1),
                         ("fundingIntervalNs", 2**63), ("fundingIntervalNs", 2**64 - 1),
                         ("fundingCapPpm", -1), ("fundingCapPpm", PPM + 1),
                         ("basisCapPpm", -1), ("basisCapPpm", PPM + 1),
                         ("basisEmaPpm", -1), ("basisEmaPpm", PPM + 1)):
        assert ex.params(2, **{"imPpm": 1, field: value}) == bad, (field, value)
        assert ex.last[0]["refTemplateId"] == 17 and ex.last[0]["instrument"] == 2
    # nothing changed: still 100% initial margin
    assert ex.buy(1, 2, 100, instrument=2) == ["Rejected InsufficientMargin"]
    assert ex.params(2, imPpm=1, mmPpm=PPM, tierNotional=0, tierStepPpm=PPM, fundingIntervalNs=2**63 - 1,
                     fundingCapPpm=PPM, basisCapPpm=PPM, basisEmaPpm=0) == ["Admin None"]
    assert ex.last[0]["refTemplateId"] == 17 and ex.last[0]["instrument"] == 2
    assert ex.params(2, imPpm=PPM, basisEmaPpm=PPM, tierNotional=2**63 - 1) == ["Admin None"]
    assert ex.params(2, imPpm=500_000) == ["Admin None"]  # applies from the next message
    assert ex.buy(1, 2, 100, instrument=2) == ["Accepted 1", "BookAdd 1 Buy 2@100"]


def test_index_price_checks():
    ex = Risk()
    ex.spot(1)
    ex.perp(2)
    assert (ex.engine.mark_price(2), ex.engine.index_price(2)) == (100, 100)  # the reference
    assert ex.index(3, 100) == ["Admin UnknownInstrument"]
    assert ex.index(3, 0) == ["Admin UnknownInstrument"]
    assert ex.index(1, 100) == ["Admin NotPerpetual"]
    assert ex.index(1, -1) == ["Admin NotPerpetual"]
    # outside the book window 68 .. 131, below it included
    for price in (0, -5, 1, BOTTOM - 1, TOP + 1):
        assert ex.index(2, price) == ["Admin PriceOutOfRange"], price
        assert ex.last[0]["refTemplateId"] == 13 and ex.last[0]["instrument"] == 2
    assert (ex.engine.mark_price(2), ex.engine.index_price(2)) == (100, 100)
    assert ex.index(2, TOP) == ["Admin None", "Mark 131 idx=131 basis=0"]
    assert ex.last[1]["instrument"] == 2 and ex.last[1]["timestampNs"] == ex.clock
    assert ex.index(2, BOTTOM) == ["Admin None", "Mark 68 idx=68 basis=0"]
    assert ex.index(2, BOTTOM - 1) == ["Admin PriceOutOfRange"]
    assert (ex.engine.mark_price(2), ex.engine.index_price(2)) == (68, 68)  # unchanged


def test_index_price_window_follows_tick_and_reference():
    """The window is base * tick .. (base + 63) * tick with base = max(1, ref // tick - 32)."""
    ex = Risk()
    ex.perp(1, tickSize=2)  # base 18: 36 .. 162
    ex.perp(2, referencePrice=20)  # base max(1, -12) = 1: 1 .. 64
    assert ex.index(1, 35) == ["Admin PriceOutOfRange"]
    assert ex.index(1, 163) == ["Admin PriceOutOfRange"]
    assert ex.index(1, 36) == ["Admin None", "Mark 36 idx=36 basis=0"]
    assert ex.index(1, 162) == ["Admin None", "Mark 162 idx=162 basis=0"]
    assert ex.index(2, 0) == ["Admin PriceOutOfRange"]
    assert ex.index(2, 65) == ["Admin PriceOutOfRange"]
    assert ex.index(2, 1) == ["Admin None", "Mark 1 idx=1 basis=0"]
    assert ex.index(2, 64) == ["Admin None", "Mark 64 idx=64 basis=0"]


def test_mark_price_smooths_and_clamps_the_basis():
    ex = perp_ex(basisCapPpm=50_000, basisEmaPpm=500_000)
    assert ex.index(1, 100) == ["Admin None", "Mark 100 idx=100 basis=0"]  # empty book: sample 0
    ex.buy(1, 1, 104)
    ex.sell(2, 1, 110)
    # mid 107, sample 7: ema 0 + trunc(3.5) = 3
    assert ex.index(1, 100) == ["Admin None", "Mark 103 idx=100 basis=3"]
    assert ex.index(1, 100) == ["Admin None", "Mark 105 idx=100 basis=5"]  # ema 3 + 2
    assert ex.index(1, 100) == ["Admin None", "Mark 105 idx=100 basis=5"]  # ema 6, clamped to 5
    # sample 107 - 120 = -13: ema 6 + trunc(-9.5) = -3; cap 6
    assert ex.index(1, 120) == ["Admin None", "Mark 117 idx=120 basis=-3"]
    ex.cancel(2, 2)  # one side empty: sample 0, ema -3 + trunc(1.5) = -2
    assert ex.index(1, 120) == ["Admin None", "Mark 118 idx=120 basis=-2"]
    ex.sell(2, 1, 109)  # mid floor(213 / 2) = 106: sample 6, ema -2 + 4 = 2
    assert ex.index(1, 100) == ["Admin None", "Mark 102 idx=100 basis=2"]
    assert (ex.engine.mark_price(1), ex.engine.index_price(1)) == (102, 100)
    # sample 106 - 130 = -24: ema 2 + trunc(-13) = -11, clamped to -floor(6.5) = -6
    assert ex.index(1, 130) == ["Admin None", "Mark 124 idx=130 basis=-6"]
    assert ex.risk(1)["equity"] == BIG  # no position: the mark changes nothing


def test_mark_price_is_clamped_into_the_book_window():
    ex = perp_ex(basisCapPpm=PPM, basisEmaPpm=400_000)
    ex.buy(1, 1, BOTTOM)  # 1
    ex.sell(2, 1, 70)  # 2: mid 69
    for _ in range(10):
        ex.index(1, TOP)  # samples of -62 take the smoothed basis to -60
    assert ex.last[1]["basis"] == -60
    # sample 69 - 80 = -11: ema -60 + trunc(19.6) = -41, cap 80: mark 39, raised to the
    # bottom of the window; the basis reported is what is left of it
    assert ex.index(1, 80) == ["Admin None", "Mark 68 idx=80 basis=-12"]
    assert (ex.engine.mark_price(1), ex.engine.index_price(1)) == (68, 80)
    # the smoothed basis is kept as it was, unclamped: -41 + trunc(12) = -29, mark 51 -> 68
    assert ex.index(1, 80) == ["Admin None", "Mark 68 idx=80 basis=-12"]
    # sample -31: ema -29 + trunc(-0.8) = -29 (from a clamped -12 it would be -19: mark 81)
    assert ex.index(1, 100) == ["Admin None", "Mark 71 idx=100 basis=-29"]
    # the top: mid floor((129 + 131) / 2) = 130
    ex.cancel(1, 1)
    ex.cancel(2, 2)
    ex.buy(1, 1, 129)
    ex.sell(2, 1, TOP)
    for _ in range(12):
        ex.index(1, BOTTOM)  # samples of 62: from -29 up to 60 (mark 128, inside)
    assert ex.last[1]["basis"] == 60
    assert ex.index(1, BOTTOM) == ["Admin None", "Mark 128 idx=68 basis=60"]
    # sample 10: ema 60 + trunc(-20) = 40: mark 160, lowered to the top
    assert ex.index(1, 120) == ["Admin None", "Mark 131 idx=120 basis=11"]
    # sample -1: ema 40 + trunc(-16.4) = 24: mark 155 -> 131, basis 0
    assert ex.index(1, TOP) == ["Admin None", "Mark 131 idx=131 basis=0"]
    assert (ex.engine.mark_price(1), ex.engine.index_price(1)) == (131, 131)
    ex.cancel(1, 3)  # one side empty: sample 0, ema 24 + trunc(-9.6) = 15
    assert ex.index(1, 100) == ["Admin None", "Mark 115 idx=100 basis=15"]


def test_funding_uses_the_clamped_mark():
    """The funding rate is (mark - index) / index with the mark after its clamp."""
    params = dict(fundingCapPpm=PPM, basisCapPpm=PPM, basisEmaPpm=400_000)
    ex = perp_ex(accounts=(1, 2, 3), **params)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    ex.buy(3, 1, 129)
    ex.sell(3, 1, TOP)  # mid 130
    for _ in range(12):
        ex.index(1, BOTTOM)  # the smoothed basis rises to 60
    # ema 60 + trunc(-20) = 40: mark 160, clamped to 131
    assert ex.index(1, 120) == ["Admin None", "Mark 131 idx=120 basis=11"]
    assert ex.params(1, fundingIntervalNs=1000, **params) == ["Admin None"]  # the interval starts here
    bal = ex.bal(1), ex.bal(2)
    assert ex.clock < T0 + 1000
    # rate trunc(11 / 120) = 91666 ppm (unclamped, 40 / 120, it would be 333333); on the
    # notional 131 * 10 that is 120.08: the long pays 121, the short receives 120, the fund 1
    assert ex.at(T0 + 1000).cancel(1, 99) == ["Funding 1 rem=1 total=121 rate=91666",
                                              "CancelRejected UnknownOrder"]
    assert (ex.bal(1) - bal[0], ex.bal(2) - bal[1]) == (-121, 120)
    ex.assert_conserved()


# -- funding -----------------------------------------------------------------------------------------


def funding_ex(cap: int = 10_000) -> Risk:
    """Lot 10; longs pay shorts when the mark (105) is above the index (100); funding every
    1000 ns from T0 on, switched on just after the index, so the first interval's premium
    is that one index's. A1 long 30, A2 short 20, A3 short 10, all at 100."""
    ex = Risk(accounts=(1, 2, 3, 4, 5))
    ex.perp(1, lotSize=10, minQty=10)
    params = dict(imPpm=100_000, fundingCapPpm=cap, basisCapPpm=50_000, basisEmaPpm=PPM)
    assert ex.params(1, **params) == ["Admin None"]
    for a in (1, 2, 3, 4, 5):
        ex.deposit(a, 10_000)
    ex.sell(2, 20, 100)
    ex.sell(3, 10, 100)
    ex.buy(1, 30, 100)
    ex.buy(4, 10, 104)
    ex.sell(5, 10, 106)
    assert ex.index(1, 100) == ["Admin None", "Mark 105 idx=100 basis=5"]
    assert ex.params(1, fundingIntervalNs=1000, **params) == ["Admin None"]
    assert ex.clock < T0 + 1000
    assert [ex.pos(a)[0] for a in (1, 2, 3)] == [30, -20, -10]
    return ex


def test_funding_pays_on_each_position_at_each_interval():
    ex = funding_ex()
    bal = {a: ex.bal(a) for a in (1, 2, 3)}
    fund = ex.bal(0)
    assert ex.at(T0 + 999).cancel(1, 99) == ["CancelRejected UnknownOrder"]  # not yet
    # rate trunc(5 / 100) = 5% capped at 1%, on each position's notional at 105: A1 pays
    # ceil(31.5) = 32, A2 receives 21 and A3 floor(10.5) = 10; the 1 left goes to the fund
    assert ex.at(T0 + 1000).cancel(1, 99) == ["Funding 1 rem=1 total=32 rate=10000",
                                              "CancelRejected UnknownOrder"]
    f = ex.last[0].fields
    assert (f["markPrice"], f["indexPrice"], f["timestampNs"], f["seq"]) == (105, 100, T0 + 1000, ex.seq)
    assert [ex.bal(a) - bal[a] for a in (1, 2, 3)] == [-32, 21, 10]
    assert ex.bal(0) == fund + 1
    assert ex.at(T0 + 1999).cancel(1, 99) == ["CancelRejected UnknownOrder"]
    # intervals skipped while no message arrived are paid once
    assert ex.at(T0 + 5500).cancel(1, 99) == ["Funding 1 rem=1 total=32 rate=10000",
                                              "CancelRejected UnknownOrder"]
    assert ex.at(T0 + 5999).cancel(1, 99) == ["CancelRejected UnknownOrder"]
    assert ex.at(T0 + 6000).cancel(1, 99)[0] == "Funding 1 rem=1 total=32 rate=10000"
    paid = 3
    for k in range(7, 40):
        before = ex.wallet(range(10), (0,))
        out = ex.at(T0 + k * 1000 + k).cancel(1, 99)
        assert out == ["Funding 1 rem=1 total=32 rate=10000", "CancelRejected UnknownOrder"], k
        paid += 1
        after = ex.wallet(range(10), (0,))
        assert sum(after[a, 0][0] - before[a, 0][0] for a in range(10)) == 0
        ex.assert_conserved()
    assert [ex.bal(a) - bal[a] for a in (1, 2, 3)] == [-32 * paid, 21 * paid, 10 * paid]
    assert ex.bal(0) == fund + paid
    assert [ex.bal(a) for a in (4, 5)] == [10_000, 10_000]  # no position, no funding


def test_funding_rates_are_truncated_and_shorts_pay_when_negative():
    ex = funding_ex(cap=PPM)
    bal = {a: ex.bal(a) for a in (1, 2, 3)}
    # 5% uncapped: A1 pays ceil(3150 * 5%) = ceil(157.5), A2 receives 105, A3 floor(52.5)
    assert ex.at(T0 + 1000).cancel(1, 99)[0] == "Funding 1 rem=1 total=158 rate=50000"
    # index 103 at the same time, the start of the next interval, mid 105: the premium
    # trunc(2 / 103) = 19417 ppm holds through it: ceil(61.16), floor(40.78), floor(20.39)
    assert ex.at(T0 + 1000).index(1, 103) == ["Admin None", "Mark 105 idx=103 basis=2"]
    assert ex.at(T0 + 2000).cancel(1, 99)[0] == "Funding 1 rem=2 total=62 rate=19417"
    # index 107: premium trunc(-2 / 107) = -18691 ppm: shorts pay ceil(39.25) + ceil(19.63),
    # the long receives floor(58.88)
    assert ex.at(T0 + 2000).index(1, 107) == ["Admin None", "Mark 105 idx=107 basis=-2"]
    assert ex.at(T0 + 3000).cancel(1, 99)[0] == "Funding 1 rem=2 total=60 rate=-18691"
    assert [ex.bal(a) - bal[a] for a in (1, 2, 3)] == [-158 - 62 + 58, 105 + 40 - 40, 52 + 20 - 20]
    ex.assert_conserved()


def test_funding_pays_the_time_weighted_premium_of_the_interval():
    """Issue 13: the rate is the premium averaged over the interval, each IndexPrice's
    premium holding until the next, not the premium at the funding moment. 5% for the first
    300 ns of [T0 + 1000, T0 + 2000], then 0 (index 105 = mid): 1.5%. A1 pays
    ceil(3150 * 1.5%) = ceil(47.25), A2 receives floor(31.5), A3 floor(15.75)."""
    ex = funding_ex(cap=PPM)
    assert ex.at(T0 + 1000).cancel(1, 99)[0] == "Funding 1 rem=1 total=158 rate=50000"
    assert ex.at(T0 + 1300).index(1, 105) == ["Admin None", "Mark 105 idx=105 basis=0"]
    assert ex.at(T0 + 2000).cancel(1, 99)[0] == "Funding 1 rem=2 total=48 rate=15000"
    # an interval with no IndexPrice at all is still paid, at the premium in force (0)
    assert ex.at(T0 + 3000).cancel(1, 99)[0] == "Funding 1 rem=0 total=0 rate=0"
    ex.assert_conserved()


def test_funding_adds_the_interest_component_within_005pct_of_the_premium():
    """rate = premium + clamp(interest - premium, -0.05%, +0.05%), as the leading venues pay:
    with interest 0.01% a 5% premium pays 4.95% (A1 ceil(155.925), A2 floor(103.95), A3
    floor(51.975)); a premium of 0 pays the interest, 0.01% (A1 ceil(0.315) = 1)."""
    ex = funding_ex(cap=PPM)
    assert ex.params(1, imPpm=100_000, fundingIntervalNs=1000, fundingCapPpm=PPM, basisCapPpm=50_000,
                     basisEmaPpm=PPM, interestPpm=100) == ["Admin None"]
    assert ex.at(T0 + 1000).cancel(1, 99)[0] == "Funding 1 rem=2 total=156 rate=49500"
    assert ex.at(T0 + 1000).index(1, 105) == ["Admin None", "Mark 105 idx=105 basis=0"]
    assert ex.at(T0 + 2000).cancel(1, 99)[0] == "Funding 1 rem=1 total=1 rate=100"
    assert ex.params(1, imPpm=100_000, fundingIntervalNs=1000, fundingCapPpm=PPM, basisCapPpm=50_000,
                     basisEmaPpm=PPM, interestPpm=-PPM - 1) == ["Admin InvalidInstrumentDefinition"]
    ex.assert_conserved()


def test_funding_cap_and_interval_changes():
    ex = funding_ex()
    bal1 = ex.bal(1)
    # index 110: basis -5, rate -4.5% capped at -1%: the shorts pay 21 + ceil(10.5), the long
    # receives floor(31.5)
    assert ex.index(1, 110) == ["Admin None", "Mark 105 idx=110 basis=-5"]
    assert ex.at(T0 + 1000).cancel(1, 99)[0] == "Funding 1 rem=1 total=32 rate=-10000"
    assert ex.bal(1) == bal1 + 31
    # a new interval re-aligns the next funding time on its own multiples
    assert ex.at(T0 + 1100).params(1, imPpm=100_000, fundingIntervalNs=5000, fundingCapPpm=10_000,
                                   basisCapPpm=50_000, basisEmaPpm=PPM) == ["Admin None"]
    assert ex.at(T0 + 2000).cancel(1, 99) == ["CancelRejected UnknownOrder"]
    assert ex.at(T0 + 4999).cancel(1, 99) == ["CancelRejected UnknownOrder"]
    assert ex.at(T0 + 5000).cancel(1, 99)[0] == "Funding 1 rem=1 total=32 rate=-10000"
    # fundingCapPpm 0: funding at rate 0
    ex.params(1, imPpm=100_000, fundingIntervalNs=5000, fundingCapPpm=0, basisCapPpm=50_000, basisEmaPpm=PPM)
    assert ex.at(T0 + 10_000).cancel(1, 99)[0] == "Funding 1 rem=0 total=0 rate=0"
    # interval 0: no funding any more
    ex.params(1, imPpm=100_000, fundingIntervalNs=0, fundingCapPpm=10_000, basisCapPpm=50_000, basisEmaPpm=PPM)
    assert ex.at(T0 + 100_000).cancel(1, 99) == ["CancelRejected UnknownOrder"]
    assert ex.bal(1) == bal1 + 62
    ex.assert_conserved()


def test_funding_of_several_perpetuals_in_instrument_order():
    ex = Risk(accounts=(1, 2))
    ex.perp(3)
    ex.perp(1)
    ex.spot(2)
    for i in (3, 1):
        ex.params(i, fundingIntervalNs=1000, fundingCapPpm=10_000)
    ex.deposit(1, 1000)
    ex.deposit(2, 1000)
    ex.sell(2, 5, 100, instrument=3)
    ex.buy(1, 5, 100, instrument=3)
    # no basis (cap 0): mark = index, rate 0; each is still funded once, in ascending id
    assert ex.at(T0 + 1000).cancel(1, 99) == ["Funding 1 rem=0 total=0 rate=0",
                                              "Funding 3 rem=0 total=0 rate=0",
                                              "CancelRejected UnknownOrder"]
    assert (ex.bal(1), ex.bal(2)) == (500, 1500)


def test_replace_of_a_perpetual_order_is_checked_for_position_and_margin():
    """Beyond docs/risk.md (which names PriceBand and MaxNotional for a replace), the engine
    checks a perpetual replace against the position limit and the initial margin, with the
    order counted at its new price and quantity (CancelRejected)."""
    ex = perp_ex(deposit=0, imPpm=100_000)
    ex.deposit(1, 100)
    assert ex.buy(1, 10, 100) == ["Accepted 1", "BookAdd 1 Buy 10@100"]
    assert ex.replace(1, 1, 11, 100) == ["CancelRejected InsufficientMargin"]  # 110
    assert ex.replace(1, 1, 10, 101) == ["CancelRejected InsufficientMargin"]  # 100 + a loss of 10
    assert ex.replace(1, 1, 9, 100) == ["Replaced 1 9@100 leaves=9", "BookReduce 1 1"]
    assert ex.risk(1) == dict(equity=100, initial=90, maintenance=0, free=10)
    assert ex.limits(1, maxPosition=9) == ["Admin None"]
    assert ex.replace(1, 1, 10, 100) == ["CancelRejected PositionLimit"]
    assert ex.replace(1, 1, 8, 99) == ["Replaced 1 8@99 leaves=8", "BookReplace 1 Buy 8@99"]


def test_a_reduce_only_order_fills_at_most_the_position_left_then_is_canceled():
    """Beyond docs/risk.md (which checks reduce-only orders on arrival): when a resting
    reduce-only order is met and the position has shrunk since, it fills only what is left
    of the position and its remainder is canceled (CancelReason ReduceOnly)."""
    ex = perp_ex(accounts=(1, 2, 3))
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert ex.sell(1, 10, 105, reduceOnly=1) == ["Accepted 3", "BookAdd 3 Sell 10@105"]
    ex.sell(1, 6, 104)
    ex.buy(3, 6, 104)  # the position is 4 now
    assert ex.pos(1) == (4, 400, 24)
    assert ex.buy(3, 8, 105) == ["Accepted 6", "Trade 3 4@105 m=3 t=6 ml=6 tl=4", "BookExecute 3 4@105",
                                 "Canceled 3 ReduceOnly 6", "BookDelete 3", "BookAdd 6 Buy 4@105"]
    assert (ex.pos(1), ex.pos(3)[0]) == ((0, 0, 44), 10)
    ex.assert_positions_sum_to_zero([1])


def _short_ten(deposit: int) -> Risk:
    """Account 1 short 10 @ 100 at 10% initial margin, ``deposit`` of collateral."""
    ex = perp_ex(deposit=0, imPpm=100_000)
    ex.deposit(1, deposit)
    ex.deposit(2, 10_000)
    ex.buy(2, 10, 100)
    ex.sell(1, 10, 100)
    assert ex.pos(1)[0] == -10
    return ex


def test_reduce_only_loss_is_checked_again_when_a_replaced_order_fills():
    """A reduce-only buy replaced above the mark was never checked for its new loss: at the
    fill it is, and it is canceled rather than leave the account flat below zero."""
    ex = _short_ten(100)
    assert ex.buy(1, 10, 100, reduceOnly=1) == ["Accepted 3", "BookAdd 3 Buy 10@100"]
    assert ex.replace(1, 3, 10, TOP)[0].startswith("Replaced 3")
    out = ex.sell(2, 10, TOP)
    assert "Canceled 3 ReduceOnly 10" in " ".join(out), out
    assert ex.pos(1)[0] == -10 and ex.risk(1)["equity"] >= 0
    ex.assert_conserved()


def test_reduce_only_loss_is_checked_again_after_a_withdrawal():
    """The cover a resting reduce-only order was accepted with can be withdrawn meanwhile."""
    ex = _short_ten(500)
    assert ex.buy(1, 10, TOP, reduceOnly=1) == ["Accepted 3", f"BookAdd 3 Buy 10@{TOP}"]
    assert ex.withdraw(1, 400)[0].startswith("Admin None")
    out = ex.sell(2, 10, TOP)
    assert "Canceled 3 ReduceOnly 10" in " ".join(out), out
    assert ex.risk(1)["equity"] >= 0
    ex.assert_conserved()


def test_two_resting_reduce_only_orders_cannot_spend_one_cover_twice():
    """Each was accepted against the same excess over maintenance; the second fill finds it
    spent and its order is canceled."""
    ex = _short_ten(200)
    assert ex.buy(1, 5, 130, reduceOnly=1)[0] == "Accepted 3"
    assert ex.buy(1, 5, 130, reduceOnly=1)[0] == "Accepted 4"
    out = ex.sell(2, 10, 130)
    joined = " ".join(out)
    assert "Trade" in joined and "Canceled 4 ReduceOnly 5" in joined, out
    assert ex.pos(1)[0] == -5 and ex.risk(1)["equity"] >= 0
    ex.assert_conserved()


# -- issue 13, defect 10: a reduce-only FOK fills whole or not at all ----------------------------


def _long_10_at_100(deposit: int) -> Risk:
    """Account 1 long 10 at 100 (taker fee 1%: paid 1,010), IM 10%, MM 1% of IM; two bids
    of 5 at 87 from account 3."""
    ex = Risk(accounts=(1, 2, 3))
    ex.perp(1, takerFeePpm=10_000)
    assert ex.params(1, imPpm=100_000, mmPpm=10_000) == ["Admin None"]
    ex.deposit(1, deposit)
    ex.deposit(2, 100_000)
    ex.deposit(3, 100_000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert ex.bal(1) == deposit - 1010 and ex.risk(1)["maintenance"] == 1
    ex.buy(3, 5, 87)
    ex.buy(3, 5, 87)
    return ex


def test_a_reduce_only_fok_whose_fills_with_fees_are_not_covered_is_rejected_whole():
    """Equity 135, MM 1: cover 134. Selling 10 at 87 loses 130 against the mark (100) and
    pays 9 (1% of 870 = 8.7, rounded up): 139. Before (fees floored), the acceptance check
    left the fee out (130 <= 133), the first fill's fee (4) then failed the second fill's
    check (65 > 133 - 65 - 4) and the FOK ended 5 of 10 filled, the rest canceled
    ReduceOnly."""
    ex = _long_10_at_100(145)
    assert ex.order(1, "Sell", 10, 87, tif="FOK", reduceOnly=1) == ["Rejected InsufficientMargin"]
    assert ex.pos(1) == (10, 1000, 0)
    ex.assert_conserved()


def test_a_reduce_only_fok_whose_fills_with_fees_are_covered_fills_whole():
    """Cover 139 = 130 + 9: both fills happen (fees 5 and 4: ceil(4.35), then ceil(8.7) - 5),
    and the account ends at equity 1, not below 0."""
    ex = _long_10_at_100(150)
    assert ex.order(1, "Sell", 10, 87, tif="FOK", reduceOnly=1) == [
        "Accepted 5", "Trade 2 5@87 m=3 t=5 ml=0 tl=5", "BookExecute 3 5@87",
        "Trade 3 5@87 m=4 t=5 ml=0 tl=0", "BookExecute 4 5@87"]
    assert ex.pos(1) == (0, 0, -130) and ex.bal(1) == 1
    ex.assert_conserved()


# -- issue 13: a band that trades alone cannot walk -----------------------------------------------


def test_the_price_band_of_a_perpetual_is_anchored_to_the_mark():
    """The band used to re-centre on every trade: four 1-lot self-trades with STP off walked
    the price from 100 to 146 and triggered another user's stop. A perpetual's band is now
    around its mark: a 10% band around 100 stays 90..110 after a trade at 110, and moves
    with the next IndexPrice (105: 95..115)."""
    ex = perp_ex(accounts=(1, 2))
    assert ex.limits(1, priceBandPpm=100_000) == ["Admin None"]
    assert ex.sell(1, 1, 110) == ["Accepted 1", "BookAdd 1 Sell 1@110"]
    assert ex.buy(1, 1, 110)[:2] == ["Accepted 2", "Trade 1 1@110 m=1 t=2 ml=0 tl=0"]
    assert ex.sell(1, 1, 111) == ["Rejected PriceBand"]
    assert ex.buy(1, 1, 89) == ["Rejected PriceBand"]
    assert ex.index(1, 105) == ["Admin None", "Mark 105 idx=105 basis=0"]
    assert ex.sell(1, 1, 115) == ["Accepted 3", "BookAdd 3 Sell 1@115"]
    assert ex.sell(1, 1, 116) == ["Rejected PriceBand"]
    assert ex.buy(1, 1, 94) == ["Rejected PriceBand"]


def test_an_impact_notional_keeps_a_thin_book_from_moving_the_mark():
    """Issue 13: one 1-lot bid moved the raw mid, and the mark, to the basis cap. With
    impactNotional 500 the sample is the leading venues' premium: max(0, impact bid -
    index) - max(0, index - impact ask), each impact price the average fill of 500 of
    notional on its side (bid rounded down, ask up), and no sample while a side is not that
    deep."""
    ex = perp_ex(accounts=(1, 2, 3), basisCapPpm=PPM, basisEmaPpm=PPM, impactNotional=500)
    ex.buy(1, 1, 129)
    ex.sell(2, 1, 131)  # raw mid 130
    assert ex.index(1, 100) == ["Admin None", "Mark 100 idx=100 basis=0"]
    ex.cancel(1, 1)
    ex.cancel(2, 2)
    ex.buy(1, 3, 101)
    ex.buy(1, 10, 99)
    ex.sell(2, 3, 104)
    ex.sell(2, 10, 106)
    # impact bid: 303 at 101, 197 at 99: 500 / (3 + 197 / 99) = 100.2 -> 100; impact ask: 312
    # at 104, 188 at 106: 500 / (3 + 188 / 106) = 104.7 -> 105
    assert ex.index(1, 100) == ["Admin None", "Mark 100 idx=100 basis=0"]  # inside: no premium
    assert ex.index(1, 95) == ["Admin None", "Mark 100 idx=95 basis=5"]
    assert ex.index(1, 110) == ["Admin None", "Mark 105 idx=110 basis=-5"]
    assert ex.params(1, basisCapPpm=PPM, basisEmaPpm=PPM, impactNotional=-1) == ["Admin InvalidInstrumentDefinition"]
