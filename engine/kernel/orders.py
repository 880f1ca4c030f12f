"""Order entry: NewOrder, CancelOrder, ReplaceOrder and MassCancel (docs/engine.md).

``check_new_order`` applies the NewOrder checks in the documented order and returns the first
failing reason; the pre-trade risk checks (docs/risk.md) run inside it. An accepted order is
written into a pool slot and handed to ``matching.run_aggressor``, or parked as a stop or a
queued order. A replace keeps its priority only when its price is unchanged and its quantity
does not grow; its hold or open margin is recomputed for the new terms (``rehold``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.admin import known_account, known_instrument
from ringex.engine.kernel.arena import tables, views
from ringex.engine.kernel.book import (
    acquire, book_index, find_order, has_free_slot, level_append, level_remove, list_append,
)
from ringex.engine.kernel.events import get
from ringex.engine.kernel.fixed import notional, window
from ringex.engine.kernel.flags import INLINE, JIT
from ringex.engine.kernel.kill import cancel_scope, kill_reason
from ringex.engine.kernel.margin import account_risk, open_add, open_sync, perp_check
from ringex.engine.kernel.matching import (
    add_stop, band_of, display_of, fok_fillable, limit_index, remove_order, run_aggressor, stops_after,
)
from ringex.engine.kernel.money import buy_hold, hold_row, spot_check, spot_hold
from ringex.engine.kernel.state import (
    A_DEBT, A_LIVE, A_LIVE_HEAD, A_MAX_OPEN, A_STP, G_DEBTORS, G_KILLS, G_LEVELS, G_LIVE, G_MAX_ASSETS,
    G_MAX_INSTRUMENTS,
    G_MAX_STOPS, G_NEXT_ORDER_ID, G_PERP_N, G_PROTECTION, G_STOPS, I_ASK, I_BAND_PPM, I_BASE, I_BID,
    I_HAS_LAST, I_KIND, I_LAST, I_LIVE_HEAD, I_LOT, I_MAX_NOTIONAL, I_MAX_ORDER_QTY, I_MAX_QTY,
    I_MIN_QTY, I_NOTIONAL_DIV, I_POLICY, I_POS_LIMIT, I_QUEUE_HEAD, I_QUEUE_TAIL, I_STATUS, I_TICK,
    O_ACCT, O_ANEXT, O_CLORD, O_DISP, O_DSIZE, O_FILLED, O_HIDDEN, O_HOLD, O_INEXT, O_INST, O_LEAVES,
    O_LEVEL, O_NEXT, O_OPEN, O_POST, O_PREV, O_PRICE, O_QTY, O_REDUCE, O_RPRICE, O_SESS, O_SIDE,
    O_STATE, O_STOP, O_STP, O_TIF, O_TYPE, P_B, P_QTY, P_S, S_QUEUED, S_RESTING, W_BAL, W_HELD,
)
from ringex.engine.wire.layout import (
    BOOL_TRUE, BUY, CLOSED, CO_ACCOUNT, CO_CLORD, CO_INSTRUMENT, CO_ORDER_ID, CO_ORIG_CLORD, CO_SESSION,
    CXL_MASS, CXL_USER, DAY, FOK, GTC, HALTED, IOC, KILL_SESSION, KIND_PERPETUAL, LIMIT, MARKET, MC_ACCOUNT,
    MC_CLORD,
    MC_INSTRUMENT, MC_SCOPE, MC_SESSION, NO_ACCOUNT, NO_CLORD, NO_DISPLAY, NO_INSTRUMENT, NO_ORD_TYPE,
    NO_POST_ONLY, NO_PRICE, NO_QTY, NO_REDUCE_ONLY, NO_SESSION, NO_SIDE, NO_STOP, NO_STP, NO_TIF,
    POLICY_REJECT, R_ACCOUNT_IN_DEBT, R_BAD_LOT, R_BAD_TICK, R_BOOK_FULL, R_FOK_UNFILLABLE, R_INSTRUMENT_CLOSED,
    R_INSTRUMENT_HALTED, R_INSUFFICIENT_FUNDS, R_INSUFFICIENT_MARGIN, R_INVALID_DISPLAY_QTY,
    R_INVALID_FLAGS, R_INVALID_ORD_TYPE, R_INVALID_SCOPE, R_INVALID_SIDE, R_INVALID_STOP_PRICE,
    R_INVALID_STP_MODE, R_INVALID_TIF, R_MAX_NOTIONAL, R_MAX_OPEN_ORDERS, R_MAX_ORDER_QTY, R_NONE,
    R_NOT_YOUR_ORDER, R_POSITION_LIMIT, R_POST_ONLY_WOULD_TRADE, R_PRICE_BAND, R_PRICE_OUT_OF_RANGE,
    R_QTY_OUT_OF_RANGE, R_STOP_CAPACITY, R_STOP_NOT_ALLOWED, R_UNKNOWN_ACCOUNT, R_UNKNOWN_INSTRUMENT,
    R_UNKNOWN_ORDER, RO_ACCOUNT, RO_CLORD, RO_DISPLAY, RO_INSTRUMENT, RO_ORDER_ID, RO_ORIG_CLORD,
    RO_PRICE, RO_QTY, RO_SESSION, SCOPE_ACCOUNT, SCOPE_ACCOUNT_INSTRUMENT, SCOPE_INSTRUMENT, SCOPE_SESSION,
    SELL, STOP,
    STOP_LIMIT, STP_DEFAULT, STP_MAX, T_CANCEL_ORDER, T_MASS_CANCEL, T_NEW_ORDER, T_REPLACE_ORDER,
)


@njit(**INLINE)
def check_new_order(mem, i64, b):
    """The first failing check of docs/engine.md "NewOrder" (1-10), or R_NONE."""
    st = views(mem)
    ins, acct, glob = st.ins, st.acct, st.glob
    inst = get(i64, b, NO_INSTRUMENT)
    acc = get(i64, b, NO_ACCOUNT)
    if not known_instrument(ins, glob, inst):
        return R_UNKNOWN_INSTRUMENT
    if not known_account(acct, glob, acc):
        return R_UNKNOWN_ACCOUNT
    if glob[G_KILLS] != 0:
        kill = kill_reason(acct, ins, glob, acc, get(i64, b, NO_SESSION), inst)
        if kill != R_NONE:
            return kill
    if glob[G_DEBTORS] != 0 and acct[A_DEBT, acc] != 0:
        return R_ACCOUNT_IN_DEBT  # docs/risk.md "Liquidation", stage 5
    side = get(i64, b, NO_SIDE)
    otype = get(i64, b, NO_ORD_TYPE)
    tif = get(i64, b, NO_TIF)
    post = get(i64, b, NO_POST_ONLY)
    if side != BUY and side != SELL:
        return R_INVALID_SIDE
    if otype != MARKET and otype != LIMIT and otype != STOP and otype != STOP_LIMIT:
        return R_INVALID_ORD_TYPE
    if tif != DAY and tif != GTC and tif != IOC and tif != FOK:
        return R_INVALID_TIF
    reduce = get(i64, b, NO_REDUCE_ONLY)
    if post > BOOL_TRUE or reduce > BOOL_TRUE:
        return R_INVALID_FLAGS
    if reduce == BOOL_TRUE and ins[I_KIND, inst] != KIND_PERPETUAL:
        return R_INVALID_FLAGS  # nothing to reduce on a spot instrument
    if get(i64, b, NO_STP) > STP_MAX:
        return R_INVALID_STP_MODE
    status = ins[I_STATUS, inst]
    if status == CLOSED:
        return R_INSTRUMENT_CLOSED
    if status == HALTED and ins[I_POLICY, inst] == POLICY_REJECT:
        return R_INSTRUMENT_HALTED
    qty = i64[b + NO_QTY]
    lot = ins[I_LOT, inst]
    if qty <= 0:
        return R_QTY_OUT_OF_RANGE
    if qty % lot != 0:
        return R_BAD_LOT
    if qty < ins[I_MIN_QTY, inst] or qty > ins[I_MAX_QTY, inst]:
        return R_QTY_OUT_OF_RANGE
    price = i64[b + NO_PRICE]
    tick = ins[I_TICK, inst]
    limit_like = otype == LIMIT or otype == STOP_LIMIT
    stop_like = otype == STOP or otype == STOP_LIMIT
    if limit_like:
        if price <= 0:
            return R_PRICE_OUT_OF_RANGE
        if price % tick != 0:
            return R_BAD_TICK
        if book_index(ins, glob, inst, price) < 0:
            return R_PRICE_OUT_OF_RANGE
    elif price != 0:
        return R_PRICE_OUT_OF_RANGE
    stop = i64[b + NO_STOP]
    if stop_like:
        if stop <= 0 or stop % tick != 0 or book_index(ins, glob, inst, stop) < 0:
            return R_INVALID_STOP_PRICE
        if ins[I_HAS_LAST, inst] != 0:
            last = ins[I_LAST, inst]
            if (side == BUY and stop <= last) or (side == SELL and stop >= last):
                return R_INVALID_STOP_PRICE
    elif stop != 0:
        return R_INVALID_STOP_PRICE
    resting_tif = tif == DAY or tif == GTC
    if post == BOOL_TRUE and not (otype == LIMIT and resting_tif):
        return R_INVALID_FLAGS
    display = i64[b + NO_DISPLAY]
    if display != 0:
        if not (limit_like and resting_tif) or display < 0 or display > qty or display % lot != 0:
            return R_INVALID_DISPLAY_QTY
    if not has_free_slot(glob):
        return R_BOOK_FULL
    if stop_like and glob[G_STOPS] >= glob[G_MAX_STOPS]:
        return R_STOP_CAPACITY
    if (ins[I_MAX_ORDER_QTY, inst] != 0 or ins[I_BAND_PPM, inst] != 0 or ins[I_MAX_NOTIONAL, inst] != 0
            or acct[A_MAX_OPEN, acc] != 0):
        risk = pre_trade_check(mem, inst, acc, side, otype, price, stop, qty)
        if risk != R_NONE:
            return risk
    rprice = risk_price(st, inst, side, otype, price, stop)
    if ins[I_KIND, inst] == KIND_PERPETUAL:
        risk = perp_check(glob, acc, inst, side, qty, rprice, reduce)
    else:
        wallet, pos = st.wallet, st.pos
        risk = spot_check(glob, ins, wallet, pos, acc, inst, side, qty, rprice)
    if risk != R_NONE:
        return risk
    idx = book_index(ins, glob, inst, price) if limit_like else -1
    if post == BOOL_TRUE and crosses(ins, glob, inst, side, idx):
        return R_POST_ONLY_WOULD_TRADE
    if tif == FOK:
        stp = get(i64, b, NO_STP)
        if stp == STP_DEFAULT:
            stp = acct[A_STP, acc]
        lim = limit_index(st, inst, side, otype, idx)
        if not fok_fillable(mem, inst, side, acc, stp, lim, qty):
            return R_FOK_UNFILLABLE
    return R_NONE


@njit(**INLINE)
def risk_price(st, inst, side, otype, price, stop):
    """The price an order's hold or margin is sized at (docs/risk.md "Spot holds"): its limit,
    its stop price moved by the market protection, or the market protection price now (0
    when the opposite side is empty)."""
    ins, glob = st.ins, st.glob
    if otype == LIMIT or otype == STOP_LIMIT:
        return price
    tick = ins[I_TICK, inst]
    levels = glob[G_LEVELS]
    lo, hi = window(ins, glob, inst)
    if otype == STOP:
        p = stop + glob[G_PROTECTION] * tick if side == BUY else stop - glob[G_PROTECTION] * tick
        return min(max(p, lo), hi)
    if (side == BUY and ins[I_ASK, inst] >= levels) or (side == SELL and ins[I_BID, inst] < 0):
        return 0
    idx = limit_index(st, inst, side, otype, -1)
    idx = min(max(idx, 0), levels - 1)
    return (ins[I_BASE, inst] + idx) * tick


@njit(**JIT)
def pre_trade_check(mem, inst, acc, side, otype, price, stop, qty):
    """docs/risk.md pre-trade checks 1-4 (MaxOrderQty, PriceBand, MaxNotional, MaxOpenOrders);
    the position and money checks of the instrument's kind follow in ``check_new_order``."""
    st = views(mem)
    ins, acct = st.ins, st.acct
    most_qty = ins[I_MAX_ORDER_QTY, inst]
    if most_qty != 0 and qty > most_qty:
        return R_MAX_ORDER_QTY
    limit_like = otype == LIMIT or otype == STOP_LIMIT
    if ins[I_BAND_PPM, inst] != 0 and limit_like:
        lo, hi = band_of(ins, inst)
        if price < lo or price > hi:
            return R_PRICE_BAND
    cap = ins[I_MAX_NOTIONAL, inst]
    if cap != 0:
        p = price
        if otype == STOP:
            p = stop
        elif otype == MARKET:
            p = risk_price(st, inst, side, otype, price, stop)  # 0: nothing to trade against
        if p > 0 and p * qty // ins[I_NOTIONAL_DIV, inst] > cap:
            return R_MAX_NOTIONAL
    most = acct[A_MAX_OPEN, acc]
    if most != 0 and acct[A_LIVE, acc] >= most:
        return R_MAX_OPEN_ORDERS
    return R_NONE


