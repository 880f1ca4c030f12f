"""Mark prices and funding of perpetual futures (docs/risk.md "Mark price", "Funding").

* ``on_perpetual_params`` sets a perpetual's margin and funding parameters (admin).
* ``on_index_price`` moves an instrument's mark (index plus a smoothed, clamped basis) and
  then looks for the accounts it put at risk (``liquidation.check_instrument``).
* ``funding_due`` runs before each message: every perpetual whose funding time has come
  pays, longs to shorts or the reverse, at the interval's time-weighted premium plus the
  clamped interest component, on each position's notional at mark rounded once: up for a
  payer, down for a receiver, the difference to the insurance fund, so the sums balance
  exactly and nobody gains by rounding (issue 13, defect 1).

The premium index: each ``IndexPrice`` sets the premium ``(mark - index) / index`` (ppm,
clamped to +-100%), which holds until the next one; the engine keeps the sum of premium *
nanoseconds since the interval began (two int64 words: a premium of 1e6 ppm over an
8-hour interval is 2.9e19) and pays the average at the funding time.
"""

from __future__ import annotations

import math

from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import views
from ringex.engine.kernel.events import get
from ringex.engine.kernel.book import first_level_at_or_above, first_level_at_or_below
from ringex.engine.kernel.fixed import div_ceil, notional, ppm_ceil, ppm_floor, ppm_trunc, signed32, window
from ringex.engine.kernel.flags import INLINE, JIT, MAX_I64, PPM
from ringex.engine.kernel.heap import holders
from ringex.engine.kernel.liquidation import check_all, check_instrument, check_multi

INTEREST_BAND = 500  # ppm: the interest component moves the rate at most 0.05% from the premium
from ringex.engine.kernel.margin import rekey
from ringex.engine.kernel.state import (
    G_AT_RISK, G_FUNDING_N, G_LEVELS, G_WORDS, G_MAX_ASSETS, G_MAX_INSTRUMENTS, G_PERP_N, G_PERPS, G_TS, I_ASK,
    I_BASE, I_BASIS_CAP, I_BASIS_EMA, I_BID, I_DEFINED, I_EMA, I_FUND_CAP, I_FUND_INTERVAL, I_IM,
    I_FUND_START, I_IMPACT, I_INDEX, I_INTEREST, I_KIND, I_LIQ_FEE, I_MARK, I_MM, I_NEXT_FUND, I_NOTIONAL_DIV,
    I_PREM_HI, I_PREM_LO, I_PREM_T, I_PREMIUM, I_TICK, I_TIER_N, I_TIER_STEP, O_DISP, O_NEXT, P_QTY, W_BAL,
)
from ringex.engine.wire.layout import (
    IX_INSTRUMENT, IX_PRICE, KIND_PERPETUAL, PP_BASIS_CAP, PP_BASIS_EMA, PP_FUND_CAP, PP_FUND_INTERVAL,
    PP_IM, PP_IMPACT, PP_INSTRUMENT, PP_INTEREST, PP_LIQ_FEE, PP_MM, PP_TIER_NOTIONAL, PP_TIER_STEP, R_INVALID_INSTRUMENT_DEFINITION,
    R_NONE, R_NOT_PERPETUAL, R_PRICE_OUT_OF_RANGE, R_UNKNOWN_INSTRUMENT, T_INDEX_PRICE,
    T_PERPETUAL_PARAMS,
)


