"""Perpetual futures: positions, cross margin, and each account's place in the at-risk index.

docs/risk.md "Perpetual futures" and "Liquidation" are the contract. An account's cash is
its asset-0 balance; its equity is that plus the value of its positions at mark. Initial
margin (for accepting orders and withdrawals) counts open orders at their worst; maintenance
margin (for liquidation) counts positions only. Every change of an account's cash or
positions ends in ``rekey``, which places it in its instruments' at-risk heaps by the mark at
which it would become liquidatable. Keys are computed in float64 (IEEE arithmetic, so
deterministic) and only ever used to find candidates early: the decision to liquidate is
the exact integer comparison ``equity < maintenance``.
"""

from __future__ import annotations

import math

from numba import njit

from ringex.engine.kernel.flags import INLINE, JIT, PPM
from ringex.engine.kernel.arena import tables
from ringex.engine.kernel.fixed import div_ceil, fee_step, notional, ppm_ceil, signed_value, window
from ringex.engine.kernel.heap import heap_remove, heap_set
from ringex.engine.wire.layout import BUY, R_INSUFFICIENT_MARGIN, R_NONE, R_POSITION_LIMIT, R_REDUCE_ONLY
from ringex.engine.kernel.state import (
    A_MNEXT, A_MPREV, A_NPOS, G_AT_RISK, G_MAX_ACCOUNTS, G_MAX_ASSETS,
    G_MAX_INSTRUMENTS, G_MULTI_HEAD, G_PERPS, G_PERP_N, I_IM, I_MAKER_FEE, I_MARK, I_MM, I_NOTIONAL_DIV,
    I_POS_LIMIT, I_TAKER_FEE, I_TIER_N, I_TIER_STEP, O_ACCT, O_FEE_CARRY, O_INST, O_LEAVES, O_OPEN,
    O_REDUCE, O_RPRICE, O_SIDE, P_B, P_BN, P_COST, P_HEAP, P_QTY, P_REAL, P_S, P_SN, W_BAL,
    W_HELD,
)

KEY_MAX = 1 << 62


