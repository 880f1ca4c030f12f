"""The compiled entry point: one call runs a whole batch of SBE slots through the engine.

``process_batch(arena, slots, out)`` reads each (SLOT_SIZE-byte) slot of ``slots`` through an
int64 view, dispatches on the header's template id to the handler of its message family
(``orders``, ``admin``, ``kill``, ``money``, ``funding``), applies docs/engine.md and writes
the events into ``out`` (growing it when needed); it returns the output buffer, and the
number of events is ``glob[G_EVENTS]``. Before each message: breaker reopenings and funding
that has come due; after it: liquidation of whoever a fill or a price put at risk.

Compile-time shape (numba's per-function cost is large, and so is inlining at IR level):
one compiled function per message handler and for the few shared pieces (running an
aggressor, stop evaluation, order removal, level removal, slot release); small helpers are
``inline="always"``. Hot paths make one or two calls per message.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel import events as ev
from ringex.engine.kernel.admin import (
    on_create_account, on_instrument_definition, on_instrument_limits, on_trading_status,
)
from ringex.engine.kernel.arena import borrow, views
from ringex.engine.kernel.events import get
from ringex.engine.kernel.flags import JIT
from ringex.engine.kernel.kill import on_kill_switch
from ringex.engine.kernel.funding import funding_due, on_index_price, on_perpetual_params
from ringex.engine.kernel.liquidation import check_all
from ringex.engine.kernel.matching import cb_reopen
from ringex.engine.kernel.money import on_funds
from ringex.engine.kernel.orders import on_cancel, on_mass_cancel, on_new_order, on_replace
from ringex.engine.kernel.prefetch import ahead, event_rows
from ringex.engine.kernel.state import (
    G_AT_RISK, G_CB_HALTS, G_EVENTS, G_EVENTS_TOTAL, G_FUNDING_N, G_ING, G_MESSAGES, G_SEQ, G_TS,
)
from ringex.engine.wire.layout import (
    HDR_SCHEMA, HDR_TEMPLATE, HDR_VERSION, R_UNSUPPORTED_MESSAGE, SCHEMA_ID, SCHEMA_VERSION, SLOT_WORDS,
    STAMP_ING, STAMP_SEQ, STAMP_TS, T_CANCEL_ORDER, T_CREATE_ACCOUNT, T_FUNDS, T_INDEX_PRICE,
    T_INSTRUMENT_DEFINITION, T_INSTRUMENT_LIMITS, T_KILL_SWITCH, T_MASS_CANCEL, T_NEW_ORDER,
    T_PERPETUAL_PARAMS, T_REPLACE_ORDER, T_TRADING_STATUS,
)


@njit(**JIT)
def process_batch(mem, slots, out):
    """Run every slot of ``slots`` ((k, SLOT_SIZE) uint8, one SBE message each) through the
    engine; returns the output buffer (events in rows ``0 .. glob[G_EVENTS]``)."""
    mem = borrow(mem)
    owned = out
    out = borrow(out)  # helpers pass it around refcount-free; a grown buffer is a real array
    glob = views(mem).glob
    glob[G_EVENTS] = 0
    # Borrowed like the arena: the handlers receive the input with every message, and a view
    # that owns a reference is counted (two atomic operations) at each of those calls.
    i64 = borrow(slots.reshape(-1).view(np.int64))
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