@njit(**INLINE)
def crosses(ins, glob, inst, side, idx):
    """Would a limit at book index ``idx`` trade against the opposite side now?"""
    if side == BUY:
        return ins[I_ASK, inst] < glob[G_LEVELS] and idx >= ins[I_ASK, inst]
    return ins[I_BID, inst] >= 0 and idx <= ins[I_BID, inst]


@njit(**JIT)
def on_new_order(mem, out, i64, b):
    st = views(mem)
    o, ins, glob = st.orders, st.ins, st.glob
    clord = i64[b + NO_CLORD]
    sess = get(i64, b, NO_SESSION)
    acc = get(i64, b, NO_ACCOUNT)
    inst = get(i64, b, NO_INSTRUMENT)
    reason = check_new_order(mem, i64, b)
    if reason != R_NONE:
        return ev.order_rejected(out, glob, clord, 0, sess, acc, inst, reason, T_NEW_ORDER)
    oid = glob[G_NEXT_ORDER_ID]
    glob[G_NEXT_ORDER_ID] = oid + 1
    s = acquire(st, oid, inst, acc)
    price = i64[b + NO_PRICE]
    qty = i64[b + NO_QTY]
    display = i64[b + NO_DISPLAY]
    stop = i64[b + NO_STOP]
    side = get(i64, b, NO_SIDE)
    otype = get(i64, b, NO_ORD_TYPE)
    tif = get(i64, b, NO_TIF)
    post = get(i64, b, NO_POST_ONLY)
    reduce = get(i64, b, NO_REDUCE_ONLY)
    o[s, O_PRICE] = price
    o[s, O_QTY] = qty
    o[s, O_LEAVES] = qty
    o[s, O_DISP] = 0
    o[s, O_HIDDEN] = 0
    o[s, O_DSIZE] = display
    o[s, O_FILLED] = 0
    o[s, O_CLORD] = clord
    o[s, O_STOP] = stop
    o[s, O_SESS] = sess
    o[s, O_SIDE] = side
    o[s, O_TYPE] = otype
    o[s, O_TIF] = tif
    o[s, O_POST] = post
    o[s, O_REDUCE] = reduce
    o[s, O_STP] = get(i64, b, NO_STP)
    stop_like = otype == STOP or otype == STOP_LIMIT
    o[s, O_LEVEL] = -1 if (otype == MARKET or otype == STOP) else book_index(ins, glob, inst, price)
    o[s, O_RPRICE] = risk_price(st, inst, side, otype, price, stop)
    o[s, O_HOLD] = 0
    o[s, O_OPEN] = 0
    wallet, pos = st.wallet, st.pos
    if ins[I_KIND, inst] == KIND_PERPETUAL:
        open_add(st, pos, s)
    else:
        spot_hold(st, wallet, s)
    out = ev.order_accepted(out, glob, oid, clord, price, qty, display, stop, sess, acc, inst, side, otype,
                            tif, post, reduce)
    if ins[I_STATUS, inst] == HALTED:  # with the Queue policy (Reject was checked)
        o[s, O_STATE] = S_QUEUED
        list_append(o, ins, I_QUEUE_HEAD, I_QUEUE_TAIL, inst, s, O_NEXT, O_PREV)
        if stop_like:
            glob[G_STOPS] += 1
        return out
    if stop_like:
        glob[G_STOPS] += 1
        add_stop(st, s)
        return out
    out = run_aggressor(mem, out, s)
    return stops_after(mem, out, inst)


