"""No money from rounding (issue 13, defects 1 and 2; docs/risk.md "Settlement and fees",
"Funding").

* A trade's notional is exact: ``InstrumentLimits`` refuses a ``notionalDivisor`` that does
  not divide ``tickSize * lotSize`` (``InexactNotional``).
* An order's fees are the exact total rounded up once (a rebate rounded down), however the
  order is split: splitting never lowers what a taker pays nor what its maker receives.
* Funding is paid on each position's notional at mark, rounded once per position: up for
  a payer, down for a receiver, and what is left goes to the insurance fund, so what the
  payers pay is what the receivers and the fund receive.

Every expected number is worked out in the comments; the two properties run on random
cases.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk_kit import PPM, T0, Risk, ceil_div

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- defect 2: exact notionals ------------------------------------------------------------------


def test_a_divisor_that_does_not_divide_tick_times_lot_is_refused():
    ex = Risk()
    ex.spot(1, tickSize=10, lotSize=100, minQty=100, referencePrice=50_000)
    ex.perp(2, tickSize=1, lotSize=1, referencePrice=50_000)
    # 10 * 100 = 1000: 1000, 500, 8 and 1 divide it, 3 and 2000 do not
    for div in (3, 2000, 7):
        assert ex.limits(1, notionalDivisor=div) == ["Admin InexactNotional"], div
    for div in (8, 500, 1000, 1):
        assert ex.limits(1, notionalDivisor=div) == ["Admin None"], div
    # the case: tick 1, lot 1, divisor 1000 would price a 1-lot trade at 50.999
    assert ex.limits(2, notionalDivisor=1000) == ["Admin InexactNotional"]
    assert ex.engine.arrays()["instrument.notionalDivisor"][2] == 1


def test_one_lot_pieces_pay_what_one_trade_pays():
    """Tick 100, lot 10, divisor 1000 (tick * lot / divisor = 1): a 1-lot trade at 50,900
    is worth exactly 509. One trade of 100 lots pays 50,900 and a taker fee (0.05%) of
    ceil(25.45) = 26; the maker's rebate (0.01%) is floor(5.09) = 5. 100 one-lot IOC buys
    pay the same 50,900 and ceil(0.2545) = 1 each in fees (flooring each gave 0); the maker's
    one order still receives 50,900 and a rebate of 5."""
    def run(pieces: list[int]) -> tuple[int, int, int]:
        ex = Risk(accounts=(1, 2))
        ex.spot(1, tickSize=100, lotSize=10, minQty=10, referencePrice=50_000, takerFeePpm=500,
                makerFeePpm=-100)
        assert ex.limits(1, notionalDivisor=1000) == ["Admin None"]
        ex.deposit(1, 100_000)
        ex.deposit(2, 1000, asset=1)
        ex.sell(2, 1000, 50_900)
        for q in pieces:
            assert ex.buy(1, q, 50_900, tif="IOC")[0].startswith("Accepted")
        ex.assert_conserved()
        return 100_000 - ex.bal(1), ex.bal(2), ex.fees()
    one = run([1000])
    assert one == (50_900 + 26, 50_900 + 5, 26 - 5)
    assert run([10] * 100) == (50_900 + 100, 50_900 + 5, 100 - 5)
    # 1 + ceil(50,391 * 0.0005 = 25.1955)
    assert run([10, 990]) == (50_900 + 1 + 26, 50_900 + 5, 27 - 5)


def test_a_fee_rounds_up_against_its_payer():
    """Perpetual, no divisor: a fill of 3 @ 101 (notional 303) at a 0.1% taker fee owes
    0.303: the taker pays 1 (not 0); the maker's 0.05% fee, 0.1515, is 1 too. Its next
    fill, 3 more, owes 0.606 in all: nothing more is due."""
    ex = Risk(accounts=(1, 2))
    ex.perp(1, takerFeePpm=1000, makerFeePpm=500)
    ex.deposit(1, 10_000)
    ex.deposit(2, 10_000)
    ex.sell(2, 6, 101)
    ex.buy(1, 3, 101, tif="IOC")
    assert (ex.bal(1), ex.bal(2), ex.fees()) == (10_000 - 303 - 1, 10_000 + 303 - 1, 2)
    ex.buy(1, 3, 101, tif="IOC")
    # the taker's second order is a new order: ceil(0.303) = 1 again; the maker's order is
    # the same one: ceil(0.303) = 1 in all, already paid
    assert (ex.bal(1), ex.bal(2), ex.fees()) == (10_000 - 606 - 2, 10_000 + 606 - 1, 3)
    ex.assert_conserved()


SPECS = [(1, 1, 1), (100, 10, 1000), (5, 2, 10), (25, 4, 100), (3, 7, 21)]  # tick, lot, divisor


@SETTINGS
@given(pieces=st.lists(st.integers(1, 30), min_size=1, max_size=10), ticks=st.integers(-20, 20),
       taker=st.integers(0, 20_000), maker_pct=st.integers(-100, 100), spec=st.sampled_from(SPECS),
       perpetual=st.booleans())
def test_property_splitting_never_lowers_what_the_taker_pays_or_the_maker_receives(
        pieces, ticks, taker, maker_pct, spec, perpetual):
    tick, lot, div = spec
    maker = taker * maker_pct // 100
    price = (100 + ticks) * tick
    total = sum(pieces)

    def run(split: list[int]) -> tuple[int, int]:
        ex = Risk(accounts=(1, 2))
        kw = dict(tickSize=tick, lotSize=lot, minQty=lot, maxQty=lot * 100_000, referencePrice=100 * tick,
                  takerFeePpm=taker,
                  makerFeePpm=maker)
        if perpetual:
            ex.perp(1, **kw)
        else:
            ex.spot(1, **kw)
        assert ex.limits(1, notionalDivisor=div) == ["Admin None"]
        ex.deposit(1, 10**9)
        ex.deposit(2, 10**9)
        ex.deposit(2, 10**6, asset=1)
        assert ex.sell(2, total * lot, price)[0].startswith("Accepted")
        for q in split:
            assert ex.buy(1, q * lot, price, tif="IOC")[0].startswith("Accepted")
        ex.assert_conserved()
        return 10**9 - ex.bal(1), ex.bal(2) - 10**9

    paid_once, received_once = run([total])
    paid_split, received_split = run(pieces)
    n = price * total * lot // div  # exact: div divides tick * lot
    assert n * div == price * total * lot
    assert paid_once == n + ceil_div(n * taker, PPM)
    assert received_once == n - ceil_div(n * maker, PPM)
    assert paid_split >= paid_once
    assert received_split >= received_once


# -- defect 1: funding on the position, rounded once ------------------------------------------


FUNDING = dict(fundingCapPpm=PPM, basisCapPpm=PPM, basisEmaPpm=PPM)  # mark = the book's mid


def funded_perp(div: int, lot: int, tick: int) -> Risk:
    """A perpetual whose mark is the book's mid (basis cap and weight 100%); funding every
    1000 ns once ``start_funding`` switches it on."""
    ex = Risk(accounts=(1, 2, 3, 4))
    ex.perp(1, tickSize=tick, lotSize=lot, minQty=lot, maxQty=lot * 100_000, referencePrice=50_000)
    assert ex.limits(1, notionalDivisor=div) == ["Admin None"]
    assert ex.params(1, **FUNDING) == ["Admin None"]
    for a in (1, 2, 3, 4):
        ex.deposit(a, 10**8)
    return ex


def start_funding(ex: Risk) -> None:
    """Funding from now on: the interval's premium is the one the last index gave."""
    assert ex.params(1, fundingIntervalNs=1000, **FUNDING) == ["Admin None"]


