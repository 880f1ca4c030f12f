"""The at-risk index: per perpetual, two binary min-heaps of the accounts holding a position.

Heap ``h`` of instrument ``inst`` occupies rows ``(inst * 2 + h) * max_accounts ..`` of the
``heap`` table, each row ``(key, account)``; its size is ``ins[I_HEAP_LONG + h, inst]``.
Longs (h 0) are keyed by minus their liquidation price and shorts (h 1) by their
liquidation price, so the top of either is the account closest to liquidation, and after
a mark move the accounts to look at are popped from the top: the cost is the number at
risk, never the number of accounts (docs/risk.md "Liquidation"). Ties in key go to the
lower account id, which keeps the order of liquidations deterministic.

A position row's ``P_HEAP`` is ``index * 2 + h`` while the account is in a heap, -1 when not.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.arena import tables
from ringex.engine.kernel.flags import INLINE, JIT
from ringex.engine.kernel.state import G_MAX_ACCOUNTS, G_MAX_INSTRUMENTS, I_HEAP_LONG, P_HEAP


@njit(**INLINE)
def _less(heap, i, j):
    ki = heap[i, 0]
    kj = heap[j, 0]
    return ki < kj or (ki == kj and heap[i, 1] < heap[j, 1])


@njit(**INLINE)
def _place(heap, pos, glob, inst, h, base, i):
    """Record where the entry at heap row ``base + i`` now sits."""
    acc = heap[base + i, 1]
    pos[acc * glob[G_MAX_INSTRUMENTS] + inst, P_HEAP] = i * 2 + h


@njit(**INLINE)
def _swap(heap, base, i, j):
    k = heap[base + i, 0]
    a = heap[base + i, 1]
    heap[base + i, 0] = heap[base + j, 0]
    heap[base + i, 1] = heap[base + j, 1]
    heap[base + j, 0] = k
    heap[base + j, 1] = a


@njit(**INLINE)
def _sift(glob, ins, pos, heap, inst, h, i):
    """Restore the heap property around entry ``i`` (up, then down)."""
    base = (inst * 2 + h) * glob[G_MAX_ACCOUNTS]
    n = ins[I_HEAP_LONG + h, inst]
    while i > 0:
        p = (i - 1) >> 1
        if _less(heap, base + i, base + p):
            _swap(heap, base, i, p)
            _place(heap, pos, glob, inst, h, base, i)
            i = p
        else:
            break
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _less(heap, base + c + 1, base + c):
            c += 1
        if _less(heap, base + c, base + i):
            _swap(heap, base, i, c)
            _place(heap, pos, glob, inst, h, base, i)
            i = c
        else:
            break
    _place(heap, pos, glob, inst, h, base, i)


@njit(**JIT)
def heap_remove(glob, inst, acc):
    """Take ``acc`` out of whichever heap of ``inst`` holds it (nothing if none)."""
    rt = tables(glob)
    ins, pos, heap = rt.ins, rt.pos, rt.heap
    row = acc * glob[G_MAX_INSTRUMENTS] + inst
    at = pos[row, P_HEAP]
    if at < 0:
        return
    i = at >> 1
    h = at & 1
    base = (inst * 2 + h) * glob[G_MAX_ACCOUNTS]
    last = ins[I_HEAP_LONG + h, inst] - 1
    ins[I_HEAP_LONG + h, inst] = last
    pos[row, P_HEAP] = -1
    if i != last:
        heap[base + i, 0] = heap[base + last, 0]
        heap[base + i, 1] = heap[base + last, 1]
        _sift(glob, ins, pos, heap, inst, h, i)


@njit(**JIT)
def heap_set(glob, inst, h, acc, key):
    """Put ``acc`` in heap ``h`` of ``inst`` with ``key`` (moving it from the other heap, or
    re-keying it in place)."""
    rt = tables(glob)
    ins, pos, heap = rt.ins, rt.pos, rt.heap
    row = acc * glob[G_MAX_INSTRUMENTS] + inst
    at = pos[row, P_HEAP]
    if at >= 0 and (at & 1) != h:
        heap_remove(glob, inst, acc)
        at = -1
    base = (inst * 2 + h) * glob[G_MAX_ACCOUNTS]
    if at < 0:
        i = ins[I_HEAP_LONG + h, inst]
        ins[I_HEAP_LONG + h, inst] = i + 1
        heap[base + i, 1] = acc
    else:
        i = at >> 1
    heap[base + i, 0] = key
    _sift(glob, ins, pos, heap, inst, h, i)


@njit(**INLINE)
def heap_top(heap, glob, ins, inst, h):
    """(key, account) of the top of heap ``h`` of ``inst``; account -1 when it is empty."""
    if ins[I_HEAP_LONG + h, inst] == 0:
        return 0, -1
    base = (inst * 2 + h) * glob[G_MAX_ACCOUNTS]
    return heap[base, 0], heap[base, 1]


@njit(**JIT)
def holders(glob, ins, inst):
    """The accounts holding a position in ``inst`` (the insurance fund excepted), heap order."""
    rt = tables(glob)
    heap = rt.heap
    maxa = glob[G_MAX_ACCOUNTS]
    n0 = ins[I_HEAP_LONG, inst]
    n1 = ins[I_HEAP_LONG + 1, inst]
    out = np.empty(n0 + n1, dtype=np.int64)
    for i in range(n0):
        out[i] = heap[(inst * 2) * maxa + i, 1]
    for i in range(n1):
        out[n0 + i] = heap[(inst * 2 + 1) * maxa + i, 1]
    return out