@njit(**JIT)
def on_cancel(mem, out, i64, b):
    st = views(mem)
    o, glob = st.orders, st.glob
    oid = i64[b + CO_ORDER_ID]
    acc = get(i64, b, CO_ACCOUNT)
    inst = get(i64, b, CO_INSTRUMENT)
    s = find_order(st, oid)
    if s == -1 or o[s, O_INST] != inst:
        reason = R_UNKNOWN_ORDER
    elif o[s, O_ACCT] != acc:
        reason = R_NOT_YOUR_ORDER
    else:
        return remove_order(mem, out, s, np.int64(CXL_USER))
    return ev.cancel_rejected(out, glob, oid, i64[b + CO_CLORD], i64[b + CO_ORIG_CLORD],
                              get(i64, b, CO_SESSION), acc, inst, reason, T_CANCEL_ORDER)


@njit(**INLINE)
def check_replace(st, s, inst, acc, price, qty, display):
    o, ins, glob = st.orders, st.ins, st.glob
    if s == -1 or o[s, O_INST] != inst:
        return R_UNKNOWN_ORDER
    if o[s, O_ACCT] != acc:
        return R_NOT_YOUR_ORDER
    status = ins[I_STATUS, inst]
    if status == CLOSED:
        return R_INSTRUMENT_CLOSED
    if status == HALTED:
        return R_INSTRUMENT_HALTED
    if o[s, O_STATE] != S_RESTING:
        return R_STOP_NOT_ALLOWED
    lot = ins[I_LOT, inst]
    if qty <= 0:
        return R_QTY_OUT_OF_RANGE
    if qty % lot != 0:
        return R_BAD_LOT
    if qty < ins[I_MIN_QTY, inst] or qty > ins[I_MAX_QTY, inst] or qty <= o[s, O_FILLED]:
        return R_QTY_OUT_OF_RANGE
    if price <= 0:
        return R_PRICE_OUT_OF_RANGE
    if price % ins[I_TICK, inst] != 0:
        return R_BAD_TICK
    if book_index(ins, glob, inst, price) < 0:
        return R_PRICE_OUT_OF_RANGE
    if display < 0 or display > qty or display % lot != 0:
        return R_INVALID_DISPLAY_QTY
    most_qty = ins[I_MAX_ORDER_QTY, inst]
    if most_qty != 0 and qty > most_qty:
        return R_MAX_ORDER_QTY
    if ins[I_BAND_PPM, inst] != 0 and price != o[s, O_PRICE]:
        lo, hi = band_of(ins, inst)
        if price < lo or price > hi:
            return R_PRICE_BAND
    cap = ins[I_MAX_NOTIONAL, inst]
    if cap != 0 and price * qty // ins[I_NOTIONAL_DIV, inst] > cap:
        return R_MAX_NOTIONAL
    return replace_money_check(st.glob, s, price, qty - o[s, O_FILLED])