def test_funding_with_fractional_lots_is_paid_on_the_position():
    """Divisor 1000, lot 10, tick 100: index 50,000, bid 50,000, ask 50,100 (mark 50,050,
    1000 ppm above the index). A long of 1000 (one unit) at that rate owes 50.05. Per lot
    (notional(50,050, 10) = 500, times 0.1% = 0.5, truncated) it paid 0; on the position it
    pays ceil(50.05) = 51, the short receives 50 and the insurance fund the 1 left."""
    ex = funded_perp(div=1000, lot=10, tick=100)
    ex.sell(2, 1000, 50_000)
    ex.buy(1, 1000, 50_000)
    ex.buy(3, 10, 50_000)
    ex.sell(4, 10, 50_100)
    assert ex.index(1, 50_000) == ["Admin None", "Mark 50050 idx=50000 basis=50"]
    start_funding(ex)
    before = {a: ex.bal(a) for a in range(5)}
    assert ex.at(T0 + 1000).cancel(1, 99) == ["Funding 1 rem=1 total=51 rate=1000", "CancelRejected UnknownOrder"]
    assert {a: ex.bal(a) - before[a] for a in range(5)} == {0: 1, 1: -51, 2: 50, 3: 0, 4: 0}
    ex.assert_conserved()


@SETTINGS
@given(trades=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 50)), min_size=1,
                       max_size=8),
       spec=st.sampled_from([(1, 1, 1), (100, 10, 1000), (5, 2, 10)]), ask_ticks=st.integers(1, 30),
       index_ticks=st.integers(-30, 30))
def test_property_funding_is_rounded_against_each_position_and_balances(trades, spec, ask_ticks, index_ticks):
    tick, lot, div = spec
    ex = funded_perp(div=div, lot=lot, tick=tick)
    for buyer, seller, q in trades:
        if buyer != seller:
            ex.sell(seller, q * lot, 50_000)
            ex.buy(buyer, q * lot, 50_000, tif="IOC")
    ex.buy(1, lot, 50_000 - tick)
    ex.sell(2, lot, 50_000 + ask_ticks * tick)
    index = 50_000 + index_ticks * tick
    out = ex.index(1, index)
    assert out[0] == "Admin None"
    start_funding(ex)
    mark = ex.engine.mark_price(1)
    qty = {a: ex.pos(a)[0] for a in range(5)}
    before = {a: ex.bal(a) for a in range(5)}
    out = ex.at(T0 + 10**6).cancel(1, 99)
    f = ex.last[0].fields
    assert ex.last[0].name == "FundingApplied"
    rate = f["ratePpm"]
    paid = received = 0
    for a in range(1, 5):
        exact_num = abs(qty[a]) * mark * abs(rate)  # the amount is exact_num / (PPM * div)
        if qty[a] == 0 or rate == 0:
            assert ex.bal(a) == before[a]
        elif (qty[a] > 0) == (rate > 0):
            assert before[a] - ex.bal(a) == ceil_div(exact_num, PPM * div)
            paid += ceil_div(exact_num, PPM * div)
        else:
            assert ex.bal(a) - before[a] == exact_num // (PPM * div)
            received += exact_num // (PPM * div)
    assert (f["total"], f["remainder"]) == (paid, paid - received)
    assert ex.bal(0) - before[0] == paid - received
    assert 0 <= paid - received < 4  # at most one unit per position
    ex.assert_conserved()