@njit(**INLINE)
def im_of(ins, inst, n):
    """Initial margin of notional ``n``, rounded up. Tier k (notional from k * tierNotional to
    (k + 1) * tierNotional) has rate min(100%, imPpm + k * tierStepPpm), and each tier's rate
    applies to the notional within it (docs/risk.md "Perpetual margin"): the margin is
    continuous and convex in the notional and never grows faster than the notional itself,
    which is what makes an account's liquidation price unique (issue 13, defect 3)."""
    rate = ins[I_IM, inst]
    tn = ins[I_TIER_N, inst]
    step = ins[I_TIER_STEP, inst]
    if tn <= 0 or step <= 0 or n < tn:
        return ppm_ceil(n, rate)
    k = min(n // tn, (PPM - rate + step - 1) // step)  # tiers from this one on are at 100%
    below = k * rate + step * (k * (k - 1) // 2)  # sum of the rates of tiers 0 .. k-1 (< 1e12)
    r = n - k * tn  # the notional in tier k (and above, at 100%)
    rk = min(PPM, rate + k * step)
    # tn * below + r * rk millionths, split so that every product stays inside int64
    whole = (tn // PPM) * below + (r // PPM) * rk
    frac = (tn % PPM) * below + (r % PPM) * rk
    return whole + div_ceil(frac, PPM)


@njit(**INLINE)
def mm_of(ins, inst, n):
    return ppm_ceil(im_of(ins, inst, n), ins[I_MM, inst])


@njit(**JIT)
def account_risk(glob, acc, x_inst, x_side, x_qty, x_notional):
    """(equity, initial, maintenance) of ``acc``, with an extra open order of ``x_qty`` on
    ``x_side`` of ``x_inst`` at notional ``x_notional`` counted (``x_inst`` 0: none)."""
    rt = tables(glob)
    ins, wallet, pos = rt.ins, rt.wallet, rt.pos
    return risk_of(glob, ins, wallet, pos, acc, x_inst, x_side, x_qty, x_notional)


@njit(**INLINE)
def equity_mm(glob, ins, wallet, pos, acc):
    """(equity, maintenance) of ``acc``: what liquidation looks at, without the initial
    margin's open-order terms."""
    maxi = glob[G_MAX_INSTRUMENTS]
    eq = wallet[acc * glob[G_MAX_ASSETS], W_BAL]
    mm = 0
    for k in range(glob[G_PERP_N]):
        inst = glob[G_PERPS + k]
        q = pos[acc * maxi + inst, P_QTY]
        if q != 0:
            mark = ins[I_MARK, inst]
            eq += signed_value(ins, inst, mark, q)
            mm += mm_of(ins, inst, notional(ins, inst, mark, abs(q)))
    return eq, mm


@njit(**INLINE)
def open_excess(ins, inst, mark, b, s, bn, sn):
    """What open buys of ``b`` lots at notional ``bn`` and sells of ``s`` at ``sn`` could
    lose against the mark the moment they fill (each side's loss, never its gain)."""
    x = 0
    bv = notional(ins, inst, mark, b)
    if bn > bv:
        x += bn - bv
    sv = notional(ins, inst, mark, s)
    if sv > sn:
        x += sv - sn
    return x


@njit(**INLINE)
def risk_of(glob, ins, wallet, pos, acc, x_inst, x_side, x_qty, x_notional):
    maxi = glob[G_MAX_INSTRUMENTS]
    eq = wallet[acc * glob[G_MAX_ASSETS], W_BAL]
    im = 0
    mm = 0
    for k in range(glob[G_PERP_N]):
        inst = glob[G_PERPS + k]
        row = acc * maxi + inst
        q = pos[row, P_QTY]
        b = pos[row, P_B]
        s = pos[row, P_S]
        bn = pos[row, P_BN]
        sn = pos[row, P_SN]
        if inst == x_inst:
            if x_side == BUY:
                b += x_qty
                bn += x_notional
            else:
                s += x_qty
                sn += x_notional
        if q == 0 and b == 0 and s == 0:
            continue
        mark = ins[I_MARK, inst]
        if q != 0:
            eq += signed_value(ins, inst, mark, q)
            mm += mm_of(ins, inst, notional(ins, inst, mark, abs(q)))
        w = max(abs(q + b), abs(q - s))
        im += im_of(ins, inst, notional(ins, inst, mark, w)) + open_excess(ins, inst, mark, b, s, bn, sn)
    return eq, im, mm


@njit(**INLINE)
def closing_loss(ins, inst, side, price, qty):
    """What buying (selling) ``qty`` at ``price`` loses against the mark the moment it fills
    (negative: a gain)."""
    at_mark = notional(ins, inst, ins[I_MARK, inst], qty)
    at_price = notional(ins, inst, price, qty)
    return at_price - at_mark if side == BUY else at_mark - at_price


@njit(**INLINE)
def closing_cost(ins, inst, side, price, qty, fee_ppm):
    """``closing_loss`` plus the fee the fill pays (a rebate is not counted): what a
    reduce-only fill takes from the account's excess over maintenance."""
    fee = ppm_ceil(notional(ins, inst, price, qty), fee_ppm) if fee_ppm > 0 else 0
    return closing_loss(ins, inst, side, price, qty) + fee


@njit(**JIT)
def perp_check(glob, acc, inst, side, qty, rprice, reduce):
    """docs/risk.md pre-trade checks 5-7 for a perpetual order."""
    rt = tables(glob)
    ins, wallet, pos = rt.ins, rt.wallet, rt.pos
    row = acc * glob[G_MAX_INSTRUMENTS] + inst
    q = pos[row, P_QTY]
    if reduce != 0:
        if (side == BUY and q >= 0) or (side != BUY and q <= 0) or qty > abs(q):
            return R_REDUCE_ONLY
        # it never adds margin, but closing away from the mark is a loss the moment it
        # fills: the account's excess over maintenance must cover it
        if rprice <= 0:
            return R_NONE
        # the taker fee too, so that every fill of it is covered however it is split (a FOK
        # checked here fills whole: issue 13, defect 10)
        loss = closing_cost(ins, inst, side, rprice, qty, ins[I_TAKER_FEE, inst])
        if loss > 0:
            eq, mm = equity_mm(glob, ins, wallet, pos, acc)
            if eq - wallet[acc * glob[G_MAX_ASSETS], W_HELD] - mm < loss:
                return R_INSUFFICIENT_MARGIN
        return R_NONE
    b = pos[row, P_B]
    s = pos[row, P_S]
    if side == BUY:
        b += qty
    else:
        s += qty
    if max(abs(q + b), abs(q - s)) > ins[I_POS_LIMIT, inst]:
        return R_POSITION_LIMIT
    n = notional(ins, inst, rprice, qty) if rprice > 0 else 0
    w = acc * glob[G_MAX_ASSETS]
    if glob[G_PERP_N] == 1:
        # The only perpetual: its initial margin is at most the notional itself (no rate
        # exceeds 100%), so cash that covers that accepts the order without the tiers.
        mark = ins[I_MARK, inst]
        bn = pos[row, P_BN]
        sn = pos[row, P_SN]
        if side == BUY:
            bn += n
        else:
            sn += n
        bound = notional(ins, inst, mark, max(abs(q + b), abs(q - s)))
        bound += open_excess(ins, inst, mark, b, s, bn, sn)
        if wallet[w, W_BAL] - wallet[w, W_HELD] + signed_value(ins, inst, mark, q) >= bound:
            return R_NONE
    eq, im, mm = risk_of(glob, ins, wallet, pos, acc, inst, side, qty, n)
    if eq - wallet[w, W_HELD] - im < 0:
        return R_INSUFFICIENT_MARGIN
    return R_NONE


@njit(**INLINE)
def open_add(st, pos, s):
    """An accepted perpetual order (not reduce-only) counts in its position row's open totals."""
    o, ins, glob = st.orders, st.ins, st.glob
    if o[s, O_REDUCE] != 0:
        o[s, O_OPEN] = 0
        return
    inst = o[s, O_INST]
    row = o[s, O_ACCT] * glob[G_MAX_INSTRUMENTS] + inst
    leaves = o[s, O_LEAVES]
    o[s, O_OPEN] = leaves
    n = notional(ins, inst, o[s, O_RPRICE], leaves)
    if o[s, O_SIDE] == BUY:
        pos[row, P_B] += leaves
        pos[row, P_BN] += n
    else:
        pos[row, P_S] += leaves
        pos[row, P_SN] += n


@njit(**INLINE)
def open_sync(st, pos, s, leaves):
    """The order now has ``leaves`` open: move its position row's open totals with it."""
    o, ins, glob = st.orders, st.ins, st.glob
    was = o[s, O_OPEN]
    if was == leaves:
        return
    inst = o[s, O_INST]
    row = o[s, O_ACCT] * glob[G_MAX_INSTRUMENTS] + inst
    p = o[s, O_RPRICE]
    dn = notional(ins, inst, p, was) - notional(ins, inst, p, leaves)
    o[s, O_OPEN] = leaves
    if o[s, O_SIDE] == BUY:
        pos[row, P_B] -= was - leaves
        pos[row, P_BN] -= dn
    else:
        pos[row, P_S] -= was - leaves
        pos[row, P_SN] -= dn


@njit(**INLINE)
def _mul_div_trunc(a, b, c):
    """trunc(a * b / c), c > 0, exact while a * b fits int64 (reporting figures only beyond)."""
    if a == 0 or b == 0:
        return 0
    if abs(a) <= (KEY_MAX // abs(b)):
        p = a * b
        return p // c if p >= 0 else -((-p) // c)
    return int(a * (b / c))


@njit(**INLINE)
def apply_fill(glob, acc, inst, dq, price):
    """Position bookkeeping of a fill of signed ``dq`` at ``price`` (cash moves elsewhere)."""
    move_position(glob, acc, inst, dq, notional(tables(glob).ins, inst, price, abs(dq)), price)


@njit(**INLINE)
def apply_transfer(glob, acc, inst, dq, n):
    """Position bookkeeping of signed ``dq`` changing hands for ``n`` in all (a takeover or
    deleveraging at a bankrupt amount, not a price)."""
    move_position(glob, acc, inst, dq, n, 0)


@njit(**INLINE)
def move_position(glob, acc, inst, dq, n, price):
    """``dq`` moves the position for notional ``n`` in all. The part that closes the
    position is priced at ``price`` (a fill), or (``price`` 0, a transfer) takes its share
    of ``n``; the rest opens the other way."""
    rt = tables(glob)
    acct, pos = rt.acct, rt.pos
    row = acc * glob[G_MAX_INSTRUMENTS] + inst
    q = pos[row, P_QTY]
    c = pos[row, P_COST]
    nq = q + dq
    if q == 0 or (q > 0) == (dq > 0):
        pos[row, P_COST] = c + (n if dq > 0 else -n)
    else:
        aq = abs(q)
        r = min(aq, abs(dq))
        removed = c if r == aq else _mul_div_trunc(c, r, aq)
        if price > 0:
            n_r = notional(rt.ins, inst, price, r)
        else:
            n_r = n if r == abs(dq) else _mul_div_trunc(n, r, abs(dq))
        gain = n_r - abs(removed)
        pos[row, P_REAL] += gain if q > 0 else -gain
        rest = abs(dq) - r
        if rest > 0:
            pos[row, P_COST] = (n - n_r) if dq > 0 else -(n - n_r)
        else:
            pos[row, P_COST] = c - removed
    pos[row, P_QTY] = nq
    if acc == 0:
        return  # the insurance fund is never liquidated: no heap, no multi list
    if q == 0 and nq != 0:
        acct[A_NPOS, acc] += 1
        if acct[A_NPOS, acc] == 2:
            head = glob[G_MULTI_HEAD]
            acct[A_MNEXT, acc] = head
            acct[A_MPREV, acc] = -1
            if head != -1:
                acct[A_MPREV, head] = acc
            glob[G_MULTI_HEAD] = acc
    elif q != 0 and nq == 0:
        acct[A_NPOS, acc] -= 1
        if acct[A_NPOS, acc] == 1:
            nxt = acct[A_MNEXT, acc]
            prv = acct[A_MPREV, acc]
            if prv == -1:
                glob[G_MULTI_HEAD] = nxt
            else:
                acct[A_MNEXT, prv] = nxt
            if nxt != -1:
                acct[A_MPREV, nxt] = prv
            acct[A_MNEXT, acc] = -1
            acct[A_MPREV, acc] = -1


@njit(**INLINE)
def _to_key(x, up):
    """A float price to an int64 key, rounded ``up`` or down, clamped to +-KEY_MAX."""
    if x != x or x >= 4.0e18:
        return KEY_MAX
    if x <= -4.0e18:
        return -KEY_MAX
    return int(math.ceil(x)) if up else int(math.floor(x))


@njit(**INLINE)
def _safer(glob, pos, heap, acc, inst, h, key):
    """Is ``key`` no nearer to liquidation than the account's key in heap ``h`` now? Then
    the heap keeps the old, earlier key: a key may be early (the exact check then re-keys
    it), never late, and most fills move a key away from the mark, sparing a sift."""
    at = pos[acc * glob[G_MAX_INSTRUMENTS] + inst, P_HEAP]
    if at < 0 or (at & 1) != h:
        return False
    return key >= heap[(inst * 2 + h) * glob[G_MAX_ACCOUNTS] + (at >> 1), 0]


@njit(**INLINE)
def _gap(ins, inst, eo, mmo, q, m):
    """Equity minus maintenance at mark ``m`` of an account whose position ``q`` is the only
    part that moves with ``m`` (``eo``, ``mmo``: the rest). It never falls as the mark rises
    for a long and never rises for a short: value and notional move one unit at a time and
    maintenance at most one unit per unit of notional (no rate above 100%)."""
    return eo + signed_value(ins, inst, m, q) - mmo - mm_of(ins, inst, notional(ins, inst, m, abs(q)))


@njit(**INLINE)
def _exact_key(ins, glob, inst, eo, mmo, q, key):
    """``key``, a float estimate of the mark at which the position becomes liquidatable (the
    highest such mark for a long, the lowest for a short), made never late by the exact
    test: while the next mark beyond it, away from liquidation, is still liquidatable,
    search on that way (doubling steps, then bisection). Only marks in the book window
    matter: a mark never leaves it."""
    lo, hi = window(ins, glob, inst)
    d = 1 if q > 0 else -1  # away from liquidation
    end = hi if q > 0 else lo  # the window's last mark that way
    if (key - end) * d >= 0:
        return key
    bad = max(key, lo - 1) if q > 0 else min(key, hi + 1)
    if _gap(ins, inst, eo, mmo, q, bad + d) >= 0:
        return key
    bad += d
    step = 1
    ok = end + d  # liquidatable across the rest of the window unless a safe mark is found
    while (end - bad - d * step) * d >= 0:
        if _gap(ins, inst, eo, mmo, q, bad + d * step) >= 0:
            ok = bad + d * step
            break
        bad += d * step
        step *= 2
    while abs(ok - bad) > 1:
        mid = (bad + ok) // 2
        if _gap(ins, inst, eo, mmo, q, mid) < 0:
            bad = mid
        else:
            ok = mid
    return bad


@njit(**JIT)
def rekey(glob, acc, checked):
    """Place ``acc`` in the at-risk heaps of the perpetuals it holds, keyed by liquidation
    price (docs/risk.md). ``checked`` (1): the account was just found not liquidatable at
    the current marks, so every key is pushed strictly beyond its instrument's mark."""
    rt = tables(glob)
    ins, acct, wallet, pos, heap = rt.ins, rt.acct, rt.wallet, rt.pos, rt.heap
    if acc == 0:
        return
    maxi = glob[G_MAX_INSTRUMENTS]
    single = acct[A_NPOS, acc] <= 1  # the usual case: the rest of the account is its cash
    if single:
        eq = wallet[acc * glob[G_MAX_ASSETS], W_BAL]
        mm = 0
    else:
        eq, mm = equity_mm(glob, ins, wallet, pos, acc)
    for k in range(glob[G_PERP_N]):
        inst = glob[G_PERPS + k]
        q = pos[acc * maxi + inst, P_QTY]
        if q == 0:
            heap_remove(glob, inst, acc)
            continue
        if q > 0 and single and eq >= 0:
            # equity = cash + value >= value >= maintenance (mm(n) <= n): never liquidatable
            # at any mark, the usual long; key 0 (a mark is at least 1) without the arithmetic
            if checked != 0 or not _safer(glob, pos, heap, acc, inst, 0, 0):
                heap_set(glob, inst, 0, acc, 0)
            continue
        mark = ins[I_MARK, inst]
        div = ins[I_NOTIONAL_DIV, inst]
        aq = abs(q)
        if q < 0 and single:
            # A short is liquidatable only once cash - value < mm <= value * mmPpm + 1 (no
            # IM rate exceeds 100%): below the price this gives it is safe whatever its
            # tier. When that price is beyond twice the mark it is the key (early, never
            # late), without the tiers; nearer, the exact tier below decides.
            # (3: the value's rounding against the holder and maintenance's two roundings up;
            # the factor: float error, so the key is never late)
            xf = (eq - 3) * float(div) / (aq * (1.0 + ins[I_MM, inst] / PPM)) * (1.0 - 1e-12)
            if xf >= 2.0 * mark + 2.0:  # so the key is strictly beyond the mark
                key = _to_key(xf, False) - 1
                if checked != 0 or not _safer(glob, pos, heap, acc, inst, 1, key):
                    heap_set(glob, inst, 1, acc, key)
                continue
        n = notional(ins, inst, mark, aq)
        mmi = mm_of(ins, inst, n)
        # the rest of the account: cash and the other positions at their marks (exact)
        if single:
            ei = eq
            mi = 0
        else:
            ei = eq - signed_value(ins, inst, mark, q)
            mi = mm - mmi
        eo = float(ei)
        mmo = float(mi)
        if n > 0:
            nf = float(n)
            mf = float(mmi)
        else:
            nf = 1e12
            mf = float(ins[I_IM, inst] * ins[I_MM, inst])
        f = mf / nf
        if q > 0:
            # equity(M) = eo + M q / div falls to maintenance mmo + f M q / div
            if mf >= nf:
                key = KEY_MAX
            else:
                key = _to_key((mmo - eo) * div * nf / (aq * (nf - mf)), True) + 1
            if key <= 0:
                key = 0  # never: a mark is at least 1
            key = _exact_key(ins, glob, inst, ei, mi, q, key)
            if checked != 0 and key >= mark:
                key = mark - 1
            if key >= mark:
                glob[G_AT_RISK] = 1
            if checked != 0 or not _safer(glob, pos, heap, acc, inst, 0, -key):
                heap_set(glob, inst, 0, acc, -key)
        else:
            x = (eo - mmo) * div / (aq * (1.0 + f))
            # the tier rate at the price found is at least the true one: never late
            n2 = x * aq / div
            if n2 > 0 and n2 < 4.0e18:
                f2 = mm_of(ins, inst, int(n2)) / max(n2, 1.0)
                if f2 > f:
                    x = (eo - mmo) * div / (aq * (1.0 + f2))
            key = _to_key(x, False) - 1
            key = _exact_key(ins, glob, inst, ei, mi, q, key)
            if checked != 0 and key <= mark:
                key = mark + 1
            if key <= mark:
                glob[G_AT_RISK] = 1
            if checked != 0 or not _safer(glob, pos, heap, acc, inst, 1, key):
                heap_set(glob, inst, 1, acc, key)


@njit(**JIT)
def reduce_loss_covered(glob, s, price, q, maker):
    """May reduce-only order ``s`` fill ``q`` at ``price`` now? Closing away from the mark
    is a loss the moment it fills; the account's excess over maintenance must cover it and
    the fill's fee (``maker``: the resting side's) (checked at acceptance with the taker fee,
    and again here: a replace, a withdrawal or another fill since may have used the cover).
    Liquidation orders (``O_REDUCE`` 2) are not asked."""
    rt = tables(glob)
    ins, wallet, pos = rt.ins, rt.wallet, rt.pos
    o = tables(glob).orders
    inst = o[s, O_INST]
    acc = o[s, O_ACCT]
    fee_ppm = ins[I_MAKER_FEE, inst] if maker else ins[I_TAKER_FEE, inst]
    fee, carry = fee_step(notional(ins, inst, price, q), fee_ppm, o[s, O_FEE_CARRY])
    loss = closing_loss(ins, inst, o[s, O_SIDE], price, q) + max(fee, 0)
    if loss <= 0:
        return True
    eq, mm = equity_mm(glob, ins, wallet, pos, acc)
    return eq - wallet[acc * glob[G_MAX_ASSETS], W_HELD] - mm >= loss