@njit(**JIT)
def replace_money_check(glob, s, price, leaves):
    """docs/risk.md: a replaced order's hold (spot) or open margin (perpetual) is recomputed
    for its new price and quantity; what it needs beyond what it has must be there."""
    st = tables(glob)
    o, ins = st.orders, st.ins
    wallet, pos = st.wallet, st.pos
    inst = o[s, O_INST]
    acc = o[s, O_ACCT]
    side = o[s, O_SIDE]
    if ins[I_KIND, inst] == KIND_PERPETUAL:
        if o[s, O_REDUCE] != 0:
            return R_NONE
        row = acc * glob[G_MAX_INSTRUMENTS] + inst
        dq = leaves - o[s, O_OPEN]
        q = pos[row, P_QTY]
        bq = pos[row, P_B] + (dq if side == BUY else 0)
        sq = pos[row, P_S] + (dq if side != BUY else 0)
        if dq > 0 and max(abs(q + bq), abs(q - sq)) > ins[I_POS_LIMIT, inst]:
            return R_POSITION_LIMIT
        dn = notional(ins, inst, price, leaves) - notional(ins, inst, o[s, O_RPRICE], o[s, O_OPEN])
        eq, im, mm = account_risk(glob, acc, inst, side, dq, dn)
        if eq - wallet[acc * glob[G_MAX_ASSETS], W_HELD] - im < 0:
            return R_INSUFFICIENT_MARGIN
        return R_NONE
    w = hold_row(st, s)
    need = buy_hold(ins, inst, price, leaves) if side == BUY else leaves
    more = need - o[s, O_HOLD]
    if more > 0:
        if more > wallet[w, W_BAL] - wallet[w, W_HELD]:
            return R_INSUFFICIENT_FUNDS
        if side == BUY and glob[G_PERP_N] != 0:
            eq, im, mm = account_risk(glob, acc, 0, 0, 0, 0)
            if eq - wallet[w, W_HELD] - im < more:
                return R_INSUFFICIENT_FUNDS
    return R_NONE


