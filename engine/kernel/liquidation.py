"""Mark prices, funding and liquidation of perpetual futures (docs/risk.md).

* ``on_index_price`` moves an instrument's mark (index plus a smoothed, clamped basis) and
  then looks for the accounts it put at risk: only those at the top of the instrument's
  at-risk heaps (``ringex.engine.kernel.heap``), plus the few accounts holding several perpetuals.
* ``funding_due`` runs before each message: every perpetual whose funding time has come
  pays per lot, longs to shorts or the reverse; the sums cancel exactly.
* ``liquidate`` takes one account through the stages: cancel its orders, reduce through the
  book down to its bankruptcy price, hand the rest to the insurance fund or, when the fund
  cannot carry it, auto-deleverage the most profitable, most leveraged opposite positions;
  cover a negative balance. Every step is an event.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import risk_tables, risk_views, views
from ringex.engine.kernel.book import acquire, has_free_slot
from ringex.engine.kernel.events import get
from ringex.engine.kernel.fixed import PPM, notional, ppm_floor, ppm_trunc, signed32, signed_value, window
from ringex.engine.kernel.heap import heap_top
from ringex.engine.wire.layout import (
    BUY, CXL_LIQUIDATION, IOC, IX_INSTRUMENT, IX_PRICE, KIND_PERPETUAL, LIMIT, LIQ_ADL,
    LIQ_BOOK_ORDER, LIQ_DONE, LIQ_FEE_COVER, LIQ_INSURANCE_COVER, LIQ_START, LIQ_TAKEOVER,
    PP_BASIS_CAP, PP_BASIS_EMA, PP_FUND_CAP, PP_FUND_INTERVAL, PP_IM, PP_INSTRUMENT, PP_MM,
    PP_TIER_NOTIONAL, PP_TIER_STEP, R_INVALID_INSTRUMENT_DEFINITION, R_NONE, R_NOT_PERPETUAL,
    R_PRICE_OUT_OF_RANGE, R_UNKNOWN_INSTRUMENT, SELL, STP_OFF, T_INDEX_PRICE, T_PERPETUAL_PARAMS,
    TRADING,
)
from ringex.engine.kernel.margin import account_risk, apply_fill, mm_of, rekey
from ringex.engine.kernel.matching import remove_order, run_aggressor, stops_after
from ringex.engine.kernel.state import (
    A_LIVE_HEAD, A_MNEXT, G_AT_RISK, G_FEES, G_FUNDING_N, G_LEVELS, G_MAX_ACCOUNTS, G_MAX_ASSETS,
    G_MAX_INSTRUMENTS, G_MULTI_HEAD, G_NEXT_ORDER_ID, G_PERP_N, G_PERPS, G_TS, I_ASK, I_BASE,
    I_BASIS_CAP, I_BASIS_EMA, I_BID, I_DEFINED, I_EMA, I_FUND_CAP, I_FUND_INTERVAL, I_HEAP_LONG,
    I_IM, I_INDEX, I_KIND, I_LOT, I_MARK, I_MM, I_NEXT_FUND, I_NOTIONAL_DIV, I_STATUS,
    I_TAKER_FEE, I_TICK, I_TIER_N, I_TIER_STEP, O_ANEXT, O_CLORD, O_DISP, O_DSIZE, O_FILLED,
    O_HIDDEN, O_HOLD, O_LEAVES, O_LEVEL, O_OPEN, O_POST, O_PRICE, O_QTY, O_REDUCE, O_RPRICE,
    O_SESS, O_SIDE, O_STOP, O_STP, O_TIF, O_TYPE, P_COST, P_QTY, W_BAL,
)

JIT = dict(cache=True, nogil=True, error_model="numpy")
INLINE = dict(JIT, inline="always")
MAX_I64 = (1 << 63) - 1
CHECK_ROUNDS = 8


@njit(**JIT)
def holders(glob, ins, inst):
    """The accounts holding a position in ``inst`` (the insurance fund excepted), heap order."""
    wallet, pos, heap = risk_views(glob)
    maxa = glob[G_MAX_ACCOUNTS]
    n0 = ins[I_HEAP_LONG, inst]
    n1 = ins[I_HEAP_LONG + 1, inst]
    out = np.empty(n0 + n1, dtype=np.int64)
    for i in range(n0):
        out[i] = heap[(inst * 2) * maxa + i, 1]
    for i in range(n1):
        out[n0 + i] = heap[(inst * 2 + 1) * maxa + i, 1]
    return out


# -- admin messages ----------------------------------------------------------------------------

@njit(**JIT)
def on_perpetual_params(mem, out, i64, b):
    """docs/risk.md ``PerpetualParams``."""
    st = views(mem)
    ins, glob = st[3], st[6]
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
    wallet, pos, heap = risk_views(glob)
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
    ins, glob = st[3], st[6]
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


# -- funding -----------------------------------------------------------------------------------

@njit(**JIT)
def funding_due(mem, out):
    """Before a message: fund every perpetual whose funding time has come (ascending id)."""
    st = views(mem)
    ins, glob = st[3], st[6]
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
    ins, glob = st[3], st[6]
    wallet, pos, heap = risk_views(glob)
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


# -- finding the accounts at risk ----------------------------------------------------------------

@njit(**JIT)
def check_account(mem, out, acc):
    """Liquidate ``acc`` if its equity is below its maintenance margin; otherwise re-key it
    past the current marks (it was just found safe there)."""
    st = views(mem)
    ins, glob = st[3], st[6]
    wallet, pos, heap = risk_views(glob)
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    if eq < mm:
        return liquidate(mem, out, acc)
    rekey(glob, acc, 1)
    return out


@njit(**JIT)
def check_instrument(mem, out, inst):
    """Pop the accounts whose liquidation price the mark of ``inst`` has reached."""
    st = views(mem)
    ins, glob = st[3], st[6]
    wallet, pos, heap = risk_views(glob)
    while True:
        key, acc = heap_top(heap, glob, ins, inst, 0)
        if acc == -1 or -key < ins[I_MARK, inst]:
            break
        out = check_account(mem, out, acc)
    while True:
        key, acc = heap_top(heap, glob, ins, inst, 1)
        if acc == -1 or key > ins[I_MARK, inst]:
            break
        out = check_account(mem, out, acc)
    return out


@njit(**JIT)
def check_multi(mem, out):
    """Accounts holding several perpetuals: any mark may move their other liquidation prices."""
    st = views(mem)
    acct, glob = st[4], st[6]
    acc = glob[G_MULTI_HEAD]
    if acc == -1:
        return out
    n = 0
    while acc != -1:
        n += 1
        acc = acct[A_MNEXT, acc]
    accs = np.empty(n, dtype=np.int64)
    acc = glob[G_MULTI_HEAD]
    for k in range(n):
        accs[k] = acc
        acc = acct[A_MNEXT, acc]
    for k in range(n):
        out = check_account(mem, out, accs[k])
    return out


@njit(**JIT)
def check_all(mem, out):
    """Every perpetual's at-risk heaps and the multi-instrument accounts, until nothing a
    liquidation did puts another account at risk (bounded rounds)."""
    glob = views(mem)[6]
    for _ in range(CHECK_ROUNDS):
        glob[G_AT_RISK] = 0
        for k in range(glob[G_PERP_N]):
            out = check_instrument(mem, out, glob[G_PERPS + k])
        out = check_multi(mem, out)
        if glob[G_AT_RISK] == 0:
            break
    glob[G_AT_RISK] = 0
    return out


# -- liquidation -----------------------------------------------------------------------------

@njit(**JIT)
def bankruptcy_price(glob, acc, inst):
    """The price of ``inst`` at which closing the account's position there (paying the taker
    fee) leaves its equity at 0, rounded to a tick in the account's favour, in the window."""
    ins, acct, wallet, pos, heap = risk_tables(glob)
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    q = pos[acc * glob[G_MAX_INSTRUMENTS] + inst, P_QTY]
    mark = ins[I_MARK, inst]
    eo = float(eq - signed_value(ins, inst, mark, q))
    div = float(ins[I_NOTIONAL_DIV, inst])
    fee = ins[I_TAKER_FEE, inst] / 1e6
    tick = ins[I_TICK, inst]
    lo, hi = window(ins, glob, inst)
    if q > 0:
        x = -eo * div / (q * (1.0 - fee)) if fee < 1.0 else 1e300
        if x >= hi:
            return hi
        if x <= lo:
            return lo
        p = int(np.ceil(x / tick)) * tick
    else:
        x = eo * div / ((-q) * (1.0 + fee))
        if x >= hi:
            return hi
        if x <= lo:
            return lo
        p = int(np.floor(x / tick)) * tick
    return min(max(p, lo), hi)


