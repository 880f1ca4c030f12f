"""Admin messages that define the venue: instruments, their limits, accounts, trading status.

docs/engine.md "Admin messages" and docs/risk.md "Instrument limits". Each answers with one
``AdminResult``; a definition's checks keep every later notional inside int64
(``fits_int64``, ``position_cap``). ``known_instrument`` and ``known_account`` are what the
other families ask of what these messages created.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.arena import views
from ringex.engine.kernel.events import get
from ringex.engine.kernel.fixed import base_of, signed32, window
from ringex.engine.kernel.flags import INLINE, JIT, PPM
from ringex.engine.kernel.matching import cb_clear, release_queue, remove_order
from ringex.engine.kernel.state import (
    A_CREATED, A_MAX_OPEN, A_STP, G_LEVELS, G_MAX_ACCOUNTS, G_MAX_ASSETS, G_MAX_INSTRUMENTS, G_PERP_N,
    G_PERPS, I_BAND_PPM, I_BASE, I_BASE_ASSET, I_CB_HALT, I_CB_MOVE, I_CB_ON, I_CB_REF, I_CB_START,
    I_CB_UNTIL, I_CB_WINDOW, I_DEFINED, I_IM, I_INDEX, I_KIND, I_LIQ_FEE, I_LIVE_HEAD, I_LOT, I_MAKER_FEE, I_MARK,
    I_MAX_NOTIONAL, I_MAX_ORDER_QTY, I_MAX_POS, I_MAX_QTY, I_MIN_QTY, I_MM, I_NOTIONAL_DIV, I_POLICY,
    I_POS_LIMIT, I_REF, I_STATUS, I_SYMBOL, I_TAKER_FEE, I_TICK, MAX_PERPS, O_INEXT, O_TIF, P_QTY,
)
from ringex.engine.wire.layout import (
    CA_ACCOUNT, CA_MAX_OPEN, CA_STP, CLOSED, CXL_EXPIRED, DAY, HALTED, ID_BASE_ASSET, ID_HALT_POLICY,
    ID_INSTRUMENT, ID_KIND, ID_LOT, ID_MAKER_FEE, ID_MAX_QTY, ID_MIN_QTY, ID_REF_PRICE, ID_STATUS,
    ID_SYMBOL, ID_TAKER_FEE, ID_TICK, IL_BAND_PPM, IL_CB_HALT, IL_CB_MOVE_PPM, IL_CB_WINDOW,
    IL_INSTRUMENT, IL_MAX_NOTIONAL, IL_MAX_ORDER_QTY, IL_MAX_POSITION, IL_NOTIONAL_DIV, KIND_PERPETUAL,
    KIND_SPOT, POLICY_QUEUE, POLICY_REJECT, R_ACCOUNT_CAPACITY, R_DUPLICATE_ACCOUNT,
    R_DUPLICATE_INSTRUMENT, R_INSTRUMENT_CAPACITY, R_INVALID_INSTRUMENT_DEFINITION, R_INVALID_STP_MODE,
    R_INEXACT_NOTIONAL, R_INSTRUMENT_IN_USE, R_NONE, R_UNKNOWN_INSTRUMENT, STP_MAX, STP_OFF,
    T_CREATE_ACCOUNT, T_INSTRUMENT_DEFINITION, T_INSTRUMENT_LIMITS, T_TRADING_STATUS, TRADING, TS_INSTRUMENT, TS_STATUS,
)


@njit(**INLINE)
def known_instrument(ins, glob, inst):
    return 0 < inst < glob[G_MAX_INSTRUMENTS] and ins[I_DEFINED, inst] != 0


@njit(**INLINE)
def known_account(acct, glob, acc):
    return 0 < acc < glob[G_MAX_ACCOUNTS] and acct[A_CREATED, acc] != 0


@njit(**JIT)
def on_instrument_definition(mem, out, i64, b):
    st = views(mem)
    ins, glob = st.ins, st.glob
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
        ins[I_LIQ_FEE, inst] = 0
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


@njit(**INLINE)
def in_use(st, inst):
    """Whether ``inst`` has a working order (resting, pending stop or queued) or an open
    position."""
    if st.ins[I_LIVE_HEAD, inst] != -1:
        return True
    maxi = st.glob[G_MAX_INSTRUMENTS]
    for a in range(st.glob[G_MAX_ACCOUNTS]):
        if st.pos[a * maxi + inst, P_QTY] != 0:
            return True
    return False


@njit(**JIT)
def on_instrument_limits(mem, out, i64, b):
    """docs/risk.md "InstrumentLimits": set (or change) a defined instrument's risk limits."""
    st = views(mem)
    ins, glob = st.ins, st.glob
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
    elif (ins[I_TICK, inst] * ins[I_LOT, inst]) % div != 0:
        # every price is a multiple of the tick and every quantity of the lot: with this the
        # notional of every trade is a whole number, and no split of an order can round
        # value from one side to the other (issue 13, defect 2)
        reason = R_INEXACT_NOTIONAL
    elif div != ins[I_NOTIONAL_DIV, inst] and in_use(st, inst):
        # holds, costs and margins were priced with the old divisor: changing it now would
        # move value between the traders (and the insurance fund)
        reason = R_INSTRUMENT_IN_USE
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
    acct, glob = st.acct, st.glob
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
    o, ins, glob = st.orders, st.ins, st.glob
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