@njit(**JIT)
def rehold(glob, s, price):
    """After a replace: the order's hold or open margin for its new price and leaves."""
    st = tables(glob)
    o, ins = st.orders, st.ins
    wallet, pos = st.wallet, st.pos
    if ins[I_KIND, o[s, O_INST]] == KIND_PERPETUAL:
        open_sync(st, pos, s, 0)
        o[s, O_RPRICE] = price
        open_add(st, pos, s)
        return
    o[s, O_RPRICE] = price
    need = buy_hold(ins, o[s, O_INST], price, o[s, O_LEAVES]) if o[s, O_SIDE] == BUY else o[s, O_LEAVES]
    wallet[hold_row(st, s), W_HELD] += need - o[s, O_HOLD]
    o[s, O_HOLD] = need


@njit(**JIT)
def on_replace(mem, out, i64, b):
    st = views(mem)
    o, ins, glob = st.orders, st.ins, st.glob
    oid = i64[b + RO_ORDER_ID]
    clord = i64[b + RO_CLORD]
    orig = i64[b + RO_ORIG_CLORD]
    price = i64[b + RO_PRICE]
    qty = i64[b + RO_QTY]
    display = i64[b + RO_DISPLAY]
    sess = get(i64, b, RO_SESSION)
    acc = get(i64, b, RO_ACCOUNT)
    inst = get(i64, b, RO_INSTRUMENT)
    s = find_order(st, oid)
    reason = check_replace(st, s, inst, acc, price, qty, display)
    if reason == R_NONE:
        idx = book_index(ins, glob, inst, price)
        side = o[s, O_SIDE]
        sidx = 0 if side == BUY else 1
        old_disp = o[s, O_DISP]
        leaves = qty - o[s, O_FILLED]
        if price == o[s, O_PRICE] and qty <= o[s, O_QTY]:
            # keeps its priority; the displayed part never grows in place
            show = min(old_disp, display_of(display, leaves))
            o[s, O_QTY] = qty
            o[s, O_LEAVES] = leaves
            o[s, O_DISP] = show
            o[s, O_HIDDEN] = leaves - show
            o[s, O_DSIZE] = display
            o[s, O_CLORD] = clord
            rehold(st.glob, s, price)
            out = ev.order_replaced(out, glob, oid, clord, orig, price, qty, leaves, display, sess, acc, inst)
            if show < old_disp:
                out = ev.book_reduce(out, glob, oid, old_disp - show, inst)
            return out
        cross = crosses(ins, glob, inst, side, idx)
        if cross and o[s, O_POST] == BOOL_TRUE:
            reason = R_POST_ONLY_WOULD_TRADE
        else:
            level_remove(st.glob, s, inst, sidx)
            o[s, O_PRICE] = price
            o[s, O_QTY] = qty
            o[s, O_LEAVES] = leaves
            o[s, O_DSIZE] = display
            o[s, O_CLORD] = clord
            o[s, O_LEVEL] = idx
            rehold(st.glob, s, price)
            out = ev.order_replaced(out, glob, oid, clord, orig, price, qty, leaves, display, sess, acc, inst)
            if cross:
                out = ev.book_delete(out, glob, oid, inst)
                out = run_aggressor(mem, out, s)
                return stops_after(mem, out, inst)
            show = display_of(display, leaves)
            o[s, O_DISP] = show
            o[s, O_HIDDEN] = leaves - show
            level_append(st, s, inst, sidx, idx)
            return ev.book_replace(out, glob, oid, price, show, inst, side)
    return ev.cancel_rejected(out, glob, oid, clord, orig, sess, acc, inst, reason, T_REPLACE_ORDER)