@njit(**JIT)
def transfer(glob, frm, to, inst, q, price):
    """Move ``q`` (signed as ``frm``'s position) of ``frm``'s position to ``to`` at ``price``:
    a trade between them without fees."""
    ins, acct, wallet, pos, heap = risk_tables(glob)
    assets = glob[G_MAX_ASSETS]
    n = notional(ins, inst, price, abs(q))
    if q > 0:  # frm sells to to
        wallet[frm * assets, W_BAL] += n
        wallet[to * assets, W_BAL] -= n
    else:
        wallet[frm * assets, W_BAL] -= n
        wallet[to * assets, W_BAL] += n
    apply_fill(glob, frm, inst, -q, price)
    apply_fill(glob, to, inst, q, price)
    rekey(glob, to, 0)
    return n


@njit(**JIT)
def book_order(mem, out, acc, inst, q, bp):
    """Stage 3a: an IOC limit order for the whole position at the bankruptcy price."""
    st = views(mem)
    o, ins, glob = st[0], st[3], st[6]
    wallet, pos, heap = risk_views(glob)
    oid = glob[G_NEXT_ORDER_ID]
    glob[G_NEXT_ORDER_ID] = oid + 1
    s = acquire(st, oid, inst, acc)
    side = SELL if q > 0 else BUY
    qty = abs(q)
    o[s, O_PRICE] = bp
    o[s, O_QTY] = qty
    o[s, O_LEAVES] = qty
    o[s, O_DISP] = 0
    o[s, O_HIDDEN] = 0
    o[s, O_DSIZE] = 0
    o[s, O_FILLED] = 0
    o[s, O_CLORD] = 0
    o[s, O_STOP] = 0
    o[s, O_SESS] = 0
    o[s, O_SIDE] = side
    o[s, O_TYPE] = LIMIT
    o[s, O_TIF] = IOC
    o[s, O_POST] = 0
    o[s, O_REDUCE] = 2  # reduce-only, and exempt from the loss check: it takes the loss
    o[s, O_STP] = STP_OFF
    o[s, O_LEVEL] = bp // ins[I_TICK, inst] - ins[I_BASE, inst]
    o[s, O_RPRICE] = bp
    o[s, O_HOLD] = 0
    o[s, O_OPEN] = 0
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    out = ev.liquidation(out, glob, LIQ_BOOK_ORDER, acc, inst, q, bp, 0, eq, mm, 0)
    out = ev.order_accepted(out, glob, oid, 0, bp, qty, 0, 0, 0, acc, inst, side, LIMIT, IOC, 0, 1)
    out = run_aggressor(mem, out, s)
    return stops_after(mem, out, inst)


