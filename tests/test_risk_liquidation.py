"""Liquidation (docs/risk.md "Liquidation"): a cascade after a 20% mark drop with thin books,
the insurance fund's takeovers while its equity after each stays at or above its own
maintenance margin, auto-deleveraging when it would not and its ranking, the insurance
fund and fee account covering a negative balance, accounts holding several perpetuals,
and what a liquidation order bypasses.

Every scenario's numbers are worked out by hand in its comments (initial margin 10%,
maintenance half of it unless said otherwise) and each ends with the two invariants:
positions sum to zero and money is conserved.
"""

from __future__ import annotations

import pytest

from risk_kit import BOTTOM, PPM, T0, TOP, Risk, liq

FIELDS = ("instrument", "qty", "price", "amount", "equity", "requirement", "counterparty")


def leveraged(accounts=(1, 2, 3, 4, 5), **kw) -> Risk:
    ex = Risk(accounts=accounts, **kw)
    ex.perp(1)
    assert ex.params(1, imPpm=100_000, mmPpm=500_000) == ["Admin None"]
    return ex


def covers(events) -> list[tuple]:
    """InsuranceCover / FeeCover events that move money, as (stage, account, amount)."""
    return [(s, a, amt) for s, a, amt in liq(events, "amount") if s in ("InsuranceCover", "FeeCover") and amt]


def cascade(fund: int) -> Risk:
    """Three longs of 10 @ 100 at 10x (cash -900, -850, -710), a big short S (4), thin bids:
    L3's 5 @ 95, M's (5) 2 @ 92 and 5 @ 85. L1 and L2 have working sells."""
    ex = leveraged()
    for a, d in ((4, 100_000), (1, 100), (2, 150), (3, 290), (5, 10_000), (0, fund)):
        ex.deposit(a, d)
    ex.sell(4, 30, 100)  # 1
    ex.buy(1, 10, 100)  # 2
    ex.buy(2, 10, 100)  # 3
    ex.buy(3, 10, 100)  # 4
    assert ex.sell(1, 10, 120) == ["Accepted 5", "BookAdd 5 Sell 10@120"]
    ex.sell(2, 5, 125)  # 6
    ex.sell(2, 5, 130)  # 7
    assert ex.buy(3, 5, 95) == ["Accepted 8", "BookAdd 8 Buy 5@95"]  # W 15: 150 of 290
    ex.buy(5, 2, 92)  # 9
    ex.buy(5, 5, 85)  # 10
    assert [ex.bal(a) for a in (1, 2, 3)] == [-900, -850, -710]
    return ex


