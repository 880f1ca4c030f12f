"""Mark prices and funding of perpetual futures (docs/risk.md "Mark price", "Funding").

* ``on_perpetual_params`` sets a perpetual's margin and funding parameters (admin).
* ``on_index_price`` moves an instrument's mark (index plus a smoothed, clamped basis) and
  then looks for the accounts it put at risk (``liquidation.check_instrument``).
* ``funding_due`` runs before each message: every perpetual whose funding time has come
  pays per lot, longs to shorts or the reverse; the sums cancel exactly.
"""

from __future__ import annotations

from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import views
from ringex.engine.kernel.events import get
from ringex.engine.kernel.fixed import notional, ppm_floor, ppm_trunc, signed32, window
from ringex.engine.kernel.flags import INLINE, JIT, MAX_I64, PPM
from ringex.engine.kernel.heap import holders
from ringex.engine.kernel.liquidation import check_all, check_instrument, check_multi
from ringex.engine.kernel.margin import rekey
from ringex.engine.kernel.state import (
    G_AT_RISK, G_FUNDING_N, G_LEVELS, G_MAX_ASSETS, G_MAX_INSTRUMENTS, G_PERP_N, G_PERPS, G_TS, I_ASK,
    I_BASE, I_BASIS_CAP, I_BASIS_EMA, I_BID, I_DEFINED, I_EMA, I_FUND_CAP, I_FUND_INTERVAL, I_IM,
    I_INDEX, I_KIND, I_LOT, I_MARK, I_MM, I_NEXT_FUND, I_TICK, I_TIER_N, I_TIER_STEP, P_QTY, W_BAL,
)
from ringex.engine.wire.layout import (
    IX_INSTRUMENT, IX_PRICE, KIND_PERPETUAL, PP_BASIS_CAP, PP_BASIS_EMA, PP_FUND_CAP, PP_FUND_INTERVAL,
    PP_IM, PP_INSTRUMENT, PP_MM, PP_TIER_NOTIONAL, PP_TIER_STEP, R_INVALID_INSTRUMENT_DEFINITION,
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
    tier = i64[b + PP_TIER_NOTIONAL]
    interval = i64[b + PP_FUND_INTERVAL]  # a uint64 of 2**63 or more reads negative
    reason = R_NONE
    if not (0 < inst < glob[G_MAX_INSTRUMENTS] and ins[I_DEFINED, inst] != 0):
        reason = R_UNKNOWN_INSTRUMENT
    elif ins[I_KIND, inst] != KIND_PERPETUAL:
        reason = R_NOT_PERPETUAL
    elif (im < 1 or im > PPM or mm < 1 or mm > PPM or tier < 0 or step < 0 or step > PPM
          or interval < 0 or fcap < 0 or fcap > PPM or bcap < 0 or bcap > PPM or bema < 0 or bema > PPM):
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
    if interval != ins[I_FUND_INTERVAL, inst]:
        glob[G_FUNDING_N] += (1 if interval != 0 else 0) - (1 if ins[I_FUND_INTERVAL, inst] != 0 else 0)
        ins[I_FUND_INTERVAL, inst] = interval
        ins[I_NEXT_FUND, inst] = next_funding(glob[G_TS], interval)
    # new margin rates move every holder's liquidation price
    accs = holders(glob, ins, inst)
    for k in range(accs.shape[0]):
        rekey(glob, accs[k], 0)
    return check_all(mem, out)


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
    if ins[I_BID, inst] >= 0 and ins[I_ASK, inst] < levels:
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
    out = ev.mark_price(out, glob, inst, mark, price, basis)
    out = check_instrument(mem, out, inst)
    out = check_multi(mem, out)
    if glob[G_AT_RISK] != 0:
        out = check_all(mem, out)
    return out


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
            out = fund(mem, out, inst)
            ins[I_NEXT_FUND, inst] = next_funding(ts, interval)
            funded = True
    if funded:
        out = check_all(mem, out)
    return out


@njit(**JIT)
def fund(mem, out, inst):
    """One funding payment of ``inst``: per lot, so longs' and shorts' payments cancel."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    wallet, pos = st.wallet, st.pos
    maxi = glob[G_MAX_INSTRUMENTS]
    assets = glob[G_MAX_ASSETS]
    mark = ins[I_MARK, inst]
    index = ins[I_INDEX, inst]
    d = mark - index
    if abs(d) < (1 << 43):
        r = abs(d) * PPM // index
    else:
        r = int(abs(d) / index * PPM)
    rate = r if d >= 0 else -r
    cap = ins[I_FUND_CAP, inst]
    rate = min(max(rate, -cap), cap)
    lot = ins[I_LOT, inst]
    per_lot = ppm_trunc(notional(ins, inst, mark, lot), rate)
    accs = holders(glob, ins, inst)
    total = 0
    for k in range(accs.shape[0] + 1):
        acc = accs[k] if k < accs.shape[0] else 0  # the insurance fund's takeovers pay too
        q = pos[acc * maxi + inst, P_QTY]
        if q == 0:
            continue
        pay = per_lot * (q // lot)
        wallet[acc * assets, W_BAL] -= pay
        if pay > 0:
            total += pay
    out = ev.funding_applied(out, glob, inst, mark, index, per_lot, total, rate)
    for k in range(accs.shape[0]):
        rekey(glob, accs[k], 0)
    return out