@njit(**JIT)
def on_mass_cancel(mem, out, i64, b):
    st = views(mem)
    o, ins, acct, glob = st.orders, st.ins, st.acct, st.glob
    clord = i64[b + MC_CLORD]
    sess = get(i64, b, MC_SESSION)
    acc = get(i64, b, MC_ACCOUNT)
    inst = get(i64, b, MC_INSTRUMENT)
    scope = get(i64, b, MC_SCOPE)
    reason = R_NONE
    if (scope != SCOPE_ACCOUNT and scope != SCOPE_INSTRUMENT and scope != SCOPE_ACCOUNT_INSTRUMENT
            and scope != SCOPE_SESSION):
        reason = R_INVALID_SCOPE
    elif (scope == SCOPE_ACCOUNT or scope == SCOPE_ACCOUNT_INSTRUMENT) and not known_account(acct, glob, acc):
        reason = R_UNKNOWN_ACCOUNT
    elif (scope == SCOPE_INSTRUMENT or scope == SCOPE_ACCOUNT_INSTRUMENT) and not known_instrument(ins, glob, inst):
        reason = R_UNKNOWN_INSTRUMENT
    if reason != R_NONE:
        return ev.cancel_rejected(out, glob, 0, clord, 0, sess, acc, inst, reason, T_MASS_CANCEL)
    count = 0
    if scope == SCOPE_SESSION:
        live = glob[G_LIVE]  # every cancel releases its slot
        out = cancel_scope(mem, out, KILL_SESSION, acc, sess, inst, np.int64(CXL_MASS))
        count = live - glob[G_LIVE]
    elif scope == SCOPE_INSTRUMENT:
        s = ins[I_LIVE_HEAD, inst]
        while s != -1:
            nxt = o[s, O_INEXT]
            out = remove_order(mem, out, s, np.int64(CXL_MASS))
            count += 1
            s = nxt
    else:
        s = acct[A_LIVE_HEAD, acc]
        while s != -1:
            nxt = o[s, O_ANEXT]
            if scope == SCOPE_ACCOUNT or o[s, O_INST] == inst:
                out = remove_order(mem, out, s, np.int64(CXL_MASS))
                count += 1
            s = nxt
    return ev.mass_cancel_done(out, glob, clord, count, sess, acc, inst, scope)