def test_cascade_after_a_20pct_drop_with_a_thin_insurance_fund():
    ex = cascade(fund=50)
    # at 80: L1 equity -100, L2 -50 (maintenance 40 each); L3 90 is safe until L1's sale fills
    # its bid at 95: long 15, cash -1185, equity 15 < 60. Longs go highest liquidation price
    # first: L1 (~94.7), L2 (~89.5), then L3 (~83.2).
    assert ex.index(1, 80) == [
        "Admin None", "Mark 80 idx=80 basis=0",
        "Liq Start 1", "Canceled 5 Liquidation 10", "BookDelete 5",
        "Liq BookOrder 1", "Accepted 11",
        "Trade 4 5@95 m=8 t=11 ml=0 tl=5", "BookExecute 8 5@95",
        "Trade 5 2@92 m=9 t=11 ml=0 tl=3", "BookExecute 9 2@92",
        "Canceled 11 IocRemainder 3",
        "Liq InsuranceTakeover 1", "Liq Done 1",
        "Liq Start 2", "Canceled 6 Liquidation 5", "BookDelete 6", "Canceled 7 Liquidation 5", "BookDelete 7",
        "Liq BookOrder 2", "Accepted 12",
        "Trade 6 5@85 m=10 t=12 ml=0 tl=5", "BookExecute 10 5@85",
        "Canceled 12 IocRemainder 5",
        "Liq AutoDeleverage 2", "Liq Done 2",
        "Liq Start 3", "Liq BookOrder 3", "Accepted 13", "Canceled 13 IocRemainder 15",
        "Liq AutoDeleverage 3", "Liq Done 3"]
    assert liq(ex.last, *FIELDS) == [
        # book limit 900 / 10 = 90; the book takes 7 (cash -900 + 475 + 184 = -241) and the 3
        # left go for the bankrupt amount 241, what leaves L1 at equity 0 (not 3 @ 90, which
        # left it 29): the fund's equity 50 - 241 + 240 = 49 stays above its maintenance
        # ceil(24 / 2) = 12
        ("Start", 1, 0, 0, 0, 0, -100, 40, 0),
        ("BookOrder", 1, 1, 10, 90, 0, -100, 40, 0),
        ("InsuranceTakeover", 1, 1, 3, 80, 241, 0, 0, 0),
        ("Done", 1, 0, 0, 0, 0, 0, 0, 0),
        # book limit 85; the 5 left go for 425: the fund's equity would be 49 + 400 - 425 = 24,
        # below its maintenance 32 on 8 @ 80: the short pays
        ("Start", 2, 0, 0, 0, 0, -50, 40, 0),
        ("BookOrder", 2, 1, 10, 85, 0, -50, 40, 0),
        ("AutoDeleverage", 2, 1, 5, 85, 425, 0, 0, 4),
        ("Done", 2, 0, 0, 0, 0, 0, 0, 0),
        # bankrupt amount 1185 (79 each), below the mark: the fund would gain on it (equity
        # 49 - 1185 + 1200 = 64) but be below its maintenance on 18 @ 80 (ceil(144 / 2) = 72):
        # the short takes it
        ("Start", 3, 0, 0, 0, 0, 15, 60, 0),
        ("BookOrder", 3, 1, 15, 79, 0, 15, 60, 0),
        ("AutoDeleverage", 3, 1, 15, 79, 1185, 0, 0, 4),
        ("Done", 3, 0, 0, 0, 0, 0, 0, 0)]
    o = [e for e in ex.last if e.name == "OrderAccepted"]
    assert [(e["account"], e["clOrdId"], e["sessionId"], e["side"].name, e["price"], e["qty"],
             e["timeInForce"].name, e["ordType"].name) for e in o] == [
        (1, 0, 0, "Sell", 90, 10, "IOC", "Limit"), (2, 0, 0, "Sell", 85, 10, "IOC", "Limit"),
        (3, 0, 0, "Sell", 79, 15, "IOC", "Limit")]
    assert [ex.pos(a)[0] for a in range(6)] == [3, 0, 0, 0, -10, 7]
    assert [ex.bal(a) for a in range(6)] == [50 - 241, 0, 0, 0, 100_000 + 3000 - 425 - 1185, 10_000 - 184 - 425]
    assert ex.pos(0) == (3, 241, 0)
    assert ex.pos(1) == (0, 0, -25 - 16 - 59)
    # the short closed 5 @ 85 (cost -500) and 15 @ 79 (cost -1500 of the 25 left)
    assert ex.pos(4) == (-10, -1000, 75 + 315)
    assert ex.risk(0) == dict(equity=49, initial=24, maintenance=12, free=25)
    assert ex.engine.live_orders == 0
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()
    # the next mark move finds nobody left to liquidate
    assert ex.index(1, 80) == ["Admin None", "Mark 80 idx=80 basis=0"]


@pytest.mark.parametrize("fund", [102, 103])
def test_cascade_with_a_deeper_insurance_fund(fund):
    """The fund takes L1's 3 for 241 (equity fund - 1 on 3 @ 80, maintenance 12) and L2's
    5 for 425 (fund - 26 on 8, maintenance 32); L3's 15 for 1185 would leave it fund - 11 on
    23 @ 80, maintenance ceil(184 / 2) = 92: 103 is the smallest fund that takes everything."""
    ex = cascade(fund=fund)
    ex.index(1, 80)
    last = ("InsuranceTakeover", 3, 15, 79, 0) if fund == 103 else ("AutoDeleverage", 3, 15, 79, 4)
    assert liq(ex.last, "qty", "price", "counterparty") == [
        ("Start", 1, 0, 0, 0), ("BookOrder", 1, 10, 90, 0), ("InsuranceTakeover", 1, 3, 80, 0), ("Done", 1, 0, 0, 0),
        ("Start", 2, 0, 0, 0), ("BookOrder", 2, 10, 85, 0), ("InsuranceTakeover", 2, 5, 85, 0), ("Done", 2, 0, 0, 0),
        ("Start", 3, 0, 0, 0), ("BookOrder", 3, 15, 79, 0), last, ("Done", 3, 0, 0, 0)]
    if fund == 103:
        assert [ex.pos(a)[0] for a in range(6)] == [23, 0, 0, 0, -30, 7]
        assert ex.bal(0) == 103 - 241 - 425 - 1185
        assert ex.risk(0) == dict(equity=92, initial=184, maintenance=92, free=-92)
    else:
        assert [ex.pos(a)[0] for a in range(6)] == [8, 0, 0, 0, -15, 7]
        assert ex.bal(0) == 102 - 241 - 425
        assert ex.bal(4) == 100_000 + 3000 - 1185
        assert ex.risk(0) == dict(equity=76, initial=64, maintenance=32, free=12)
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()


