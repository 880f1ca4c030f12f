"""Money: wallets, spot holds, settlement of every fill, fees, and the Funds message.

docs/risk.md "Assets and money", "Spot holds", "Settlement and fees". Every movement is a
transfer between two balances (an account's, the insurance fund's = account 0, or the fee
account's), so the sum of all balances only changes by deposits and withdrawals.

A trade's notional is exact (``InstrumentLimits`` refuses a divisor that does not divide
``tickSize * lotSize``), and an order's fees are rounded up once over the whole order
(``fee_due``), so splitting an order never lowers what its taker pays nor what its maker
receives (issue 13, defect 2).

A spot order's hold is a budget kept on the order (``O_HOLD``): fills pay out of it and
whatever is left returns to the account when the order ends (``order_end``, called from
``book.release`` for every order however it ends). A buy's budget is sized at its risk
price (``O_RPRICE``) with the taker fee, rounded up, on top; fills happen at or below that
price and their fees add up to at most that (docs/risk.md shows the bound).
"""

from __future__ import annotations

from numba import njit

from ringex.engine.kernel.flags import INLINE, JIT
from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import views
from ringex.engine.kernel.fixed import fee_step, notional, ppm_ceil
from ringex.engine.wire.layout import (
    BUY, FU_ACCOUNT, FU_ACTION, FU_AMOUNT, FU_ASSET, FUNDS_DEPOSIT, FUNDS_WITHDRAW, KIND_PERPETUAL,
    R_ACCOUNT_IN_DEBT, R_INSUFFICIENT_FUNDS, R_INSUFFICIENT_MARGIN, R_INVALID_SCOPE, R_NONE, R_QTY_OUT_OF_RANGE,
    R_UNKNOWN_ACCOUNT, R_UNKNOWN_ASSET, T_FUNDS,
)
from ringex.engine.kernel.margin import account_risk, apply_fill, open_sync, rekey
from ringex.engine.kernel.state import (
    A_CREATED, A_DEBT, A_NPOS, G_DEBTORS, G_FEES, G_MAX_ACCOUNTS, G_MAX_ASSETS, G_MAX_INSTRUMENTS, G_PERP_N,
    I_BASE_ASSET, I_KIND, I_MAKER_FEE, I_MARK, I_TAKER_FEE, O_ACCT, O_HOLD, O_INST, O_LEAVES,
    O_FEE_CARRY, O_OPEN, O_RPRICE, O_SIDE, P_QTY, W_BAL, W_HELD,
)

MAX_BALANCE = 1 << 60


@njit(**INLINE)
def buy_hold(ins, inst, price, qty):
    """What a spot buy of ``qty`` at ``price`` holds of asset 0: notional + taker fee rounded up
    (``fee_due`` charges the order at most that over all its fills)."""
    if price <= 0:
        return 0
    n = notional(ins, inst, price, qty)
    return n + ppm_ceil(n, ins[I_TAKER_FEE, inst])


@njit(**INLINE)
def fee_due(o, s, n, ppm):
    """The fee order ``s`` pays on a fill of notional ``n`` at rate ``ppm`` (negative: a
    rebate it receives). The order carries how much its fees so far were rounded up by
    (``O_FEE_CARRY``), so its fees always sum to the exact total rounded up once: a rebate
    rounds down, a charge up, and no split of an order changes either."""
    fee, carry = fee_step(n, ppm, o[s, O_FEE_CARRY])
    o[s, O_FEE_CARRY] = carry
    return fee