@njit(**JIT)
def take_over(mem, out, acc, inst, bp):
    """Stage 3b: what is left of the position goes to the insurance fund at the bankruptcy
    price if the fund can carry it, else to the opposite side by auto-deleveraging."""
    st = views(mem)
    ins, acct, glob = st[3], st[4], st[6]
    wallet, pos, heap = risk_views(glob)
    maxi = glob[G_MAX_INSTRUMENTS]
    q = pos[acc * maxi + inst, P_QTY]
    mark = ins[I_MARK, inst]
    n = notional(ins, inst, bp, abs(q))
    eq0, im0, mm0 = account_risk(glob, 0, 0, 0, 0, 0)
    q0 = pos[inst, P_QTY]  # account 0's row
    after = eq0 + signed_value(ins, inst, mark, q0 + q) - signed_value(ins, inst, mark, q0) - (n if q > 0 else -n)
    div = ins[I_NOTIONAL_DIV, inst]
    mm_after = mm0 - mm_of(ins, inst, mark * abs(q0) // div) + mm_of(ins, inst, mark * abs(q0 + q) // div)
    if after >= mm_after:  # the fund stays above its own maintenance margin
        transfer(glob, acc, 0, inst, q, bp)
        eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
        return ev.liquidation(out, glob, LIQ_TAKEOVER, acc, inst, q, bp, n, eq, mm, 0)
    return deleverage(mem, out, acc, inst, bp)


@njit(**JIT)
def deleverage(mem, out, acc, inst, bp):
    """Auto-deleveraging: the opposite positions, most profitable and most leveraged first,
    close against the account at the bankruptcy price until nothing is left."""
    st = views(mem)
    ins, acct, glob = st[3], st[4], st[6]
    wallet, pos, heap = risk_views(glob)
    maxi = glob[G_MAX_INSTRUMENTS]
    q = pos[acc * maxi + inst, P_QTY]
    mark = ins[I_MARK, inst]
    accs = holders(glob, ins, inst)
    m = accs.shape[0]
    cand = np.empty(m + 1, dtype=np.int64)
    group = np.empty(m + 1, dtype=np.int64)
    score = np.empty(m + 1, dtype=np.float64)
    c = 0
    for k in range(m + 1):
        j = accs[k] if k < m else 0
        qj = pos[j * maxi + inst, P_QTY]
        if j == acc or qj == 0 or (qj > 0) == (q > 0):
            continue
        v = signed_value(ins, inst, mark, qj)
        pnl = v - pos[j * maxi + inst, P_COST]
        eqj, imj, mmj = account_risk(glob, j, 0, 0, 0, 0)
        cand[c] = j
        if eqj <= 0:
            group[c] = 2
            score[c] = 0.0
        else:
            group[c] = 0 if pnl > 0 else 1
            score[c] = -(pnl / max(abs(pos[j * maxi + inst, P_COST]), 1)) * (abs(v) / eqj)
        c += 1
    cand = cand[:c]
    group = group[:c]
    score = score[:c]
    # ascending account id, then score (best first: stored negated), then group: stable sorts
    order = np.argsort(cand, kind="mergesort")
    order = order[np.argsort(score[order], kind="mergesort")]
    order = order[np.argsort(group[order], kind="mergesort")]
    left = q
    for k in range(c):
        if left == 0:
            break
        j = cand[order[k]]
        qj = pos[j * maxi + inst, P_QTY]
        take = min(abs(left), abs(qj))
        part = take if left > 0 else -take
        n = transfer(glob, acc, j, inst, part, bp)
        left -= part
        eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
        out = ev.liquidation(out, glob, LIQ_ADL, acc, inst, part, bp, n, eq, mm, j)
    if left != 0:
        # positions sum to zero, so the opposite side always covers it; should that ever
        # not hold, the fund takes the rest rather than leave the account half liquidated
        n = transfer(glob, acc, 0, inst, left, bp)
        eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
        out = ev.liquidation(out, glob, LIQ_TAKEOVER, acc, inst, left, bp, n, eq, mm, 0)
    return out


@njit(**JIT)
def liquidate(mem, out, acc):
    """docs/risk.md "Liquidation", stages 1-5, for one account."""
    st = views(mem)
    o, ins, acct, glob = st[0], st[3], st[4], st[6]
    wallet, pos, heap = risk_views(glob)
    maxi = glob[G_MAX_INSTRUMENTS]
    assets = glob[G_MAX_ASSETS]
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    out = ev.liquidation(out, glob, LIQ_START, acc, 0, 0, 0, 0, eq, mm, 0)
    s = acct[A_LIVE_HEAD, acc]
    while s != -1:
        nxt = o[s, O_ANEXT]
        out = remove_order(mem, out, s, np.int64(CXL_LIQUIDATION))
        s = nxt
    for k in range(glob[G_PERP_N]):
        inst = glob[G_PERPS + k]
        q = pos[acc * maxi + inst, P_QTY]
        if q == 0:
            continue
        bp = bankruptcy_price(glob, acc, inst)
        if ins[I_STATUS, inst] == TRADING and has_free_slot(glob):
            out = book_order(mem, out, acc, inst, q, bp)
        if pos[acc * maxi + inst, P_QTY] != 0:
            out = take_over(mem, out, acc, inst, bp)
    bal = wallet[acc * assets, W_BAL]
    if bal < 0:
        x = min(-bal, max(wallet[0, W_BAL], 0))
        if x > 0:
            wallet[0, W_BAL] -= x
            wallet[acc * assets, W_BAL] += x
            out = ev.liquidation(out, glob, LIQ_INSURANCE_COVER, acc, 0, 0, 0, x,
                                 wallet[acc * assets, W_BAL], 0, 0)
        rest = -wallet[acc * assets, W_BAL]
        if rest > 0:
            glob[G_FEES] -= rest
            wallet[acc * assets, W_BAL] += rest
            out = ev.liquidation(out, glob, LIQ_FEE_COVER, acc, 0, 0, 0, rest, 0, 0, 0)
    rekey(glob, acc, 0)
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    return ev.liquidation(out, glob, LIQ_DONE, acc, 0, 0, 0, 0, eq, mm, 0)