@njit(**JIT)
def on_perpetual_params(mem, out, i64, b):
    """docs/risk.md ``PerpetualParams``."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    inst = get(i64, b, PP_INSTRUMENT)
    im = signed32(get(i64, b, PP_IM))
    mm = signed32(get(i64, b, PP_MM))
    step = signed32(get(i64, b, PP_TIER_STEP))
    fcap = signed32(get(i64, b, PP_FUND_CAP))
    bcap = signed32(get(i64, b, PP_BASIS_CAP))
    bema = signed32(get(i64, b, PP_BASIS_EMA))
    liq_fee = signed32(get(i64, b, PP_LIQ_FEE))
    interest = signed32(get(i64, b, PP_INTEREST))
    tier = i64[b + PP_TIER_NOTIONAL]
    interval = i64[b + PP_FUND_INTERVAL]  # a uint64 of 2**63 or more reads negative
    impact = i64[b + PP_IMPACT]
    reason = R_NONE
    if not (0 < inst < glob[G_MAX_INSTRUMENTS] and ins[I_DEFINED, inst] != 0):
        reason = R_UNKNOWN_INSTRUMENT
    elif ins[I_KIND, inst] != KIND_PERPETUAL:
        reason = R_NOT_PERPETUAL
    elif (im < 1 or im > PPM or mm < 1 or mm > PPM or tier < 0 or step < 0 or step > PPM
          or interval < 0 or fcap < 0 or fcap > PPM or bcap < 0 or bcap > PPM or bema < 0 or bema > PPM
          or liq_fee < 0 or liq_fee > PPM or interest < -PPM or interest > PPM or impact < 0):
        reason = R_INVALID_INSTRUMENT_DEFINITION
    out = ev.admin_result(out, glob, 0, 0, inst, T_PERPETUAL_PARAMS, reason)
    if reason != R_NONE:
        return out
    ins[I_IM, inst] = im
    ins[I_MM, inst] = mm
    ins[I_TIER_N, inst] = tier
    ins[I_TIER_STEP, inst] = step
    ins[I_FUND_CAP, inst] = fcap
    ins[I_BASIS_CAP, inst] = bcap
    ins[I_BASIS_EMA, inst] = bema
    ins[I_LIQ_FEE, inst] = liq_fee
    ins[I_INTEREST, inst] = interest
    ins[I_IMPACT, inst] = impact
    if interval != ins[I_FUND_INTERVAL, inst]:
        glob[G_FUNDING_N] += (1 if interval != 0 else 0) - (1 if ins[I_FUND_INTERVAL, inst] != 0 else 0)
        ins[I_FUND_INTERVAL, inst] = interval
        ins[I_NEXT_FUND, inst] = next_funding(glob[G_TS], interval)
        premium_restart(ins, inst, glob[G_TS])
    # new margin rates move every holder's liquidation price
    accs = holders(glob, ins, inst)
    for k in range(accs.shape[0]):
        rekey(glob, accs[k], 0)
    return check_all(mem, out)


@njit(**INLINE)
def premium_of(mark, index):
    """(mark - index) / index in ppm, truncated, clamped to +-100%."""
    d = mark - index
    if abs(d) >= index:
        return PPM if d > 0 else -PPM
    r = abs(d) * PPM // index if abs(d) < (1 << 43) else int(abs(d) / index * PPM)
    return r if d >= 0 else -r


@njit(**INLINE)
def premium_upto(ins, inst, t):
    """Add the premium in force times the time since ``I_PREM_T`` to the interval's sum."""
    dt = t - ins[I_PREM_T, inst]
    if dt <= 0:
        return
    p = ins[I_PREMIUM, inst]
    lo = ins[I_PREM_LO, inst] + p * (dt & 0xFFFFFFFF)  # |p| <= 1e6: each product < 2**53
    hi = ins[I_PREM_HI, inst] + p * (dt >> 32)
    carry = lo >> 32
    ins[I_PREM_HI, inst] = hi + carry
    ins[I_PREM_LO, inst] = lo - (carry << 32)
    ins[I_PREM_T, inst] = t


@njit(**INLINE)
def premium_restart(ins, inst, t):
    """A new interval to average over, from ``t``."""
    ins[I_PREM_HI, inst] = 0
    ins[I_PREM_LO, inst] = 0
    ins[I_PREM_T, inst] = t
    ins[I_FUND_START, inst] = t