@pytest.mark.parametrize("fund", [100, 139, 140])
def test_insurance_takeover_needs_the_funds_maintenance_margin(fund):
    """L (1) long 10 @ 100 (cash -900) at mark 80, no bids: bankruptcy 90. Taking 10 @ 90
    leaves the fund with equity fund - 900 + 800 and maintenance ceil(80 / 2) = 40 on its
    long: from 140 on it takes it (100 would have been enough for equity >= 0); below,
    the short S (2) is deleveraged at 90."""
    ex = leveraged(accounts=(1, 2))
    for a, d in ((1, 100), (2, 10_000), (0, fund)):
        ex.deposit(a, d)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    stage, cp = ("InsuranceTakeover", 0) if fund >= 140 else ("AutoDeleverage", 2)
    assert ex.index(1, 80) == [
        "Admin None", "Mark 80 idx=80 basis=0", "Liq Start 1", "Liq BookOrder 1", "Accepted 3",
        "Canceled 3 IocRemainder 10", f"Liq {stage} 1", "Liq Done 1"]
    assert liq(ex.last, *FIELDS) == [
        ("Start", 1, 0, 0, 0, 0, -100, 40, 0), ("BookOrder", 1, 1, 10, 90, 0, -100, 40, 0),
        (stage, 1, 1, 10, 90, 900, 0, 0, cp), ("Done", 1, 0, 0, 0, 0, 0, 0, 0)]
    if fund >= 140:
        assert (ex.pos(0), ex.pos(2)) == ((10, 900, 0), (-10, -1000, 0))
        assert ex.risk(0) == dict(equity=fund - 100, initial=80, maintenance=40, free=fund - 180)
    else:
        assert (ex.pos(0), ex.pos(2)) == ((0, 0, 0), (0, 0, 100))
        assert (ex.bal(0), ex.bal(2)) == (fund, 10_000 + 1000 - 900)
    assert (ex.bal(1), ex.pos(1)) == (0, (0, 0, -100))
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()


def test_auto_deleveraging_ranks_profit_times_leverage():
    """L (1) long 38 with cash 414 - 3720; shorts at mark 80 (pnl / |cost| * notional / equity):
    4 and 7: short 3 @ 100, equity 100: 0.2 * 240 / 100 = 0.48 (a tie: by account id);
    6: short 3 @ 90, equity 100: (30 / 270) * 2.4 = 0.27; 3: short 7 @ 100, equity 600:
    0.2 * 560 / 600 = 0.19; 2: short 20 @ 100, equity 10400: 0.03; 5: short 2 @ 75, losing,
    last although the most leveraged. The insurance fund is empty."""
    ex = leveraged(accounts=range(1, 8))
    for a, d in ((1, 414), (2, 10_000), (3, 460), (4, 40), (5, 70), (6, 70), (7, 40)):
        ex.deposit(a, d)
    ex.sell(5, 2, 75)
    ex.sell(6, 3, 90)
    ex.sell(2, 20, 100)
    ex.sell(3, 7, 100)
    ex.sell(4, 3, 100)
    ex.sell(7, 3, 100)
    ex.buy(1, 38, 100)
    assert ex.pos(1) == (38, 3720, 0)
    # at 80: equity 414 - 3720 + 3040 = -266, maintenance 152; bankruptcy 3306 / 38 = 87
    ex.index(1, 80)
    order = [(4, 3), (7, 3), (6, 3), (3, 7), (2, 20), (5, 2)]
    want = [("Start", 1, 0, 0, 0, -266, 152, 0), ("BookOrder", 1, 38, 87, 0, -266, 152, 0)]
    done = 0
    for cp, q in order:
        done += q
        rest = 38 - done
        want.append(("AutoDeleverage", 1, q, 87, 87 * q, -266 + 7 * done, 4 * rest, cp))
    want.append(("Done", 1, 0, 0, 0, 0, 0, 0))
    assert liq(ex.last, "qty", "price", "amount", "equity", "requirement", "counterparty") == want
    assert [e.name for e in ex.last if e.name not in ("Liquidation", "AdminResult", "MarkPrice")] == [
        "OrderAccepted", "OrderCanceled"]
    assert [ex.pos(a)[0] for a in range(8)] == [0] * 8
    # the deleveraged shorts closed at 87
    assert [ex.bal(a) for a in (2, 3, 4, 5, 6, 7)] == [
        12_000 - 1740, 1160 - 609, 340 - 261, 220 - 174, 340 - 261, 340 - 261]
    assert ex.pos(6) == (0, 0, 9)
    assert ex.pos(5) == (0, 0, -24)
    assert ex.bal(1) == 0 and ex.bal(0) == 0
    ex.assert_conserved()


