"""Compiled book structure: order pool, order-id table, intrusive lists, price levels.

Everything is O(1) except finding the next best price when a best level empties, which
scans the level bitmap a word (32 levels) at a time. No function here emits an event; the
matcher (``ringex.engine.kernel.matching``) decides what happens and says so.
"""

from __future__ import annotations

from numba import njit

from ringex.engine.kernel.arena import tables
from ringex.engine.kernel.flags import INLINE, JIT
from ringex.engine.kernel.money import order_end
from ringex.engine.kernel.state import (
    BITS_PER_WORD, G_CAPACITY, G_FREE, G_ID_MASK, G_LEVELS, G_LIVE, G_WORDS,
    I_BASE, I_TICK, A_LIVE, A_LIVE_HEAD, A_LIVE_TAIL, I_ASK, I_BID, I_LIVE, I_LIVE_HEAD, I_LIVE_TAIL,
    O_ACCT, O_ANEXT, O_APREV, O_FEE_CARRY, O_HNEXT, O_INEXT, O_INST, O_IPREV, O_LEVEL, O_NEXT, O_OID, O_PREV,
    O_STATE, S_FREE,
)


# -- bit tricks over 32-bit words held in int64 (no sign bit involved) -------------------------


@njit(**INLINE)
def lowest_bit(w):
    """Index of the lowest set bit of a non-zero 32-bit word."""
    n = 0
    if w & 0xFFFF == 0:
        n += 16
        w >>= 16
    if w & 0xFF == 0:
        n += 8
        w >>= 8
    if w & 0xF == 0:
        n += 4
        w >>= 4
    if w & 0x3 == 0:
        n += 2
        w >>= 2
    if w & 0x1 == 0:
        n += 1
    return n


@njit(**INLINE)
def highest_bit(w):
    """Index of the highest set bit of a non-zero 32-bit word."""
    n = 0
    if w & 0xFFFF0000:
        n += 16
        w >>= 16
    if w & 0xFF00:
        n += 8
        w >>= 8
    if w & 0xF0:
        n += 4
        w >>= 4
    if w & 0xC:
        n += 2
        w >>= 2
    if w & 0x2:
        n += 1
    return n


@njit(**JIT)
def first_level_at_or_above(bits, base, words, start, levels):
    """Lowest non-empty level index >= start, or ``levels`` when there is none."""
    if start >= levels:
        return levels
    if start < 0:
        start = 0
    w = start // BITS_PER_WORD
    word = bits[base + w] & ~((1 << (start % BITS_PER_WORD)) - 1)
    while word == 0:
        w += 1
        if w >= words:
            return levels
        word = bits[base + w]
    return w * BITS_PER_WORD + lowest_bit(word)


@njit(**JIT)
def first_level_at_or_below(bits, base, start):
    """Highest non-empty level index <= start, or -1 when there is none."""
    if start < 0:
        return -1
    w = start // BITS_PER_WORD
    word = bits[base + w] & ((1 << (start % BITS_PER_WORD + 1)) - 1)
    while word == 0:
        w -= 1
        if w < 0:
            return -1
        word = bits[base + w]
    return w * BITS_PER_WORD + highest_bit(word)


# -- price levels --------------------------------------------------------------------------------