@njit(**INLINE)
def funding_rate(ins, inst, t):
    """The rate paid at funding time ``t``: the premium's time-weighted average over the
    interval, plus (when interestPpm is set) the interest component clamped to within
    INTEREST_BAND of it, as the leading venues do; clamped to +-fundingCapPpm."""
    premium_upto(ins, inst, t)
    elapsed = t - ins[I_FUND_START, inst]
    if elapsed > 0:
        total = ins[I_PREM_HI, inst] * 4294967296.0 + ins[I_PREM_LO, inst]
        avg = int(total / elapsed)  # IEEE, hence the same on every replay
    else:
        avg = ins[I_PREMIUM, inst]
    premium_restart(ins, inst, t)
    rate = avg
    if ins[I_INTEREST, inst] != 0:  # 0: no interest component, the premium alone
        rate += min(max(ins[I_INTEREST, inst] - avg, -INTEREST_BAND), INTEREST_BAND)
    cap = ins[I_FUND_CAP, inst]
    return min(max(rate, -cap), cap)


@njit(**INLINE)
def next_funding(ts, interval):
    """The first multiple of ``interval`` after ``ts`` (0 when funding is off)."""
    if interval <= 0:
        return 0
    k = ts // interval + 1
    if k > MAX_I64 // interval:
        return MAX_I64
    return k * interval


@njit(**JIT)
def on_index_price(mem, out, i64, b):
    """docs/risk.md ``IndexPrice``: a new index, the mark it gives, then the at-risk check."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    inst = get(i64, b, IX_INSTRUMENT)
    price = i64[b + IX_PRICE]
    reason = R_NONE
    if not (0 < inst < glob[G_MAX_INSTRUMENTS] and ins[I_DEFINED, inst] != 0):
        reason = R_UNKNOWN_INSTRUMENT
    elif ins[I_KIND, inst] != KIND_PERPETUAL:
        reason = R_NOT_PERPETUAL
    else:
        lo, hi = window(ins, glob, inst)
        if price < lo or price > hi:
            reason = R_PRICE_OUT_OF_RANGE
    out = ev.admin_result(out, glob, 0, 0, inst, T_INDEX_PRICE, reason)
    if reason != R_NONE:
        return out
    sample = 0
    levels = glob[G_LEVELS]
    if ins[I_IMPACT, inst] > 0:
        # the leading venues' premium: what a trade of the impact notional would pay on each
        # side against the index, 0 while the index lies between them; a side not that deep
        # gives no sample (issue 13: one 1-lot bid moved the raw mid to the basis cap)
        ib = impact_price(st, inst, 0, ins[I_IMPACT, inst])
        ia = impact_price(st, inst, 1, ins[I_IMPACT, inst])
        if ib > 0.0 and ia > 0.0:
            sample = max(0, int(math.floor(ib)) - price) - max(0, price - int(math.ceil(ia)))
    elif ins[I_BID, inst] >= 0 and ins[I_ASK, inst] < levels:
        tick = ins[I_TICK, inst]
        base = ins[I_BASE, inst]
        bid = (base + ins[I_BID, inst]) * tick
        ask = (base + ins[I_ASK, inst]) * tick
        sample = (bid + ask) // 2 - price
    ema = ins[I_EMA, inst]
    ema += ppm_trunc(sample - ema, ins[I_BASIS_EMA, inst])
    cap = ppm_floor(price, ins[I_BASIS_CAP, inst])
    basis = min(max(ema, -cap), cap)
    lo, hi = window(ins, glob, inst)
    # the mark stays in the book window, where every liquidation and takeover price is
    mark = min(max(price + basis, lo), hi)
    basis = mark - price
    ins[I_EMA, inst] = ema
    ins[I_INDEX, inst] = price
    ins[I_MARK, inst] = mark
    premium_upto(ins, inst, glob[G_TS])
    ins[I_PREMIUM, inst] = premium_of(mark, price)
    out = ev.mark_price(out, glob, inst, mark, price, basis)
    out = check_instrument(mem, out, inst)
    out = check_multi(mem, out)
    if glob[G_AT_RISK] != 0:
        out = check_all(mem, out)
    return out


@njit(**INLINE)
def impact_price(st, inst, sidx, target):
    """The average price at which ``target`` of notional fills against the displayed
    quantity of side ``sidx`` (0: bids, 1: asks), best level first, the last level taken in
    part; -1.0 when the side is not that deep. Float64: a sample, not money."""
    ins, glob, o, lvl, bits = st.ins, st.glob, st.orders, st.levels, st.bits
    levels = glob[G_LEVELS]
    words = glob[G_WORDS]
    book = inst * 2 + sidx
    tick = ins[I_TICK, inst]
    base = ins[I_BASE, inst]
    div = ins[I_NOTIONAL_DIV, inst]
    idx = ins[I_BID, inst] if sidx == 0 else ins[I_ASK, inst]
    left = target
    qty = 0.0
    while 0 <= idx < levels:
        p = (base + idx) * tick
        q = 0
        s = lvl[book * levels + idx, 0]
        while s != -1:
            q += o[s, O_DISP]
            s = o[s, O_NEXT]
        n = notional(ins, inst, p, q)
        if n >= left:
            return target / (qty + left / float(p))
        qty += q / float(div)
        left -= n
        if sidx == 0:
            idx = first_level_at_or_below(bits, book * words, idx - 1)
        else:
            idx = first_level_at_or_above(bits, book * words, words, idx + 1, levels)
    return -1.0


@njit(**JIT)
def funding_due(mem, out):
    """Before a message: fund every perpetual whose funding time has come (ascending id)."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    ts = glob[G_TS]
    funded = False
    for k in range(glob[G_PERP_N]):
        inst = glob[G_PERPS + k]
        interval = ins[I_FUND_INTERVAL, inst]
        if interval != 0 and ts >= ins[I_NEXT_FUND, inst]:
            out = fund(mem, out, inst, funding_rate(ins, inst, ins[I_NEXT_FUND, inst]))
            ins[I_NEXT_FUND, inst] = next_funding(ts, interval)
            funded = True
    if funded:
        out = check_all(mem, out)
    return out