def test_short_liquidated_when_the_mark_rises():
    ex = leveraged(accounts=(1, 2, 3))
    ex.deposit(1, 105)
    ex.deposit(2, 10_000)
    ex.deposit(3, 10_000)
    ex.deposit(0, 100)
    ex.buy(2, 10, 100)
    ex.sell(1, 10, 100)  # cash 1105
    ex.sell(3, 4, 105)
    # at 120: equity 1105 - 1200 = -95 < 60; book limit 110.5, rounded down (the short buys)
    assert ex.index(1, 120) == [
        "Admin None", "Mark 120 idx=120 basis=0", "Liq Start 1", "Liq BookOrder 1", "Accepted 4",
        "Trade 2 4@105 m=3 t=4 ml=0 tl=6", "BookExecute 3 4@105", "Canceled 4 IocRemainder 6",
        "Liq InsuranceTakeover 1", "Liq Done 1"]
    # the 6 left go to the fund for all the short's cash, 1105 - 420 = 685 (114 each): the
    # fund's equity 100 + 685 - 720 = 65 stays above its maintenance 36
    assert liq(ex.last, *FIELDS) == [
        ("Start", 1, 0, 0, 0, 0, -95, 60, 0),
        ("BookOrder", 1, 1, -10, 110, 0, -95, 60, 0),
        ("InsuranceTakeover", 1, 1, -6, 114, 685, 0, 0, 0),
        ("Done", 1, 0, 0, 0, 0, 0, 0, 0)]
    assert ex.last[4]["side"].name == "Buy"
    assert (ex.bal(1), ex.pos(1)[0]) == (0, 0)
    assert (ex.bal(0), ex.pos(0)) == (785, (-6, -685, 0))
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()


def test_maintenance_boundary_and_the_bankrupt_amount():
    ex = leveraged(accounts=(1, 2))
    ex.deposit(1, 145)
    ex.deposit(2, 10_000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)  # cash -855
    # at 90 equity 45 = maintenance ceil(ceil(90) / 2) = 45: not liquidatable
    assert ex.index(1, 90) == ["Admin None", "Mark 90 idx=90 basis=0"]
    assert ex.index(1, 90) == ["Admin None", "Mark 90 idx=90 basis=0"]
    assert ex.risk(1) == dict(equity=45, initial=90, maintenance=45, free=-45)
    # at 89: 35 < 45. The book limit 85.5 rounds up to 86; nobody bids. The bankrupt amount
    # is the 855 the long owes (85.5 each; rounding the price in the account's favour used
    # to leave it 5 of the counterparty's money). The empty insurance fund would gain on it
    # (0 - 855 + 890 = 35) but not cover its maintenance 45: the short takes it
    ex.index(1, 89)
    assert liq(ex.last, "price", "amount", "equity", "counterparty") == [
        ("Start", 1, 0, 0, 35, 0), ("BookOrder", 1, 86, 0, 35, 0), ("AutoDeleverage", 1, 85, 855, 0, 2),
        ("Done", 1, 0, 0, 0, 0)]
    assert (ex.bal(1), ex.bal(0), ex.pos(0)[0]) == (0, 0, 0)
    assert (ex.bal(2), ex.pos(2)) == (10_000 + 1000 - 855, (0, 0, 145))
    ex.assert_conserved()


def funding_bankrupt(fund: int, btc: int = 0) -> Risk:
    """Funding at a 91% rate takes a long's cash past what its position is worth: with the
    index at the bottom of the window (68) and the mark at the mid 130, the long (1) of 10
    pays ceil(1300 * 0.911764) = 1186 (cash -1986, equity -686), the short (2) receives
    1185, the fund the 1 left. Nobody bids at the book limit (the window's top, 131)."""
    ex = leveraged(accounts=(1, 2, 3))
    params = dict(imPpm=100_000, fundingCapPpm=PPM, basisCapPpm=PPM, basisEmaPpm=PPM)
    ex.params(1, **params)
    ex.deposit(1, 200)
    if btc:
        ex.deposit(1, btc, asset=1)
    ex.deposit(2, 100_000)
    ex.deposit(3, 10_000)
    if fund:
        ex.deposit(0, fund)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)  # cash -800
    ex.buy(3, 1, 129)
    ex.sell(3, 1, TOP)  # mid 130
    assert ex.index(1, BOTTOM) == ["Admin None", "Mark 130 idx=68 basis=62"]
    assert ex.params(1, fundingIntervalNs=1000, **params) == ["Admin None"]  # a whole interval at that premium
    out = ex.at(T0 + 1000).cancel(1, 99)
    assert out[0] == "Funding 1 rem=1 total=1186 rate=911764"
    assert out[-1] == "CancelRejected UnknownOrder"
    return ex


