"""Continuous tiered margin and liquidation keys that are never late (issue 13, defects 3
and 9; docs/risk.md "Perpetual margin", "Liquidation").

Tier k of a perpetual (notional from k * tierNotional up) has rate min(100%, imPpm + k *
tierStepPpm), applied to the notional within it; so margin is continuous in the notional,
a long only becomes liquidatable as the mark falls and a short as it rises, and the mark
at which that happens is found exactly (keys are estimated in floats, then checked with
the engine's own integer arithmetic).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk_kit import PPM, Risk, ceil_div


def tiered_im(n: int, im: int, tier: int, step: int) -> int:
    """docs/risk.md's initial margin, by summing the tiers one by one."""
    total = 0  # in millionths
    k = 0
    left = n
    while left > 0:
        width = left if tier == 0 or step == 0 else min(left, tier)
        total += width * min(PPM, im + k * step)
        left -= width
        k += 1
    return ceil_div(total, PPM)


def test_the_tiered_margin_is_each_tiers_rate_on_the_notional_within_it():
    """im 10%, step 30%, tier 10,000: tiers at 10%, 40%, 70%, then 100%. A long bought one
    step at a time (at 100, mark 100) carries the margin of the sum over its tiers: at
    35,000 that is 1,000 + 4,000 + 7,000 + 5,000 = 17,000."""
    ex = Risk(accounts=(1, 2))
    ex.perp(1)
    assert ex.params(1, imPpm=100_000, mmPpm=500_000, tierNotional=10_000, tierStepPpm=300_000) == ["Admin None"]
    ex.deposit(1, 10**6)
    ex.deposit(2, 10**6)
    ex.sell(2, 1000, 100)
    held = 0
    for q in (50, 49, 1, 1, 49, 50, 1, 98, 1, 1, 49, 50, 50):
        ex.buy(1, q, 100, tif="IOC")
        held += q
        r = ex.risk(1)
        im = tiered_im(100 * held, 100_000, 10_000, 300_000)
        assert (r["initial"], r["maintenance"]) == (im, ceil_div(im * 500_000, PPM)), held
    assert held == 450 and ex.risk(1)["initial"] == 12_000 + 15_000
    ex.assert_conserved()


def test_crossing_a_tier_as_the_mark_rises_never_makes_a_long_liquidatable():
    """The issue's case: a long of 100 at 99, tier 10,000, step 30%. Its maintenance was the
    whole notional at the next tier's rate the moment the mark reached 100 (2,000 against
    equity 1,100). Now it grows by the new tier's rate on what is above 10,000 only."""
    ex = Risk(accounts=(1, 2))
    ex.perp(1)
    assert ex.params(1, imPpm=100_000, mmPpm=500_000, tierNotional=10_000, tierStepPpm=300_000) == ["Admin None"]
    ex.deposit(1, 1000)
    ex.deposit(2, 10**6)
    ex.sell(2, 100, 99)
    ex.buy(1, 100, 99)
    for mark in range(99, 132):
        out = ex.index(1, mark)
        assert out == ["Admin None", f"Mark {mark} idx={mark} basis=0"], mark
        r = ex.risk(1)
        n = 100 * mark
        assert r["equity"] == 1000 - 9900 + n
        assert r["maintenance"] == ceil_div(tiered_im(n, 100_000, 10_000, 300_000) * 500_000, PPM)
        assert r["equity"] >= r["maintenance"]
    assert ex.pos(1)[0] == 100
    # at 131: notional 13,100, maintenance ceil((1000 + 0.4 * 3100) / 2) = 1120; equity 4200
    assert ex.risk(1)["maintenance"] == 1120


SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(spec=st.sampled_from([(1, 1, 1), (10, 1, 10), (10, 3, 30), (5, 2, 10)]),
       positions=st.lists(st.tuples(st.integers(1, 40), st.booleans(), st.integers(0, 400)), min_size=1,
                          max_size=4),
       tiers=st.sampled_from([(0, 0), (20, 200_000), (50, 50_000), (8, 900_000)]),
       im=st.sampled_from([50_000, 100_000, 200_000]), mm=st.sampled_from([300_000, 500_000, 1_000_000]))
def test_property_no_account_is_left_liquidatable_as_the_mark_walks_one_unit_at_a_time(
        spec, positions, tiers, im, mm):
    """Random longs and shorts at 10-20x with a little cash over their initial margin, tiers
    and divisors that leave fractions at marks off the tick; the mark walks down 15% one
    unit at a time, up 30%, and back. After every IndexPrice no account that holds a
    position is below its maintenance margin: its liquidation key was never late."""
    tick, lot, div = spec
    ref = 100 * tick
    ex = Risk(accounts=(1, 2, 3, 4, 5, 6))
    ex.perp(1, tickSize=tick, lotSize=lot, minQty=lot, maxQty=lot * 100_000, referencePrice=ref)
    assert ex.limits(1, notionalDivisor=div) == ["Admin None"]
    tier_lots, step = tiers
    tier = tier_lots * ref * lot // div
    assert ex.params(1, imPpm=im, mmPpm=mm, tierNotional=tier, tierStepPpm=step) == ["Admin None"]
    ex.deposit(0, 10**9)
    ex.deposit(6, 10**9)  # the other side of every position
    for a, (lots, long, extra) in enumerate(positions, start=1):
        q = lots * lot
        n = ref * q // div
        ex.deposit(a, tiered_im(n, im, tier, step) + extra * tick * lot // div + 1)
        if long:
            ex.sell(6, q, ref)
            assert ex.buy(a, q, ref)[0].startswith("Accepted")
        else:
            ex.buy(6, q, ref)
            assert ex.sell(a, q, ref)[0].startswith("Accepted")
    assert ex.engine.live_orders == 0
    walk = list(range(ref, ref * 85 // 100, -1)) + list(range(ref * 85 // 100, ref * 115 // 100)) + \
        list(range(ref * 115 // 100, ref - 1, -1))
    for mark in walk:
        assert ex.index(1, mark)[0] == "Admin None"
        for a in range(1, len(positions) + 1):
            if ex.pos(a)[0] != 0:
                r = ex.risk(a)
                assert r["equity"] >= r["maintenance"], (mark, a, r, ex.pos(a))
    ex.assert_positions_sum_to_zero([1])
    ex.assert_conserved()
