"""Compiled matching: aggressor execution, self-trade prevention, FOK fillability, resting,
stop triggers and order removal, as docs/engine.md specifies them.

Inlined helpers take ``st``, the arena's tables by name (``ringex.engine.kernel.arena.Tables``);
compiled functions that others call take the arena ``mem`` and build ``st`` themselves
(passing one array between compiled functions is cheap, ten are not). Every function
that emits takes the output buffer ``out`` and returns it (see ``ringex.engine.kernel.events``).

numba specialises a compiled function for each *literal* argument it is called with, so a
constant passed to a non-inlined function is wrapped as ``np.int64(CONSTANT)``: one
compilation instead of one per constant.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.flags import INLINE, JIT, MAX_I64
from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import tables, views
from ringex.engine.kernel.fixed import div_ceil
from ringex.engine.kernel.book import level_append, level_move_back, level_remove, list_append, list_remove, release
from ringex.engine.kernel.margin import reduce_loss_covered, rekey
from ringex.engine.kernel.money import leaves_changed, settle
from ringex.engine.kernel.prefetch import maker_rows
from ringex.engine.wire.layout import (
    BUY, CXL_HALTED, CXL_REDUCE_ONLY, HALTED, KIND_PERPETUAL, KIND_SPOT, TRADING, CXL_IOC, CXL_MARKET, CXL_SELF_TRADE, DAY, GTC, LIMIT, STOP, STOP_LIMIT, MARKET,
    STP_CANCEL_BOTH, STP_CANCEL_RESTING, STP_DECREMENT_BOTH, STP_DEFAULT, STP_OFF,
)
from ringex.engine.kernel.state import (
    A_STP, G_CB_HALTS, G_MAX_INSTRUMENTS, G_TS, I_CB_HALT, I_CB_MOVE, I_CB_ON, I_CB_REF, I_CB_START,
    I_CB_UNTIL, I_CB_WINDOW, I_STATUS, G_LEVELS, G_NEXT_TRADE_ID, G_PROTECTION, G_STOPS,
    I_ASK, I_BAND_PPM, I_BASE, I_BID, I_HAS_LAST, I_LAST, I_REF, I_TICK, I_QUEUE_HEAD, I_QUEUE_TAIL, I_STOP_HEAD, I_STOP_MAX_SELL,
    I_STOP_MIN_BUY, I_STOP_TAIL, NO_STOP_BUY, NO_STOP_SELL,
    O_ACCT, O_CLORD, O_DISP, O_DSIZE, O_FILLED, O_HIDDEN, O_INST, O_LEAVES, O_LEVEL, O_NEXT, O_OID,
    O_PREV, O_PRICE, O_QTY, O_SESS, O_SIDE, O_STATE, O_STOP, O_STP, O_TIF, O_TYPE,
    S_ACTIVE, S_QUEUED, S_RESTING, S_STOP,
    G_MAX_INSTRUMENTS as _MAXI, I_KIND, I_MARK, O_REDUCE, O_RPRICE, P_QTY,
)



@njit(**INLINE)
def effective_stp(st, s):
    """The order's STP mode with AccountDefault resolved."""
    o = st.orders
    mode = o[s, O_STP]
    if mode == STP_DEFAULT:
        mode = st.acct[A_STP, o[s, O_ACCT]]
    return mode


@njit(**INLINE)
def display_of(dsize, leaves):
    """Displayed part of ``leaves`` for display size ``dsize`` (0: everything)."""
    if dsize > 0 and dsize < leaves:
        return dsize
    return leaves


@njit(**INLINE)
def limit_index(st, inst, side, otype, level):
    """Book index an aggressor may trade up to (buy) / down to (sell). A limit order's is its
    price's; a market order's (or a triggered stop's) is the best opposite price plus the
    protection, or nothing (-1 for a buy, ``levels`` for a sell) when that side is empty."""
    ins, glob = st.ins, st.glob
    if otype == LIMIT or otype == STOP_LIMIT:
        return level
    levels = glob[G_LEVELS]
    if side == BUY:
        ask = ins[I_ASK, inst]
        if ask >= levels:
            return -1
        lim = ask + glob[G_PROTECTION]
        if ins[I_BAND_PPM, inst] != 0:  # the protection is clipped to the price band
            lo, hi = band_of(ins, inst)
            top = hi // ins[I_TICK, inst] - ins[I_BASE, inst]
            if top < lim:
                lim = top
        return lim
    bid = ins[I_BID, inst]
    if bid < 0:
        return levels
    lim = bid - glob[G_PROTECTION]
    if ins[I_BAND_PPM, inst] != 0:
        lo, hi = band_of(ins, inst)
        bottom = div_ceil(lo, ins[I_TICK, inst]) - ins[I_BASE, inst]
        if bottom > lim:
            lim = bottom
    return lim


