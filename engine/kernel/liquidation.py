"""Liquidation of perpetual futures (docs/risk.md "Liquidation").

* ``check_all`` / ``check_instrument`` / ``check_account`` find the accounts a price move or a
  fill put at or past their liquidation price: only those at the top of an instrument's
  at-risk heaps (``ringex.engine.kernel.heap``), plus the few holding several perpetuals.
* ``liquidate`` takes one account through the stages: cancel its orders, reduce through the
  book down to its bankruptcy price, hand the rest to the insurance fund or, when the fund
  cannot carry it, auto-deleverage the most profitable, most leveraged opposite positions;
  cover a negative balance. Every step is an event.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import tables, views
from ringex.engine.kernel.book import acquire, has_free_slot
from ringex.engine.kernel.fixed import notional, signed_value, window
from ringex.engine.kernel.flags import JIT
from ringex.engine.kernel.heap import heap_top, holders
from ringex.engine.kernel.margin import account_risk, apply_fill, mm_of, rekey
from ringex.engine.kernel.matching import remove_order, run_aggressor, stops_after
from ringex.engine.kernel.state import (
    A_LIVE_HEAD, A_MNEXT, G_AT_RISK, G_FEES, G_MAX_ASSETS, G_MAX_INSTRUMENTS, G_MULTI_HEAD,
    G_NEXT_ORDER_ID, G_PERP_N, G_PERPS, I_BASE, I_MARK, I_NOTIONAL_DIV, I_STATUS, I_TAKER_FEE, I_TICK,
    O_ANEXT, O_CLORD, O_DISP, O_DSIZE, O_FILLED, O_HIDDEN, O_HOLD, O_LEAVES, O_LEVEL, O_OPEN, O_POST,
    O_PRICE, O_QTY, O_REDUCE, O_RPRICE, O_SESS, O_SIDE, O_STOP, O_STP, O_TIF, O_TYPE, P_COST, P_QTY,
    W_BAL,
)
from ringex.engine.wire.layout import (
    BUY, CXL_LIQUIDATION, IOC, LIMIT, LIQ_ADL, LIQ_BOOK_ORDER, LIQ_DONE, LIQ_FEE_COVER,
    LIQ_INSURANCE_COVER, LIQ_START, LIQ_TAKEOVER, SELL, STP_OFF, TRADING,
)

CHECK_ROUNDS = 8

# -- finding the accounts at risk ----------------------------------------------------------------


@njit(**JIT)
def check_account(mem, out, acc):
    """Liquidate ``acc`` if its equity is below its maintenance margin; otherwise re-key it
    past the current marks (it was just found safe there)."""
    st = views(mem)
    glob = st.glob
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    if eq < mm:
        return liquidate(mem, out, acc)
    rekey(glob, acc, 1)
    return out


@njit(**JIT)
def check_instrument(mem, out, inst):
    """Pop the accounts whose liquidation price the mark of ``inst`` has reached."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    heap = st.heap
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
    acct, glob = st.acct, st.glob
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
    glob = views(mem).glob
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
    rt = tables(glob)
    ins, pos = rt.ins, rt.pos
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
    rt = tables(glob)
    ins, wallet = rt.ins, rt.wallet
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
    o, ins, glob = st.orders, st.ins, st.glob
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
    ins, glob = st.ins, st.glob
    pos = st.pos
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
    ins, glob = st.ins, st.glob
    pos = st.pos
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
    o, ins, acct, glob = st.orders, st.ins, st.acct, st.glob
    wallet, pos = st.wallet, st.pos
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