@pytest.mark.parametrize("fund", [2000, 750, 749, 0])
def test_a_bankruptcy_beyond_the_mark_is_carried_by_the_fund_or_the_deleveraged_short(fund):
    """The long's position goes for its bankrupt amount, 1986 (198 each, above the mark):
    the fund takes it when its equity after, fund + 1 + 1300 - 1986, is at least its
    maintenance ceil(130 / 2) = 65 (from 750 on); otherwise the short is deleveraged and
    pays it. Either way the account ends at exactly 0 and nothing is left to cover: the
    fund's cash never pays for what its equity cannot (issue 13, defect 5, where a cover
    from the fund's cash took its equity to -590 before the fee account was asked)."""
    ex = funding_bankrupt(fund)
    takeover = fund >= 750
    stage = "InsuranceTakeover" if takeover else "AutoDeleverage"
    assert liq(ex.last, "price", "amount", "equity", "counterparty") == [
        ("Start", 1, 0, 0, -686, 0), ("BookOrder", 1, TOP, 0, -686, 0),
        (stage, 1, 198, 1986, 0, 0 if takeover else 2), ("Done", 1, 0, 0, 0, 0)]
    assert covers(ex.last) == []
    assert (ex.bal(1), ex.pos(1)[0], ex.fees()) == (0, 0, 0)
    if takeover:
        assert ex.bal(0) == fund + 1 - 1986
        assert ex.pos(0) == (10, 1986, 0)
        assert ex.risk(0)["equity"] == fund - 685 >= ex.risk(0)["maintenance"]
        assert ex.bal(2) == 100_000 + 1000 + 1185  # the short was paid its funding
    else:
        assert ex.bal(0) == fund + 1
        assert (ex.pos(0), ex.pos(2)) == ((0, 0, 0), (0, 0, 1000 - 1986))
        assert ex.bal(2) == 100_000 + 1000 + 1185 - 1986
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()


def test_a_bankrupt_account_that_holds_other_assets_keeps_its_debt():
    """Issue 13, defect 7: the same long also holds 50 of asset 1. Its position goes at its
    value at mark (1300, not the 1986 it owes: others do not carry an account that can pay),
    and the 686 it still owes stays its debt: it may not trade or withdraw until a deposit
    repays it, and then it may."""
    ex = funding_bankrupt(2000, btc=50)
    assert liq(ex.last, "price", "amount", "equity", "counterparty") == [
        ("Start", 1, 0, 0, -686, 0), ("BookOrder", 1, TOP, 0, -686, 0),
        ("InsuranceTakeover", 1, 130, 1300, -686, 0), ("Done", 1, 0, 0, -686, 0)]
    assert covers(ex.last) == []
    assert (ex.bal(1), ex.bal(1, 1), ex.pos(1)[0], ex.bal(0), ex.fees()) == (-686, 50, 0, 2001 - 1300, 0)
    assert ex.buy(1, 1, 100) == ["Rejected AccountInDebt"]
    assert ex.sell(1, 1, 100) == ["Rejected AccountInDebt"]
    assert ex.withdraw(1, 1, asset=1) == ["Admin AccountInDebt 50"]
    assert ex.deposit(1, 600) == ["Admin None -86"]
    assert ex.withdraw(1, 1, asset=1) == ["Admin AccountInDebt 50"]
    assert ex.deposit(1, 86) == ["Admin None 0"]  # repaid
    assert ex.withdraw(1, 50, asset=1) == ["Admin None 0"]
    ex.deposit(1, 1000)
    assert ex.buy(1, 1, 100)[0] == "Accepted 6"
    ex.assert_conserved()


