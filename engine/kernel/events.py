"""Compiled writers of the engine's output events, SBE-encoded into an int64 slot array.

The output buffer is a ``(rows, SLOT_WORDS)`` int64 array (its uint8 view is the
``(rows, SLOT_SIZE)`` slot array the output ring takes). Each writer claims the next row,
zeroes it, writes the header word and the Stamp of the input message being processed
(``glob[G_SEQ..G_ING]``), then the event's fields, and returns the buffer: a new, twice as
large one when the old was full, so a batch never overflows and never drops an event.
Every event-producing function therefore takes ``out`` and returns it.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import cgutils, types
from numba.core import config as _numba_config
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from ringex.engine.kernel.flags import INLINE, JIT
from ringex.engine.wire.layout import (
    AR_ACCOUNT, AR_INSTRUMENT, AR_REASON, AR_REF_TEMPLATE, AR_VALUE,
    BA_INSTRUMENT, BA_ORDER_ID, BA_PRICE, BA_QTY, BA_SIDE,
    BD_INSTRUMENT, BD_ORDER_ID,
    BE_INSTRUMENT, BE_ORDER_ID, BE_PRICE, BE_QTY, BE_TRADE_ID,
    BP_INSTRUMENT, BP_ORDER_ID, BP_PRICE, BP_QTY, BP_SIDE,
    BR_INSTRUMENT, BR_ORDER_ID, BR_QTY,
    CR_ACCOUNT, CR_CLORD, CR_INSTRUMENT, CR_ORDER_ID, CR_ORIG_CLORD, CR_REASON, CR_REF_TEMPLATE, CR_SESSION,
    H_ACCEPTED, H_ADMIN_RESULT, H_BOOK_ADD, H_BOOK_DELETE, H_BOOK_EXECUTE, H_BOOK_REDUCE, H_BOOK_REPLACE,
    H_CANCEL_REJECTED, H_CANCELED, H_INSTRUMENT_STATUS, H_MASS_DONE, H_REJECTED, H_REPLACED,
    H_STOP_TRIGGERED, H_TRADE,
    IS_INSTRUMENT, IS_STATUS, H_KILL_STATUS, KT_ACCOUNT, KT_SESSION, KT_INSTRUMENT, KT_SCOPE, KT_ACTION,
    MD_ACCOUNT, MD_CLORD, MD_COUNT, MD_INSTRUMENT, MD_SCOPE, MD_SESSION,
    OA_ACCOUNT, OA_CLORD, OA_DISPLAY, OA_INSTRUMENT, OA_ORD_TYPE, OA_ORDER_ID, OA_POST_ONLY, OA_PRICE,
    OA_QTY, OA_REDUCE_ONLY, OA_SESSION, OA_SIDE, OA_STOP, OA_TIF,
    OC_ACCOUNT, OC_CLORD, OC_INSTRUMENT, OC_ORDER_ID, OC_QTY, OC_REASON, OC_SESSION,
    OR_ACCOUNT, OR_CLORD, OR_INSTRUMENT, OR_ORDER_ID, OR_REASON, OR_REF_TEMPLATE, OR_SESSION,
    RP_ACCOUNT, RP_CLORD, RP_DISPLAY, RP_INSTRUMENT, RP_LEAVES, RP_ORDER_ID, RP_ORIG_CLORD, RP_PRICE,
    RP_QTY, RP_SESSION,
    EVENT_WORDS, STAMP_ING, STAMP_SEQ, STAMP_TS,
    ST_ACCOUNT, ST_CLORD, ST_INSTRUMENT, ST_ORDER_ID, ST_SESSION, ST_STOP_PRICE, ST_TRIGGER_PRICE,
    TR_AGGRESSOR_SIDE, TR_INSTRUMENT, TR_MAKER_ACCOUNT, TR_MAKER_CLORD, TR_MAKER_LEAVES,
    TR_MAKER_ORDER_ID, TR_MAKER_SESSION, TR_PRICE, TR_QTY, TR_TAKER_ACCOUNT, TR_TAKER_CLORD,
    TR_TAKER_LEAVES, TR_TAKER_ORDER_ID, TR_TAKER_SESSION, TR_TRADE_ID,
)
from ringex.engine.wire.layout import (
    FA_INDEX, FA_INSTRUMENT, FA_MARK, FA_RATE, FA_REMAINDER, FA_TOTAL, H_FUNDING, H_LIQUIDATION,
    H_MARK_PRICE, LQ_ACCOUNT, LQ_AMOUNT, LQ_COUNTERPARTY, LQ_EQUITY, LQ_INSTRUMENT, LQ_PRICE, LQ_QTY,
    LQ_REQUIREMENT, LQ_STAGE, MK_BASIS, MK_INDEX, MK_INSTRUMENT, MK_MARK,
)
from ringex.engine.kernel.state import G_EVENTS, G_ING, G_SEQ, G_TS


if _numba_config.DISABLE_JIT:

    def grow(out):
        """A buffer twice as large holding the same events (the rows past them zero)."""
        rows = out.shape[0]
        bigger = np.zeros((2 * rows, out.shape[1]), dtype=np.int64)
        bigger[:rows] = out
        return bigger

else:

    @intrinsic
    def grow(typingctx, out):
        """A buffer twice as large holding the same events (the rows past them zero).

        An intrinsic, not a compiled function, because every event writer is inlined with a
        call to it: a call to a compiled function that returns an array reserves (and zeroes
        at entry) a 72-byte return slot in the caller's frame per call site, which made
        ``run_aggressor`` zero 2 KiB of stack on every order. Emitted in place, the
        allocation and the copies need no slot and run only when the buffer is full."""
        ret = types.Array(types.int64, 2, "C")

        def codegen(context, builder, sig, args):
            src = context.make_array(sig.args[0])(context, builder, value=args[0])
            rows, cols = cgutils.unpack_tuple(builder, src.shape, 2)
            word = context.get_constant(types.intp, 8)
            row_bytes = builder.mul(cols, word)
            old_bytes = builder.mul(rows, row_bytes)
            new_rows = builder.mul(rows, context.get_constant(types.intp, 2))
            new_bytes = builder.mul(new_rows, row_bytes)
            meminfo = context.nrt.meminfo_alloc_aligned(builder, size=new_bytes, align=64)
            data = builder.bitcast(context.nrt.meminfo_data(builder, meminfo), cgutils.voidptr_t)
            cgutils.raw_memcpy(builder, data, builder.bitcast(src.data, cgutils.voidptr_t), old_bytes, 1)
            cgutils.memset(builder, builder.gep(data, [old_bytes]), builder.sub(new_bytes, old_bytes), 0)
            dst = context.make_array(ret)(context, builder)
            populate_array(dst, data=builder.bitcast(data, src.data.type),
                           shape=cgutils.pack_array(builder, [new_rows, cols]),
                           strides=cgutils.pack_array(builder, [row_bytes, word]),
                           itemsize=word, meminfo=meminfo)
            return dst._getvalue()

        return ret(out), codegen


@njit(**INLINE)
def begin(out, glob, header):
    """Claim the next row: zeroed, with ``header`` and the current Stamp; returns (out, row)."""
    n = glob[G_EVENTS]
    if n >= out.shape[0]:
        out = grow(out)
    glob[G_EVENTS] = n + 1
    for w in range(EVENT_WORDS):  # the words past them are never written (zero since allocation)
        out[n, w] = 0
    out[n, 0] = header
    out[n, STAMP_SEQ] = glob[G_SEQ]
    out[n, STAMP_TS] = glob[G_TS]
    out[n, STAMP_ING] = glob[G_ING]
    return out, n


@njit(**INLINE)
def get(i64, b, f):
    """Read a 1, 2 or 4-byte field ``f = (word, shift, mask)`` of the slot starting at word
    ``b`` of an int64 view of the input (``put``'s counterpart)."""
    return (i64[b + f[0]] >> f[1]) & f[2]


@njit(**INLINE)
def put(out, n, f, v):
    """Write a 1, 2 or 4-byte field ``f = (word, shift, mask)`` of row ``n`` (zeroed by begin)."""
    out[n, f[0]] |= (np.int64(v) & f[2]) << f[1]


@njit(**INLINE)
def order_accepted(out, glob, oid, clord, price, qty, display, stop, sess, acct, inst, side, otype, tif,
                   post, reduce):
    out, n = begin(out, glob, H_ACCEPTED)
    out[n, OA_ORDER_ID] = oid
    out[n, OA_CLORD] = clord
    out[n, OA_PRICE] = price
    out[n, OA_QTY] = qty
    out[n, OA_DISPLAY] = display
    out[n, OA_STOP] = stop
    put(out, n, OA_SESSION, sess)
    put(out, n, OA_ACCOUNT, acct)
    put(out, n, OA_INSTRUMENT, inst)
    put(out, n, OA_SIDE, side)
    put(out, n, OA_ORD_TYPE, otype)
    put(out, n, OA_TIF, tif)
    put(out, n, OA_POST_ONLY, post)
    put(out, n, OA_REDUCE_ONLY, reduce)
    return out


@njit(**INLINE)
def order_rejected(out, glob, clord, oid, sess, acct, inst, reason, ref_template):
    out, n = begin(out, glob, H_REJECTED)
    out[n, OR_CLORD] = clord
    out[n, OR_ORDER_ID] = oid
    put(out, n, OR_SESSION, sess)
    put(out, n, OR_ACCOUNT, acct)
    put(out, n, OR_INSTRUMENT, inst)
    put(out, n, OR_REASON, reason)
    put(out, n, OR_REF_TEMPLATE, ref_template)
    return out


@njit(**INLINE)
def trade(out, glob, trade_id, price, qty, m_oid, m_clord, m_leaves, t_oid, t_clord, t_leaves, inst,
          m_acct, m_sess, t_acct, t_sess, aggressor_side):
    out, n = begin(out, glob, H_TRADE)
    out[n, TR_TRADE_ID] = trade_id
    out[n, TR_PRICE] = price
    out[n, TR_QTY] = qty
    out[n, TR_MAKER_ORDER_ID] = m_oid
    out[n, TR_MAKER_CLORD] = m_clord
    out[n, TR_MAKER_LEAVES] = m_leaves
    out[n, TR_TAKER_ORDER_ID] = t_oid
    out[n, TR_TAKER_CLORD] = t_clord
    out[n, TR_TAKER_LEAVES] = t_leaves
    put(out, n, TR_INSTRUMENT, inst)
    put(out, n, TR_MAKER_ACCOUNT, m_acct)
    put(out, n, TR_MAKER_SESSION, m_sess)
    put(out, n, TR_TAKER_ACCOUNT, t_acct)
    put(out, n, TR_TAKER_SESSION, t_sess)
    put(out, n, TR_AGGRESSOR_SIDE, aggressor_side)
    return out


@njit(**INLINE)
def order_canceled(out, glob, oid, clord, qty, sess, acct, inst, reason):
    out, n = begin(out, glob, H_CANCELED)
    out[n, OC_ORDER_ID] = oid
    out[n, OC_CLORD] = clord
    out[n, OC_QTY] = qty
    put(out, n, OC_SESSION, sess)
    put(out, n, OC_ACCOUNT, acct)
    put(out, n, OC_INSTRUMENT, inst)
    put(out, n, OC_REASON, reason)
    return out


@njit(**INLINE)
def order_replaced(out, glob, oid, clord, orig_clord, price, qty, leaves, display, sess, acct, inst):
    out, n = begin(out, glob, H_REPLACED)
    out[n, RP_ORDER_ID] = oid
    out[n, RP_CLORD] = clord
    out[n, RP_ORIG_CLORD] = orig_clord
    out[n, RP_PRICE] = price
    out[n, RP_QTY] = qty
    out[n, RP_LEAVES] = leaves
    out[n, RP_DISPLAY] = display
    put(out, n, RP_SESSION, sess)
    put(out, n, RP_ACCOUNT, acct)
    put(out, n, RP_INSTRUMENT, inst)
    return out


@njit(**INLINE)
def cancel_rejected(out, glob, oid, clord, orig_clord, sess, acct, inst, reason, ref_template):
    out, n = begin(out, glob, H_CANCEL_REJECTED)
    out[n, CR_ORDER_ID] = oid
    out[n, CR_CLORD] = clord
    out[n, CR_ORIG_CLORD] = orig_clord
    put(out, n, CR_SESSION, sess)
    put(out, n, CR_ACCOUNT, acct)
    put(out, n, CR_INSTRUMENT, inst)
    put(out, n, CR_REASON, reason)
    put(out, n, CR_REF_TEMPLATE, ref_template)
    return out


@njit(**INLINE)
def stop_triggered(out, glob, oid, clord, stop_price, trigger_price, sess, acct, inst):
    out, n = begin(out, glob, H_STOP_TRIGGERED)
    out[n, ST_ORDER_ID] = oid
    out[n, ST_CLORD] = clord
    out[n, ST_STOP_PRICE] = stop_price
    out[n, ST_TRIGGER_PRICE] = trigger_price
    put(out, n, ST_SESSION, sess)
    put(out, n, ST_ACCOUNT, acct)
    put(out, n, ST_INSTRUMENT, inst)
    return out


@njit(**INLINE)
def mass_cancel_done(out, glob, clord, count, sess, acct, inst, scope):
    out, n = begin(out, glob, H_MASS_DONE)
    out[n, MD_CLORD] = clord
    put(out, n, MD_COUNT, count)
    put(out, n, MD_SESSION, sess)
    put(out, n, MD_ACCOUNT, acct)
    put(out, n, MD_INSTRUMENT, inst)
    put(out, n, MD_SCOPE, scope)
    return out


@njit(**INLINE)
def book_add(out, glob, oid, price, qty, inst, side):
    out, n = begin(out, glob, H_BOOK_ADD)
    out[n, BA_ORDER_ID] = oid
    out[n, BA_PRICE] = price
    out[n, BA_QTY] = qty
    put(out, n, BA_INSTRUMENT, inst)
    put(out, n, BA_SIDE, side)
    return out


@njit(**INLINE)
def book_execute(out, glob, oid, qty, price, trade_id, inst):
    out, n = begin(out, glob, H_BOOK_EXECUTE)
    out[n, BE_ORDER_ID] = oid
    out[n, BE_QTY] = qty
    out[n, BE_PRICE] = price
    out[n, BE_TRADE_ID] = trade_id
    put(out, n, BE_INSTRUMENT, inst)
    return out


@njit(**INLINE)
def book_reduce(out, glob, oid, qty, inst):
    out, n = begin(out, glob, H_BOOK_REDUCE)
    out[n, BR_ORDER_ID] = oid
    out[n, BR_QTY] = qty
    put(out, n, BR_INSTRUMENT, inst)
    return out


@njit(**INLINE)
def book_delete(out, glob, oid, inst):
    out, n = begin(out, glob, H_BOOK_DELETE)
    out[n, BD_ORDER_ID] = oid
    put(out, n, BD_INSTRUMENT, inst)
    return out


@njit(**INLINE)
def book_replace(out, glob, oid, price, qty, inst, side):
    out, n = begin(out, glob, H_BOOK_REPLACE)
    out[n, BP_ORDER_ID] = oid
    out[n, BP_PRICE] = price
    out[n, BP_QTY] = qty
    put(out, n, BP_INSTRUMENT, inst)
    put(out, n, BP_SIDE, side)
    return out


@njit(**INLINE)
def instrument_status(out, glob, inst, status):
    out, n = begin(out, glob, H_INSTRUMENT_STATUS)
    put(out, n, IS_INSTRUMENT, inst)
    put(out, n, IS_STATUS, status)
    return out


@njit(**INLINE)
def admin_result(out, glob, value, acct, inst, ref_template, reason):
    out, n = begin(out, glob, H_ADMIN_RESULT)
    out[n, AR_VALUE] = value
    put(out, n, AR_ACCOUNT, acct)
    put(out, n, AR_INSTRUMENT, inst)
    put(out, n, AR_REF_TEMPLATE, ref_template)
    put(out, n, AR_REASON, reason)
    return out


@njit(**INLINE)
def kill_switch_status(out, glob, acct, sess, inst, scope, action):
    out, n = begin(out, glob, H_KILL_STATUS)
    put(out, n, KT_ACCOUNT, acct)
    put(out, n, KT_SESSION, sess)
    put(out, n, KT_INSTRUMENT, inst)
    put(out, n, KT_SCOPE, scope)
    put(out, n, KT_ACTION, action)
    return out


@njit(**INLINE)
def mark_price(out, glob, inst, mark, index, basis):
    out, n = begin(out, glob, H_MARK_PRICE)
    out[n, MK_MARK] = mark
    out[n, MK_INDEX] = index
    out[n, MK_BASIS] = basis
    put(out, n, MK_INSTRUMENT, inst)
    return out


@njit(**INLINE)
def funding_applied(out, glob, inst, mark, index, remainder, total, rate):
    out, n = begin(out, glob, H_FUNDING)
    out[n, FA_MARK] = mark
    out[n, FA_INDEX] = index
    out[n, FA_REMAINDER] = remainder
    out[n, FA_TOTAL] = total
    put(out, n, FA_INSTRUMENT, inst)
    put(out, n, FA_RATE, rate)
    return out


@njit(**JIT)
def liquidation(out, glob, stage, acct, inst, qty, price, amount, equity, requirement, counterparty):
    out, n = begin(out, glob, H_LIQUIDATION)
    out[n, LQ_QTY] = qty
    out[n, LQ_PRICE] = price
    out[n, LQ_AMOUNT] = amount
    out[n, LQ_EQUITY] = equity
    out[n, LQ_REQUIREMENT] = requirement
    put(out, n, LQ_ACCOUNT, acct)
    put(out, n, LQ_COUNTERPARTY, counterparty)
    put(out, n, LQ_INSTRUMENT, inst)
    put(out, n, LQ_STAGE, stage)
    return out
