"""Software prefetch: start loading the state the next messages of a batch will touch.

With 10 000 accounts an account's rows (account, wallet, position, its orders) are not in
the core's caches when its next order arrives, and the first read of each stalls the
engine for a trip to L3 or memory (measured with ``perf``: the largest single costs of the
``--risk`` stream were these loads). The whole batch is in hand, so while message ``m`` is
processed the rows of messages further on are requested, in stages that each go one step
further along a chain of loads and run fewer messages ahead: the slot itself; the rows a
message names (its account's rows, the id bucket it cancels, the order at the front of the
level it would trade against); the rows reached through those (the order a cancel names,
the maker's account, the tail of the account's order list, its place in the at-risk heap).
The matcher asks for the same rows of each maker as it meets it (``matcher.execute``), and
the batch loop for the output rows the next events go to.
A prefetch never faults and changes no state: outputs are the same with or without it,
only sooner. (Measured and dropped: a third stage for the orders that removing a cancelled
order or a filled maker relinks cost more than it saved; so did leads of 3/1 or 6/3
messages; fetching the free list's next slots and the next ids' buckets gained nothing.)
"""

from __future__ import annotations

from numba import njit
from numba.core import config as _numba_config

from ringex.engine.kernel.flags import INLINE
from ringex.engine.kernel.events import get
from ringex.engine.wire.layout import (
    BUY, CO_ACCOUNT, CO_INSTRUMENT, CO_ORDER_ID, HDR_TEMPLATE, NO_ACCOUNT, NO_INSTRUMENT, NO_PRICE,
    NO_SIDE, SLOT_WORDS, T_CANCEL_ORDER, T_NEW_ORDER,
)
from ringex.engine.kernel.state import (
    A_LIVE_TAIL, ACCT_STRIDE, G_AT_ACCT, G_AT_BUCKETS, G_AT_HEAP, G_AT_INS, G_AT_LEVELS, G_AT_ORDERS,
    G_AT_POS, G_AT_WALLET, G_CAPACITY, G_ID_MASK, G_LEVELS, G_MAX_ACCOUNTS, G_MAX_ASSETS,
    G_MAX_INSTRUMENTS, I_ASK, I_BASE, I_BID, I_TICK, N_ORDER_FIELDS, N_POS, N_WALLET,
    O_ACCT, O_ANEXT, O_APREV, O_INEXT, O_IPREV, O_OID, P_HEAP,
)

# How many messages ahead each stage runs. A message takes ~300 ns; a row fetched from
# memory can take longer than one message under load, so a stage reads what the one before
# requested at least two messages earlier.
LEAD_SLOT = 8
LEAD_NAMED = 5
LEAD_ONE_STEP = 3

if _numba_config.DISABLE_JIT:

    def touch(mem, at):
        """Plain Python: nothing to gain."""

else:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def touch(typingctx, mem, at):
        """Prefetch the cache line holding word ``at`` of ``mem`` (for reading and writing,
        kept in every cache level). No bounds check is needed: a prefetch never faults."""

        def codegen(context, builder, sig, args):
            arr = context.make_array(sig.args[0])(context, builder, value=args[0])
            ptr = builder.gep(arr.data, [args[1]])
            i32 = ir.IntType(32)
            ptr_t = ptr.type
            fnty = ir.FunctionType(ir.VoidType(), [ptr_t, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [ptr, i32(1), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(mem, types.intp), codegen


@njit(**INLINE)
def account_rows(mem, glob, acc, inst):
    """The rows of ``acc`` that an order of it on ``inst`` reads first: its account row, cash
    wallet row and position row (``mem`` may be any view that starts the arena)."""
    maxa = glob[G_MAX_ACCOUNTS]
    maxi = glob[G_MAX_INSTRUMENTS]
    if acc <= 0 or acc >= maxa or inst <= 0 or inst >= maxi:
        return
    a = glob[G_AT_ACCT] + acc * ACCT_STRIDE
    touch(mem, a)  # the fields an order reads are all in the row's first line
    touch(mem, glob[G_AT_WALLET] + acc * glob[G_MAX_ASSETS] * N_WALLET)
    touch(mem, glob[G_AT_POS] + (acc * maxi + inst) * N_POS)


@njit(**INLINE)
def front_maker(mem, glob, i64, b):
    """The order at the front of the best opposite level if new order ``b`` would trade
    against it now (its limit reaches it, or it has none), else -1."""
    inst = get(i64, b, NO_INSTRUMENT)
    maxi = glob[G_MAX_INSTRUMENTS]
    if inst <= 0 or inst >= maxi:
        return -1
    at = glob[G_AT_INS]
    levels = glob[G_LEVELS]
    price = i64[b + NO_PRICE]  # 0: a market order, which trades whatever the price
    tick = mem[at + I_TICK * maxi + inst]
    base = mem[at + I_BASE * maxi + inst]
    if get(i64, b, NO_SIDE) == BUY:
        best = mem[at + I_ASK * maxi + inst]
        if best >= levels or (price != 0 and price < (base + best) * tick):
            return -1
        row = (inst * 2 + 1) * levels + best
    else:
        best = mem[at + I_BID * maxi + inst]
        if best < 0 or (price != 0 and price >= (base + best + 1) * tick):
            return -1
        row = inst * 2 * levels + best
    return mem[glob[G_AT_LEVELS] + row * 2]


@njit(**INLINE)
def order_row(mem, glob, s):
    """All four cache lines of order slot ``s``."""
    o = glob[G_AT_ORDERS] + s * N_ORDER_FIELDS
    for w in range(0, N_ORDER_FIELDS, 8):
        touch(mem, o + w)


@njit(**INLINE)
def heap_entry(mem, glob, acc, inst):
    """Where ``acc`` sits in ``inst``'s at-risk heaps (its position row already fetched)."""
    maxi = glob[G_MAX_INSTRUMENTS]
    at = mem[glob[G_AT_POS] + (acc * maxi + inst) * N_POS + P_HEAP]
    if at >= 0:
        touch(mem, glob[G_AT_HEAP] + ((inst * 2 + (at & 1)) * glob[G_MAX_ACCOUNTS] + (at >> 1)) * 2)


@njit(**INLINE)
def maker_rows(mem, glob, r, inst):
    """What filling resting order ``r`` (its row already requested) writes besides the order:
    its account's rows, its id bucket and the orders beside it in its account's and its
    instrument's lists (all relinked when it leaves the book)."""
    cap = glob[G_CAPACITY]
    o = glob[G_AT_ORDERS] + r * N_ORDER_FIELDS
    account_rows(mem, glob, mem[o + O_ACCT], inst)
    touch(mem, glob[G_AT_BUCKETS] + (mem[o + O_OID] & glob[G_ID_MASK]))
    for f in (O_ANEXT, O_APREV, O_INEXT, O_IPREV):
        t = mem[o + f]
        if 0 <= t < cap:
            touch(mem, glob[G_AT_ORDERS] + t * N_ORDER_FIELDS + O_ANEXT)


@njit(**INLINE)
def event_rows(out, n):
    """The output rows a message is about to write, from row ``n`` on."""
    for w in range(0, 4 * SLOT_WORDS, 8):
        touch(out, n * SLOT_WORDS + w)


@njit(**INLINE)
def cancel_target(mem, glob, i64, b):
    """The slot cancel ``b`` names if its id bucket leads there first, else -1 (prefetching
    is a guess: a chain is not walked)."""
    s = mem[glob[G_AT_BUCKETS] + (i64[b + CO_ORDER_ID] & glob[G_ID_MASK])]
    if 0 <= s < glob[G_CAPACITY]:
        return s
    return -1


@njit(**INLINE)
def ahead(mem, glob, i64, m, k):
    """Prefetch for the messages after ``m`` of the ``k`` in the batch: each stage reads what
    the one before requested, so no stage waits for memory (see the module)."""
    maxa = glob[G_MAX_ACCOUNTS]
    maxi = glob[G_MAX_INSTRUMENTS]
    cap = glob[G_CAPACITY]
    if m + LEAD_SLOT < k:  # the message itself (the batch is read once, front to back)
        touch(i64, (m + LEAD_SLOT) * SLOT_WORDS)
        touch(i64, (m + LEAD_SLOT) * SLOT_WORDS + 8)
    if m + LEAD_NAMED < k:  # the rows the message names
        b = (m + LEAD_NAMED) * SLOT_WORDS
        tid = get(i64, b, HDR_TEMPLATE)
        if tid == T_NEW_ORDER:
            account_rows(mem, glob, get(i64, b, NO_ACCOUNT), get(i64, b, NO_INSTRUMENT))
            r = front_maker(mem, glob, i64, b)
            if 0 <= r < cap:
                order_row(mem, glob, r)
        elif tid == T_CANCEL_ORDER:
            account_rows(mem, glob, get(i64, b, CO_ACCOUNT), get(i64, b, CO_INSTRUMENT))
            touch(mem, glob[G_AT_BUCKETS] + (i64[b + CO_ORDER_ID] & glob[G_ID_MASK]))
    if m + LEAD_ONE_STEP < k:  # one step removed: the order a cancel names, a maker's account
        b = (m + LEAD_ONE_STEP) * SLOT_WORDS
        tid = get(i64, b, HDR_TEMPLATE)
        if tid == T_NEW_ORDER:
            acc = get(i64, b, NO_ACCOUNT)
            inst = get(i64, b, NO_INSTRUMENT)
            if 0 < acc < maxa and 0 < inst < maxi:
                tail = mem[glob[G_AT_ACCT] + acc * ACCT_STRIDE + A_LIVE_TAIL]
                if 0 <= tail < cap:
                    touch(mem, glob[G_AT_ORDERS] + tail * N_ORDER_FIELDS + O_ANEXT)
                heap_entry(mem, glob, acc, inst)
                r = front_maker(mem, glob, i64, b)
                if 0 <= r < cap:
                    maker_rows(mem, glob, r, inst)
        elif tid == T_CANCEL_ORDER:
            s = cancel_target(mem, glob, i64, b)
            if s >= 0:
                order_row(mem, glob, s)


if _numba_config.DISABLE_JIT:
    # Plain Python: a prefetch gains nothing, and the matcher passes the globals view, which
    # only compiled code may index past its end.
    def ahead(mem, glob, i64, m, k):  # noqa: F811
        return None

    def maker_rows(mem, glob, r, inst):  # noqa: F811
        return None

    def event_rows(out, n):  # noqa: F811
        return None