@njit(**INLINE)
def level_append(st, s, inst, sidx, idx):
    """Put resting order ``s`` at the back of level ``idx`` of side ``sidx`` (0 bid, 1 ask)."""
    o, lvl, bits, ins, glob = st.orders, st.levels, st.bits, st.ins, st.glob
    levels = glob[G_LEVELS]
    book = inst * 2 + sidx
    li = book * levels + idx
    tail = lvl[li, 1]
    o[s, O_NEXT] = -1
    o[s, O_PREV] = tail
    o[s, O_LEVEL] = idx
    if tail == -1:
        lvl[li, 0] = s
        bits[book * glob[G_WORDS] + idx // BITS_PER_WORD] |= 1 << (idx % BITS_PER_WORD)
        if sidx == 0:
            if idx > ins[I_BID, inst]:
                ins[I_BID, inst] = idx
        elif idx < ins[I_ASK, inst]:
            ins[I_ASK, inst] = idx
    else:
        o[tail, O_NEXT] = s
    lvl[li, 1] = s


@njit(**JIT)
def level_remove(glob, s, inst, sidx):
    """Unlink resting order ``s`` from its level; keeps best bid/ask right."""
    st = tables(glob)
    o, lvl, bits, ins = st.orders, st.levels, st.bits, st.ins
    levels = glob[G_LEVELS]
    idx = o[s, O_LEVEL]
    book = inst * 2 + sidx
    li = book * levels + idx
    p = o[s, O_PREV]
    n = o[s, O_NEXT]
    if p == -1:
        lvl[li, 0] = n
    else:
        o[p, O_NEXT] = n
    if n == -1:
        lvl[li, 1] = p
    else:
        o[n, O_PREV] = p
    o[s, O_NEXT] = -1
    o[s, O_PREV] = -1
    if p == -1 and n == -1:
        words = glob[G_WORDS]
        wbase = book * words
        bits[wbase + idx // BITS_PER_WORD] &= ~(1 << (idx % BITS_PER_WORD))
        if sidx == 0:
            if ins[I_BID, inst] == idx:
                ins[I_BID, inst] = first_level_at_or_below(bits, wbase, idx - 1)
        elif ins[I_ASK, inst] == idx:
            ins[I_ASK, inst] = first_level_at_or_above(bits, wbase, words, idx + 1, levels)


@njit(**INLINE)
def level_move_back(st, s, inst, sidx):
    """Move resting order ``s`` to the back of its own level (it loses its time priority)."""
    o, lvl, glob = st.orders, st.levels, st.glob
    if o[s, O_NEXT] == -1:
        return  # already last
    li = (inst * 2 + sidx) * glob[G_LEVELS] + o[s, O_LEVEL]
    p = o[s, O_PREV]
    n = o[s, O_NEXT]
    if p == -1:
        lvl[li, 0] = n
    else:
        o[p, O_NEXT] = n
    o[n, O_PREV] = p
    tail = lvl[li, 1]
    o[tail, O_NEXT] = s
    o[s, O_PREV] = tail
    o[s, O_NEXT] = -1
    lvl[li, 1] = s


# -- generic intrusive lists (heads in an int64 table, links in order rows) ---------------------


@njit(**INLINE)
def list_append(o, heads, head_row, tail_row, key, s, next_row, prev_row):
    tail = heads[tail_row, key]
    o[s, next_row] = -1
    o[s, prev_row] = tail
    if tail == -1:
        heads[head_row, key] = s
    else:
        o[tail, next_row] = s
    heads[tail_row, key] = s


@njit(**INLINE)
def list_remove(o, heads, head_row, tail_row, key, s, next_row, prev_row):
    p = o[s, prev_row]
    n = o[s, next_row]
    if p == -1:
        heads[head_row, key] = n
    else:
        o[p, next_row] = n
    if n == -1:
        heads[tail_row, key] = p
    else:
        o[n, prev_row] = p
    o[s, next_row] = -1
    o[s, prev_row] = -1


# -- order id -> slot ------------------------------------------------------------------------------


@njit(**INLINE)
def find_order(st, oid):
    """Slot of live order ``oid``, or -1."""
    o, hb, glob = st.orders, st.buckets, st.glob
    if oid <= 0:
        return -1
    s = hb[oid & glob[G_ID_MASK]]
    while s != -1:
        if o[s, O_OID] == oid:
            return s
        s = o[s, O_HNEXT]
    return -1


# -- order slots -------------------------------------------------------------------------------------


@njit(**INLINE)
def has_free_slot(glob):
    return glob[G_LIVE] < glob[G_CAPACITY]


@njit(**INLINE)
def acquire(st, oid, inst, acc):
    """Take a free slot for new order ``oid``: indexed by id, linked into its account's and
    instrument's lists (ids only grow, so both stay in ascending id order)."""
    o, ins, acct, hb, glob = st.orders, st.ins, st.acct, st.buckets, st.glob
    s = glob[G_FREE]
    glob[G_FREE] = o[s, O_NEXT]
    glob[G_LIVE] += 1
    o[s, O_NEXT] = -1
    o[s, O_OID] = oid
    o[s, O_INST] = inst
    o[s, O_ACCT] = acc
    o[s, O_FEE_CARRY] = 0
    b = oid & glob[G_ID_MASK]
    o[s, O_HNEXT] = hb[b]
    hb[b] = s
    list_append(o, ins, I_LIVE_HEAD, I_LIVE_TAIL, inst, s, O_INEXT, O_IPREV)
    list_append(o, acct, A_LIVE_HEAD, A_LIVE_TAIL, acc, s, O_ANEXT, O_APREV)
    ins[I_LIVE, inst] += 1
    acct[A_LIVE, acc] += 1
    return s


@njit(**JIT)
def release(glob, s):
    """Return slot ``s`` to the free list (it must be out of every level, stop list and queue).
    Every order ends here, so this is where its hold or open margin is given back."""
    st = tables(glob)
    order_end(st, s)
    o, ins, acct, hb = st.orders, st.ins, st.acct, st.buckets
    oid = o[s, O_OID]
    inst = o[s, O_INST]
    acc = o[s, O_ACCT]
    b = oid & glob[G_ID_MASK]
    cur = hb[b]
    if cur == s:
        hb[b] = o[s, O_HNEXT]
    else:
        while cur != -1:
            nxt = o[cur, O_HNEXT]
            if nxt == s:
                o[cur, O_HNEXT] = o[s, O_HNEXT]
                break
            cur = nxt
    o[s, O_HNEXT] = -1
    list_remove(o, ins, I_LIVE_HEAD, I_LIVE_TAIL, inst, s, O_INEXT, O_IPREV)
    list_remove(o, acct, A_LIVE_HEAD, A_LIVE_TAIL, acc, s, O_ANEXT, O_APREV)
    ins[I_LIVE, inst] -= 1
    acct[A_LIVE, acc] -= 1
    o[s, O_STATE] = S_FREE
    o[s, O_OID] = 0
    o[s, O_NEXT] = glob[G_FREE]
    glob[G_FREE] = s
    glob[G_LIVE] -= 1


@njit(**INLINE)
def book_index(ins, glob, inst, price):
    """Book index of ``price`` (a positive multiple of the tick), or -1 outside the window."""
    idx = price // ins[I_TICK, inst] - ins[I_BASE, inst]
    if idx < 0 or idx >= glob[G_LEVELS]:
        return -1
    return idx