@njit(**JIT)
def fund(mem, out, inst, rate):
    """One funding payment of ``inst``: each position pays or receives rate * its notional at
    mark, the payers' amounts rounded up and the receivers' down; what rounding leaves over
    goes to the insurance fund (account 0), so the money balances exactly."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    wallet, pos = st.wallet, st.pos
    maxi = glob[G_MAX_INSTRUMENTS]
    assets = glob[G_MAX_ASSETS]
    mark = ins[I_MARK, inst]
    index = ins[I_INDEX, inst]
    div = ins[I_NOTIONAL_DIV, inst]
    accs = holders(glob, ins, inst)
    paid = 0
    received = 0
    if rate != 0:
        for k in range(accs.shape[0] + 1):
            acc = accs[k] if k < accs.shape[0] else 0  # the insurance fund's takeovers pay too
            q = pos[acc * maxi + inst, P_QTY]
            if q == 0:
                continue
            v = mark * abs(q)  # inside int64: the position limit keeps it there
            if (q > 0) == (rate > 0):
                x = div_ceil(ppm_ceil(v, abs(rate)), div)
                wallet[acc * assets, W_BAL] -= x
                paid += x
            else:
                x = ppm_floor(v, abs(rate)) // div
                wallet[acc * assets, W_BAL] += x
                received += x
        wallet[0, W_BAL] += paid - received
    out = ev.funding_applied(out, glob, inst, mark, index, paid - received, paid, rate)
    for k in range(accs.shape[0]):
        rekey(glob, accs[k], 0)
    return out
