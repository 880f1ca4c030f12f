"""The risk engine's money (docs/risk.md): Funds, the insurance fund's deposits, spot holds,
InsufficientFunds, replace re-holding, maker/taker fees and the fee account, and the
definition checks on fee rates and base assets.

Numbers are written out; each test ends with the money invariant (every asset's balances,
the insurance fund's and the fee account's included, add up to deposits minus withdrawals).
"""

from __future__ import annotations

from risk_kit import Risk

E60 = 2**60
I64_MAX = 2**63 - 1


def spot(taker: int = 5000, maker: int = 2000, **config) -> Risk:
    """Accounts 1-3; instrument 1 spot (base asset 1, tick 1, lot 1, reference 100)."""
    ex = Risk(**config)
    ex.spot(1, takerFeePpm=taker, makerFeePpm=maker)
    return ex


# -- Funds ------------------------------------------------------------------------------------


def test_deposit_and_withdraw_answer_with_the_balance_after():
    ex = Risk()
    assert ex.deposit(1, 1000) == ["Admin None 1000"]
    r = ex.last[0].fields
    assert (r["account"], r["instrument"], r["refTemplateId"]) == (1, 0, 12)
    assert ex.deposit(1, 500) == ["Admin None 1500"]
    assert ex.deposit(1, 7, asset=2) == ["Admin None 7"]
    assert ex.withdraw(1, 200) == ["Admin None 1300"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 2), ex.bal(2), ex.bal(1, 1)) == (1300, 0, 7, 0, 0)
    assert ex.withdraw(1, 1301) == ["Admin InsufficientFunds 1300"]
    assert ex.withdraw(1, 8, asset=2) == ["Admin InsufficientFunds 7"]
    assert ex.withdraw(1, 1300) == ["Admin None 0"]
    assert ex.withdraw(1, 1) == ["Admin InsufficientFunds 0"]
    assert ex.withdraw(2, 1, asset=3) == ["Admin InsufficientFunds 0"]
    assert (ex.bal(1), ex.bal(1, 2)) == (0, 7)
    ex.assert_conserved()


def test_funds_checks_in_order():
    ex = Risk()  # accounts 1-3 of 0..9, assets 0..3
    assert ex.deposit(1, 100) == ["Admin None 100"]
    # UnknownAccount: not created, or out of range; before every other check
    assert ex.deposit(4, 100) == ["Admin UnknownAccount 0"]
    assert ex.deposit(10, 100) == ["Admin UnknownAccount 0"]
    assert ex.withdraw(4_000_000, 1) == ["Admin UnknownAccount 0"]
    assert ex.send_raw("Funds", dict(action=9, amount=0), account=4, asset=99, amount=1,
                       action="Deposit") == ["Admin UnknownAccount 0"]
    # UnknownAsset: asset >= max_assets; before the action and the amount
    assert ex.deposit(1, 100, asset=4) == ["Admin UnknownAsset 0"]
    assert ex.withdraw(1, 1, asset=2**32 - 1) == ["Admin UnknownAsset 0"]
    assert ex.send_raw("Funds", dict(action=9, amount=-1), account=1, asset=4, amount=1,
                       action="Deposit") == ["Admin UnknownAsset 0"]
    # InvalidScope: an action that is neither Deposit nor Withdraw; before the amount
    assert ex.send_raw("Funds", dict(action=0), account=1, asset=0, amount=5, action="Deposit") == [
        "Admin InvalidScope 100"]
    assert ex.send_raw("Funds", dict(action=3, amount=0), account=1, asset=0, amount=5,
                       action="Deposit") == ["Admin InvalidScope 100"]
    # QtyOutOfRange: amount <= 0, for either action; before InsufficientFunds
    assert ex.deposit(1, 0) == ["Admin QtyOutOfRange 100"]
    assert ex.deposit(1, -5) == ["Admin QtyOutOfRange 100"]
    assert ex.withdraw(1, 0) == ["Admin QtyOutOfRange 100"]
    assert ex.withdraw(1, -(2**63)) == ["Admin QtyOutOfRange 100"]
    assert ex.withdraw(2, 0) == ["Admin QtyOutOfRange 0"]
    assert ex.bal(1) == 100
    ex.assert_conserved()