@njit(**INLINE)
def spot_check(glob, ins, wallet, pos, acc, inst, side, qty, rprice):
    """docs/risk.md pre-trade check 7 for a spot order: ``InsufficientFunds`` or None."""
    assets = glob[G_MAX_ASSETS]
    if side == BUY:
        need = buy_hold(ins, inst, rprice, qty)
        w = acc * assets
        if need > wallet[w, W_BAL] - wallet[w, W_HELD]:
            return R_INSUFFICIENT_FUNDS
        if glob[G_PERP_N] != 0 and need > 0:
            eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
            if eq - wallet[w, W_HELD] - im < need:
                return R_INSUFFICIENT_FUNDS  # the cash is collateral of its perpetuals
        return R_NONE
    w = acc * assets + ins[I_BASE_ASSET, inst]
    if qty > wallet[w, W_BAL] - wallet[w, W_HELD]:
        return R_INSUFFICIENT_FUNDS
    return R_NONE


@njit(**INLINE)
def spot_hold(st, wallet, s):
    """An accepted spot order takes its hold."""
    o, ins = st.orders, st.ins
    if o[s, O_SIDE] == BUY:
        amount = buy_hold(ins, o[s, O_INST], o[s, O_RPRICE], o[s, O_LEAVES])
    else:
        amount = o[s, O_LEAVES]
    o[s, O_HOLD] = amount
    wallet[hold_row(st, s), W_HELD] += amount


@njit(**INLINE)
def hold_row(st, s):
    """The wallet row an order's hold sits in."""
    o, ins, glob = st.orders, st.ins, st.glob
    inst = o[s, O_INST]
    w = o[s, O_ACCT] * glob[G_MAX_ASSETS]
    if o[s, O_SIDE] != BUY:
        w += ins[I_BASE_ASSET, inst]
    return w


@njit(**INLINE)
def order_end(st, s):
    """Order ``s`` ends (filled, canceled, expired, ...): its hold or open margin goes."""
    o, ins = st.orders, st.ins
    wallet, pos = st.wallet, st.pos
    if ins[I_KIND, o[s, O_INST]] == KIND_PERPETUAL:
        if o[s, O_OPEN] != 0:
            open_sync(st, pos, s, 0)
        return
    left = o[s, O_HOLD]
    if left != 0:
        wallet[hold_row(st, s), W_HELD] -= left
        o[s, O_HOLD] = 0


@njit(**INLINE)
def leaves_changed(st, s):
    """A perpetual order's leaves shrank without a fill (self-trade prevention)."""
    o = st.orders
    if o[s, O_OPEN] != 0:
        pos = st.pos
        open_sync(st, pos, s, o[s, O_LEAVES])


@njit(**INLINE)
def settle(st, a, r, price, q):
    """Settle a fill of ``q`` at ``price`` between aggressor ``a`` and resting order ``r``
    (their leaves already reduced): cash, base asset or positions, fees, holds, margin."""
    o, ins, acct, glob = st.orders, st.ins, st.acct, st.glob
    wallet, pos = st.wallet, st.pos
    inst = o[a, O_INST]
    assets = glob[G_MAX_ASSETS]
    n = notional(ins, inst, price, q)
    taker_fee = fee_due(o, a, n, ins[I_TAKER_FEE, inst])
    maker_fee = fee_due(o, r, n, ins[I_MAKER_FEE, inst])
    glob[G_FEES] += taker_fee + maker_fee
    if o[a, O_SIDE] == BUY:
        b, s = a, r
        b_fee, s_fee = taker_fee, maker_fee
    else:
        b, s = r, a
        b_fee, s_fee = maker_fee, taker_fee
    ba = o[b, O_ACCT]
    sa = o[s, O_ACCT]
    wallet[ba * assets, W_BAL] -= n + b_fee
    wallet[sa * assets, W_BAL] += n - s_fee
    if ins[I_KIND, inst] == KIND_PERPETUAL:
        if o[b, O_OPEN] != 0:
            open_sync(st, pos, b, o[b, O_LEAVES])
        if o[s, O_OPEN] != 0:
            open_sync(st, pos, s, o[s, O_LEAVES])
        ma = o[r, O_ACCT]
        m_buy = r == b
        mq = pos[ma * glob[G_MAX_INSTRUMENTS] + inst, P_QTY]
        apply_fill(glob, ba, inst, q, price)
        apply_fill(glob, sa, inst, -q, price)
        # The maker is re-keyed now, the aggressor once its execution is over
        # (run_aggressor). A maker fill that only shrinks the position without costing
        # equity at mark moves its liquidation price away: its old key stays (early).
        at_mark = notional(ins, inst, ins[I_MARK, inst], q)
        gain = (at_mark - n - b_fee) if m_buy else (n - s_fee - at_mark)
        shrinks = (mq < 0 and m_buy and q < -mq) or (mq > 0 and not m_buy and q < mq)
        if not (shrinks and gain >= 0):
            rekey(glob, ma, 0)
        return
    base = ins[I_BASE_ASSET, inst]
    # the buyer pays out of its order's budget, the seller delivers out of its order's
    wallet[ba * assets, W_HELD] -= n + b_fee
    o[b, O_HOLD] -= n + b_fee
    wallet[ba * assets + base, W_BAL] += q
    wallet[sa * assets + base, W_BAL] -= q
    wallet[sa * assets + base, W_HELD] -= q
    o[s, O_HOLD] -= q
    if glob[G_PERP_N] != 0:  # their cash is also their perpetuals' collateral
        if acct[A_NPOS, ba] != 0:
            rekey(glob, ba, 0)
        if acct[A_NPOS, sa] != 0 and sa != ba:
            rekey(glob, sa, 0)


