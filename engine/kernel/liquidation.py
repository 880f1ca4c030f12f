"""Liquidation of perpetual futures (docs/risk.md "Liquidation").

* ``check_all`` / ``check_instrument`` / ``check_account`` find the accounts a price move or a
  fill put at or past their liquidation price: only those at the top of an instrument's
  at-risk heaps (``ringex.engine.kernel.heap``), plus the few holding several perpetuals.
* ``liquidate`` takes one account through the stages: cancel its orders, pay the liquidation
  fee to the insurance fund, reduce through the book down to its bankruptcy price, hand the
  rest to the insurance fund or, when the fund cannot carry it, auto-deleverage the most
  profitable, most leveraged opposite positions, for exactly the amount that leaves the
  account's equity at zero (no fee, issue 13, defect 6); cover a negative balance from the
  fund's equity, never beyond it (defect 5), or leave the debt on an account that still
  holds other assets (defect 7). Every step is an event.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import tables, views
from ringex.engine.kernel.book import acquire, has_free_slot
from ringex.engine.kernel.fixed import notional, ppm_ceil, signed_value, window
from ringex.engine.kernel.flags import INLINE, JIT
from ringex.engine.kernel.heap import heap_top, holders
from ringex.engine.kernel.margin import _mul_div_trunc, account_risk, apply_transfer, mm_of, rekey
from ringex.engine.kernel.matching import remove_order, run_aggressor, stops_after
from ringex.engine.kernel.state import (
    A_DEBT, A_LIVE_HEAD, A_MNEXT, G_AT_RISK, G_DEBTORS, G_FEES, G_MAX_ASSETS, G_MAX_INSTRUMENTS, G_MULTI_HEAD,
    G_NEXT_ORDER_ID, G_PERP_N, G_PERPS, I_BASE, I_LIQ_FEE, I_MARK, I_NOTIONAL_DIV, I_STATUS, I_TAKER_FEE, I_TICK,
    O_ANEXT, O_CLORD, O_DISP, O_DSIZE, O_FILLED, O_HIDDEN, O_HOLD, O_LEAVES, O_LEVEL, O_OPEN, O_POST,
    O_PRICE, O_QTY, O_REDUCE, O_RPRICE, O_SESS, O_SIDE, O_STOP, O_STP, O_TIF, O_TYPE, P_COST, P_QTY,
    W_BAL,
)
from ringex.engine.wire.layout import (
    BUY, CXL_LIQUIDATION, IOC, LIMIT, LIQ_ADL, LIQ_BOOK_ORDER, LIQ_DONE, LIQ_FEE, LIQ_FEE_COVER,
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
    """The limit of the liquidation's book order: the price of ``inst`` at which closing the
    account's position there, paying the taker fee, leaves its equity at 0, rounded to a
    tick away from the book (a fill there never leaves a deficit), in the window."""
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
def bankrupt_amount(glob, acc, inst):
    """What the account's whole position in ``inst`` changes hands for in a takeover or
    deleveraging: the amount that leaves its equity at exactly 0 (its other positions at
    mark), with no fee; never below 0 (a position is never paid to be taken). An account
    that holds other assets is never carried past the mark by others: its position goes at
    its value at mark and what it still owes stays its debt (docs/risk.md stage 5)."""
    rt = tables(glob)
    ins, pos, wallet = rt.ins, rt.pos, rt.wallet
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    q = pos[acc * glob[G_MAX_INSTRUMENTS] + inst, P_QTY]
    v = signed_value(ins, inst, ins[I_MARK, inst], q)
    eo = eq - v  # equity without this position
    n = -eo if q > 0 else eo  # a long sells for it, a short pays it to buy back
    if holds_other_assets(wallet, acc, glob[G_MAX_ASSETS]):
        n = min(n, v) if q > 0 else max(n, -v)
    return max(n, 0)


@njit(**INLINE)
def price_of(ins, inst, n, q):
    """The price a transfer of ``q`` for ``n`` works out at (reported, not charged)."""
    return _mul_div_trunc(n, ins[I_NOTIONAL_DIV, inst], abs(q))


@njit(**JIT)
def transfer(glob, frm, to, inst, q, n):
    """Move ``q`` (signed as ``frm``'s position) of ``frm``'s position to ``to`` for ``n``:
    a trade between them without fees."""
    rt = tables(glob)
    wallet = rt.wallet
    assets = glob[G_MAX_ASSETS]
    if q > 0:  # frm sells to to
        wallet[frm * assets, W_BAL] += n
        wallet[to * assets, W_BAL] -= n
    else:
        wallet[frm * assets, W_BAL] -= n
        wallet[to * assets, W_BAL] += n
    apply_transfer(glob, frm, inst, -q, n)
    apply_transfer(glob, to, inst, q, n)
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
def take_over(mem, out, acc, inst):
    """Stage 3b: what is left of the position goes to the insurance fund for the bankrupt
    amount if the fund can carry it, else to the opposite side by auto-deleveraging."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    pos = st.pos
    maxi = glob[G_MAX_INSTRUMENTS]
    q = pos[acc * maxi + inst, P_QTY]
    mark = ins[I_MARK, inst]
    n = bankrupt_amount(glob, acc, inst)
    bp = price_of(ins, inst, n, q)
    eq0, im0, mm0 = account_risk(glob, 0, 0, 0, 0, 0)
    q0 = pos[inst, P_QTY]  # account 0's row
    after = eq0 + signed_value(ins, inst, mark, q0 + q) - signed_value(ins, inst, mark, q0) - (n if q > 0 else -n)
    div = ins[I_NOTIONAL_DIV, inst]
    mm_after = mm0 - mm_of(ins, inst, mark * abs(q0) // div) + mm_of(ins, inst, mark * abs(q0 + q) // div)
    if after >= mm_after:  # the fund stays above its own maintenance margin
        transfer(glob, acc, 0, inst, q, n)
        eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
        return ev.liquidation(out, glob, LIQ_TAKEOVER, acc, inst, q, bp, n, eq, mm, 0)
    return deleverage(mem, out, acc, inst, n)


@njit(**JIT)
def deleverage(mem, out, acc, inst, total):
    """Auto-deleveraging: the opposite positions, most profitable and most leveraged first,
    close against the account for the bankrupt amount ``total``, shared in proportion to
    what each takes (the shares add up to ``total`` exactly) until nothing is left."""
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
    aq = abs(q)
    bp = price_of(ins, inst, total, q)
    moved = 0  # of the amount, for the quantity moved so far
    for k in range(c):
        if left == 0:
            break
        j = cand[order[k]]
        qj = pos[j * maxi + inst, P_QTY]
        take = min(abs(left), abs(qj))
        part = take if left > 0 else -take
        left -= part
        upto = total if left == 0 else _mul_div_trunc(total, aq - abs(left), aq)
        n = transfer(glob, acc, j, inst, part, upto - moved)
        moved = upto
        eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
        out = ev.liquidation(out, glob, LIQ_ADL, acc, inst, part, bp, n, eq, mm, j)
    if left != 0:
        # positions sum to zero, so the opposite side always covers it; should that ever
        # not hold, the fund takes the rest rather than leave the account half liquidated
        n = transfer(glob, acc, 0, inst, left, total - moved)
        eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
        out = ev.liquidation(out, glob, LIQ_TAKEOVER, acc, inst, left, bp, n, eq, mm, 0)
    return out


@njit(**INLINE)
def holds_other_assets(wallet, acc, assets):
    for a in range(1, assets):
        if wallet[acc * assets + a, W_BAL] > 0:
            return True
    return False


@njit(**JIT)
def liquidation_fee(mem, out, acc, inst, q):
    """Stage 2b: the insurance fund takes liquidationFeePpm of the position's notional at
    mark, out of what equity the account has left (never more)."""
    st = views(mem)
    ins, glob, wallet = st.ins, st.glob, st.wallet
    mark = ins[I_MARK, inst]
    eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
    fee = min(ppm_ceil(notional(ins, inst, mark, abs(q)), ins[I_LIQ_FEE, inst]), max(eq, 0))
    if fee == 0:
        return out
    wallet[acc * glob[G_MAX_ASSETS], W_BAL] -= fee
    wallet[0, W_BAL] += fee
    return ev.liquidation(out, glob, LIQ_FEE, acc, inst, q, mark, fee, eq - fee, mm, 0)


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
        if ins[I_LIQ_FEE, inst] != 0:
            out = liquidation_fee(mem, out, acc, inst, q)
        bp = bankruptcy_price(glob, acc, inst)
        if ins[I_STATUS, inst] == TRADING and has_free_slot(glob):
            out = book_order(mem, out, acc, inst, q, bp)
        if pos[acc * maxi + inst, P_QTY] != 0:
            out = take_over(mem, out, acc, inst)
    bal = wallet[acc * assets, W_BAL]
    if bal < 0 and holds_other_assets(wallet, acc, assets):
        # docs/risk.md stage 5: the debt stays on the account, which may neither trade nor
        # withdraw until a deposit repays it (its other assets are its creditors' security)
        if acct[A_DEBT, acc] == 0:
            acct[A_DEBT, acc] = 1
            glob[G_DEBTORS] += 1
    elif bal < 0:
        # the fund covers what its equity can, never more: its cash may be margin for the
        # positions it took over (issue 13, defect 5)
        eq0, im0, mm0 = account_risk(glob, 0, 0, 0, 0, 0)
        x = min(-bal, max(min(wallet[0, W_BAL], eq0), 0))
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