def test_a_deposit_may_not_take_a_balance_above_2_60():
    ex = Risk()
    assert ex.deposit(1, E60) == [f"Admin None {E60}"]  # exactly 2**60 is allowed
    assert ex.deposit(1, 1) == [f"Admin QtyOutOfRange {E60}"]
    assert ex.deposit(1, I64_MAX) == [f"Admin QtyOutOfRange {E60}"]  # no wrap-around
    assert ex.withdraw(1, 1) == [f"Admin None {E60 - 1}"]
    assert ex.deposit(1, 1) == [f"Admin None {E60}"]
    assert ex.deposit(2, E60 + 1) == ["Admin QtyOutOfRange 0"]
    assert ex.deposit(2, I64_MAX) == ["Admin QtyOutOfRange 0"]
    assert ex.deposit(2, E60 - 10) == [f"Admin None {E60 - 10}"]
    assert ex.deposit(2, 11) == [f"Admin QtyOutOfRange {E60 - 10}"]
    assert ex.deposit(2, 10) == [f"Admin None {E60}"]
    # per balance: another asset of the same account, and the insurance fund, have their own
    assert ex.deposit(1, E60, asset=1) == [f"Admin None {E60}"]
    assert ex.deposit(0, E60) == [f"Admin None {E60}"]
    assert ex.deposit(0, 1) == [f"Admin QtyOutOfRange {E60}"]
    assert (ex.bal(1), ex.bal(1, 1), ex.bal(2), ex.bal(0)) == (E60, E60, E60, E60)
    ex.assert_conserved()


def test_insurance_fund_takes_deposits_and_withdrawals_but_cannot_trade():
    ex = spot()
    assert ex.deposit(0, 5000) == ["Admin None 5000"]
    assert ex.last[0]["account"] == 0
    assert ex.deposit(0, 3, asset=1) == ["Admin None 3"]
    assert ex.withdraw(0, 6000) == ["Admin InsufficientFunds 5000"]
    assert ex.withdraw(0, 1000) == ["Admin None 4000"]
    assert ex.withdraw(0, 3, asset=1) == ["Admin None 0"]
    assert (ex.bal(0), ex.bal(0, 1), ex.held(0)) == (4000, 0, 0)
    assert ex.buy(0, 1, 100) == ["Rejected UnknownAccount"]
    assert ex.held(0) == 0
    ex.assert_conserved()


def test_withdrawal_of_collateral_a_perpetual_needs_is_insufficient_margin():
    ex = Risk()
    ex.spot(1)
    ex.perp(2)  # no PerpetualParams: initial margin 100%, mark = index = reference 100
    for a in (1, 2, 3):
        ex.deposit(a, 1000)
    ex.deposit(2, 50, asset=1)
    # open orders count: a resting buy of 3 @ 100 needs 300
    assert ex.buy(1, 3, 100, instrument=2) == ["Accepted 1", "BookAdd 1 Buy 3@100"]
    assert ex.withdraw(1, 701) == ["Admin InsufficientMargin 1000"]
    assert ex.withdraw(1, 700) == ["Admin None 300"]
    assert ex.withdraw(1, 1) == ["Admin InsufficientMargin 300"]
    ex.cancel(1, 1, instrument=2)
    assert ex.withdraw(1, 300) == ["Admin None 0"]
    # a position: a short of 4 @ 100 has cash 1400, equity 1000, initial margin 400
    ex.sell(2, 4, 100, instrument=2)
    ex.buy(3, 4, 100, instrument=2)
    assert (ex.bal(2), ex.pos(2, 2)[0], ex.bal(3), ex.pos(3, 2)[0]) == (1400, -4, 600, 4)
    assert ex.withdraw(2, 1401) == ["Admin InsufficientFunds 1400"]  # available first
    assert ex.withdraw(2, 601) == ["Admin InsufficientMargin 1400"]
    assert ex.withdraw(2, 600) == ["Admin None 800"]
    assert ex.withdraw(2, 1) == ["Admin InsufficientMargin 800"]
    assert ex.withdraw(2, 50, asset=1) == ["Admin None 0"]  # only asset 0 is collateral
    # the mark rises: the short's equity 800 - 440 = 360 is below its initial margin 440
    assert ex.index(2, 110) == ["Admin None", "Mark 110 idx=110 basis=0"]
    assert ex.withdraw(2, 1) == ["Admin InsufficientMargin 800"]
    # the long: cash 600, equity 1040, initial margin 440: free 600
    assert ex.withdraw(3, 600) == ["Admin None 0"]
    assert ex.withdraw(3, 1) == ["Admin InsufficientFunds 0"]
    ex.assert_conserved()


