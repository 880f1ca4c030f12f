"""The compiled entry point: one call runs a whole batch of SBE slots through the engine.

``process_batch(arena, slots, out)`` reads each (SLOT_SIZE-byte) slot of ``slots`` through an
int64 view, dispatches on the header's template id, applies docs/engine.md and writes the
events into ``out`` (growing it when needed); it returns the output buffer, and the number
of events is ``glob[G_EVENTS]``.

Compile-time shape (numba's per-function cost is large, and so is inlining at IR level):
one compiled function per message handler and for the few shared pieces (running an
aggressor, stop evaluation, order removal, level removal, slot release); small helpers are
``inline="always"``. Hot paths make one or two calls per message.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import borrow, views
from ringex.engine.kernel.book import acquire, find_order, has_free_slot, level_append, level_remove, list_append
from ringex.engine.wire.layout import (
    BOOL_TRUE, BUY, CA_ACCOUNT, CA_STP, CLOSED, CO_ACCOUNT, CO_CLORD, CO_INSTRUMENT, CO_ORDER_ID,
    CO_ORIG_CLORD, CO_SESSION, CXL_EXPIRED, CXL_MASS, CXL_USER, DAY, FOK, GTC, HALTED,
    HDR_SCHEMA, HDR_TEMPLATE, HDR_VERSION, ID_HALT_POLICY, ID_INSTRUMENT, ID_KIND, ID_LOT,
    ID_MAKER_FEE, ID_MAX_QTY, ID_MIN_QTY, ID_REF_PRICE, ID_STATUS, ID_SYMBOL, ID_TAKER_FEE, ID_TICK,
    IOC, KIND_PERPETUAL, KIND_SPOT, KS_ACCOUNT, KS_INSTRUMENT, LIMIT, MARKET,
    MC_ACCOUNT, MC_CLORD, MC_INSTRUMENT, MC_SCOPE, MC_SESSION, NO_ACCOUNT, NO_CLORD, NO_DISPLAY,
    NO_INSTRUMENT, NO_ORD_TYPE, NO_POST_ONLY, NO_PRICE, NO_QTY, NO_REDUCE_ONLY, NO_SESSION, NO_SIDE,
    NO_STOP, NO_STP, NO_TIF, POLICY_QUEUE, POLICY_REJECT, R_ACCOUNT_CAPACITY, R_BAD_LOT, R_BAD_TICK,
    R_BOOK_FULL, R_DUPLICATE_ACCOUNT, R_DUPLICATE_INSTRUMENT, R_FOK_UNFILLABLE,
    R_INSTRUMENT_CAPACITY, R_INSTRUMENT_CLOSED, R_INSTRUMENT_HALTED, R_INVALID_DISPLAY_QTY,
    R_INVALID_FLAGS, R_INVALID_INSTRUMENT_DEFINITION, R_INVALID_ORD_TYPE, R_INVALID_SCOPE,
    R_INVALID_SIDE, R_INVALID_STOP_PRICE, R_INVALID_STP_MODE, R_INVALID_TIF, R_NONE,
    R_NOT_YOUR_ORDER, R_POST_ONLY_WOULD_TRADE, R_PRICE_OUT_OF_RANGE, R_QTY_OUT_OF_RANGE,
    R_STOP_CAPACITY, R_STOP_NOT_ALLOWED, R_UNKNOWN_ACCOUNT, R_UNKNOWN_INSTRUMENT, R_UNKNOWN_ORDER,
    R_UNSUPPORTED_MESSAGE, RO_ACCOUNT, RO_CLORD, RO_DISPLAY, RO_INSTRUMENT, RO_ORDER_ID,
    RO_ORIG_CLORD, RO_PRICE, RO_QTY, RO_SESSION, SCHEMA_ID, SCHEMA_VERSION, SCOPE_ACCOUNT,
    SCOPE_ACCOUNT_INSTRUMENT, SCOPE_INSTRUMENT, SELL, SLOT_WORDS, STAMP_ING, STAMP_SEQ, STAMP_TS,
    STOP, STOP_LIMIT, STP_DEFAULT, STP_MAX, STP_OFF, T_CANCEL_ORDER, T_CREATE_ACCOUNT, T_FUNDS,
    T_INDEX_PRICE, T_INSTRUMENT_DEFINITION, T_KILL_SWITCH, T_MASS_CANCEL, T_NEW_ORDER,
    T_REPLACE_ORDER, T_TRADING_STATUS, TRADING, TS_INSTRUMENT, TS_STATUS,
    CA_MAX_OPEN, CXL_KILL, IL_BAND_PPM, IL_CB_HALT, IL_CB_MOVE_PPM, IL_CB_WINDOW,
    IL_INSTRUMENT, IL_MAX_NOTIONAL, IL_NOTIONAL_DIV, T_INSTRUMENT_LIMITS, KILL_ACCOUNT, KILL_ENGAGE, KILL_EXCHANGE, KILL_INSTRUMENT,
    KILL_RELEASE, KILL_SESSION, KS_ACTION, KS_SCOPE, KS_SESSION, R_KILL_ACCOUNT, R_KILL_CAPACITY,
    R_KILL_EXCHANGE, R_KILL_INSTRUMENT, R_KILL_SESSION, R_MAX_NOTIONAL, R_MAX_OPEN_ORDERS,
    R_PRICE_BAND, ID_BASE_ASSET, IL_MAX_ORDER_QTY, IL_MAX_POSITION, R_INSUFFICIENT_FUNDS,
    R_MAX_ORDER_QTY, R_POSITION_LIMIT, R_INSUFFICIENT_MARGIN, T_PERPETUAL_PARAMS,
)
from ringex.engine.kernel.arena import risk_views
from ringex.engine.kernel.prefetch import ahead, event_rows
from ringex.engine.kernel.events import get
from ringex.engine.kernel.fixed import base_of, notional, signed32, window
from ringex.engine.kernel.liquidation import check_all, funding_due, on_index_price, on_perpetual_params
from ringex.engine.kernel.margin import account_risk, open_add, open_sync, perp_check
from ringex.engine.kernel.money import buy_hold, hold_row, on_funds, spot_check, spot_hold
from ringex.engine.kernel.matching import (
    cb_clear, cb_reopen, band_of, add_stop, display_of, stops_after, fok_fillable, limit_index, release_queue, remove_order,
    run_aggressor,
)
from ringex.engine.kernel.state import (
    A_CREATED, A_LIVE_HEAD, A_STP, G_EVENTS, G_EVENTS_TOTAL, G_ING, G_LEVELS, G_MAX_ACCOUNTS,
    G_MAX_INSTRUMENTS, G_MAX_STOPS, G_MESSAGES, G_NEXT_ORDER_ID, G_SEQ, G_STOPS, G_TS,
    I_ASK, I_BASE, I_BID, I_DEFINED, I_HAS_LAST, I_KIND, I_LAST, I_LIVE_HEAD, I_LOT, I_MAKER_FEE,
    I_MAX_QTY, I_MIN_QTY, I_POLICY, I_QUEUE_HEAD, I_QUEUE_TAIL, I_REF, I_STATUS, I_SYMBOL,
    I_TAKER_FEE, I_TICK,
    O_ACCT, O_ANEXT, O_CLORD, O_DISP, O_DSIZE, O_FILLED, O_HIDDEN, O_INEXT, O_INST, O_LEAVES,
    O_LEVEL, O_POST, O_PRICE, O_QTY, O_REDUCE, O_SESS, O_SIDE, O_STATE, O_STOP, O_STP, O_TIF,
    O_TYPE, O_NEXT, O_PREV, S_QUEUED, S_RESTING,
    A_KILL, A_MAX_OPEN, G_CB_HALTS, G_KILL_EXCHANGE, G_KILLED, G_KILLED_N, G_KILLS, I_BAND_PPM,
    I_CB_HALT, I_CB_MOVE, I_CB_ON, I_CB_REF, I_CB_START, I_CB_UNTIL, I_CB_WINDOW, I_KILL,
    I_MAX_NOTIONAL, I_NOTIONAL_DIV, MAX_KILLED_SESSIONS, O_OID, A_LIVE, G_CAPACITY,
    G_AT_RISK, G_FUNDING_N, G_MAX_ASSETS, G_PERP_N, G_PERPS, G_PROTECTION, I_BASE_ASSET, I_IM,
    I_INDEX, I_MARK, I_MAX_ORDER_QTY, I_MAX_POS, I_MM, I_POS_LIMIT, MAX_PERPS, O_HOLD, O_OPEN,
    O_RPRICE, P_B, P_QTY, P_S, W_BAL, W_HELD,
)

JIT = dict(cache=True, nogil=True, error_model="numpy")
PPM = 1_000_000
# tiny helpers are inlined into their callers at numba IR level: no separate compilation
# (and no specialisation per literal argument)
INLINE = dict(JIT, inline="always")


@njit(**INLINE)
def book_index(ins, glob, inst, price):
    """Book index of ``price`` (a positive multiple of the tick), or -1 outside the window."""
    idx = price // ins[I_TICK, inst] - ins[I_BASE, inst]
    if idx < 0 or idx >= glob[G_LEVELS]:
        return -1
    return idx


@njit(**INLINE)
def known_instrument(ins, glob, inst):
    return 0 < inst < glob[G_MAX_INSTRUMENTS] and ins[I_DEFINED, inst] != 0


@njit(**INLINE)
def known_account(acct, glob, acc):
    return 0 < acc < glob[G_MAX_ACCOUNTS] and acct[A_CREATED, acc] != 0


@njit(**INLINE)
def check_new_order(mem, i64, b):
    """The first failing check of docs/engine.md "NewOrder" (1-10), or R_NONE."""
    st = views(mem)
    ins, acct, glob = st[3], st[4], st[6]
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
        wallet, pos, heap = risk_views(glob)
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
def killed_session(glob, sess):
    """Index of ``sess`` in the table of killed sessions, or -1."""
    for k in range(glob[G_KILLED_N]):
        if glob[G_KILLED + k] == sess:
            return k
    return -1


@njit(**INLINE)
def kill_reason(acct, ins, glob, acc, sess, inst):
    """The first engaged kill switch a new order falls under (docs/risk.md), or R_NONE."""
    if acct[A_KILL, acc] != 0:
        return R_KILL_ACCOUNT
    if glob[G_KILLED_N] != 0 and killed_session(glob, sess) >= 0:
        return R_KILL_SESSION
    if ins[I_KILL, inst] != 0:
        return R_KILL_INSTRUMENT
    if glob[G_KILL_EXCHANGE] != 0:
        return R_KILL_EXCHANGE
    return R_NONE


@njit(**INLINE)
def risk_price(st, inst, side, otype, price, stop):
    """The price an order's hold or margin is sized at (docs/risk.md "Spot holds"): its limit,
    its stop price moved by the market protection, or the market protection price now (0
    when the opposite side is empty)."""
    ins, glob = st[3], st[6]
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
    ins, acct, glob = st[3], st[4], st[6]
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
    o, ins, glob = st[0], st[3], st[6]
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
    wallet, pos, heap = risk_views(glob)
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
    o, glob = st[0], st[6]
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
    o, ins, glob = st[0], st[3], st[6]
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
    return replace_money_check(st, s, price, qty - o[s, O_FILLED])


@njit(**JIT)
def replace_money_check(st, s, price, leaves):
    """docs/risk.md: a replaced order's hold (spot) or open margin (perpetual) is recomputed
    for its new price and quantity; what it needs beyond what it has must be there."""
    o, ins, glob = st[0], st[3], st[6]
    wallet, pos, heap = risk_views(glob)
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
def rehold(st, s, price):
    """After a replace: the order's hold or open margin for its new price and leaves."""
    o, ins, glob = st[0], st[3], st[6]
    wallet, pos, heap = risk_views(glob)
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
    o, ins, glob = st[0], st[3], st[6]
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
            rehold(st, s, price)
            out = ev.order_replaced(out, glob, oid, clord, orig, price, qty, leaves, display, sess, acc, inst)
            if show < old_disp:
                out = ev.book_reduce(out, glob, oid, old_disp - show, inst)
            return out
        cross = crosses(ins, glob, inst, side, idx)
        if cross and o[s, O_POST] == BOOL_TRUE:
            reason = R_POST_ONLY_WOULD_TRADE
        else:
            level_remove(st, s, inst, sidx)
            o[s, O_PRICE] = price
            o[s, O_QTY] = qty
            o[s, O_LEAVES] = leaves
            o[s, O_DSIZE] = display
            o[s, O_CLORD] = clord
            o[s, O_LEVEL] = idx
            rehold(st, s, price)
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
    o, ins, acct, glob = st[0], st[3], st[4], st[6]
    clord = i64[b + MC_CLORD]
    sess = get(i64, b, MC_SESSION)
    acc = get(i64, b, MC_ACCOUNT)
    inst = get(i64, b, MC_INSTRUMENT)
    scope = get(i64, b, MC_SCOPE)
    reason = R_NONE
    if scope != SCOPE_ACCOUNT and scope != SCOPE_INSTRUMENT and scope != SCOPE_ACCOUNT_INSTRUMENT:
        reason = R_INVALID_SCOPE
    elif scope != SCOPE_INSTRUMENT and not known_account(acct, glob, acc):
        reason = R_UNKNOWN_ACCOUNT
    elif scope != SCOPE_ACCOUNT and not known_instrument(ins, glob, inst):
        reason = R_UNKNOWN_INSTRUMENT
    if reason != R_NONE:
        return ev.cancel_rejected(out, glob, 0, clord, 0, sess, acc, inst, reason, T_MASS_CANCEL)
    count = 0
    if scope == SCOPE_INSTRUMENT:
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