@njit(**INLINE)
def band_of(ins, inst):
    """``(lo, hi)``: the price band around a reference that trades alone cannot walk
    (docs/risk.md "Price band"): a perpetual's mark; a spot instrument's breaker window
    reference (its first trade in the window) while the breaker is on; else the last trade
    price, or the definition's referencePrice before the first trade."""
    if ins[I_KIND, inst] == KIND_PERPETUAL:
        ref = ins[I_MARK, inst]
    elif ins[I_CB_ON, inst] != 0 and ins[I_CB_REF, inst] != 0:
        ref = ins[I_CB_REF, inst]
    elif ins[I_HAS_LAST, inst] != 0:
        ref = ins[I_LAST, inst]
    else:
        ref = ins[I_REF, inst]
    ppm = ins[I_BAND_PPM, inst]
    w = (ref // 1_000_000) * ppm + (ref % 1_000_000) * ppm // 1_000_000
    return ref - w, ref + w


@njit(**INLINE)
def aggressor_limit(st, a):
    o, ins = st.orders, st.ins
    inst = o[a, O_INST]
    side = o[a, O_SIDE]
    otype = o[a, O_TYPE]
    lim = limit_index(st, inst, side, otype, o[a, O_LEVEL])
    if side == BUY and (otype == MARKET or otype == STOP) and ins[I_KIND, inst] == KIND_SPOT:
        # a spot buy never trades above the price its hold was sized at (docs/risk.md)
        rp = o[a, O_RPRICE]
        cap = rp // ins[I_TICK, inst] - ins[I_BASE, inst] if rp > 0 else -1
        if cap < lim:
            lim = cap
    return lim


@njit(**INLINE)
def reducible(st, s):
    """How much a reduce-only order ``s`` may still fill: its account's position when the
    order's side closes it, else 0."""
    o, glob = st.orders, st.glob
    pos = st.pos
    q = pos[o[s, O_ACCT] * glob[_MAXI] + o[s, O_INST], P_QTY]
    if o[s, O_SIDE] == BUY:
        return -q if q < 0 else 0
    return q if q > 0 else 0


@njit(**INLINE)
def refill(glob, out, r, inst, sidx):
    """A resting iceberg whose displayed part is gone shows the next part at the back."""
    st = tables(glob)
    o = st.orders
    hidden = o[r, O_HIDDEN]
    show = display_of(o[r, O_DSIZE], hidden)
    o[r, O_HIDDEN] = hidden - show
    o[r, O_DISP] = show
    level_move_back(st, r, inst, sidx)
    return ev.book_add(out, glob, o[r, O_OID], o[r, O_PRICE], show, inst, o[r, O_SIDE])


@njit(**INLINE)
def cancel_resting_whole(glob, out, r, inst, sidx, reason):
    """OrderCanceled of a resting order's whole remainder, BookDelete, slot freed."""
    st = tables(glob)
    o = st.orders
    oid = o[r, O_OID]
    out = ev.order_canceled(out, glob, oid, o[r, O_CLORD], o[r, O_LEAVES], o[r, O_SESS],
                            o[r, O_ACCT], inst, reason)
    out = ev.book_delete(out, glob, oid, inst)
    level_remove(st.glob, r, inst, sidx)
    o[r, O_LEAVES] = 0
    release(st.glob, r)
    return out


@njit(**INLINE)
def cancel_aggressor(st, out, a, qty):
    """OrderCanceled(SelfTrade) of ``qty`` of the aggressor (its total shrinks with it)."""
    o, glob = st.orders, st.glob
    o[a, O_LEAVES] -= qty
    o[a, O_QTY] -= qty
    leaves_changed(st, a)
    return ev.order_canceled(out, glob, o[a, O_OID], o[a, O_CLORD], qty, o[a, O_SESS],
                             o[a, O_ACCT], o[a, O_INST], CXL_SELF_TRADE)


@njit(**INLINE)
def execute(st, out, a, lim):
    """Walk the opposite side from the best price while within ``lim``, each level oldest
    first, filling or applying self-trade prevention, until the aggressor is done."""
    o, ins, glob = st.orders, st.ins, st.glob
    inst = o[a, O_INST]
    side = o[a, O_SIDE]
    buy = side == BUY
    osidx = 1 if buy else 0
    levels = glob[G_LEVELS]
    a_acct = o[a, O_ACCT]
    stp = effective_stp(st, a)
    lvl_base = (inst * 2 + osidx) * levels
    lvl = st.levels
    reduce_any = ins[I_KIND, inst] != KIND_SPOT
    while o[a, O_LEAVES] > 0:
        if buy:
            idx = ins[I_ASK, inst]
            if idx >= levels or idx > lim:
                break
        else:
            idx = ins[I_BID, inst]
            if idx < 0 or idx < lim:
                break
        r = lvl[lvl_base + idx, 0]
        maker_rows(glob, glob, r, inst)  # settle's and release's rows, while the events are written
        if stp != STP_OFF and o[r, O_ACCT] == a_acct:
            if stp == STP_DECREMENT_BOTH:
                d = min(o[a, O_LEAVES], o[r, O_LEAVES])
                shown = o[r, O_DISP]
                rd = min(d, shown)
                o[r, O_LEAVES] -= d
                o[r, O_QTY] -= d  # qty = filled + leaves, always
                o[r, O_DISP] = shown - rd
                o[r, O_HIDDEN] -= d - rd
                leaves_changed(st, r)
                r_oid = o[r, O_OID]
                out = ev.order_canceled(out, glob, r_oid, o[r, O_CLORD], d, o[r, O_SESS],
                                        o[r, O_ACCT], inst, CXL_SELF_TRADE)
                if o[r, O_LEAVES] == 0:
                    out = ev.book_delete(out, glob, r_oid, inst)
                    level_remove(st.glob, r, inst, osidx)
                    release(st.glob, r)
                else:
                    out = ev.book_reduce(out, glob, r_oid, rd, inst)
                    if o[r, O_DISP] == 0:
                        out = refill(st.glob, out, r, inst, osidx)
                out = cancel_aggressor(st, out, a, d)
                continue
            if stp == STP_CANCEL_RESTING or stp == STP_CANCEL_BOTH:
                out = cancel_resting_whole(st.glob, out, r, inst, osidx, np.int64(CXL_SELF_TRADE))
            if stp != STP_CANCEL_RESTING:  # CancelAggressor, CancelBoth
                out = cancel_aggressor(st, out, a, o[a, O_LEAVES])
                break
            continue
        # a fill at the resting order's price
        price = o[r, O_PRICE]
        shown = o[r, O_DISP]
        q = min(o[a, O_LEAVES], shown)
        if reduce_any and (o[a, O_REDUCE] != 0 or o[r, O_REDUCE] != 0):
            # reduce-only orders never increase a position (docs/risk.md)
            if o[r, O_REDUCE] != 0:
                room = reducible(st, r)
                if room != 0:
                    q = min(q, room)
                if room == 0 or (o[r, O_REDUCE] == 1 and not reduce_loss_covered(glob, r, price, q, True)):
                    out = cancel_resting_whole(st.glob, out, r, inst, osidx, np.int64(CXL_REDUCE_ONLY))
                    continue
            if o[a, O_REDUCE] != 0:
                room = reducible(st, a)
                if room != 0:
                    q = min(q, room)
                if room == 0 or (o[a, O_REDUCE] == 1 and not reduce_loss_covered(glob, a, price, q, False)):
                    out = cancel_remainder(st, out, a, CXL_REDUCE_ONLY)
                    break
        if ins[I_CB_ON, inst] != 0 and cb_breach(st.glob, inst, price):
            out = cb_trip(st.glob, out, a, inst)
            break
        o[r, O_DISP] = shown - q
        r_leaves = o[r, O_LEAVES] - q
        o[r, O_LEAVES] = r_leaves
        o[r, O_FILLED] += q
        a_leaves = o[a, O_LEAVES] - q
        o[a, O_LEAVES] = a_leaves
        o[a, O_FILLED] += q
        tid = glob[G_NEXT_TRADE_ID]
        glob[G_NEXT_TRADE_ID] = tid + 1
        ins[I_LAST, inst] = price
        ins[I_HAS_LAST, inst] = 1
        r_oid = o[r, O_OID]
        out = ev.trade(out, glob, tid, price, q, r_oid, o[r, O_CLORD], r_leaves, o[a, O_OID],
                       o[a, O_CLORD], a_leaves, inst, o[r, O_ACCT], o[r, O_SESS], a_acct,
                       o[a, O_SESS], side)
        out = ev.book_execute(out, glob, r_oid, q, price, tid, inst)
        settle(st, a, r, price, q)
        if r_leaves == 0:
            level_remove(st.glob, r, inst, osidx)
            release(st.glob, r)
        elif shown == q:
            out = refill(st.glob, out, r, inst, osidx)
    return out


@njit(**INLINE)
def cancel_remainder(st, out, a, reason):
    """OrderCanceled(reason) of the aggressor's whole remainder (its slot is released by
    ``run_aggressor``)."""
    o, glob = st.orders, st.glob
    leaves = o[a, O_LEAVES]
    o[a, O_LEAVES] = 0
    return ev.order_canceled(out, glob, o[a, O_OID], o[a, O_CLORD], leaves, o[a, O_SESS],
                             o[a, O_ACCT], o[a, O_INST], reason)


@njit(**INLINE)
def cb_trip(glob, out, a, inst):
    """The breaker trips: the aggressor's remainder is canceled (Halted) and the instrument
    halts until sequencer time now + cbHaltNs."""
    st = tables(glob)
    o, ins = st.orders, st.ins
    leaves = o[a, O_LEAVES]
    out = ev.order_canceled(out, glob, o[a, O_OID], o[a, O_CLORD], leaves, o[a, O_SESS],
                            o[a, O_ACCT], inst, CXL_HALTED)
    o[a, O_LEAVES] = 0
    ins[I_STATUS, inst] = HALTED
    ts = glob[G_TS]
    halt = ins[I_CB_HALT, inst]
    ins[I_CB_UNTIL, inst] = ts + halt if halt <= MAX_I64 - ts else MAX_I64
    glob[G_CB_HALTS] += 1
    return ev.instrument_status(out, glob, inst, HALTED)


@njit(**JIT)
def cb_reopen(mem, out):
    """Before a message is processed: every instrument whose breaker halt has run out (its
    timestamp is at or past the end) trades again, in ascending instrument id:
    InstrumentStatus(Trading), then its queued orders."""
    st = views(mem)
    ins, glob = st.ins, st.glob
    ts = glob[G_TS]
    for inst in range(1, glob[G_MAX_INSTRUMENTS]):
        until = ins[I_CB_UNTIL, inst]
        if until != 0 and ts >= until:
            cb_clear(ins, glob, inst)
            ins[I_STATUS, inst] = TRADING
            out = ev.instrument_status(out, glob, inst, TRADING)
            out = release_queue(mem, out, inst)
    return out


@njit(**INLINE)
def cb_clear(ins, glob, inst):
    """A breaker halt ends (it ran out, or an operator set the status): no automatic reopen,
    and the next trade sets a new window reference."""
    ins[I_CB_UNTIL, inst] = 0
    ins[I_CB_REF, inst] = 0
    glob[G_CB_HALTS] -= 1


@njit(**JIT)
def cb_breach(glob, inst, price):
    """docs/risk.md "Circuit breaker": would a fill at ``price`` move the price more than
    cbMovePpm from the window's reference? The first fill of a window sets the reference."""
    st = tables(glob)
    ins = st.ins
    ts = glob[G_TS]
    start = ts - ts % ins[I_CB_WINDOW, inst]
    if start != ins[I_CB_START, inst]:
        ins[I_CB_START, inst] = start
        ins[I_CB_REF, inst] = 0
    ref = ins[I_CB_REF, inst]
    if ref == 0:
        ins[I_CB_REF, inst] = price
        return False
    move = ins[I_CB_MOVE, inst]
    w = (ref // 1_000_000) * move + (ref % 1_000_000) * move // 1_000_000
    return price > ref + w or price < ref - w


@njit(**JIT)
def fok_fillable(mem, inst, side, a_acct, stp, lim, need):
    """Could an aggressor of ``need`` fill completely? Walks the path ``execute`` would take,
    changing nothing. Within a level the first pass meets the orders in time order (refilled
    icebergs go behind everything); once a level holds no blocking own order, all of the
    other orders' quantity there (hidden reserves included) is reachable. ``stp`` is the
    effective mode (AccountDefault resolved)."""
    st = views(mem)
    o, lvl, ins, glob = st.orders, st.levels, st.ins, st.glob
    buy = side == BUY
    osidx = 1 if buy else 0
    levels = glob[G_LEVELS]
    lvl_base = (inst * 2 + osidx) * levels
    idx = ins[I_ASK, inst] if buy else ins[I_BID, inst]
    got = 0
    while True:
        if buy:
            if idx >= levels or idx > lim:
                return False
        elif idx < 0 or idx < lim:
            return False
        hidden = 0
        r = lvl[lvl_base + idx, 0]
        while r != -1:
            if stp != STP_OFF and o[r, O_ACCT] == a_acct:
                if stp != STP_CANCEL_RESTING:
                    return False  # met an own order before the quantity was reached
            else:
                got += o[r, O_DISP]
                if got >= need:
                    return True
                hidden += o[r, O_HIDDEN]
            r = o[r, O_NEXT]
        got += hidden
        if got >= need:
            return True
        # next level with orders
        if buy:
            idx += 1
            while idx < levels and idx <= lim and lvl[lvl_base + idx, 0] == -1:
                idx += 1
        else:
            idx -= 1
            while idx >= 0 and idx >= lim and lvl[lvl_base + idx, 0] == -1:
                idx -= 1


@njit(**INLINE)
def rest(st, out, a):
    """Put the aggressor's remainder in the book: BookAdd of its displayed part."""
    o, glob = st.orders, st.glob
    leaves = o[a, O_LEAVES]
    show = display_of(o[a, O_DSIZE], leaves)
    o[a, O_DISP] = show
    o[a, O_HIDDEN] = leaves - show
    o[a, O_STATE] = S_RESTING
    inst = o[a, O_INST]
    side = o[a, O_SIDE]
    level_append(st, a, inst, 0 if side == BUY else 1, o[a, O_LEVEL])
    return ev.book_add(out, glob, o[a, O_OID], o[a, O_PRICE], show, inst, side)


@njit(**JIT)
def run_aggressor(mem, out, a):
    """Execute order ``a`` and then rest or cancel its remainder (new order, triggered stop,
    released queued order)."""
    st = views(mem)
    o, glob = st.orders, st.glob
    o[a, O_STATE] = S_ACTIVE
    filled = o[a, O_FILLED]
    out = execute(st, out, a, aggressor_limit(st, a))
    if o[a, O_FILLED] != filled and st.ins[I_KIND, o[a, O_INST]] != KIND_SPOT:
        rekey(glob, o[a, O_ACCT], 0)  # once for all its fills (settle re-keyed the makers)
    leaves = o[a, O_LEAVES]
    if leaves > 0:
        otype = o[a, O_TYPE]
        tif = o[a, O_TIF]
        if (otype == LIMIT or otype == STOP_LIMIT) and (tif == DAY or tif == GTC):
            return rest(st, out, a)
        reason = CXL_MARKET if (otype == MARKET or otype == STOP) else CXL_IOC
        out = ev.order_canceled(out, glob, o[a, O_OID], o[a, O_CLORD], leaves, o[a, O_SESS],
                                o[a, O_ACCT], o[a, O_INST], reason)
        o[a, O_LEAVES] = 0
    release(st.glob, a)
    return out


@njit(**INLINE)
def add_stop(st, s):
    """Order ``s`` becomes a pending stop of its instrument."""
    o, ins = st.orders, st.ins
    inst = o[s, O_INST]
    o[s, O_STATE] = S_STOP
    list_append(o, ins, I_STOP_HEAD, I_STOP_TAIL, inst, s, O_NEXT, O_PREV)
    sp = o[s, O_STOP]
    if o[s, O_SIDE] == BUY:
        if sp < ins[I_STOP_MIN_BUY, inst]:
            ins[I_STOP_MIN_BUY, inst] = sp
    elif sp > ins[I_STOP_MAX_SELL, inst]:
        ins[I_STOP_MAX_SELL, inst] = sp


@njit(**JIT)
def evaluate_stops(mem, out, inst):
    """While a pending stop of ``inst`` is triggered by the last trade price, the one with the
    lowest order id triggers and executes (which may trigger more)."""
    st = views(mem)
    o, ins, glob = st.orders, st.ins, st.glob
    while ins[I_STOP_HEAD, inst] != -1 and ins[I_HAS_LAST, inst] != 0 and ins[I_STATUS, inst] == TRADING:
        last = ins[I_LAST, inst]
        if last < ins[I_STOP_MIN_BUY, inst] and last > ins[I_STOP_MAX_SELL, inst]:
            break  # the bounds say nothing can trigger
        found = -1
        found_oid = 0
        min_buy = NO_STOP_BUY
        max_sell = NO_STOP_SELL
        s = ins[I_STOP_HEAD, inst]
        while s != -1:
            sp = o[s, O_STOP]
            if o[s, O_SIDE] == BUY:
                if sp < min_buy:
                    min_buy = sp
                hit = last >= sp
            else:
                if sp > max_sell:
                    max_sell = sp
                hit = last <= sp
            if hit and (found == -1 or o[s, O_OID] < found_oid):
                found = s
                found_oid = o[s, O_OID]
            s = o[s, O_NEXT]
        ins[I_STOP_MIN_BUY, inst] = min_buy
        ins[I_STOP_MAX_SELL, inst] = max_sell
        if found == -1:
            break
        list_remove(o, ins, I_STOP_HEAD, I_STOP_TAIL, inst, found, O_NEXT, O_PREV)
        glob[G_STOPS] -= 1
        out = ev.stop_triggered(out, glob, found_oid, o[found, O_CLORD], o[found, O_STOP], last,
                                o[found, O_SESS], o[found, O_ACCT], inst)
        out = run_aggressor(mem, out, found)
    return out


@njit(**INLINE)
def stops_after(mem, out, inst):
    """Evaluate the stops of ``inst`` after an aggressor execution (no call when it has none)."""
    if views(mem).ins[I_STOP_HEAD, inst] == -1:
        return out
    return evaluate_stops(mem, out, inst)


@njit(**JIT)
def remove_order(mem, out, s, reason):
    """Cancel live order ``s`` whole: OrderCanceled(reason), then BookDelete if it rested."""
    st = views(mem)
    o, ins, glob = st.orders, st.ins, st.glob
    inst = o[s, O_INST]
    state = o[s, O_STATE]
    if state == S_RESTING:
        return cancel_resting_whole(st.glob, out, s, inst, 0 if o[s, O_SIDE] == BUY else 1, reason)
    out = ev.order_canceled(out, glob, o[s, O_OID], o[s, O_CLORD], o[s, O_LEAVES],
                            o[s, O_SESS], o[s, O_ACCT], inst, reason)
    if state == S_STOP:
        list_remove(o, ins, I_STOP_HEAD, I_STOP_TAIL, inst, s, O_NEXT, O_PREV)
        glob[G_STOPS] -= 1
    elif state == S_QUEUED:
        list_remove(o, ins, I_QUEUE_HEAD, I_QUEUE_TAIL, inst, s, O_NEXT, O_PREV)
        otype = o[s, O_TYPE]
        if otype == STOP or otype == STOP_LIMIT:
            glob[G_STOPS] -= 1
    o[s, O_LEAVES] = 0
    release(st.glob, s)
    return out


@njit(**JIT)
def release_queue(mem, out, inst):
    """The instrument trades again: its queued orders go, in ascending order id, as if they
    had just been accepted."""
    st = views(mem)
    o, ins = st.orders, st.ins
    while ins[I_QUEUE_HEAD, inst] != -1 and ins[I_STATUS, inst] == TRADING:  # a breaker may halt it
        s = ins[I_QUEUE_HEAD, inst]
        list_remove(o, ins, I_QUEUE_HEAD, I_QUEUE_TAIL, inst, s, O_NEXT, O_PREV)
        otype = o[s, O_TYPE]
        if otype == STOP or otype == STOP_LIMIT:
            add_stop(st, s)  # its stop slot was taken when it was accepted
        else:
            out = run_aggressor(mem, out, s)
            out = stops_after(mem, out, inst)
    return out