def test_a_liquidation_fee_goes_to_the_insurance_fund_and_takeover_is_at_the_bankrupt_amount():
    """Issue 13, defect 6: taker fee 5%, liquidation fee 1%. The long (1) of 10 paid 1,050
    for its position (cash -900). At mark 94 its equity is 40 < maintenance 47. The fund
    takes ceil(940 * 1%) = 10 of that; the book limit is 910 / (10 * 0.95) = 95.8 -> 96 and
    nobody bids; the fund then takes the position for 910, what leaves the account at
    exactly 0. Before, the fee-inclusive limit (95) was reused: the fund paid 950 and the
    trader, with 40 of equity, left with 50."""
    ex = Risk(accounts=(1, 2))
    ex.perp(1, takerFeePpm=50_000)
    assert ex.params(1, imPpm=100_000, liquidationFeePpm=10_000) == ["Admin None"]
    ex.deposit(1, 150)
    ex.deposit(2, 10_000)
    ex.deposit(0, 10_000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert ex.bal(1) == -900
    assert ex.index(1, 94) == [
        "Admin None", "Mark 94 idx=94 basis=0", "Liq Start 1", "Liq LiquidationFee 1", "Liq BookOrder 1",
        "Accepted 3", "Canceled 3 IocRemainder 10", "Liq InsuranceTakeover 1", "Liq Done 1"]
    assert liq(ex.last, *FIELDS) == [
        ("Start", 1, 0, 0, 0, 0, 40, 47, 0),
        ("LiquidationFee", 1, 1, 10, 94, 10, 30, 47, 0),
        ("BookOrder", 1, 1, 10, 96, 0, 30, 47, 0),
        ("InsuranceTakeover", 1, 1, 10, 91, 910, 0, 0, 0),
        ("Done", 1, 0, 0, 0, 0, 0, 0, 0)]
    assert (ex.bal(1), ex.pos(1)[0]) == (0, 0)
    assert (ex.bal(0), ex.pos(0)) == (10_000 + 10 - 910, (10, 910, 0))
    assert ex.risk(0)["equity"] == 10_000 + 10 - 910 + 940
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()
    # out of range
    assert ex.params(1, imPpm=100_000, liquidationFeePpm=PPM + 1) == ["Admin InvalidInstrumentDefinition"]


def test_taker_fee_raises_a_longs_bankruptcy_price():
    ex = Risk(accounts=(1, 2))
    ex.perp(1, takerFeePpm=10_000)
    ex.params(1, imPpm=100_000)
    ex.deposit(1, 100)
    ex.deposit(2, 10_000)
    ex.deposit(0, 1000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert ex.bal(1) == -910  # 1000 plus a 1% fee
    # the book order sells at p only if -910 + n - ceil(n / 100) >= 0: 92 is the lowest price
    # that gives it. Nobody bids; the fund takes the position without a fee, for the 910 the
    # long owes (91 each), not at 92, which left the account 10 of the fund's money
    ex.index(1, 80)
    assert liq(ex.last, "price", "amount", "equity") == [
        ("Start", 1, 0, 0, -110), ("BookOrder", 1, 92, 0, -110), ("InsuranceTakeover", 1, 91, 910, 0),
        ("Done", 1, 0, 0, 0)]
    ex.assert_conserved()


def test_liquidation_order_bypasses_kill_switches_and_the_price_band():
    ex = leveraged(accounts=(1, 2))
    ex.deposit(1, 100)
    ex.deposit(2, 10_000)
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    ex.buy(2, 10, 95)  # 3
    assert ex.limits(1, priceBandPpm=10_000) == ["Admin None"]  # 99 .. 101 around the last trade
    assert ex.kill("Account", account=1)[:2] == ["Admin None", "KillSwitchStatus"]
    assert ex.kill("Session", sessionId=0)[:2] == ["Admin None", "KillSwitchStatus"]
    assert ex.sell(1, 1, 100) == ["Rejected KillSwitchAccount"]
    assert ex.index(1, 80) == [
        "Admin None", "Mark 80 idx=80 basis=0", "Liq Start 1", "Liq BookOrder 1", "Accepted 4",
        "Trade 2 10@95 m=3 t=4 ml=0 tl=0", "BookExecute 3 10@95", "Liq Done 1"]
    assert liq(ex.last, "price", "equity") == [
        ("Start", 1, 0, -100), ("BookOrder", 1, 90, -100), ("Done", 1, 0, 50)]
    assert (ex.bal(1), ex.pos(1)[0], ex.pos(2)[0]) == (50, 0, 0)
    ex.assert_conserved()


def test_liquidation_cancels_every_working_order_spot_ones_included():
    ex = leveraged(accounts=(1, 2))
    ex.spot(2)
    ex.deposit(1, 300)
    ex.deposit(2, 10_000)
    assert ex.buy(1, 1, 100, instrument=2) == ["Accepted 1", "BookAdd 1 Buy 1@100"]  # holds 100
    ex.buy(1, 1, ordType="Stop", stopPrice=120)  # a pending perpetual stop
    ex.sell(2, 10, 100)
    ex.buy(1, 10, 100)
    assert (ex.bal(1), ex.held(1)) == (-700, 100 + 0)
    # at 70: equity 0 < 35; bankruptcy 70 = the mark: the empty insurance fund would lose
    # nothing, but have no equity for its maintenance of 35: the short takes it
    assert ex.index(1, 70) == [
        "Admin None", "Mark 70 idx=70 basis=0", "Liq Start 1",
        "Canceled 1 Liquidation 1", "BookDelete 1", "Canceled 2 Liquidation 1",
        "Liq BookOrder 1", "Accepted 5", "Canceled 5 IocRemainder 10",
        "Liq AutoDeleverage 1", "Liq Done 1"]
    assert (ex.bal(1), ex.held(1), ex.pos(1)[0], ex.bal(0), ex.pos(0)[0]) == (0, 0, 0, 0, 0)
    assert (ex.bal(2), ex.pos(2)) == (10_000 + 1000 - 700, (0, 0, 300))
    assert ex.engine.live_orders == 0
    ex.assert_conserved()


@pytest.mark.parametrize("fund", [4, 5])
def test_a_mark_move_in_one_perpetual_moves_the_liquidation_price_in_another(fund):
    """M (1) long 10 @ 100 in instruments 1 and 2 (cash -1800). Instrument 2's mark falls to
    92: M is safe (equity 120, maintenance 96) but its liquidation price in instrument 1 rises
    from ~89.5 to ~97.5. Instrument 1 at 98 is still safe, at 97 it is not (90 < 95). Its
    positions are closed in ascending instrument id, each at the price that takes its equity
    to 0 with the other marks fixed: 88 in 1 (-1800 + 880 + 920), then 92 in 2.
    The fund takes 10 @ 88 in 1 (equity fund + 90, maintenance 49). Taking 10 @ 92 in 2 keeps
    its equity at fund + 90 and raises its maintenance, over both instruments, to 49 + 46:
    a fund of 5 takes it, one of 4 does not (it would cover instrument 2's 46 alone)."""
    ex = Risk(accounts=(1, 2))
    for i in (1, 2):
        ex.perp(i)
        ex.params(i, imPpm=100_000)
    for a, d in ((1, 200), (2, 100_000), (0, fund)):
        ex.deposit(a, d)
    for i in (1, 2):
        ex.sell(2, 10, 100, instrument=i)
        ex.buy(1, 10, 100, instrument=i)
    assert ex.risk(1) == dict(equity=200, initial=200, maintenance=100, free=0)
    assert ex.index(2, 92) == ["Admin None", "Mark 92 idx=92 basis=0"]
    assert ex.risk(1)["equity"] == 120 and ex.risk(1)["maintenance"] == 96
    assert ex.index(1, 98) == ["Admin None", "Mark 98 idx=98 basis=0"]
    stage, cp = ("InsuranceTakeover", 0) if fund == 5 else ("AutoDeleverage", 2)
    assert ex.index(1, 97) == [
        "Admin None", "Mark 97 idx=97 basis=0", "Liq Start 1",
        "Liq BookOrder 1", "Accepted 5", "Canceled 5 IocRemainder 10", "Liq InsuranceTakeover 1",
        "Liq BookOrder 1", "Accepted 6", "Canceled 6 IocRemainder 10", f"Liq {stage} 1",
        "Liq Done 1"]
    assert liq(ex.last, "instrument", "qty", "price", "amount", "equity", "requirement", "counterparty") == [
        ("Start", 1, 0, 0, 0, 0, 90, 95, 0), ("BookOrder", 1, 1, 10, 88, 0, 90, 95, 0),
        ("InsuranceTakeover", 1, 1, 10, 88, 880, 0, 46, 0), ("BookOrder", 1, 2, 10, 92, 0, 0, 46, 0),
        (stage, 1, 2, 10, 92, 920, 0, 0, cp), ("Done", 1, 0, 0, 0, 0, 0, 0, 0)]
    if fund == 5:
        assert [ex.pos(0, i)[0] for i in (1, 2)] == [10, 10]
        assert ex.bal(0) == 5 - 880 - 920
        assert ex.risk(0) == dict(equity=95, initial=97 + 92, maintenance=95, free=95 - 189)
    else:
        assert [ex.pos(0, i)[0] for i in (1, 2)] == [10, 0]
        assert (ex.bal(0), ex.bal(2)) == (4 - 880, 100_000 + 2000 - 920)
        assert (ex.pos(2, 1), ex.pos(2, 2)) == ((-10, -1000, 0), (0, 0, 80))
        assert ex.risk(0) == dict(equity=94, initial=97, maintenance=49, free=-3)
    assert ex.bal(1) == 0
    ex.assert_positions_sum_to_zero([1, 2])
    ex.assert_conserved()


def test_a_fill_that_leaves_an_account_below_maintenance_liquidates_it_after_that_message():
    """Not in docs/risk.md, which checks after mark moves only: the engine also checks after
    any message whose fills (or transfers) re-keyed an account at or past the current mark.
    A (1) and B (2) rest bids at 100 that fill after the mark fell to 80."""
    ex = leveraged(accounts=(1, 2, 3))
    for a, d in ((1, 100), (2, 145), (3, 100_000), (0, 1000)):
        ex.deposit(a, d)
    ex.buy(1, 10, 100)
    ex.buy(2, 10, 100)
    assert ex.index(1, 80) == ["Admin None", "Mark 80 idx=80 basis=0"]  # no positions yet
    # A: cash -900, equity -100; B: cash -855, equity -55; both below 40
    assert ex.sell(3, 20, 100) == [
        "Accepted 3", "Trade 1 10@100 m=1 t=3 ml=0 tl=10", "BookExecute 1 10@100",
        "Trade 2 10@100 m=2 t=3 ml=0 tl=0", "BookExecute 2 10@100",
        "Liq Start 1", "Liq BookOrder 1", "Accepted 4", "Canceled 4 IocRemainder 10",
        "Liq InsuranceTakeover 1", "Liq Done 1",
        "Liq Start 2", "Liq BookOrder 2", "Accepted 5", "Canceled 5 IocRemainder 10",
        "Liq InsuranceTakeover 2", "Liq Done 2"]
    assert liq(ex.last, "price", "equity") == [
        ("Start", 1, 0, -100), ("BookOrder", 1, 90, -100), ("InsuranceTakeover", 1, 90, 0), ("Done", 1, 0, 0),
        ("Start", 2, 0, -55), ("BookOrder", 2, 86, -55), ("InsuranceTakeover", 2, 85, 0), ("Done", 2, 0, 0)]
    assert [ex.pos(a)[0] for a in (0, 1, 2, 3)] == [20, 0, 0, -20]
    ex.assert_conserved()


def _key(ex: Risk, account: int, instrument: int = 1) -> int:
    """The account's key in its instrument's shorts' heap (docs/risk.md "Finding them")."""
    st = ex.engine.state
    maxa = ex.config.max_accounts
    base = (instrument * 2 + 1) * maxa
    keys = [int(k) for k, a in st.heap[base: base + maxa] if a == account]
    return keys[0]


def test_a_short_far_from_liquidation_is_keyed_early_and_liquidated_on_time():
    """A short far from liquidation is keyed from the largest maintenance rate (50% of a
    100% initial rate here: 1.5 x the position per unit of cash) instead of its tier: an
    early key, so the mark passing it only re-checks the account; it is liquidated exactly
    when equity falls below maintenance (cash 4000 - 10 M < ceil(M / 2): M = 381)."""
    ex = leveraged(accounts=(1, 2), price_levels=1024)
    ex.deposit(1, 3000)
    ex.deposit(2, 10_000)
    ex.deposit(0, 10_000)
    ex.buy(2, 10, 100)
    ex.sell(1, 10, 100)  # cash 4000
    assert ex.bal(1) == 4000
    assert _key(ex, 1) == 265  # floor(3999 / 15) - 1, beyond twice the mark: no tiers
    assert ex.index(1, 300) == ["Admin None", "Mark 300 idx=300 basis=0"]  # popped, safe, re-keyed
    assert 300 < _key(ex, 1) <= 381  # now from its tier: 4000 / (10 * 1.05) = 380.9
    assert ex.index(1, 380) == ["Admin None", "Mark 380 idx=380 basis=0"]  # 200 >= 190: safe
    out = ex.index(1, 381)  # 190 < 191
    assert out[:3] == ["Admin None", "Mark 381 idx=381 basis=0", "Liq Start 1"], out
    assert liq(ex.last, "equity", "requirement")[0] == ("Start", 1, 190, 191)
    ex.assert_positions_sum_to_zero([1, 2])
    ex.assert_conserved()