@njit(**JIT)
def on_instrument_definition(mem, out, i64, b):
    st = views(mem)
    ins, glob = st[3], st[6]
    inst = get(i64, b, ID_INSTRUMENT)
    tick = i64[b + ID_TICK]
    lot = i64[b + ID_LOT]
    min_qty = i64[b + ID_MIN_QTY]
    max_qty = i64[b + ID_MAX_QTY]
    ref = i64[b + ID_REF_PRICE]
    kind = get(i64, b, ID_KIND)
    policy = get(i64, b, ID_HALT_POLICY)
    status = get(i64, b, ID_STATUS)
    reason = R_NONE
    if not (0 < inst < glob[G_MAX_INSTRUMENTS]):
        reason = R_INSTRUMENT_CAPACITY
    elif ins[I_DEFINED, inst] != 0:
        reason = R_DUPLICATE_INSTRUMENT
    elif (tick <= 0 or lot <= 0 or min_qty <= 0 or min_qty > max_qty or min_qty % lot != 0
          or max_qty % lot != 0 or ref <= 0 or ref % tick != 0
          or (kind != KIND_SPOT and kind != KIND_PERPETUAL)
          or (policy != POLICY_REJECT and policy != POLICY_QUEUE)
          or (status != TRADING and status != HALTED and status != CLOSED)):
        reason = R_INVALID_INSTRUMENT_DEFINITION
    elif not fits_int64(glob, tick, ref, max_qty):
        reason = R_INVALID_INSTRUMENT_DEFINITION
    else:
        base_asset = get(i64, b, ID_BASE_ASSET)
        maker = signed32(get(i64, b, ID_MAKER_FEE))
        taker = signed32(get(i64, b, ID_TAKER_FEE))
        if kind == KIND_SPOT and not (1 <= base_asset < glob[G_MAX_ASSETS]):
            reason = R_INVALID_INSTRUMENT_DEFINITION
        elif kind == KIND_PERPETUAL and base_asset != 0:
            reason = R_INVALID_INSTRUMENT_DEFINITION
        elif taker < 0 or taker > PPM or maker < -taker or maker > taker:
            reason = R_INVALID_INSTRUMENT_DEFINITION
        elif kind == KIND_PERPETUAL and glob[G_PERP_N] >= MAX_PERPS:
            reason = R_INSTRUMENT_CAPACITY
    out = ev.admin_result(out, glob, 0, 0, inst, T_INSTRUMENT_DEFINITION, reason)
    if reason != R_NONE:
        return out
    ins[I_DEFINED, inst] = 1
    ins[I_TICK, inst] = tick
    ins[I_LOT, inst] = lot
    ins[I_MIN_QTY, inst] = min_qty
    ins[I_MAX_QTY, inst] = max_qty
    ins[I_REF, inst] = ref
    ins[I_BASE, inst] = base_of(ref // tick, glob[G_LEVELS])
    ins[I_STATUS, inst] = status
    ins[I_POLICY, inst] = policy
    ins[I_KIND, inst] = kind
    ins[I_MAKER_FEE, inst] = signed32(get(i64, b, ID_MAKER_FEE))
    ins[I_TAKER_FEE, inst] = signed32(get(i64, b, ID_TAKER_FEE))
    ins[I_BASE_ASSET, inst] = get(i64, b, ID_BASE_ASSET)
    ins[I_MAX_ORDER_QTY, inst] = 0
    ins[I_MAX_POS, inst] = 0
    ins[I_POS_LIMIT, inst] = position_cap(ins, glob, inst)
    if kind == KIND_PERPETUAL:
        # docs/risk.md: until PerpetualParams, fully collateralised, mark = index = reference
        ins[I_IM, inst] = PPM
        ins[I_MM, inst] = PPM // 2
        ins[I_INDEX, inst] = ref
        ins[I_MARK, inst] = ref
        k = glob[G_PERP_N]
        while k > 0 and glob[G_PERPS + k - 1] > inst:  # kept ascending
            glob[G_PERPS + k] = glob[G_PERPS + k - 1]
            k -= 1
        glob[G_PERPS + k] = inst
        glob[G_PERP_N] += 1
    ins[I_SYMBOL, inst] = i64[b + ID_SYMBOL]
    # docs/risk.md: a new instrument's limits are off until an InstrumentLimits sets them
    ins[I_MAX_NOTIONAL, inst] = 0
    ins[I_NOTIONAL_DIV, inst] = 1
    ins[I_BAND_PPM, inst] = 0
    ins[I_CB_MOVE, inst] = 0
    ins[I_CB_WINDOW, inst] = 0
    ins[I_CB_HALT, inst] = 0
    ins[I_CB_ON, inst] = 0
    ins[I_CB_START, inst] = 0
    ins[I_CB_REF, inst] = 0
    ins[I_CB_UNTIL, inst] = 0
    return ev.instrument_status(out, glob, inst, status)


@njit(**INLINE)
def position_cap(ins, glob, inst):
    """docs/risk.md: a perpetual position stays below 2**56 / top of the book window, so that
    32 positions' values add up inside int64."""
    lo, top = window(ins, glob, inst)
    return (1 << 56) // top


@njit(**INLINE)
def fits_int64(glob, tick, ref, max_qty):
    """docs/risk.md: (top of the book window) * maxQty < 2**62, so that no notional overflows."""
    lim = (1 << 62) - 1
    base = base_of(ref // tick, glob[G_LEVELS])
    if base > lim // tick:
        return False
    top = base + glob[G_LEVELS] - 1
    if top > lim // tick:
        return False
    return max_qty <= lim // (top * tick)


@njit(**JIT)
def on_instrument_limits(mem, out, i64, b):
    """docs/risk.md "InstrumentLimits": set (or change) a defined instrument's risk limits."""
    st = views(mem)
    ins, glob = st[3], st[6]
    inst = get(i64, b, IL_INSTRUMENT)
    cap = i64[b + IL_MAX_NOTIONAL]
    div = i64[b + IL_NOTIONAL_DIV]
    most_qty = i64[b + IL_MAX_ORDER_QTY]
    max_pos = i64[b + IL_MAX_POSITION]
    window = i64[b + IL_CB_WINDOW]  # a uint64 of 2**63 or more reads negative
    halt = i64[b + IL_CB_HALT]
    band = signed32(get(i64, b, IL_BAND_PPM))
    move = signed32(get(i64, b, IL_CB_MOVE_PPM))
    reason = R_NONE
    if not known_instrument(ins, glob, inst):
        reason = R_UNKNOWN_INSTRUMENT
    elif (div < 1 or cap < 0 or band < 0 or band > PPM or move < 0 or move > PPM
          or window < 0 or halt < 0 or most_qty < 0 or max_pos < 0):
        reason = R_INVALID_INSTRUMENT_DEFINITION
    out = ev.admin_result(out, glob, 0, 0, inst, T_INSTRUMENT_LIMITS, reason)
    if reason != R_NONE:
        return out
    ins[I_MAX_NOTIONAL, inst] = cap
    ins[I_NOTIONAL_DIV, inst] = div
    ins[I_MAX_ORDER_QTY, inst] = most_qty
    ins[I_MAX_POS, inst] = max_pos
    limit = position_cap(ins, glob, inst)
    ins[I_POS_LIMIT, inst] = min(max_pos, limit) if max_pos != 0 else limit
    ins[I_BAND_PPM, inst] = band
    if move != ins[I_CB_MOVE, inst] or window != ins[I_CB_WINDOW, inst] or halt != ins[I_CB_HALT, inst]:
        # new breaker settings: a new window (and reference) from the next trade; a breaker
        # halt in progress keeps its scheduled reopen
        ins[I_CB_MOVE, inst] = move
        ins[I_CB_WINDOW, inst] = window
        ins[I_CB_HALT, inst] = halt
        ins[I_CB_ON, inst] = 1 if (move != 0 and window != 0 and halt != 0) else 0
        ins[I_CB_START, inst] = 0
        ins[I_CB_REF, inst] = 0
    return out


@njit(**JIT)
def on_create_account(mem, out, i64, b):
    st = views(mem)
    acct, glob = st[4], st[6]
    acc = get(i64, b, CA_ACCOUNT)
    stp = get(i64, b, CA_STP)
    reason = R_NONE
    if not (0 < acc < glob[G_MAX_ACCOUNTS]):
        reason = R_ACCOUNT_CAPACITY
    elif acct[A_CREATED, acc] != 0:
        reason = R_DUPLICATE_ACCOUNT
    elif stp < STP_OFF or stp > STP_MAX:
        reason = R_INVALID_STP_MODE
    else:
        acct[A_CREATED, acc] = 1
        acct[A_STP, acc] = stp
        acct[A_MAX_OPEN, acc] = get(i64, b, CA_MAX_OPEN)
    return ev.admin_result(out, glob, 0, acc, 0, T_CREATE_ACCOUNT, reason)


@njit(**JIT)
def on_trading_status(mem, out, i64, b):
    st = views(mem)
    o, ins, glob = st[0], st[3], st[6]
    inst = get(i64, b, TS_INSTRUMENT)
    status = get(i64, b, TS_STATUS)
    reason = R_NONE
    if not known_instrument(ins, glob, inst):
        reason = R_UNKNOWN_INSTRUMENT
    elif status != TRADING and status != HALTED and status != CLOSED:
        reason = R_INVALID_INSTRUMENT_DEFINITION
    out = ev.admin_result(out, glob, 0, 0, inst, T_TRADING_STATUS, reason)
    if reason != R_NONE:
        return out
    if ins[I_CB_UNTIL, inst] != 0:  # the operator takes over from the circuit breaker
        cb_clear(ins, glob, inst)
    out = ev.instrument_status(out, glob, inst, status)
    ins[I_STATUS, inst] = status
    if status == CLOSED:
        s = ins[I_LIVE_HEAD, inst]
        while s != -1:
            nxt = o[s, O_INEXT]
            if o[s, O_TIF] == DAY:
                out = remove_order(mem, out, s, np.int64(CXL_EXPIRED))
            s = nxt
    elif status == TRADING:
        out = release_queue(mem, out, inst)
    return out


@njit(**JIT)
def on_kill_switch(mem, out, i64, b):
    """docs/risk.md "Admin messages": KillSwitch engage / release at four levels."""
    st = views(mem)
    ins, acct, glob = st[3], st[4], st[6]
    acc = get(i64, b, KS_ACCOUNT)
    sess = get(i64, b, KS_SESSION)
    inst = get(i64, b, KS_INSTRUMENT)
    scope = get(i64, b, KS_SCOPE)
    action = get(i64, b, KS_ACTION)
    engage = action == KILL_ENGAGE
    reason = R_NONE
    if scope < KILL_ACCOUNT or scope > KILL_EXCHANGE or (not engage and action != KILL_RELEASE):
        reason = R_INVALID_SCOPE
    elif scope == KILL_ACCOUNT and not known_account(acct, glob, acc):
        reason = R_UNKNOWN_ACCOUNT
    elif scope == KILL_INSTRUMENT and not known_instrument(ins, glob, inst):
        reason = R_UNKNOWN_INSTRUMENT
    elif (scope == KILL_SESSION and engage and killed_session(glob, sess) < 0
          and glob[G_KILLED_N] >= MAX_KILLED_SESSIONS):
        reason = R_KILL_CAPACITY
    out = ev.admin_result(out, glob, 0, acc, inst, T_KILL_SWITCH, reason)
    if reason != R_NONE:
        return out
    on = 1 if engage else 0
    if scope == KILL_ACCOUNT:
        glob[G_KILLS] += on - acct[A_KILL, acc]
        acct[A_KILL, acc] = on
    elif scope == KILL_INSTRUMENT:
        glob[G_KILLS] += on - ins[I_KILL, inst]
        ins[I_KILL, inst] = on
    elif scope == KILL_EXCHANGE:
        glob[G_KILLS] += on - glob[G_KILL_EXCHANGE]
        glob[G_KILL_EXCHANGE] = on
    else:
        k = killed_session(glob, sess)
        if engage and k < 0:
            glob[G_KILLED + glob[G_KILLED_N]] = sess
            glob[G_KILLED_N] += 1
            glob[G_KILLS] += 1
        elif not engage and k >= 0:
            last = glob[G_KILLED_N] - 1
            glob[G_KILLED + k] = glob[G_KILLED + last]
            glob[G_KILLED + last] = 0
            glob[G_KILLED_N] = last
            glob[G_KILLS] -= 1
    out = ev.kill_switch_status(out, glob, acc, sess, inst, scope, action)
    if engage:
        out = kill_cancel(mem, out, scope, acc, sess, inst)
    return out


@njit(**JIT)
def kill_cancel(mem, out, scope, acc, sess, inst):
    """Cancel every working order in the scope, in ascending order id."""
    st = views(mem)
    o, glob = st[0], st[6]
    cap = glob[G_CAPACITY]
    oids = np.empty(cap, dtype=np.int64)
    slots = np.empty(cap, dtype=np.int64)
    n = 0
    for s in range(cap):
        if o[s, O_STATE] == 0:  # S_FREE
            continue
        if scope == KILL_ACCOUNT and o[s, O_ACCT] != acc:
            continue
        if scope == KILL_SESSION and o[s, O_SESS] != sess:
            continue
        if scope == KILL_INSTRUMENT and o[s, O_INST] != inst:
            continue
        oids[n] = o[s, O_OID]
        slots[n] = s
        n += 1
    order = np.argsort(oids[:n])
    for k in range(n):
        out = remove_order(mem, out, slots[order[k]], np.int64(CXL_KILL))
    return out


@njit(**JIT)
def process_batch(mem, slots, out):
    """Run every slot of ``slots`` ((k, SLOT_SIZE) uint8, one SBE message each) through the
    engine; returns the output buffer (events in rows ``0 .. glob[G_EVENTS]``)."""
    mem = borrow(mem)
    owned = out
    out = borrow(out)  # helpers pass it around refcount-free; a grown buffer is a real array
    glob = views(mem)[6]
    glob[G_EVENTS] = 0
    i64 = slots.reshape(-1).view(np.int64)
    k = slots.shape[0]
    for m in range(k):
        ahead(mem, glob, i64, m, k)
        event_rows(out, glob[G_EVENTS])
        b = m * SLOT_WORDS
        glob[G_SEQ] = i64[b + STAMP_SEQ]
        glob[G_TS] = i64[b + STAMP_TS]
        glob[G_ING] = i64[b + STAMP_ING]
        if glob[G_CB_HALTS] != 0:
            out = cb_reopen(mem, out)
        if glob[G_FUNDING_N] != 0:
            out = funding_due(mem, out)
        tid = get(i64, b, HDR_TEMPLATE)
        if get(i64, b, HDR_SCHEMA) != SCHEMA_ID or get(i64, b, HDR_VERSION) != SCHEMA_VERSION:
            out = ev.order_rejected(out, glob, 0, 0, 0, 0, 0, R_UNSUPPORTED_MESSAGE, tid)
        elif tid == T_NEW_ORDER:
            out = on_new_order(mem, out, i64, b)
        elif tid == T_CANCEL_ORDER:
            out = on_cancel(mem, out, i64, b)
        elif tid == T_REPLACE_ORDER:
            out = on_replace(mem, out, i64, b)
        elif tid == T_MASS_CANCEL:
            out = on_mass_cancel(mem, out, i64, b)
        elif tid == T_INSTRUMENT_DEFINITION:
            out = on_instrument_definition(mem, out, i64, b)
        elif tid == T_CREATE_ACCOUNT:
            out = on_create_account(mem, out, i64, b)
        elif tid == T_TRADING_STATUS:
            out = on_trading_status(mem, out, i64, b)
        elif tid == T_FUNDS:
            out = on_funds(mem, out, i64, b)
        elif tid == T_INDEX_PRICE:
            out = on_index_price(mem, out, i64, b)
        elif tid == T_PERPETUAL_PARAMS:
            out = on_perpetual_params(mem, out, i64, b)
        elif tid == T_KILL_SWITCH:
            out = on_kill_switch(mem, out, i64, b)
        elif tid == T_INSTRUMENT_LIMITS:
            out = on_instrument_limits(mem, out, i64, b)
        else:
            out = ev.order_rejected(out, glob, 0, 0, 0, 0, 0, R_UNSUPPORTED_MESSAGE, tid)
        if glob[G_AT_RISK] != 0:  # a fill or a transfer put some account at its liquidation price
            out = check_all(mem, out)
    glob[G_MESSAGES] += k
    glob[G_EVENTS_TOTAL] += glob[G_EVENTS]
    if out.ctypes.data == owned.ctypes.data:
        return owned  # never hand the borrowed alias back to Python
    return out