@njit(**JIT)
def on_funds(mem, out, i64, b):
    """docs/risk.md ``Funds``: deposit into or withdraw from an account (0: the insurance fund)."""
    st = views(mem)
    acct, glob = st.acct, st.glob
    wallet = st.wallet
    acc = ev.get(i64, b, FU_ACCOUNT)
    asset = ev.get(i64, b, FU_ASSET)
    action = ev.get(i64, b, FU_ACTION)
    amount = i64[b + FU_AMOUNT]
    reason = R_NONE
    w = 0
    if not (acc == 0 or (acc < glob[G_MAX_ACCOUNTS] and acct[A_CREATED, acc] != 0)):
        reason = R_UNKNOWN_ACCOUNT
    elif asset >= glob[G_MAX_ASSETS]:
        reason = R_UNKNOWN_ASSET
    elif action != FUNDS_DEPOSIT and action != FUNDS_WITHDRAW:
        reason = R_INVALID_SCOPE
    elif amount <= 0:
        reason = R_QTY_OUT_OF_RANGE
    elif action == FUNDS_WITHDRAW and acc != 0 and acct[A_DEBT, acc] != 0:
        reason = R_ACCOUNT_IN_DEBT  # its other assets stay until the debt is repaid
    else:
        w = acc * glob[G_MAX_ASSETS] + asset
        bal = wallet[w, W_BAL]
        if action == FUNDS_DEPOSIT:
            if amount > MAX_BALANCE or bal > MAX_BALANCE - amount:
                reason = R_QTY_OUT_OF_RANGE
        elif amount > bal - wallet[w, W_HELD]:
            reason = R_INSUFFICIENT_FUNDS
        elif asset == 0 and glob[G_PERP_N] != 0:
            eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
            if eq - wallet[w, W_HELD] - im < amount:
                reason = R_INSUFFICIENT_MARGIN
    if reason == R_NONE:
        wallet[w, W_BAL] += amount if action == FUNDS_DEPOSIT else -amount
        if asset == 0 and acc != 0 and acct[A_DEBT, acc] != 0 and wallet[w, W_BAL] >= 0:
            acct[A_DEBT, acc] = 0  # repaid
            glob[G_DEBTORS] -= 1
        if asset == 0 and glob[G_PERP_N] != 0:
            rekey(glob, acc, 0)
    value = 0
    if reason != R_UNKNOWN_ACCOUNT and reason != R_UNKNOWN_ASSET:
        value = wallet[acc * glob[G_MAX_ASSETS] + asset, W_BAL]
    return ev.admin_result(out, glob, value, acc, 0, T_FUNDS, reason)