# -- spot holds ---------------------------------------------------------------------------------


def test_buy_holds_notional_plus_taker_fee_at_its_limit():
    ex = spot()  # taker 0.5%
    ex.deposit(1, 10_000)
    assert ex.buy(1, 10, 100) == ["Accepted 1", "BookAdd 1 Buy 10@100"]
    assert (ex.bal(1), ex.held(1)) == (10_000, 1005)
    assert ex.buy(1, 7, 99) == ["Accepted 2", "BookAdd 2 Buy 7@99"]
    assert ex.held(1) == 1005 + 693 + 4  # the fee rounds up: 3.465 -> 4
    assert ex.cancel(1, 1) == ["Canceled 1 User 10", "BookDelete 1"]
    assert ex.held(1) == 697
    assert ex.cancel(1, 2) == ["Canceled 2 User 7", "BookDelete 2"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (10_000, 0, 0)
    ex.assert_conserved()


def test_buy_hold_with_a_divisor():
    """Tick 10, divisor 10: every notional is exact; the hold is the notional plus the taker
    fee rounded up, and a fill as maker pays less (its own fee), the rest is released."""
    ex = Risk()
    ex.spot(1, tickSize=10, referencePrice=1000, takerFeePpm=5000, makerFeePpm=2000)
    assert ex.limits(1, notionalDivisor=10) == ["Admin None"]
    ex.deposit(1, 200_000)
    ex.deposit(2, 10, asset=1)
    ex.buy(1, 3, 1010)  # n = 3030 / 10 = 303, fee ceil(1.515) = 2
    assert ex.held(1) == 305
    ex.buy(1, 1000, 1010)  # n = 101,000, fee 505
    assert ex.held(1) == 305 + 101_505
    ex.cancel(1, 2)
    # the buyer is the maker: fee ceil(0.606) = 1, so it pays 304 and 1 of the hold is
    # released; the selling taker pays ceil(1.515) = 2
    assert ex.sell(2, 3, 1010) == ["Accepted 3", "Trade 1 3@1010 m=1 t=3 ml=0 tl=0", "BookExecute 1 3@1010"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (200_000 - 304, 0, 3)
    assert (ex.bal(2), ex.bal(2, 1), ex.held(2, 1), ex.fees()) == (301, 7, 0, 3)
    ex.assert_conserved()


def test_sell_holds_the_base_asset():
    ex = spot()
    ex.deposit(2, 50, asset=1)
    assert ex.sell(2, 60, 101) == ["Rejected InsufficientFunds"]
    assert ex.sell(2, 20, 101) == ["Accepted 1", "BookAdd 1 Sell 20@101"]
    assert (ex.held(2, 1), ex.held(2, 0), ex.bal(2, 1)) == (20, 0, 50)
    assert ex.sell(2, 31, 102) == ["Rejected InsufficientFunds"]
    assert ex.sell(2, 30, 102) == ["Accepted 2", "BookAdd 2 Sell 30@102"]
    assert ex.held(2, 1) == 50
    assert ex.withdraw(2, 1, asset=1) == ["Admin InsufficientFunds 50"]
    ex.deposit(1, 10_000)
    ex.buy(1, 5, 101)  # fills 5 of order 1: its hold falls by 5
    assert (ex.bal(2, 1), ex.held(2, 1)) == (45, 45)
    ex.cancel(2, 1)
    assert ex.held(2, 1) == 30
    assert ex.withdraw(2, 15, asset=1) == ["Admin None 30"]
    ex.assert_conserved()


def test_fills_pay_out_of_the_hold_and_the_rest_is_released_when_the_order_ends():
    ex = spot()  # taker 0.5%, maker 0.2%
    ex.deposit(1, 10_000)
    ex.deposit(2, 50, asset=1)
    ex.deposit(3, 10, asset=1)
    assert ex.sell(2, 20, 99) == ["Accepted 1", "BookAdd 1 Sell 20@99"]
    # a buy at 100 fills at 99: n 990, taker fee 5 (4.95), maker fee 2 (1.98), both rounded up
    assert ex.buy(1, 10, 100) == ["Accepted 2", "Trade 1 10@99 m=1 t=2 ml=10 tl=0", "BookExecute 1 10@99"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (10_000 - 995, 0, 10)  # 1005 - 995 released
    assert (ex.bal(2), ex.bal(2, 1), ex.held(2, 1)) == (988, 40, 10)
    assert ex.fees() == 7
    # 15 @ 100 holds 1508; 10 fill at 99 (995 paid); the rest of the hold stays with the order.
    # The maker's order owes ceil(3.96) = 4 over its two fills: 2 more
    assert ex.buy(1, 15, 100) == ["Accepted 3", "Trade 2 10@99 m=1 t=3 ml=0 tl=5", "BookExecute 1 10@99",
                                  "BookAdd 3 Buy 5@100"]
    assert (ex.bal(1), ex.held(1)) == (8010, 513)
    assert (ex.bal(2), ex.bal(2, 1), ex.held(2, 1)) == (1976, 30, 0)
    assert ex.fees() == 14
    # it fills as a maker: n 500, maker fee 1.0, and the order's fees come to ceil(4.95 + 1.0)
    # = 6, of which 5 were paid: it pays 501, and the last 12 are released
    assert ex.sell(3, 5, 100) == ["Accepted 4", "Trade 3 5@100 m=3 t=4 ml=0 tl=0", "BookExecute 3 5@100"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (7509, 0, 25)
    assert (ex.bal(3), ex.bal(3, 1), ex.held(3, 1)) == (497, 5, 0)  # taker fee 3 (2.5)
    assert ex.fees() == 18
    ex.assert_conserved()


def test_ioc_fok_and_rejections_release_or_hold_nothing():
    ex = spot()
    ex.deposit(1, 10_000)
    ex.deposit(2, 10, asset=1)
    assert ex.buy(1, 10, 100, tif="IOC") == ["Accepted 1", "Canceled 1 IocRemainder 10"]
    assert (ex.bal(1), ex.held(1)) == (10_000, 0)
    ex.sell(2, 4, 100)
    # IOC 10 @ 101 holds 1015, fills 4 @ 100 (402 paid), the remainder's hold is released
    assert ex.buy(1, 10, 101, tif="IOC") == ["Accepted 3", "Trade 1 4@100 m=2 t=3 ml=0 tl=6",
                                             "BookExecute 2 4@100", "Canceled 3 IocRemainder 6"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (10_000 - 402, 0, 4)
    ex.sell(2, 2, 100)
    assert ex.buy(1, 3, 100, tif="FOK") == ["Rejected FokUnfillable"]
    assert ex.held(1) == 0
    ex.assert_conserved()


def test_expiry_mass_cancel_and_kill_switch_release_holds():
    ex = spot()
    ex.deposit(1, 10_000)
    ex.deposit(2, 10, asset=1)
    ex.buy(1, 10, 100, tif="Day")
    ex.sell(2, 5, 105, tif="Day")
    ex.buy(1, 1, ordType="Stop", stopPrice=110, tif="Day")
    assert (ex.held(1), ex.held(2, 1)) == (1005 + 114, 5)
    assert ex.status("Closed") == ["Admin None", "Status Closed", "Canceled 1 Expired 10", "BookDelete 1",
                                   "Canceled 2 Expired 5", "BookDelete 2", "Canceled 3 Expired 1"]
    assert (ex.held(1), ex.held(2, 1)) == (0, 0)
    ex.status("Trading")
    ex.buy(1, 10, 100)
    ex.sell(2, 5, 105)
    assert ex.mass_cancel("Account", account=1) == ["Canceled 4 MassCancel 10", "BookDelete 4", "MassCancelDone 1"]
    assert (ex.held(1), ex.held(2, 1)) == (0, 5)
    assert ex.kill("Account", account=2)[-2:] == ["Canceled 5 KillSwitch 5", "BookDelete 5"]
    assert ex.held(2, 1) == 0
    assert (ex.bal(1), ex.bal(2, 1)) == (10_000, 10)
    ex.assert_conserved()


def test_market_buy_holds_at_its_protection_price():
    ex = spot()  # market_protection_ticks 3
    ex.deposit(2, 20, asset=1)
    ex.sell(2, 5, 100)
    ex.sell(2, 5, 102)
    ex.deposit(1, 828)
    # protection price 100 + 3 = 103: n 824, fee 5 (4.12): 829
    assert ex.buy(1, 8, ordType="Market", tif="IOC") == ["Rejected InsufficientFunds"]
    ex.deposit(1, 1)
    assert ex.buy(1, 8, ordType="Market", tif="IOC") == [
        "Accepted 3", "Trade 1 5@100 m=1 t=3 ml=0 tl=3", "BookExecute 1 5@100",
        "Trade 2 3@102 m=2 t=3 ml=2 tl=0", "BookExecute 2 3@102"]
    # fees 3 (2.5) then 2 (1.53 + 2.5 = 4.03 in all, rounded up once to 5)
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (829 - 503 - 308, 0, 8)
    # an empty ask side: a market buy holds nothing and trades nothing, even without money
    ex.cancel(2, 2)
    assert ex.buy(3, 5, ordType="Market", tif="IOC") == ["Accepted 4", "Canceled 4 MarketRemainder 5"]
    assert (ex.bal(3), ex.held(3)) == (0, 0)
    ex.assert_conserved()


def test_stop_buy_holds_at_stop_plus_protection_and_never_trades_above_it():
    ex = spot()
    ex.deposit(1, 1085)
    ex.deposit(2, 10, asset=1)
    # stop 105 + 3 ticks = 108: n 1080, fee 6 (5.4): 1086
    assert ex.buy(1, 10, ordType="Stop", stopPrice=105) == ["Rejected InsufficientFunds"]
    ex.deposit(1, 1)
    assert ex.buy(1, 10, ordType="Stop", stopPrice=105) == ["Accepted 1"]
    assert ex.held(1) == 1086
    assert ex.cancel(1, 1) == ["Canceled 1 User 10"]
    assert ex.held(1) == 0
    # a stop buy at 101 holds at 104 and may not trade at 106 when it triggers
    assert ex.buy(1, 2, ordType="Stop", stopPrice=101) == ["Accepted 2"]
    assert ex.held(1) == 208 + 2
    ex.sell(2, 1, 101)
    ex.sell(2, 1, 106)
    ex.sell(2, 5, ordType="Stop", stopPrice=90)  # a sell stop holds its base too
    assert ex.held(2, 1) == 7
    ex.deposit(3, 1000)
    assert ex.buy(3, 1, 101) == ["Accepted 6", "Trade 1 1@101 m=3 t=6 ml=0 tl=0", "BookExecute 3 1@101",
                                 "StopTriggered 2 @101", "Canceled 2 MarketRemainder 2"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (1086, 0, 0)
    ex.assert_conserved()


def test_insufficient_funds_rejections_change_nothing_and_come_after_the_other_checks():
    ex = spot()
    assert ex.account(4, maxOpenOrders=1) == ["Admin None"]
    ex.deposit(1, 1004)
    ex.deposit(2, 5, asset=1)
    before = ex.wallet((1, 2, 3, 4))
    assert ex.buy(1, 10, 100) == ["Rejected InsufficientFunds"]  # needs 1005
    assert ex.sell(3, 1, 100) == ["Rejected InsufficientFunds"]  # no base asset
    assert ex.sell(2, 6, 100) == ["Rejected InsufficientFunds"]
    assert ex.wallet((1, 2, 3, 4)) == before and ex.engine.next_order_id == 1
    ex.deposit(1, 1)
    assert ex.buy(1, 10, 100) == ["Accepted 1", "BookAdd 1 Buy 10@100"]
    assert ex.buy(1, 1, 68) == ["Rejected InsufficientFunds"]  # what is held is not available
    # money comes after MaxOrderQty, PriceBand, MaxNotional, MaxOpenOrders ...
    ex.deposit(4, 100)
    assert ex.buy(4, 1, 90) == ["Accepted 2", "BookAdd 2 Buy 1@90"]
    assert ex.buy(4, 1, 95) == ["Rejected MaxOpenOrders"]
    assert ex.limits(1, maxOrderQty=5, priceBandPpm=100_000, maxOrderNotional=400) == ["Admin None"]
    assert ex.buy(3, 6, 120) == ["Rejected MaxOrderQty"]
    assert ex.buy(3, 5, 120) == ["Rejected PriceBand"]
    assert ex.buy(3, 5, 100) == ["Rejected MaxNotional"]
    assert ex.buy(3, 4, 100) == ["Rejected InsufficientFunds"]
    # ... and before PostOnlyWouldTrade and FokUnfillable
    ex.sell(2, 5, 101)
    assert ex.buy(3, 1, 101, postOnly=1) == ["Rejected InsufficientFunds"]
    assert ex.buy(3, 4, 100, tif="FOK") == ["Rejected InsufficientFunds"]  # unfillable too
    assert ex.sell(3, 1, 90, postOnly=1) == ["Rejected InsufficientFunds"]
    assert ex.held(3) == ex.held(3, 1) == 0
    ex.assert_conserved()


def test_replace_recomputes_the_hold():
    ex = spot()
    ex.deposit(1, 1500)
    ex.buy(1, 10, 100)
    assert ex.held(1) == 1005
    assert ex.replace(1, 1, 10, 104) == ["Replaced 1 10@104 leaves=10", "BookReplace 1 Buy 10@104"]
    assert ex.held(1) == 1046
    assert ex.replace(1, 1, 14, 104) == ["Replaced 1 14@104 leaves=14", "BookReplace 1 Buy 14@104"]
    assert ex.held(1) == 1464  # 1456 + 8: an increase of 418 of the 454 available
    # 15 @ 100 would hold 1508: 44 more than held, 36 available
    assert ex.replace(1, 1, 15, 100) == ["CancelRejected InsufficientFunds"]
    assert ex.last[0]["refTemplateId"] == 3
    assert ex.held(1) == 1464
    o = ex.engine.order(1)
    assert (o["qty"], o["price"]) == (14, 104)
    # a decrease is released
    assert ex.replace(1, 1, 5, 104) == ["Replaced 1 5@104 leaves=5", "BookReduce 1 9"]
    assert ex.held(1) == 523
    # sells re-hold their base asset
    ex.deposit(2, 15, asset=1)
    ex.sell(2, 10, 110)
    assert ex.replace(2, 2, 16, 110) == ["CancelRejected InsufficientFunds"]
    assert ex.held(2, 1) == 10
    assert ex.replace(2, 2, 15, 111) == ["Replaced 2 15@111 leaves=15", "BookReplace 2 Sell 15@111"]
    assert ex.held(2, 1) == 15
    assert ex.replace(2, 2, 3, 110) == ["Replaced 2 3@110 leaves=3", "BookReplace 2 Sell 3@110"]
    assert ex.held(2, 1) == 3
    # a replace that crosses trades out of its new hold: 5 @ 110 holds 553, 3 fill at 110 (332)
    assert ex.replace(1, 1, 5, 110) == ["Replaced 1 5@110 leaves=5", "BookDelete 1",
                                        "Trade 1 3@110 m=2 t=1 ml=0 tl=2", "BookExecute 2 3@110",
                                        "BookAdd 1 Buy 2@110"]
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (1500 - 332, 553 - 332, 3)
    assert (ex.bal(2), ex.bal(2, 1), ex.held(2, 1)) == (330 - 1, 12, 0)  # maker fee ceil(0.66) = 1
    ex.assert_conserved()


# -- fees -----------------------------------------------------------------------------------------


def test_taker_fee_and_a_maker_rebate():
    ex = spot(taker=3000, maker=-1000)
    ex.deposit(1, 10_000)
    ex.deposit(2, 100, asset=1)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)  # n 1000: the taker pays 3, the maker is paid 1
    assert (ex.bal(1), ex.bal(2), ex.fees()) == (10_000 - 1003, 1001, 2)
    ex.buy(1, 9, 111)  # a resting buy holds 999 + 3
    assert ex.held(1) == 1002
    # n 999: the maker's rebate rounds down, ceil(-0.999) = 0; the taker's fee up, ceil(2.997) = 3
    ex.sell(2, 9, 111, tif="IOC")
    assert (ex.bal(1), ex.held(1), ex.bal(2), ex.fees()) == (10_000 - 1003 - 999, 0, 1001 + 996, 5)
    ex.buy(1, 20, 100)
    ex.sell(2, 20, 100)  # n 2000: the buying maker pays 1998, the selling taker receives 1994
    assert (ex.bal(1), ex.bal(2), ex.fees()) == (10_000 - 1003 - 999 - 1998, 1001 + 996 + 1994, 9)
    assert (ex.bal(1, 1), ex.bal(2, 1)) == (39, 61)
    ex.assert_conserved()


def test_maker_and_taker_fees_round_up():
    ex = Risk()
    ex.spot(1, takerFeePpm=1000, makerFeePpm=1000)
    ex.deposit(1, 10_000)
    ex.deposit(2, 100, asset=1)
    ex.sell(2, 19, 105)
    ex.buy(1, 19, 105)  # n 1995: maker fee ceil(1.995) = 2, taker fee ceil(1.995) = 2
    assert (ex.bal(1), ex.bal(2), ex.fees()) == (10_000 - 1997, 1993, 4)
    ex.assert_conserved()


def test_fee_rate_and_base_asset_checks_on_definitions():
    ex = Risk(max_instruments=8)
    bad = "Admin InvalidInstrumentDefinition"
    assert ex.define(1, takerFeePpm=-1) == [bad]
    assert ex.define(1, takerFeePpm=1_000_001) == [bad]
    assert ex.define(1, takerFeePpm=1, makerFeePpm=2) == [bad]
    assert ex.define(1, takerFeePpm=1, makerFeePpm=-2) == [bad]
    assert ex.define(1, takerFeePpm=0, makerFeePpm=1) == [bad]
    assert ex.define(1, takerFeePpm=0, makerFeePpm=-1) == [bad]
    assert ex.define(1, kind="Perpetual", takerFeePpm=5, makerFeePpm=6) == [bad]
    assert ex.define(1, baseAsset=0) == [bad]  # a spot instrument's base is 1 .. max_assets-1
    assert ex.define(1, baseAsset=4) == [bad]
    assert ex.define(1, kind="Perpetual", baseAsset=1) == [bad]  # a perpetual's is 0
    assert ex.define(1, takerFeePpm=1, makerFeePpm=-1, baseAsset=3) == ["Admin None", "Status Trading"]
    assert ex.define(2, takerFeePpm=1_000_000, makerFeePpm=-1_000_000) == ["Admin None", "Status Trading"]
    assert ex.define(3, takerFeePpm=1_000_000, makerFeePpm=1_000_000) == ["Admin None", "Status Trading"]
    assert ex.define(4, kind="Perpetual", baseAsset=0, takerFeePpm=7, makerFeePpm=7) == [
        "Admin None", "Status Trading"]
    # the base asset is the one that moves: instrument 1 trades asset 3
    ex.deposit(1, 1000)
    ex.deposit(2, 5, asset=3)
    ex.sell(2, 5, 100)
    ex.buy(1, 5, 100)
    assert (ex.bal(1, 3), ex.bal(2, 3), ex.bal(1, 1)) == (5, 0, 0)
    # reduceOnly is for perpetuals: on a spot instrument it is InvalidFlags
    assert ex.sell(1, 1, 100, reduceOnly=1) == ["Rejected InvalidFlags"]
    ex.assert_conserved()


def test_a_spot_buy_may_not_spend_collateral_a_perpetual_needs():
    """Beyond docs/risk.md's spot check (available >= hold), the engine also refuses a spot
    buy that would spend asset 0 its perpetuals need (free collateral >= hold), answered
    InsufficientFunds: otherwise a short could buy the base asset with its sale proceeds
    and withdraw it, leaving its position unbacked."""
    ex = Risk()
    ex.perp(1)
    ex.params(1, imPpm=100_000)
    ex.spot(2)
    ex.deposit(1, 100)
    ex.deposit(2, 10_000)
    ex.deposit(3, 20, asset=1)
    ex.buy(2, 10, 100)
    ex.sell(1, 10, 100)  # a short: cash 1100, equity 100, initial margin 100
    assert ex.risk(1) == dict(equity=100, initial=100, maintenance=50, free=0)
    ex.sell(3, 10, 100, instrument=2)
    assert ex.buy(1, 1, 100, instrument=2) == ["Rejected InsufficientFunds"]  # 1000 available, 0 free
    ex.deposit(1, 100)
    assert ex.buy(1, 1, 100, instrument=2) == ["Accepted 4", "Trade 2 1@100 m=3 t=4 ml=9 tl=0", "BookExecute 3 1@100"]
    assert ex.buy(1, 1, 100, instrument=2) == ["Rejected InsufficientFunds"]
    assert (ex.bal(1), ex.bal(1, 1), ex.risk(1)["free"]) == (1100, 1, 0)
    ex.assert_conserved()


# -- issue 13, defect 4: a notionalDivisor change never re-prices what is open -----------------


def test_a_divisor_change_is_refused_while_orders_work_on_the_instrument():
    """The reproduction: a resting buy held 100 for a notional the new divisor would make
    1,000; its fill would have left the buyer at -900. (Lot 10: the divisor divides tick * lot.)"""
    ex = Risk()
    ex.spot(1, lotSize=10, minQty=10, takerFeePpm=0, makerFeePpm=0)
    assert ex.limits(1, notionalDivisor=10) == ["Admin None"]
    ex.deposit(1, 100)
    ex.deposit(2, 10, asset=1)
    assert ex.buy(1, 10, 100) == ["Accepted 1", "BookAdd 1 Buy 10@100"]
    assert ex.held(1) == 100
    assert ex.limits(1, notionalDivisor=1) == ["Admin InstrumentInUse"]
    assert ex.limits(1, notionalDivisor=10, priceBandPpm=100_000) == ["Admin None"]  # same divisor: fine
    ex.sell(2, 10, 100)
    assert (ex.bal(1), ex.held(1), ex.bal(1, 1)) == (0, 0, 10)  # paid exactly its hold
    ex.assert_conserved()
    assert ex.limits(1, notionalDivisor=1) == ["Admin None"]  # nothing open now


def test_a_divisor_change_is_refused_while_positions_are_open():
    """Perpetual, 10 -> 1 with a position open would have given one side +900 and the
    other -880, the insurance fund absorbing the difference."""
    ex = Risk(accounts=(1, 2))
    ex.perp(1, lotSize=10, minQty=10)
    assert ex.limits(1, notionalDivisor=10) == ["Admin None"]
    ex.deposit(1, 1_000_000)
    ex.deposit(2, 1_000_000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert (ex.pos(1)[0], ex.pos(2)[0]) == (10, -10)
    assert ex.limits(1, notionalDivisor=1) == ["Admin InstrumentInUse"]
    ex.sell(1, 10, 100)
    ex.buy(2, 10, 100)
    assert (ex.pos(1)[0], ex.pos(2)[0]) == (0, 0)
    assert ex.limits(1, notionalDivisor=1) == ["Admin None"]
    ex.assert_conserved()


# -- issue 13: a band that trades alone cannot walk -----------------------------------------------


def test_a_spot_band_is_anchored_to_the_breaker_windows_first_trade():
    """With the circuit breaker on, a spot band is around the first trade of the breaker's
    window, which later trades in the window cannot move: a 10% band, window 1 s. The next
    window's first trade re-anchors it."""
    ex = spot(taker=0, maker=0)
    assert ex.limits(1, priceBandPpm=100_000, cbMovePpm=500_000, cbWindowNs=10**9, cbHaltNs=10**9) == [
        "Admin None"]
    ex.deposit(1, 100_000)
    ex.deposit(2, 100, asset=1)
    ex.sell(2, 1, 100)
    assert ex.buy(1, 1, 100)[1] == "Trade 1 1@100 m=1 t=2 ml=0 tl=0"  # the window's reference
    ex.sell(2, 1, 110)
    assert ex.buy(1, 1, 110)[1] == "Trade 2 1@110 m=3 t=4 ml=0 tl=0"
    assert ex.sell(2, 1, 111) == ["Rejected PriceBand"]  # still 90..110
    assert ex.at(10**9 + 1).sell(2, 1, 110) == ["Accepted 5", "BookAdd 5 Sell 1@110"]
    assert ex.buy(1, 1, 110)[1] == "Trade 3 1@110 m=5 t=6 ml=0 tl=0"  # the new window's reference
    assert ex.sell(2, 1, 121) == ["Accepted 7", "BookAdd 7 Sell 1@121"]  # 99..121
    assert ex.sell(2, 1, 122) == ["Rejected PriceBand"]
    ex.assert_conserved()
